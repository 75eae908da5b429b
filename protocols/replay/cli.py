"""`dvp replay`: replay a trade file from the command line, safely for scripts.

Takes the command line; gives the summary table (and, with `--report`,
the JSON report; with `--iso-out`, the outcomes as ISO 20022 messages,
written by `protocols.iso20022` after the replay), and an exit status: 0 when every line was accepted, 3
when some lines were rejected (the report is still complete), 1 for a
fatal error (one line on stderr), 130 when interrupted. An interrupted
durable replay leaves its journal valid up to its last committed entry;
`--resume` continues it to exactly what an uninterrupted run gives.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_REJECTED = 3
EXIT_INTERRUPTED = 130

EPILOG = """\
exit status:
  0    every line was accepted
  3    some lines were rejected (the report lists them; everything else applied)
  1    a fatal error (one line on stderr; --debug shows the traceback)
  130  interrupted (Ctrl-C): the journal is valid up to its last entry; --resume continues it

A journal that exists already is refused unless --resume (continue it) or
--overwrite (start over) is given.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "replay", help="replay a recorded trade file (JSON Lines or CSV)",
        description="Replay a recorded trade file through the ledger: set-up events first, then timed events "
                    "in `at` order; print a summary and, with --report, write the JSON report.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", help="the trade file (.jsonl or .csv)")
    p.add_argument("--mode", choices=("gross", "net"), help="settlement mode (default: the file's config, else gross)")
    p.add_argument("--report", metavar="PATH", help="write the JSON report here (whole, or not at all)")
    p.add_argument("--trades-csv", metavar="PATH", help="write one row per trade as CSV (amounts as decimal strings, "
                                                         "times in ISO 8601)")
    p.add_argument("--participants-csv", metavar="PATH", help="write one row per participant and asset as CSV")
    p.add_argument("--db", metavar="PATH",
                   help="keep the journal: a SQLite path or a postgresql:// URL (audit it with dvp verify)")
    p.add_argument("--format", choices=("jsonl", "csv"), help="input format (default: by extension, else by content)")
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the interrupted replay whose journal is at --db")
    again.add_argument("--overwrite", action="store_true", help="delete the journal at --db and start over")
    p.add_argument("--batch-commands", type=int, default=None, metavar="N",
                   help="commands per journal entry (default 65,536); a resumed replay must use the same")
    p.add_argument("--iso-out", metavar="DIR", help="write the outcomes as ISO 20022 messages here: sese.024, sese.025, "
                   "colr.003, colr.004 (extra iso20022; docs/iso20022.md)")
    p.add_argument("--iso-parties", metavar="FILE", help="participant,bic,lei for --iso-out (default: generated codes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar, even on a terminal")
    p.add_argument("--debug", action="store_true", help="show the traceback of a fatal error")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from . import ResumeError, replay

    if (args.resume or args.overwrite) and not args.db:
        print("dvp replay: --resume and --overwrite need --db PATH", file=sys.stderr)
        return EXIT_FATAL
    started = time.perf_counter()
    bar = _Bar(enabled=sys.stderr.isatty() and not args.no_progress)
    run = None
    try:
        if args.iso_out:  # the outcomes stay in this process, then go out as ISO 20022 (protocols.iso20022)
            from protocols.iso20022 import check_out_dir, write_outcomes
            check_out_dir(args.iso_out)
        with bar:
            extra = {"batch_commands": args.batch_commands} if args.batch_commands else {}
            run = replay(args.file, mode=args.mode, db=args.db, fmt=args.format,
                         report=None if args.iso_out else args.report,
                         resume=args.resume, overwrite=args.overwrite, progress=bar.update,
                         trades_csv=args.trades_csv, participants_csv=args.participants_csv,
                         keep_rows=bool(args.iso_out), **extra)
        if args.iso_out:
            if args.report:
                run.write_report(args.report)
            iso = write_outcomes(run, args.iso_out, parties_path=args.iso_parties)
        _print_summary(run, time.perf_counter() - started, args.report)
        if args.iso_out:
            print(f"ISO 20022 written to {args.iso_out}: {iso.sese024:,} sese.024, {iso.sese025:,} sese.025, "
                  f"{iso.colr003:,} colr.003, {iso.colr004:,} colr.004; skipped (no message carries them): "
                  f"{len(iso.skipped):,}")
        return EXIT_REJECTED if run.rejected else EXIT_OK
    except KeyboardInterrupt:
        return _interrupted(args)
    except Exception as exc:  # noqa: BLE001 - every error is one line; --debug shows where
        if isinstance(exc.__cause__, KeyboardInterrupt):  # Ctrl-C inside a commit: the ledger stopped there
            return _interrupted(args)
        if args.debug:
            traceback.print_exc()
        known = (OSError, ValueError, ResumeError)
        text = str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"
        print(f"dvp replay: {text.splitlines()[0] if text else type(exc).__name__}", file=sys.stderr)
        return EXIT_FATAL
    finally:
        if run is not None:
            run.close()


def _interrupted(args: argparse.Namespace) -> int:
    where = f"; the journal at {args.db} is valid up to its last entry: --resume continues it" if args.db else ""
    print(f"dvp replay: interrupted{where}", file=sys.stderr)
    return EXIT_INTERRUPTED


class _Bar:
    """A progress bar of timed events done (a rate and the time left), on a terminal only."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress = None
        self.task = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TimeRemainingColumn
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task):
                    return Text(f"{task.speed:,.0f} trades/s" if task.speed else "", style="cyan")

            self.progress = Progress("replay", BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(),
                                     transient=True)
            self.progress.__enter__()
            self.task = self.progress.add_task("trades", total=None)
        return self

    def update(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False


def _print_summary(run, seconds: float, report_path: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics = run.summary()
    console = Console()
    table = Table(title=f"dvp replay {run.path} ({run.mode} mode)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("events read", f"{run.events_read:,}")
    table.add_row("lines rejected", f"{len(run.rejected):,}")
    table.add_row("trades settled", f"{metrics['settled']:,}")
    for reason, n in metrics["failed_by_reason"].items():
        table.add_row(f"trades failed: {reason}", f"{n:,}")
    table.add_row("trades still queued", f"{metrics['queued']:,}")
    for asset, value in metrics["gross_value"].items():
        table.add_row(f"gross value {asset}", _thousands(value))
    if run.mode == "net":
        table.add_row("netting ratio (value)", metrics["netting_ratio_value"])
        table.add_row("netting ratio (movements)", metrics["netting_ratio_movements"])
    for asset, value in metrics["liquidity_used"].items():
        table.add_row(f"liquidity drawn {asset}", _thousands(value))
    table.add_row("seconds", f"{seconds:,.2f}")
    if seconds > 0 and run.trade_count:
        table.add_row("trades per second", f"{run.trade_count / seconds:,.0f}")
    console.print(table)
    for bad in sorted(run.rejected, key=lambda b: b.line)[:20]:
        console.print(f"[yellow]line {bad.line}[/]: {bad.reason}", markup=True, highlight=False)
    if len(run.rejected) > 20:
        console.print(f"... and {len(run.rejected) - 20:,} more rejected lines (see --report)")
    chain = run.ledger
    console.print(f"head  {chain.head_hash.hex()}\nstate {chain.digest().hex()}")
    if report_path:
        console.print(f"report written to {report_path} ({run.trade_count:,} trades)")
    if run.db:
        console.print(f"journal kept at {run.db}: audit it with `dvp verify {run.db}`")


def _thousands(value: str) -> str:
    """1234567.89 as 1,234,567.89."""
    sign = "-" if value.startswith("-") else ""
    whole, dot, frac = value.lstrip("-").partition(".")
    return f"{sign}{int(whole):,}{dot}{frac}"
