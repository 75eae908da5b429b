"""The `dvp` command: the engine's own subcommands plus those registered by plugins.

`demo`, `verify` and `serve` (engine/service/server.py) live here. Protocols and benchmarks add theirs through
the entry-point group `dvp.commands`: each entry point is a function
`register(subparsers)` that adds a subparser and sets `func` on it, which is
called with the parsed arguments and returns the exit status.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

COMMANDS_GROUP = "dvp.commands"


def _demo(args: argparse.Namespace) -> int:
    from .demo import print_demo

    return print_demo(args.db)


def _verify(args: argparse.Namespace) -> int:
    from .journal import JournalError
    from .verify import verify_journal

    try:
        report = verify_journal(args.path)
    except (JournalError, FileNotFoundError) as exc:
        print(f"dvp verify: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"dvp verify: OK: {report.path}")
    print(f"  chain      {report.chain_id}")
    print(f"  entries    {report.entries} (commands {report.commands}, signatures {report.signatures})")
    print(f"  snapshots  {report.snapshots} checked")
    print(f"  head       {report.head}")
    print(f"  state      {report.state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dvp", description="Atomic DvP and repo settlement engine")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a short end-to-end scenario and print what happened")
    demo.add_argument("--db", default=":memory:", help="keep the journal in this SQLite file (new path)")
    demo.set_defaults(func=_demo)
    verify = sub.add_parser("verify", help="re-check a journal: hash chain, signatures, state digests")
    verify.add_argument("path", help="the SQLite journal")
    verify.set_defaults(func=_verify)
    from .service.server import add_parser as add_serve

    add_serve(sub)
    for ep in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            ep.load()(sub)
        except Exception as exc:  # a broken or partly installed plugin must not take the CLI down
            print(f"dvp: subcommand {ep.name!r} unavailable: {exc}", file=sys.stderr)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
