"""The ISO 20022 bridge: settlement instructions in, status, confirmations and margin calls out.

Takes trade files, replays and ISO 20022 XML; gives, through
`python-iso20022`'s xsdata bindings (optional extra `iso20022`):

    instruct.py   export: a trade file's trades -> sese.023 (one per trade), setup.jsonl, parties.csv
    importing.py  import: sese.023 (DVP, RVP, FOP; two-sided or matched) -> a trade file
    status.py     a finished replay -> sese.024, sese.025, colr.003, colr.004
    mapping.py    the element paths and value conversions the three share
    xmlio.py      hardened parsing (no entities, no external references) and serialising
    validate.py   the schemas' rules, from the bindings' metadata
    parties.py    participant ids <-> BIC and LEI (a CSV file; deterministic codes when none)
    files.py      output written whole or not at all
    cli.py        `dvp iso import` and `dvp iso export`

docs/iso20022.md has the field-by-field mapping of every message. Nothing
here is imported until used, so `dvp` runs without the extra.
"""

from __future__ import annotations


def register(subparsers) -> None:
    """Add `dvp iso` to the `dvp` command (entry point `dvp.commands`)."""
    from .cli import register as add

    add(subparsers)


def write_outcomes(run, out_dir: str, **options):
    """Write a finished replay's outcomes as ISO 20022 messages (see `status.write_outcomes`)."""
    from .status import write_outcomes as write

    return write(run, out_dir, **options)


def check_out_dir(out_dir: str) -> None:
    """Refuse, before a long run rather than after it, an output folder in use or a missing extra."""
    from . import messages  # noqa: F401 - ImportError naming the extra to install
    from .files import check_folder

    check_folder(out_dir)
