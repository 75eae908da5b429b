"""Prices: the latest price of each asset, signed by an oracle.

A price is a positive decimal string quoted against the asset's
`price_basis` (`per_100` of face for bonds and bills, `per_unit` for fund
shares and equities). State keeps each asset's latest price and its time.
Market value, in the cash asset's minor units, is
`MV = quantity * price / basis`, rounded half-up (docs/rules.md).
"""

from __future__ import annotations

import functools
from fractions import Fraction

import msgspec

from engine import codes as C
from engine.protocol import Authority, Handler, Protocol
from engine.records import ROLE_ORACLE, Asset, Command
from engine.state import State

NAME = "prices"
BAD_PRICE = 300
CODES = {BAD_PRICE: "bad_price"}
BASIS = {"per_100": 100, "per_unit": 1}


class SetPrice(Command, tag="set_price", frozen=True):
    asset: str
    price: str


class Quote(msgspec.Struct, frozen=True, array_like=True, gc=False):
    price: str
    at: int


class PriceBook(msgspec.Struct):
    latest: dict[str, Quote] = {}


@functools.lru_cache(maxsize=1 << 14)
def parse_price(text: str) -> Fraction | None:
    """Return a positive decimal price as an exact fraction, or None."""
    if not isinstance(text, str) or not text.isascii() or not text or text.count(".") > 1:
        return None
    if not text.replace(".", "", 1).isdigit() or text.startswith("."):
        return None
    if text.endswith("."):
        return None
    value = Fraction(text)
    return value if value > 0 else None


def half_up(value: Fraction) -> int:
    """Round to the nearest integer, halves away from zero (half-up for positive values)."""
    return int((value * 2 + 1) // 2) if value >= 0 else -int((-value * 2 + 1) // 2)


def market_value(quantity: int, price: Fraction, security: Asset, cash: Asset) -> int:
    """MV of `quantity` minor units of `security` at `price`, in `cash` minor units, half-up."""
    units = Fraction(quantity, 10**security.decimals)
    return half_up(units * price / BASIS[security.price_basis] * 10**cash.decimals)


def set_price(state: State, cmd: SetPrice, auth: Authority) -> int:
    if not state.has_role(auth, ROLE_ORACLE):
        return C.UNAUTHORIZED
    if cmd.asset not in state.assets:
        return C.UNKNOWN_ASSET
    if parse_price(cmd.price) is None:
        return BAD_PRICE
    state.put(state.protocols[NAME].latest, cmd.asset, Quote(cmd.price, state.now))
    state.emit(NAME, "price", cmd.asset, {"price": cmd.price})
    state.notify("price", cmd.asset)
    return C.OK


def latest(state: State, asset: str) -> Fraction | None:
    book: PriceBook | None = state.protocols.get(NAME)
    quote = book.latest.get(asset) if book else None
    return parse_price(quote.price) if quote else None


class Prices(Protocol):
    name = NAME
    state_type = PriceBook
    codes = CODES

    def handlers(self) -> dict[type[Command], Handler]:
        return {SetPrice: set_price}
