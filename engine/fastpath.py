"""Switches for the fast paths: each one can be turned off to run its general path.

A fast path computes what a general path computes, with less work: the
engine's batch hot path for DvP-shaped `Move` pairs, the inline checks of a
`dvp.Settle`, the indexed recycling of queued trades and repo legs, and the
one-tick revaluation of repos. Each must give exactly the codes, events and
state of its general path; the differential tests (`tests/test_fast_path.py`,
`tests/test_differential.py`) run random work both ways and compare journal
hashes. Turning a path off is for those tests and for diagnosing a doubt in
production ("does the general path agree?"); results never depend on it.

    from engine.fastpath import general_paths
    with general_paths("dvp.indexed_recycling"):
        ...  # this code runs the general path
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

NAMES = ("engine.move_pairs", "dvp.inline_settle", "dvp.indexed_recycling", "repo.revalue_holders",
         "repo.indexed_recycling")


class Switches:
    """One boolean per fast path (True: the fast path runs)."""

    __slots__ = ("move_pairs", "dvp_inline_settle", "dvp_indexed_recycling", "repo_revalue_holders",
                 "repo_indexed_recycling")

    def __init__(self) -> None:
        for attribute in self.__slots__:
            setattr(self, attribute, True)


switches = Switches()


def _attribute(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"unknown fast path {name!r} (known: {', '.join(NAMES)})")
    return name.split(".", 1)[1] if name.startswith("engine.") else name.replace(".", "_")


@contextmanager
def general_paths(*names: str) -> Iterator[None]:
    """Run the named fast paths' general paths inside the block (all of them when none is named)."""
    attributes = [_attribute(n) for n in (names or NAMES)]
    saved = [getattr(switches, a) for a in attributes]
    try:
        for a in attributes:
            setattr(switches, a, False)
        yield
    finally:
        for a, value in zip(attributes, saved):
            setattr(switches, a, value)
