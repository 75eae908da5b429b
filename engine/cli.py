"""The `dvp` command: the engine's own subcommands plus those registered by plugins.

`demo`, `verify`, `copy` and `serve` (engine/service/server.py) live here; a journal is named by a SQLite path
or a `postgresql://` URL wherever one is taken. Protocols and benchmarks add theirs through
the entry-point group `dvp.commands`: each entry point is a function
`register(subparsers)` that adds a subparser and sets `func` on it, which is
called with the parsed arguments and returns the exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from importlib import metadata

COMMANDS_GROUP = "dvp.commands"


def _demo(args: argparse.Namespace) -> int:
    from .demo import print_demo
    from .journal import JournalError

    try:
        return print_demo(args.db)
    except (JournalError, OSError) as exc:
        print(f"dvp demo: FAILED: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _verify(args: argparse.Namespace) -> int:
    from .journal import JournalError
    from .verify import verify_journal

    bar = None
    try:
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            bar = Progress("verify", BarColumn(), MofNCompleteColumn(), TextColumn("entries, {task.fields[commands]:,} "
                                                                                   "commands"),
                           TimeRemainingColumn(), transient=True)
            bar.__enter__()
            task = bar.add_task("entries", total=None, commands=0)

            def progress(done: int, total: int, commands: int) -> None:
                bar.update(task, completed=done, total=total, commands=commands)
        else:
            progress = None
        report = verify_journal(args.path, progress=progress, expect_head=args.expect_head)
    except (JournalError, OSError, ValueError) as exc:
        print(f"dvp verify: FAILED: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    print(f"dvp verify: OK: {report.path}")
    print(f"  chain      {report.chain_id}")
    print(f"  entries    {report.entries} (commands {report.commands}, signatures {report.signatures})")
    print(f"  snapshots  {report.snapshots} checked")
    print(f"  head       {report.head}")
    print(f"  state      {report.state}")
    print(f"  receipt    {report.receipt}" + ("  (matches --expect-head)" if args.expect_head else ""))
    return 0


def _copy(args: argparse.Namespace) -> int:
    from .journal import JournalError
    from .journal_copy import copy_journal

    try:
        report = copy_journal(args.source, args.destination)
    except (JournalError, OSError) as exc:
        print(f"dvp copy: FAILED: {_one_line(exc)}", file=sys.stderr)
        return 1
    print(f"dvp copy: OK: {report.source} -> {report.destination}")
    print(f"  entries    {report.entries} (snapshots {report.snapshots}), every one checked before it was written")
    print(f"  head       {report.head} (both ends)")
    print(f"  state      {report.state} (both ends)")
    return 0


def _version() -> str:
    try:
        return metadata.version("dvp-settlement")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvp", description="Atomic DvP and repo settlement engine on a permissioned, append-only ledger.",
        epilog="Every error is one line on stderr (--debug shows the traceback); Ctrl-C exits 130.")
    parser.add_argument("--version", action="version", version=f"dvp {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    parser.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                        help="log operational events (batches, cycles, faults) on stderr at this level "
                             "(default %(default)s); never mixed into a report")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run a short end-to-end scenario and print what happened",
                          description="Run a short scenario end to end: genesis, admissions, mints, a linked "
                                      "DvP signed by both parties, and a forged command that is refused.")
    demo.add_argument("--db", default=":memory:",
                      help="keep the journal here: a new SQLite path or a postgresql:// URL")
    demo.set_defaults(func=_demo)
    verify = sub.add_parser("verify", help="re-check a journal: hash chain, signatures, state digests",
                            description="Audit a journal end to end: check the hash chain, verify every "
                                        "signature again, re-run every command from genesis and compare each "
                                        "entry's results, events and state digest with what was recorded, then "
                                        "check every snapshot. Exits 0 when all of it holds, 1 otherwise.")
    verify.add_argument("path", help="the journal: a SQLite file (opened read-only) or a postgresql:// URL")
    verify.add_argument("--expect-head", metavar="RECEIPT", default=None,
                        help="a head receipt kept earlier, SEQ:HASH (or HASH): fail unless the journal holds "
                             "that entry with that hash; a journal cut short is otherwise a valid chain")
    verify.set_defaults(func=_verify)
    copy = sub.add_parser("copy", help="copy a journal between SQLite and PostgreSQL, checking every entry",
                          description="Copy the journal SRC to the new journal DST (either may be a SQLite path "
                                      "or a postgresql:// URL), checking every entry and snapshot as it goes; "
                                      "all of it is written in one transaction, then DST is audited.")
    copy.add_argument("source", metavar="SRC", help="the journal to copy (read without a lock)")
    copy.add_argument("destination", metavar="DST", help="a new journal: a path that does not exist, or a "
                                                          "postgresql:// URL of a new or empty database")
    copy.set_defaults(func=_copy)

    from .service.server import add_parser as add_serve

    add_serve(sub)
    for ep in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            ep.load()(sub)
        except Exception as exc:  # a broken or partly installed plugin must not take the CLI down
            print(f"dvp: subcommand {ep.name!r} unavailable: {exc}", file=sys.stderr)
    return parser


EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand: any error is one line and exit 1 (`--debug`: the traceback); Ctrl-C, even while
    starting, is one line and exit 130."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(stream=sys.stderr, level=getattr(logging, args.log_level.upper()),
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
        return args.func(args)
    except KeyboardInterrupt:
        print("dvp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if debug:
            traceback.print_exc()
        print(f"dvp: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
