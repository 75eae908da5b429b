"""`dvp selftest crash|faults`: parse the arguments, run the harness, print its figures and a verdict.

`crash` ends with a line `N differences` and exits 1 when N > 0; `faults`
prints one row per injected fault and exits 1 if any went undetected.
"""

from __future__ import annotations

import argparse
import sys
import time


def _crash(args: argparse.Namespace) -> int:
    from .crash import crash

    if args.runs < 1 or args.kills < 0:
        print("dvp selftest crash: --runs must be at least 1 and --kills at least 0", file=sys.stderr)
        return 2
    started = time.monotonic()

    def progress(report) -> None:
        if args.progress_every and report.runs % args.progress_every == 0:
            print(f"  {report.runs} runs, {report.kills} kills, {report.batches} batches, "
                  f"{len(report.differences)} differences, {time.monotonic() - started:.0f} s", flush=True)

    report = crash(args.runs, args.seed, kills=args.kills, workdir=args.workdir, progress=progress)
    elapsed = time.monotonic() - started
    for text in report.differences[:50]:
        print(f"difference: {text}")
    points = ", ".join(f"{k} {v}" for k, v in sorted(report.kills_by_point.items()))
    print(f"dvp selftest crash: seed {args.seed}: {report.runs} runs, {report.kills} kills ({points}), "
          f"{report.lives} restarts, {report.batches} batches, {report.answered_replayed} committed batches "
          f"resubmitted and answered as replays, {elapsed:.1f} s")
    print(f"{len(report.differences)} differences")
    return 1 if report.differences else 0


def _faults(args: argparse.Namespace) -> int:
    from .faults import faults

    results = faults()
    width = max(len(r.fault) for r in results)
    print(f"{'fault':<{width}}  detected  how")
    for r in results:
        print(f"{r.fault:<{width}}  {'yes' if r.detected else 'NO':<8}  {r.how}")
    missed = [r for r in results if not r.detected]
    print(f"dvp selftest faults: {len(results)} faults injected, {len(results) - len(missed)} detected, "
          f"{len(missed)} undetected")
    return 1 if missed else 0


def register(subparsers) -> None:
    p = subparsers.add_parser("selftest", help="prove crash safety and fault detection (SIGKILL runs, storage faults)",
                              description="Self-tests of the engine's durability: `crash` kills a writer with "
                                          "SIGKILL at seeded instants and compares with a clean run; `faults` "
                                          "injects storage faults and checks each is detected.")
    sub = p.add_subparsers(dest="selftest", required=True, metavar="TEST",
                           help="crash (SIGKILL runs against a clean run) or faults (injected storage faults)")
    c = sub.add_parser("crash", help="SIGKILL a writer at seeded instants; compare with a clean run",
                       description="Run a seeded settlement day (DvP queues or netting cycles, repos with price "
                                   "shocks, cross-chain swaps) against durable SQLite ledgers in a child process, "
                                   "SIGKILL it at seeded instants (also inside a commit, while a snapshot is "
                                   "written, during genesis), restart it and resubmit what was not acknowledged; "
                                   "compare with a clean run. Ends with `N differences`; exits 1 if N > 0.")
    c.add_argument("--runs", type=int, default=10, metavar="N", help="runs, each a new seeded day (default 10)")
    c.add_argument("--seed", type=int, default=1, metavar="S", help="the seed of the days and the kills")
    c.add_argument("--kills", type=int, default=12, metavar="K", help="kills per run (default 12)")
    c.add_argument("--workdir", metavar="DIR", help="where the journals go (default: a temporary directory; kept "
                                                     "when a run differs)")
    c.add_argument("--progress-every", type=int, default=0, metavar="R", help="print the figures every R runs")
    c.set_defaults(func=_crash)
    f = sub.add_parser("faults", help="inject storage faults; each must be detected",
                       description="Inject faults into a small journal: a torn tail, a flipped byte, a deleted or "
                                   "duplicated entry, snapshots that disagree with the journal, a full disk and "
                                   "write errors during a commit. Prints a table; exits 1 if any is undetected.")
    f.set_defaults(func=_faults)
