"""What a ledger refuses before a batch runs, and what it shows after one failed.

Takes envelopes and results; gives the two exceptions of the ledger
(`MalformedEnvelope`: nothing of the batch applied; `LedgerFault`: the
ledger stopped), the 64-bit check of an envelope's integers, the stand-in
state whose every read raises once a stopped ledger cannot rebuild its
state, and the splice that puts refused envelopes' codes back in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .records import Envelope, Signature


class MalformedEnvelope(ValueError):
    """A submitted envelope cannot be decoded; nothing of the batch was applied."""


class LedgerFault(RuntimeError):
    """The ledger stopped after an internal or storage failure; reopen it."""


INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def check_envelopes(envelopes: Sequence[Envelope]) -> None:
    """Refuse (MalformedEnvelope) an envelope whose integers do not fit the journal's 64 bits, before anything runs."""
    for index, env in enumerate(envelopes):
        if type(env) is not Envelope:
            raise MalformedEnvelope(f"envelope {index}: expected an Envelope, got {type(env).__name__}")
        value = env.not_after
        if type(value) is not int or not INT64_MIN <= value <= INT64_MAX:
            raise MalformedEnvelope(f"envelope {index}: not_after {_short(value)} is not an integer of 64 bits")
        for s in env.signatures:
            if type(s) is not Signature or type(s.seq) is not int or not INT64_MIN <= s.seq <= INT64_MAX:
                raise MalformedEnvelope(f"envelope {index}: a signature's seq {_short(getattr(s, 'seq', s))} "
                                        "is not an integer of 64 bits")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


class Unreadable:
    """The state of a ledger that stopped and could not rebuild it: every read raises LedgerFault."""

    def __init__(self, message: str):
        object.__setattr__(self, "_message", message)

    def __getattr__(self, name: str) -> Any:
        raise LedgerFault(object.__getattribute__(self, "_message"))

    def __setattr__(self, name: str, value: Any) -> None:
        raise LedgerFault(object.__getattribute__(self, "_message"))


def splice(results: list[int], sizes: list[int], refused: Sequence[tuple[int, int, int]], count: int) -> list[int]:
    """Results for every envelope of a batch: the applied envelopes' (of `sizes` commands each, in order)
    with (position, code, commands) of each refused one in its place."""
    out: list[int] = []
    at = 0
    applied = iter(sizes)
    refused_at = {position: (code, n) for position, code, n in refused}
    for position in range(count):
        if position in refused_at:
            code, n = refused_at[position]
            out.extend([code] * n)
        else:
            n = next(applied)
            out.extend(results[at:at + n])
            at += n
    return out
