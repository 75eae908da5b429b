"""The self-test harness: `dvp selftest crash` (SIGKILL and restart, compared with a clean run) and
`dvp selftest faults` (injected storage faults, each to be detected).

`crash.crash(runs, seed)` gives a `CrashReport`; `faults.faults()` gives one
`FaultResult` per injected fault; `register(subparsers)` adds `dvp selftest`
(entry point `dvp.commands`).
"""

from __future__ import annotations


def register(subparsers) -> None:
    """Add `dvp selftest` to the `dvp` command (entry point `dvp.commands`)."""
    from .cli import register as add

    add(subparsers)
