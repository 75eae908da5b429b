"""The example programs under examples/: each runs, exits 0 and prints what happened.

Each program runs in a subprocess, from the source tree and from a copy
made by `dvp examples DIR` (as a user who only installed the package
would run it), and its key lines are checked. The programs import only
the installed packages (`engine`, `protocols`, `benchmarks`) and the
standard library. `service_dvp.py` is run by tests/test_service_api.py
(it needs the `service` extra and starts a server).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from protocols.examples_command import copy_examples

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
INSTALLED = {"engine", "protocols", "benchmarks"}

# (program, arguments, lines that must appear in its output, in this order)
PROGRAMS = [
    ("embed_dvp.py", [], [
        "2. T-1 (1,000,000 UST10Y for USD 995,000.00): ok, trade settled",
        "3. T-2 (USD 497,500.00; BANK_B holds USD 5,000.00): queued, waiting for insufficient_cash",
        "T-2 settled by recycling, 60 s after it was instructed (events: queued, settled)",
        "4. T-3 signed by the seller alone: unauthorized",
        "entry 5: USD 5,000.00 -> USD 7,500.00 (mint; settled T-2)",
        "5. reopened at entry 6: BANK_A holds USD 1,492,500.00 and 500,000 UST10Y",
        "verified: 7 entries, 8 signatures",
    ]),
    ("repo_margin.py", [], [
        "1. R1 opened: ok; BANK_L holds 10,000,000 UST4Y (encumbered), BANK_B USD 9,700,000.00",
        "open: E USD 9,500,000.00, MV USD 9,900,000.00, CV USD 9,702,000.00 (haircut 0.02), margin held USD 0.00, "
        "no open call",
        "2. the note falls to 96.00 an hour later: margin_call USD 92,058.39, margin_met USD 92,058.39",
        "open: E USD 9,408,000.00, MV USD 9,600,000.00, CV USD 9,408,000.00 (haircut 0.02), "
        "margin held USD 92,058.39, no open call",
        "3. at the end: closed, interest USD 350.31, the borrower paid USD 9,408,291.92",
        "the repo's events: repo_opened, margin_call, margin_met, repo_closed",
        "BANK_B ends with USD 199,649.69, BANK_L with USD 10,000,350.31",
    ]),
    ("crosschain_swap.py", [], [
        "before:  bond ledger: SELLER 2,000,000 BUYER 0 | cash ledger: SELLER 0.00 BUYER 3,000,000.00 USD",
        "1. X-1: BUYER locks USD 995,000.00 on cash-chain until T1 = +120 min",
        "locks 1,000,000 UST10Y on bond-chain until T2 = +60 min",
        "revealing the secret on bond-chain: True",
        "the coordinator claims the cash for SELLER: first lock claimed",
        "after:   bond ledger: SELLER 1,000,000 BUYER 1,000,000 | cash ledger: SELLER 995,000.00 BUYER 2,005,000.00",
        "(the lock is open, BUYER's balance 1,507,500.00); SELLER never locks",
        "at T1 the expiry sweep has refunded it; follow: refunded",
        "after:   bond ledger: SELLER 1,000,000 BUYER 1,000,000 | cash ledger: SELLER 995,000.00 BUYER 2,005,000.00",
    ]),
    ("gross_vs_net.py", [], [
        "gross: settled 4 of 5 (0.800000), failed: insufficient_cash 1; liquidity drawn USD 1,398,250.00; "
        "mean delay 0.000 s",
        "  net: settled 4 of 5 (0.800000), failed: unwound 1; liquidity drawn USD 99,875.00; mean delay 2475.000 s",
        "  net: 2 cycles, netting ratio 0.034483 by value, 4 movements instead of 10",
    ]),
    ("gross_vs_net.py", ["--generate", "3000"], ["gross: settled ", "  net: settled ", "  net: "]),
]
IDS = ["a DvP embedded with both signatures, queued and recycled, a forgery refused, reopened and verified",
       "a repo opened, called on a price drop, the call met from cash, closed at its end",
       "a cross-chain swap that settles on both ledgers, and one that refunds at T1",
       "the example day replayed gross and net",
       "a generated day replayed gross and net"]


def run(program: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(program), *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env=env)


def assert_lines_in_order(output: str, lines: list[str]) -> None:
    at = 0
    for line in lines:
        found = output.find(line, at)
        assert found >= 0, f"missing, in this order: {line!r}\n--- output ---\n{output}"
        at = found + len(line)


@pytest.mark.parametrize("program,args,lines", PROGRAMS, ids=IDS)
def test_each_example_runs_and_says_what_happened(program, args, lines, tmp_path):
    done = run(EXAMPLES / program, args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert_lines_in_order(done.stdout, lines)


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> Path:
    """The examples as `dvp examples DIR` copies them out of the installed package."""
    directory = tmp_path_factory.mktemp("copied") / "ex"
    names = copy_examples(str(directory))
    assert {p for p, _args, _lines in PROGRAMS} <= set(names)
    return directory


@pytest.mark.parametrize("program,args,lines", [PROGRAMS[0], PROGRAMS[3]], ids=[IDS[0], IDS[3]])
def test_an_example_runs_from_the_copy_dvp_examples_makes(program, args, lines, copied, tmp_path):
    done = run(copied / program, args, tmp_path)  # run from elsewhere: nothing of the source tree on the path
    assert done.returncode == 0, done.stderr[-3000:]
    assert_lines_in_order(done.stdout, lines)
    if program == "gross_vs_net.py":
        assert f"day: {copied / 'net.jsonl'}" in done.stdout  # the trade file beside the copy, not the source tree


@pytest.mark.parametrize("program", sorted(p.name for p in EXAMPLES.glob("*.py") if p.name != "__init__.py"))
def test_an_example_imports_only_the_installed_packages_and_the_standard_library(program):
    tree = ast.parse((EXAMPLES / program).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{program}: a relative import cannot work from a copy"
            names.add((node.module or "").split(".")[0])
    foreign = {n for n in names - INSTALLED - {"__future__"} if n not in sys.stdlib_module_names}
    assert not foreign, f"{program} imports {sorted(foreign)}"
    assert ast.get_docstring(tree), f"{program}: opens with a docstring saying what it shows and how to run it"
