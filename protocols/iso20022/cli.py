"""`dvp iso`: import sese.023 instructions to a trade file, export a trade file's trades as sese.023.

Takes the command line; gives the files and an exit status: 0 when every
message (import) or line (export) was mapped, 3 when some were refused
(each named on stderr with its file, message id, element path and value;
everything else was written), 1 for a fatal error (one line on stderr;
`--debug` shows the traceback), 130 when interrupted (nothing written).

    dvp iso import XML... --setup FILE [--parties FILE] -o OUT.jsonl
    dvp iso export FILE -o DIR [--parties FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_REFUSED = 3
EXIT_INTERRUPTED = 130
SHOWN_MAX = 50  # refusals printed one per line; the rest are counted


def register(subparsers) -> None:
    iso = subparsers.add_parser("iso", help="ISO 20022: import sese.023 instructions, export trades as sese.023",
                                description="Bridge trade files and ISO 20022 settlement messages "
                                            "(docs/iso20022.md maps every field).")
    sub = iso.add_subparsers(dest="iso_command", metavar="COMMAND", help="import or export")
    sub.required = True
    imp = sub.add_parser("import", help="sese.023 documents to a trade file",
                         description="Map sese.023.001.11 instructions (DVP, RVP, FOP) to dvp and deliver events. "
                                     "A delivering and a receiving instruction of one trade match into one event; "
                                     "one marked MACH stands alone.")
    imp.add_argument("xml", nargs="+", metavar="XML", help="sese.023 files, or folders of *.xml files")
    imp.add_argument("--setup", required=True, metavar="FILE",
                     help="a trade file with the assets, participants and deposits (and timed lines to keep)")
    imp.add_argument("--parties", metavar="FILE",
                     help="CSV participant,bic,lei (default: the codes dvp iso export generates)")
    imp.add_argument("-o", "--output", required=True, metavar="OUT.jsonl", help="the trade file to write")
    imp.add_argument("--jobs", type=int, default=None, metavar="N",
                     help="worker processes reading documents (default: one per core from 2,000 documents)")
    imp.add_argument("--debug", action="store_true", help="show the traceback of a fatal error")
    imp.set_defaults(func=_import)
    exp = sub.add_parser("export", help="a trade file's trades as sese.023 documents",
                         description="Write one sese.023.001.11 per trade (dvp: DVP, deliver of a security: FOP), "
                                     "DIR/setup.jsonl (set-up and the lines no sese.023 carries) and "
                                     "DIR/parties.csv.")
    exp.add_argument("file", help="the trade file (.jsonl or .csv)")
    exp.add_argument("-o", "--output", required=True, metavar="DIR", help="a new (or empty) folder")
    exp.add_argument("--parties", metavar="FILE", help="CSV participant,bic,lei to use (default: generated)")
    exp.add_argument("--format", choices=("jsonl", "csv"), help="input format (default: by extension)")
    exp.add_argument("--debug", action="store_true", help="show the traceback of a fatal error")
    exp.set_defaults(func=_export)


def _run(args: argparse.Namespace, work) -> int:
    try:
        return work()
    except KeyboardInterrupt:
        print(f"dvp iso {args.iso_command}: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - one line; --debug shows where
        if args.debug:
            traceback.print_exc()
        known = (OSError, ValueError, ImportError)
        text = str(exc) if isinstance(exc, known) else f"{type(exc).__name__}: {exc}"
        print(f"dvp iso {args.iso_command}: {text.splitlines()[0] if text else type(exc).__name__}", file=sys.stderr)
        return EXIT_FATAL


def _refusals(errors: list) -> None:
    for error in errors[:SHOWN_MAX]:
        print(f"refused: {error}", file=sys.stderr)
    if len(errors) > SHOWN_MAX:
        print(f"... and {len(errors) - SHOWN_MAX:,} more refused", file=sys.stderr)


def _import(args: argparse.Namespace) -> int:
    def work() -> int:
        from .importing import import_files

        started = time.perf_counter()
        result = import_files(args.xml, args.setup, args.output, parties_path=args.parties, jobs=args.jobs)
        seconds = time.perf_counter() - started
        _refusals(result.errors)
        rate = f", {result.messages / seconds:,.0f} messages/s" if seconds > 0 and result.messages else ""
        print(f"{result.messages:,} messages read, {result.trades:,} trades written to {args.output} "
              f"({result.matched_pairs:,} from matched DELI/RECE pairs), {len(result.errors):,} refused"
              f" in {seconds:,.2f} s{rate}")
        return EXIT_REFUSED if result.errors else EXIT_OK

    return _run(args, work)


def _export(args: argparse.Namespace) -> int:
    def work() -> int:
        from .instruct import export

        started = time.perf_counter()
        result = export(args.file, args.output, fmt=args.format, parties_path=args.parties)
        seconds = time.perf_counter() - started
        _refusals(result.errors)
        for note in result.notes[:SHOWN_MAX]:
            print(f"note: {note}", file=sys.stderr)
        carried = ", ".join(f"{n:,} {kind}" for kind, n in sorted(result.carried.items()))
        rate = f", {result.messages / seconds:,.0f} messages/s" if seconds > 0 and result.messages else ""
        print(f"{result.messages:,} sese.023 written to {args.output}, {result.setup_lines:,} set-up lines"
              + (f" and {carried} lines no sese.023 carries" if carried else "") + " to setup.jsonl, "
              f"{len(result.errors):,} lines refused in {seconds:,.2f} s{rate}"
              + (f"; BICs and LEIs generated for {result.generated:,} participants" if result.generated else ""))
        return EXIT_REFUSED if result.errors else EXIT_OK

    return _run(args, work)
