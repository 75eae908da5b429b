"""DvP records: result codes, commands, the book, and how trades are keyed.

Takes nothing; gives the vocabulary the other DvP modules share: the
protocol's codes (100-199), its commands (`Settle`, `Instruct`, `Cancel`,
`Cutoff`, `ScheduleCutoff`), the state it keeps in the ledger (`Book` of
queued `Trade`s and unmatched `Waiting` instructions) and `trade_key`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.records import Command

NAME = "dvp"
OFFSET_TRADES_MAX = 100_000  # trades one liquidity pass considers, oldest first

TRADE_EXISTS = 101
UNKNOWN_TRADE = 102
SAME_PARTY = 103
WRONG_ASSET_KIND = 104
INSUFFICIENT_SECURITIES = 110
INSUFFICIENT_CASH = 111
PARTY_FROZEN = 112
PARTY_INACTIVE = 113
NOT_YET = 114
CODES = {
    TRADE_EXISTS: "trade_exists",
    UNKNOWN_TRADE: "unknown_trade",
    SAME_PARTY: "same_party",
    WRONG_ASSET_KIND: "wrong_asset_kind",
    INSUFFICIENT_SECURITIES: "insufficient_securities",
    INSUFFICIENT_CASH: "insufficient_cash",
    PARTY_FROZEN: "party_frozen",
    PARTY_INACTIVE: "party_inactive",
    NOT_YET: "not_yet",
}
REASONS = {code: CODES[code] for code in (INSUFFICIENT_SECURITIES, INSUFFICIENT_CASH, PARTY_FROZEN, PARTY_INACTIVE)}
PARTIAL_KEY = "dvp.partial_settlement"
QUEUE_KEY = "dvp.queue"  # "false": no queue; a trade that cannot settle on arrival fails at once
OFFSETTING_KEY = "dvp.offsetting"  # "false": no liquidity-saving pass (queue and recycling only)
OFFSET_INTERVAL_KEY = "dvp.offset_interval"
OFFSET_INTERVAL_SECONDS_DEFAULT = 300


# ----------------------------------------------------------------- commands


class Settle(Command, tag="dvp_settle", frozen=True):
    """A jointly signed DvP instruction (needs the seller's and buyer's authority)."""

    trade: str
    seller: str
    buyer: str
    security: str
    quantity: int
    cash_asset: str
    amount: int
    settle_at: int = 0


class Instruct(Command, tag="dvp_instruct", frozen=True):
    """One side's instruction: `deliver` (seller signs) or `receive` (buyer signs)."""

    trade: str
    side: Literal["deliver", "receive"]
    seller: str
    buyer: str
    security: str
    quantity: int
    cash_asset: str
    amount: int
    settle_at: int = 0


class Cancel(Command, tag="dvp_cancel", frozen=True):
    """Withdraw a waiting instruction (by its instructing party or either party of a queued trade).

    Trade ids are unique per pair of parties: `seller` and `buyer` (both, or
    neither) name the trade exactly; without them, it is the one trade with
    this id holding something the signers may cancel (`invalid_field` if
    there are several). Either party may cancel a queued trade; an unmatched
    instruction only its instructing party (an unsigned, trusted envelope:
    both sides).
    """

    trade: str
    seller: str = ""
    buyer: str = ""


class Cutoff(Command, tag="dvp_cutoff", frozen=True):
    """End the settlement day now (operator): queued and unmatched work fails."""


class ScheduleCutoff(Command, tag="dvp_schedule_cutoff", frozen=True):
    """Schedule the cut-off at ledger time `at` (operator)."""

    at: int


# ------------------------------------------------------------------ records


class Trade(msgspec.Struct, frozen=True, array_like=True, gc=False):
    trade: str
    seller: str
    buyer: str
    security: str
    quantity: int
    cash_asset: str
    amount: int
    settle_at: int
    arrival: int
    waits: str = ""  # the leg that blocked it last: "securities", "cash", or "" (frozen, inactive, not yet)


WAITS = {INSUFFICIENT_SECURITIES: "securities", INSUFFICIENT_CASH: "cash"}


class Waiting(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """An unmatched one-sided instruction."""

    side: str
    trade: Trade


class Book(msgspec.Struct):
    """The protocol's state. Trades are keyed by `trade_key`: seller, buyer and trade id."""

    queue: dict[str, Trade] = {}
    unmatched: dict[str, Waiting] = {}  # trade_key/side
    counters: dict[str, int] = {}  # arrival, dirty (1 if trades queued since the last pass), offset_at
    fresh: dict[str, int] = {}  # trades queued since the last liquidity pass


def trade_key(t: Settle | Instruct | Cancel) -> str:
    """A trade's key: trade ids are unique per (seller, buyer), so no member can take another pair's id.

    `|` cannot occur in a participant id, so the key is unambiguous.
    """
    return f"{t.seller}|{t.buyer}|{t.trade}"


def side_key(tkey: str, side: str) -> str:
    return f"{tkey}/{side}"


def taken(book: Book, key: str) -> bool:
    """Tell whether a trade key is in use: queued, or an instruction of it waiting unmatched."""
    return key in book.queue or (bool(book.unmatched) and (side_key(key, "deliver") in book.unmatched
                                                          or side_key(key, "receive") in book.unmatched))


def other_side(side: str) -> str:
    return "receive" if side == "deliver" else "deliver"
