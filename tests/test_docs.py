"""The project's own docs: they stand alone, keep up with the code, and their examples run.

- README.md and docs/*.md link only to files of the project, and nothing
  in the project points outside it (to a `../shared` spec).
- docs/formats.md names every event type and field the trade file reads
  and every key the report and its rows write (on the example days, both
  modes); docs/rules.md names every event a protocol emits.
- The examples in the README (queries) and in docs/formats.md (a JSON
  Lines and a CSV day) run and give what they say.
- docs/architecture.svg is what docs/draw_architecture.py draws.
- The layering the docs state holds: the engine imports nothing from
  `protocols` or `benchmarks`, and `protocols` nothing from `benchmarks`.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import msgspec
import pytest

from protocols.replay import replay
from protocols.tradefile import EVENT_TYPES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
FORMATS = (DOCS / "formats.md").read_text()
RULES = (DOCS / "rules.md").read_text()


def _project_files() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "pyproject.toml", *DOCS.glob("*.md")]
    for package in ("engine", "protocols", "benchmarks", "examples", "tests"):
        found += (ROOT / package).rglob("*.py")
    return [p for p in found if p != Path(__file__)]


@pytest.mark.parametrize("document", MARKDOWN, ids=lambda p: p.name)
def test_every_link_of_a_document_reaches_a_file_of_the_project(document):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", document.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        path = (document.parent / target).resolve()
        assert path.is_relative_to(ROOT), f"{document.name} links outside the project: {target}"
        assert path.exists(), f"{document.name} links to a missing file: {target}"


def test_nothing_in_the_project_points_to_a_spec_outside_it():
    outside = re.compile(r"\.\./shared|shared/spec|\b(DOMAIN|FORMATS|ARCHITECTURE|STYLE)\.md")
    found = [f"{p.relative_to(ROOT)}:{n}" for p in _project_files()
             for n, line in enumerate(p.read_text().splitlines(), 1) if outside.search(line)]
    assert not found, found


def test_formats_names_every_event_type_and_field_of_the_trade_file():
    missing = [f"{tag}.{field.encode_name}" for tag, kind in EVENT_TYPES.items()
               for field in msgspec.structs.fields(kind)
               if f"`{tag}`" not in FORMATS or f"`{field.encode_name}`" not in FORMATS]
    assert not missing, missing


def _keys(value, prefix="") -> set[str]:
    """Every key of a report, by name (map keys that are ids, assets or participants are not names)."""
    out: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            out.add(key)
            out |= _keys(inner)
    elif isinstance(value, list):
        for inner in value:
            out |= _keys(inner)
    return out


@pytest.mark.parametrize("day,mode", [("gross.jsonl", "gross"), ("net.jsonl", "net"), ("repo.jsonl", None),
                                      ("crosschain.jsonl", None)],
                         ids=["a gross day", "a net day", "a repo day", "a cross-chain day"])
def test_formats_names_every_key_the_report_writes(day, mode):
    done = replay(str(ROOT / "examples" / day), mode=mode)
    try:
        report = done.report()
    finally:
        done.close()
    names = set()
    for key, value in report.items():
        names.add(key)
        if key in ("trades", "balances", "escrow", "participants", "net_positions", "supply"):
            for row in value.values():  # keyed by trade id or participant: the rows' own keys are names
                names |= {k for k in _keys(row) if k not in report.get("supply", {})}
        elif key == "ledger":
            names |= {"chains"} | {k for chain in value["chains"].values() for k in chain}
        elif key == "metrics":
            names |= {k for k in value}
            names |= {k for k, v in value.items() if isinstance(v, dict) and k in ("margin_calls", "movements")
                      for k in v}
        else:
            names |= _keys(value)
    names -= set(report.get("supply", {}))  # asset ids
    missing = sorted(n for n in names if f"`{n}`" not in FORMATS)
    assert not missing, missing


def test_rules_name_every_event_a_protocol_emits():
    emitted = set()
    for path in (ROOT / "protocols").rglob("*.py"):
        emitted |= set(re.findall(r"emit\(NAME, \"([a-z_]+)\"", path.read_text()))
    emitted |= {"hold_expired"}  # the engine's own
    assert len(emitted) > 20
    missing = sorted(kind for kind in emitted if f"`{kind}`" not in RULES)
    assert not missing, missing


def test_the_readme_queries_example_runs_and_prints_what_it_says(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    queries = next(b for b in blocks if "ledger.trade(" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # the embedding example it continues
    capsys.readouterr()
    exec(compile(queries, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    said = [line[2:].split("  (")[0].strip() for line in queries.splitlines() if re.match(r"# \d", line)]
    assert printed[0] == "queued insufficient_cash"
    assert printed[1] == "settled ['queued', 'settled'] 0"
    assert printed[2:] == said


@pytest.mark.parametrize("fence,suffix", [("json", ".jsonl"), ("csv", ".csv")], ids=["the JSON Lines day",
                                                                                     "the CSV day"])
def test_the_trade_file_examples_of_formats_replay(fence, suffix, tmp_path):
    blocks = [b for b in re.findall(rf"```{fence}\n(.*?)```", FORMATS, re.S) if '"type"' in b or "type," in b]
    path = tmp_path / f"day{suffix}"
    path.write_text(blocks[0])
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(path), "--report", str(report),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    trades = json.loads(report.read_text())["trades"]
    assert trades["T1"]["status"] == "settled" and trades["T1"]["amount"] == "995000.00"


def test_the_architecture_picture_is_what_its_script_draws():
    spec = importlib.util.spec_from_file_location("draw_architecture", DOCS / "draw_architecture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    drawn = module.draw()
    assert (DOCS / "architecture.svg").read_text(encoding="utf-8") == drawn, "run python docs/draw_architecture.py"
    root = ET.fromstring(drawn)
    words = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for name in ("read", "resolve", "batch", "apply", "account", "report", "Ledger", "Machine", "State", "Journal"):
        assert name in words


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package,forbidden", [("engine", {"protocols", "benchmarks"}),
                                               ("protocols", {"benchmarks"})],
                         ids=["the engine imports nothing from protocols or benchmarks",
                              "protocols import nothing from benchmarks"])
def test_the_layers_hold(package, forbidden):
    found = {str(p.relative_to(ROOT)): sorted(_imports(p) & forbidden) for p in (ROOT / package).rglob("*.py")}
    assert not {p: names for p, names in found.items() if names}


def test_the_haircut_table_of_rules_is_the_default_schedule():
    from fractions import Fraction

    from protocols.collateral import DEFAULT_SCHEDULE

    table = re.search(r"\| class \| up to 1 year.*?\n((?:\s*\|.*\n)+)", RULES).group(0).strip().splitlines()
    years = [1, 3, 5, 7, 10, 20, None]
    documented = {}
    for line in table[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        documented[cells[0].strip("`")] = tuple((y, str(Fraction(c.rstrip("%")) / 100))
                                                for y, c in zip(years, cells[1:]) if c)
    schedule = {cls: tuple((y, str(Fraction(h))) for y, h in buckets) for cls, buckets in DEFAULT_SCHEDULE.items()}
    assert documented == schedule
