"""Collateral: haircut schedules, eligibility and valuation, to the cent.

A haircut schedule gives, per asset class, haircuts by residual-maturity
bucket; a class absent from the schedule is not eligible. The default
schedule follows the spirit of central-bank schedules: bills lowest, notes
and long bonds higher with maturity, corporates and equities higher still.
The operator may replace a class's haircuts (`SetHaircuts`), and a repo may
override the haircut for its own agreement.

Valuation (docs/rules.md, "Intraday repo"):

- market value `MV = quantity * price / basis`, rounded half-up to the cash
  asset's minor unit (`basis` is 100 for `per_100` prices, 1 for `per_unit`);
- collateral value `CV = floor(MV * (1 - h))`, rounded down, in the cash
  lender's favour.

All arithmetic is on integers and exact fractions: no float anywhere.
"""

from __future__ import annotations

import datetime
import functools
from fractions import Fraction

import msgspec

from engine import codes as C
from engine.protocol import Authority, Handler, Protocol
from engine.records import ROLE_OPERATOR, Asset, Command
from engine.state import State

from .prices import BASIS

NAME = "collateral"
BAD_HAIRCUT = 400
INELIGIBLE = 401
CODES = {BAD_HAIRCUT: "bad_haircut", INELIGIBLE: "ineligible_collateral"}
SECONDS_PER_DAY = 86_400

# class -> ((residual years up to, haircut), ...); None: any longer maturity.
DEFAULT_SCHEDULE: dict[str, tuple[tuple[int | None, str], ...]] = {
    "ust_bill": ((1, "0.005"),),
    "ust_note": ((1, "0.01"), (3, "0.015"), (5, "0.02"), (10, "0.03")),
    "ust_bond": ((10, "0.03"), (20, "0.04"), (None, "0.05")),
    "agency": ((5, "0.02"), (None, "0.04")),
    "corporate": ((3, "0.06"), (7, "0.08"), (None, "0.12")),
    "mmf": ((None, "0.05"),),
    "equity": ((None, "0.25"),),
}


class SetHaircuts(Command, tag="set_haircuts", frozen=True):
    """Replace the haircut of each named asset class, for every maturity (operator)."""

    haircuts: dict[str, str]


class Schedule(msgspec.Struct):
    # class -> [[years or 0 for "any longer", haircut], ...] (0 stands for None: msgpack-friendly)
    classes: dict[str, list[tuple[int, str]]] = {}


@functools.lru_cache(maxsize=1 << 12)
def parse_haircut(text: str) -> Fraction | None:
    """A haircut as an exact fraction in [0, 1), from a decimal string; None if invalid."""
    if not isinstance(text, str) or not text.isascii() or not text or text.count(".") > 1:
        return None
    if text.startswith(".") or text.endswith(".") or not text.replace(".", "", 1).isdigit():
        return None
    value = Fraction(text)
    return value if 0 <= value < 1 else None


def default_schedule() -> Schedule:
    return Schedule(classes={cls: [(years or 0, h) for years, h in buckets] for cls, buckets in DEFAULT_SCHEDULE.items()})


_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=1 << 12)
def _maturity_ordinal(text: str) -> int | None:
    try:
        return datetime.date.fromisoformat(text).toordinal()
    except ValueError:
        return None


def residual_days(asset: Asset, now: int) -> int | None:
    """Days from `now`'s UTC date to the asset's maturity (None if it has no maturity date)."""
    if not asset.maturity:
        return None
    maturity = _maturity_ordinal(asset.maturity)
    if maturity is None:
        return None
    return maturity - (_EPOCH_ORDINAL + now // SECONDS_PER_DAY)


def haircut_for(schedule: Schedule, asset: Asset, now: int) -> Fraction | None:
    """The schedule's haircut for `asset` at `now`, or None if it is not eligible.

    Not eligible: a class absent from the schedule, an asset past its
    maturity, or one maturing after the class's last bucket. An asset with
    no maturity date takes its class's longest bucket.
    """
    buckets = schedule.classes.get(asset.asset_class)
    if not buckets:
        return None
    days = residual_days(asset, now)
    if days is not None and days <= 0:
        return None
    today = _EPOCH_ORDINAL + now // SECONDS_PER_DAY
    for years, haircut in buckets:
        if years == 0 or (days is not None and today + days <= _years_later(today, years)):
            return parse_haircut(haircut)
    return parse_haircut(buckets[-1][1]) if days is None else None


@functools.lru_cache(maxsize=1 << 12)
def _years_later(ordinal: int, years: int) -> int:
    """The date `years` calendar years after a date, as an ordinal (29 February gives 28 February).

    A bucket "up to N years" holds an asset maturing on or before that date:
    a note maturing exactly three years from today is in the three-year bucket.
    """
    day = datetime.date.fromordinal(ordinal)
    try:
        return day.replace(year=day.year + years).toordinal()
    except ValueError:  # 29 February into a year that has none
        return day.replace(year=day.year + years, day=28).toordinal()


def market_value(quantity: int, price: Fraction, security: Asset, cash: Asset) -> int:
    """MV in the cash asset's minor units: quantity * price / basis, half-up."""
    numerator = quantity * price.numerator * 10**cash.decimals
    denominator = price.denominator * BASIS[security.price_basis] * 10**security.decimals
    value: int = (2 * numerator + denominator) // (2 * denominator)
    return value


def collateral_value(mv: int, haircut: Fraction) -> int:
    """CV = floor(MV * (1 - h)), rounded down in the lender's favour."""
    return mv * (haircut.denominator - haircut.numerator) // haircut.denominator


def set_haircuts(state: State, cmd: SetHaircuts, auth: Authority) -> int:
    if not state.has_role(auth, ROLE_OPERATOR):
        return C.UNAUTHORIZED
    if any(parse_haircut(h) is None for h in cmd.haircuts.values()) or not cmd.haircuts:
        return BAD_HAIRCUT
    schedule: Schedule = state.protocols[NAME]
    for cls, h in sorted(cmd.haircuts.items()):
        state.put(schedule.classes, cls, [(0, h)])
    return C.OK


class Collateral(Protocol):
    name = NAME
    state_type = Schedule
    codes = CODES

    def new_state(self) -> Schedule:
        return default_schedule()

    def handlers(self) -> dict[type[Command], Handler]:
        return {SetHaircuts: set_haircuts}
