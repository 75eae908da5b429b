"""ISO 20022 benchmark: sese.023 export and import throughput, and the replay's outcome messages.

Run `python -m benchmarks.iso [--messages N] [--out DIR]` (or `dvp bench iso`,
where `--scale` multiplies the 100,000 messages). On one seeded generated
day of N DvPs it measures, each in one run:

- export: `dvp iso export` of the day (read the trade file, build, check
  and write one sese.023 per trade), messages per second;
- import: `dvp iso import` of those files back (read each file, check it
  for hostile content, bind it with xsdata, check the schema's rules, map
  and match it, write the trade file), messages per second, with its
  default worker processes (one per core) and in one process, and whether
  the trade file came back byte for byte;
- outcomes: `write_outcomes` of the day's replay (a sese.024 per trade and a
  sese.025 per settled trade), messages per second (the replay itself is
  not timed);
- the floors, on a sample of the same messages: xsdata's own binding
  (lxml, no checks) and serialisation alone, so the cost of this bridge's
  checks and mapping shows as a ratio within the run.

Needs the extra: pip install -e '.[iso20022]'.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from typing import Any

from .tradegen import generate

MESSAGES_DEFAULT = 100_000
SAMPLE_MAX = 5_000  # messages timed for the floors


def _floors(files: list[str]) -> dict[str, float]:
    from xsdata.formats.dataclass.parsers import XmlParser
    from xsdata.formats.dataclass.parsers.handlers import LxmlEventHandler

    from protocols.iso20022.messages import SESE023
    from protocols.iso20022.validate import problems
    from protocols.iso20022.xmlio import CONTEXT, Reader, Writer

    datas = []
    for path in files[:SAMPLE_MAX]:
        with open(path, "rb") as handle:
            datas.append(handle.read())
    plain = XmlParser(context=CONTEXT, handler=LxmlEventHandler)
    started = time.perf_counter()
    messages = [plain.from_bytes(data, SESE023.binding) for data in datas]
    bind = time.perf_counter() - started
    reader = Reader(SESE023)
    started = time.perf_counter()
    for n, data in enumerate(datas):
        problems(reader.read(data, str(n)))
    checked = time.perf_counter() - started
    writer = Writer()
    started = time.perf_counter()
    for message in messages:
        writer.write(message)
    write = time.perf_counter() - started
    n = len(datas)
    return {"sample": n, "xsdata_bind_per_s": round(n / bind), "hardened_bind_and_check_per_s": round(n / checked),
            "xsdata_write_per_s": round(n / write)}


def run(messages: int = MESSAGES_DEFAULT, out: str = "bench-out", console: Any = None) -> dict[str, Any]:
    from protocols.iso20022.importing import default_jobs, import_files
    from protocols.iso20022.instruct import export
    from protocols.iso20022.status import write_outcomes
    from protocols.replay import replay

    if console is None:
        from rich.console import Console

        console = Console()
    work = tempfile.mkdtemp(prefix="dvp-bench-iso-")
    results: dict[str, Any] = {"messages": messages}
    try:
        day = os.path.join(work, "day.jsonl")
        generate(day, messages)
        with console.status(f"export: {messages:,} sese.023 ..."):
            started = time.perf_counter()
            exported = export(day, os.path.join(work, "iso"))
            seconds = time.perf_counter() - started
        results["export"] = {"messages": exported.messages, "seconds": round(seconds, 2),
                             "messages_per_s": round(exported.messages / seconds)}
        console.print(f"export: {exported.messages:,} sese.023 in {seconds:,.1f} s, "
                      f"{exported.messages / seconds:,.0f} messages/s")
        folder = os.path.join(work, "iso")
        files = sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(".xml"))
        jobs = default_jobs(len(files))
        if jobs > 1:  # the same import in one process, for the ratio
            with console.status(f"import in one process: {len(files):,} sese.023 ..."):
                started = time.perf_counter()
                single = import_files([folder], os.path.join(work, "iso", "setup.jsonl"),
                                      os.path.join(work, "back-1.jsonl"),
                                      parties_path=os.path.join(work, "iso", "parties.csv"), jobs=1)
                seconds = time.perf_counter() - started
            results["import_one_process"] = {"messages": single.messages, "seconds": round(seconds, 2),
                                             "messages_per_s": round(single.messages / seconds)}
            console.print(f"import in one process: {single.messages:,} sese.023 in {seconds:,.1f} s, "
                          f"{single.messages / seconds:,.0f} messages/s")
        with console.status(f"import: {len(files):,} sese.023, {jobs} worker processes ..."):
            started = time.perf_counter()
            imported = import_files([folder], os.path.join(work, "iso", "setup.jsonl"), os.path.join(work, "back.jsonl"),
                                    parties_path=os.path.join(work, "iso", "parties.csv"), jobs=jobs)
            seconds = time.perf_counter() - started
        with open(day, "rb") as a, open(os.path.join(work, "back.jsonl"), "rb") as b:
            identical = a.read() == b.read()
        results["import"] = {"messages": imported.messages, "jobs": jobs, "trades": imported.trades,
                             "refused": len(imported.errors),
                             "seconds": round(seconds, 2), "messages_per_s": round(imported.messages / seconds),
                             "round_trip_identical": identical}
        console.print(f"import ({jobs} worker processes): {imported.messages:,} sese.023 in {seconds:,.1f} s, "
                      f"{imported.messages / seconds:,.0f} messages/s; trade file identical: {identical}")
        with console.status("replay, then outcomes as sese.024 and sese.025 ..."):
            run_ = replay(day)
            try:
                started = time.perf_counter()
                outcomes = write_outcomes(run_, os.path.join(work, "outcomes"))
                seconds = time.perf_counter() - started
            finally:
                run_.close()
        written = outcomes.sese024 + outcomes.sese025 + outcomes.colr003 + outcomes.colr004
        results["outcomes"] = {"sese024": outcomes.sese024, "sese025": outcomes.sese025, "seconds": round(seconds, 2),
                               "messages_per_s": round(written / seconds)}
        console.print(f"outcomes: {outcomes.sese024:,} sese.024 and {outcomes.sese025:,} sese.025 in {seconds:,.1f} s, "
                      f"{written / seconds:,.0f} messages/s")
        floors = _floors(files)
        results["floors"] = floors
        console.print(f"floors on {floors['sample']:,} messages: xsdata bind alone {floors['xsdata_bind_per_s']:,}/s, "
                      f"hardened read and schema check {floors['hardened_bind_and_check_per_s']:,}/s, "
                      f"xsdata write alone {floors['xsdata_write_per_s']:,}/s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "iso.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ISO 20022 export and import throughput")
    parser.add_argument("--messages", type=int, default=MESSAGES_DEFAULT)
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args(argv)
    run(args.messages, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
