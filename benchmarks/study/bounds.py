"""Liquidity bounds: each participant's upper and lower bound of cash, from the day's own trades.

Takes a `Workload`; gives `Bounds` per participant and cash asset, in minor
units (Leinonen & Soramäki 1999):

- upper bound UB: the largest cumulative net debit the participant reaches
  under immediate settlement with no queue, trades in time order (file
  order for equal times). With UB as opening cash every trade settles on
  arrival.
- lower bound LB: its end-of-day multilateral net debit, max(0, -net). No
  model that settles everything can do with less.

Both come from one replay of the day through the real engine with the
no-queue model and ample openings (what each participant could pay and
deliver over the day), read off the replay's cash tracker, which follows
every movement in the order the ledger made it: UB = opening - lowest,
LB = max(0, opening - closing). The run must settle every trade on arrival
(it checks, and raises `StudyError` if not), so the order is the ledger's
own, repo legs and deliveries included.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import msgspec

from protocols.replay import replay
from protocols.tradefile import format_minor

from .models import MODEL_BY_NAME
from .workload import StudyError, Workload, model_config, source_line, write_derived

Key = tuple[str, str]  # (participant, cash asset)


class Bounds(msgspec.Struct):
    upper: dict[Key, int]
    lower: dict[Key, int]
    rejected: list[str] = []  # the lines every replay of the file rejects (line: reason), from the bounds run

    def at(self, numerator: int, denominator: int) -> dict[Key, int]:
        """Each participant's opening at x = numerator / denominator: LB + floor(x (UB - LB))."""
        return {k: self.lower[k] + (self.upper[k] - self.lower[k]) * numerator // denominator for k in self.upper}

    def total(self, which: str, asset: str) -> int:
        book = self.upper if which == "upper" else self.lower
        return sum(v for (_p, a), v in book.items() if a == asset)

    def describe(self, workload: Workload) -> dict[str, Any]:
        """{asset: {lower, upper, participants: {p: {lower, upper}}}} as decimal strings."""
        out: dict[str, Any] = {}
        for asset in workload.cash:
            d = workload.decimals(asset)
            out[asset] = {
                "lower": format_minor(self.total("lower", asset), d),
                "upper": format_minor(self.total("upper", asset), d),
                "participants": {p: {"lower": format_minor(self.lower[(p, asset)], d),
                                     "upper": format_minor(self.upper[(p, asset)], d)}
                                 for p in sorted(workload.participants)},
            }
        return out


def compute_bounds(workload: Workload, tmpdir: str | None = None) -> Bounds:
    """Replay the day under immediate settlement with ample openings; read UB and LB off it."""
    cash, securities = workload.ample()
    config = model_config(workload, MODEL_BY_NAME["rtgs_no_queue"].config)
    config.pop("partial_settlement", None)
    handle, path = tempfile.mkstemp(prefix="bounds-", suffix=".jsonl", dir=tmpdir)
    os.close(handle)
    try:
        head = write_derived(workload, path, config=config, cash=cash, securities=securities)
        run = replay(path, pipeline=False)
        try:
            late = [o for o in run.accounts.trades.values()
                    if o.kind in ("dvp", "deliver") and (o.status != "settled" or o.settled_at != o.queued_at)]
            if late:
                o = late[0]
                raise StudyError(f"{workload.path}: with ample openings, {o.kind} {o.id} (line "
                                 f"{source_line(workload, head, o.line)}) did not "
                                 f"settle on arrival ({o.status}, {o.reason or 'queued'}); the bounds need every "
                                 "trade to settle under immediate settlement")
            positions = run.accounts.liquidity.positions
            upper: dict[Key, int] = {}
            lower: dict[Key, int] = {}
            for party in workload.participants:
                for asset in workload.cash:
                    p = positions.get((party, asset))
                    upper[(party, asset)] = p.opening - p.lowest if p is not None else 0
                    lower[(party, asset)] = max(0, p.opening - p.balance) if p is not None else 0
            rejected = [f"line {source_line(workload, head, b.line)}: {b.reason}"
                        for b in sorted(run.rejected, key=lambda b: b.line)]
        finally:
            run.close()
    finally:
        os.remove(path)
    return Bounds(upper=upper, lower=lower, rejected=rejected)
