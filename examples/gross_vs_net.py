"""Replay one settlement day twice, gross and net, and compare what each settled and drew.

Run:
    python gross_vs_net.py                      # the example day net.jsonl, beside this file
    python gross_vs_net.py DAY.jsonl            # any trade file
    python gross_vs_net.py --generate 20000     # a generated day (benchmarks.tradegen), hourly net cycles

Gross (real-time gross settlement) settles each DvP on its own as soon as
both parties can cover it, queueing the rest; net (deferred net
settlement) collects the day's trades into cycles and settles each
participant's net position once per cycle, unwinding a participant that
cannot cover its net debit. Gross draws more liquidity and settles
sooner; net draws less and makes trades wait for the cycle's end.

For each mode it prints: trades settled (of all), failed by reason,
liquidity drawn per cash asset (opening balance minus the lowest balance,
summed over participants), and the mean delay from arrival to settlement.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Any

from protocols.replay import replay

HERE = os.path.dirname(os.path.abspath(__file__))


def grouped(decimal: str) -> str:
    """A decimal string with thousands separators ("1398250.00" -> "1,398,250.00"), without a float."""
    whole, dot, fraction = decimal.partition(".")
    return f"{int(whole):,}{dot}{fraction}"


def run(path: str, mode: str) -> dict[str, Any]:
    """Replay `path` in `mode` on an in-memory ledger; return the report's metrics."""
    done = replay(path, mode=mode)
    try:
        return done.summary()
    finally:
        done.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Replay a day gross and net, and compare them.")
    parser.add_argument("file", nargs="?", default=os.path.join(HERE, "net.jsonl"), help="a trade file")
    parser.add_argument("--generate", type=int, metavar="TRADES", help="replay a generated day of this many trades")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.file
        if args.generate:
            from benchmarks.tradegen import generate

            path = os.path.join(tmp, "day.jsonl")
            generate(path, args.generate, participants=50, short_fraction=0.05, netting_cycle="PT1H")
        print(f"day: {path}")
        figures = {mode: run(path, mode) for mode in ("gross", "net")}
    for mode, m in figures.items():
        total = m["settled"] + m["failed"] + m["queued"]
        failed = ", ".join(f"{reason} {count}" for reason, count in sorted(m["failed_by_reason"].items())) or "none"
        drawn = ", ".join(f"{asset} {grouped(amount)}" for asset, amount in sorted(m["liquidity_used"].items()))
        print(f"{mode:>5}: settled {m['settled']:,} of {total:,} ({m['settlement_rate']}), failed: {failed}; "
              f"liquidity drawn {drawn}; mean delay {m['delay_seconds_mean']} s")
    net = figures["net"]
    if "netting_ratio_value" in net:
        print(f"  net: {net['cycles']} cycles, netting ratio {net['netting_ratio_value']} by value, "
              f"{net['movements']['net']:,} movements instead of {net['movements']['gross']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
