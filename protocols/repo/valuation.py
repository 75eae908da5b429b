"""Repo valuation: interest by the second, haircuts, market and collateral value, exposure.

Takes a repo (or the terms of one) and the ledger state; gives integers in
the cash asset's minor units, computed with exact fractions:
`I(t) = principal * rate * seconds / (D * 86400)` half-up, `MV` half-up,
`CV = floor(MV * (1 - h))`, `E = principal + I - M`. Also says whether a
repo's parties may settle now (`blocked`).
"""

from __future__ import annotations

import functools
from fractions import Fraction

from engine import codes as C
from engine.state import State

from .. import collateral, prices
from .records import SECONDS_PER_DAY, OpenRepo, Repo

# ---------------------------------------------------------------- valuation


@functools.lru_cache(maxsize=1 << 14)
def parse_rate(text: str) -> Fraction | None:
    if not isinstance(text, str) or not text.isascii() or not text or text.count(".") > 1:
        return None
    if text.startswith(".") or text.endswith(".") or not text.replace(".", "", 1).isdigit():
        return None
    return Fraction(text)


def interest(state: State, r: Repo, t: int) -> int:
    """I(t) = principal * rate * seconds / (D * 86400), half-up; accrual stops at `end`."""
    seconds = max(0, min(t, r.end) - r.start)
    rate = parse_rate(r.rate)
    assert rate is not None, "rates are checked when the repo opens"
    days = 365 if state.assets[r.cash_asset].day_count == "ACT/365" else 360
    numerator = r.principal * rate.numerator * seconds
    denominator = rate.denominator * days * SECONDS_PER_DAY
    return (2 * numerator + denominator) // (2 * denominator)


def haircut(state: State, r: Repo | OpenRepo, asset_id: str | None = None) -> Fraction | None:
    """The repo's haircut on `asset_id` (default: its collateral), or None if that asset is not eligible.

    Eligibility is the schedule's; an agreement's override changes `h` only.
    """
    scheduled = collateral.haircut_for(state.protocols[collateral.NAME], state.assets[asset_id or r.collateral],
                                       state.now)
    if scheduled is None or not r.haircut:
        return scheduled
    return collateral.parse_haircut(r.haircut)


def blocked(state: State, r: Repo | OpenRepo, assets: tuple[str, ...],
             parties: tuple[str, ...] | None = None) -> int:
    """Why the repo's parties (or those named) cannot settle in `assets` now (OK if they can)."""
    parties = parties or (r.borrower, r.lender)
    parts = state.participants
    if any(parts[p].status for p in parties):
        return C.PARTICIPANT_INACTIVE
    if state.frozen and any(state.is_frozen(p, a) for p in parties for a in assets):
        return C.ACCOUNT_FROZEN
    return C.OK


def lender_at_fault(state: State, r: Repo, assets: tuple[str, ...]) -> bool:
    """The lender alone is blocked (suspended, or frozen in `assets`): the borrower must not default for it."""
    return bool(blocked(state, r, assets, (r.lender,))) and not blocked(state, r, assets, (r.borrower,))


def values(state: State, asset_id: str, quantity: int, cash_asset: str, h: Fraction | None) -> tuple[int, int] | None:
    """(MV, CV) of a collateral position at the latest price; None without a price."""
    price = prices.latest(state, asset_id)
    if price is None:
        return None
    mv = collateral.market_value(quantity, price, state.assets[asset_id], state.assets[cash_asset])
    return mv, (collateral.collateral_value(mv, h) if h is not None else 0)


def exposure(state: State, r: Repo, t: int) -> int:
    return r.principal + interest(state, r, t) - r.margin
