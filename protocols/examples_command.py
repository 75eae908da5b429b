"""`dvp examples [DIR]`: copy the example trade files and programs out of the installed package.

Takes a directory (default `dvp-examples`); gives the example files
(`protocols.examples`, the project's `examples/` folder, shipped in the
wheel) copied into it, so that `pip install dvp-settlement` is enough to
replay one: `dvp examples x && dvp replay x/gross.jsonl`. An existing file
is not overwritten unless `--force`.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import resources

SUFFIXES = (".jsonl", ".csv", ".py", ".md")


def copy_examples(directory: str, force: bool = False) -> list[str]:
    """Copy every example file into `directory`; return the names copied."""
    source = resources.files("protocols.examples")
    os.makedirs(directory, exist_ok=True)
    copied = []
    for item in sorted(source.iterdir(), key=lambda p: p.name):
        name = item.name
        if not name.endswith(SUFFIXES) or name == "__init__.py":
            continue
        target = os.path.join(directory, name)
        if os.path.exists(target) and not force:
            raise FileExistsError(f"{target}: exists (use --force to overwrite)")
        with open(target, "wb") as out:
            out.write(item.read_bytes())
        copied.append(name)
    return copied


def _main(args: argparse.Namespace) -> int:
    try:
        copied = copy_examples(args.directory, args.force)
    except OSError as exc:
        print(f"dvp examples: {exc}", file=sys.stderr)
        return 1
    print(f"copied {len(copied)} files into {args.directory}: {', '.join(copied)}")
    print(f"try: dvp replay {os.path.join(args.directory, 'gross.jsonl')}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("examples", help="copy the example trade files and programs into a directory",
                              description="Copy the example trade files (gross, net, repo and cross-chain days) "
                                          "and example programs out of the installed package.")
    p.add_argument("directory", nargs="?", default="dvp-examples", help="where to copy them (default %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.set_defaults(func=_main)
