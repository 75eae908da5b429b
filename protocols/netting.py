"""Deferred net settlement (BIS model 3): cycles, net positions, unwind.

Obligations (DvP trades, jointly signed) accumulate in the open cycle. The
state keeps, per asset, the gross flow between each ordered pair of
participants, so a cycle of a million trades is netted from its pairs, not
its trades. When the cycle closes (on `CloseCycle`, at the end of each
`netting_cycle`, or at the cut-off) each participant's multilateral net
position per asset is `received - delivered`; per asset they sum to zero.

All net positions settle in one atomic step: every net debit is collected
and every net credit paid, or nothing moves. If a participant cannot cover
a net debit, all its trades are removed from the cycle (unwound) and the
positions recomputed, until the rest can settle. Inactive participants, and
participants frozen on an asset they trade in the cycle, are unwound first
(a freeze on an asset they do not trade leaves them in). Unwind order: the largest
cash shortfall first, then the largest securities shortfall by market
value (latest price, in the cycle's first cash asset), ties by participant
id. Unwound trades fail with reason `unwound`.

With `bilateral=True` the cycle nets per pair of participants and asset:
each pair's net flow is one movement. The end balances are the same as
multilateral netting; the number of movements and the liquidity each
participant needs are not.

The `cycle_closed` event carries the cycle's figures: trades, gross cash
value settled, movements before and after netting, the sum of positive net
cash positions, and the unwound participants. An empty cycle closes silently.
"""

from __future__ import annotations

import msgspec

from engine import codes as C
from engine.protocol import Authority, Handler, Protocol
from engine.records import ROLE_OPERATOR, Command
from engine.state import State, Timer

from . import prices
from engine.machine import AMOUNT_MAX

from .dvp import validate_trade

NAME = "netting"
UNKNOWN_CYCLE = 201
CODES = {UNKNOWN_CYCLE: "unknown_cycle"}


class Obligate(Command, tag="net_obligate", frozen=True):
    """Add a DvP obligation to the open cycle (seller's and buyer's authority)."""

    trade: str
    seller: str
    buyer: str
    security: str
    quantity: int
    cash_asset: str
    amount: int


class CloseCycle(Command, tag="net_close", frozen=True):
    """Close the open cycle now (operator)."""


class ConfigureCycles(Command, tag="net_configure", frozen=True):
    """Close a cycle at every UTC multiple of `period` seconds (0: only on demand); choose bilateral netting."""

    period: int = 0
    bilateral: bool = False


class NetBook(msgspec.Struct):
    # flows[asset][payer][payee]: gross amount payer delivers to payee this cycle
    flows: dict[str, dict[str, dict[str, int]]] = {}
    # members[participant]: trades of the open cycle it is party to
    members: dict[str, int] = {}
    figures: dict[str, int] = {}  # cycle, trades, period, bilateral, timer
    gross: dict[str, int] = {}  # gross value per cash asset this cycle
    last_positions: dict[str, dict[str, int]] = {}


def _book(state: State) -> NetBook:
    book: NetBook = state.protocols[NAME]
    return book


def _add(state: State, book: NetBook, asset: str, payer: str, payee: str, amount: int) -> None:
    by_asset = book.flows.get(asset)
    if by_asset is None:
        by_asset = {}
        state.put(book.flows, asset, by_asset)
    row = by_asset.get(payer)
    if row is None:
        row = {}
        state.put(by_asset, payer, row)
    state.put(row, payee, row.get(payee, 0) + amount)


def _fits(book: NetBook, cmd: Obligate) -> bool:
    """Every flow and net position of the cycle stays within the engine's amount bound
    (the two assets differ: `validate_trade` checks their kinds first)."""
    return all(book.figures.get(f"total:{asset}", 0) + amount <= AMOUNT_MAX
               for asset, amount in ((cmd.security, cmd.quantity), (cmd.cash_asset, cmd.amount)))


def obligate(state: State, cmd: Obligate, auth: Authority) -> int:
    if auth is not None and (cmd.seller not in auth or cmd.buyer not in auth):
        return C.UNAUTHORIZED
    book = _book(state)
    code = validate_trade(state, cmd, active=True, fits=lambda c: _fits(book, c))
    if code:
        return code
    for asset, amount in ((cmd.security, cmd.quantity), (cmd.cash_asset, cmd.amount)):
        state.put(book.figures, f"total:{asset}", book.figures.get(f"total:{asset}", 0) + amount)
    _add(state, book, cmd.security, cmd.seller, cmd.buyer, cmd.quantity)
    _add(state, book, cmd.cash_asset, cmd.buyer, cmd.seller, cmd.amount)
    for party in (cmd.seller, cmd.buyer):
        state.put(book.members, party, book.members.get(party, 0) + 1)
    state.put(book.figures, "trades", book.figures.get("trades", 0) + 1)
    state.put(book.gross, cmd.cash_asset, book.gross.get(cmd.cash_asset, 0) + cmd.amount)
    return C.OK


def positions(flows: dict[str, dict[str, dict[str, int]]], excluded: set[str]) -> dict[str, dict[str, int]]:
    """Multilateral net positions {participant: {asset: received - delivered}}."""
    out: dict[str, dict[str, int]] = {}
    for asset, by_payer in flows.items():
        for payer, row in by_payer.items():
            if payer in excluded:
                continue
            for payee, amount in row.items():
                if payee in excluded or not amount:
                    continue
                out.setdefault(payer, {})[asset] = out.get(payer, {}).get(asset, 0) - amount
                out.setdefault(payee, {})[asset] = out.get(payee, {}).get(asset, 0) + amount
    return out


def bilateral_nets(flows: dict[str, dict[str, dict[str, int]]], excluded: set[str]) -> dict[tuple[str, str, str], int]:
    """Net flow per (asset, payer, payee) with payer < payee lexically; sign gives direction."""
    nets: dict[tuple[str, str, str], int] = {}
    for asset, by_payer in flows.items():
        for payer, row in by_payer.items():
            if payer in excluded:
                continue
            for payee, amount in row.items():
                if payee in excluded:
                    continue
                a, b, sign = (payer, payee, 1) if payer < payee else (payee, payer, -1)
                nets[(asset, a, b)] = nets.get((asset, a, b), 0) + sign * amount
    return {k: v for k, v in nets.items() if v}


def _shortfalls(state: State, pos: dict[str, dict[str, int]]) -> dict[str, tuple[int, int]]:
    """Per participant: (cash shortfall, securities shortfall by market value)."""
    cash_assets = sorted(a for a, x in state.assets.items() if x.kind == "cash")
    valuation = state.assets[cash_assets[0]] if cash_assets else None
    out: dict[str, tuple[int, int]] = {}
    for party, by_asset in pos.items():
        cash_short = sec_short = 0
        for asset, net in by_asset.items():
            if net >= 0:
                continue
            short = -net - state.available(party, asset)
            if short <= 0:
                continue
            info = state.assets[asset]
            if info.kind == "cash":
                cash_short += short
            else:
                price = prices.latest(state, asset)
                value = prices.market_value(short, price, info, valuation) if price and valuation else 0
                sec_short += max(value, 1)  # a shortfall without a price still counts
        if cash_short or sec_short:
            out[party] = (cash_short, sec_short)
    return out


def _trades_frozen(state: State, book: NetBook, party: str) -> bool:
    """Tell whether `party` has a flow in this cycle in an asset it is frozen on."""
    for asset, rows in book.flows.items():
        if state.is_frozen(party, asset) and (party in rows or any(party in row for row in rows.values())):
            return True
    return False


def close_cycle(state: State) -> None:
    """Net, unwind whoever cannot pay, and settle the rest in one step."""
    book = _book(state)
    if not book.figures.get("trades"):
        return  # an empty cycle: nothing to net, nothing to report
    excluded: set[str] = set()
    unwound: list[str] = []
    # Inactive participants, and those frozen on an asset they trade in this cycle, cannot settle:
    # their trades leave the cycle first.
    for party in sorted(book.members):
        p = state.participants[party]
        if p.status or (state.frozen and party in state.frozen and _trades_frozen(state, book, party)):
            excluded.add(party)
            unwound.append(party)
    while True:
        pos = positions(book.flows, excluded)
        short = _shortfalls(state, pos)
        if not short:
            break
        party = min(short, key=lambda p: (-short[p][0], -short[p][1], p))
        excluded.add(party)
        unwound.append(party)
    for party in sorted(pos):
        for asset, net in sorted(pos[party].items()):
            if net < 0:
                code = state.debit(asset, party, -net)
                assert code == C.OK, "net debit checked against availability"
    for party in sorted(pos):
        for asset, net in sorted(pos[party].items()):
            if net > 0:
                state.credit(asset, party, net)
    cash_assets = {a for a, x in state.assets.items() if x.kind == "cash"}
    gross_movements = 2 * book.figures.get("trades", 0)
    if book.figures.get("bilateral"):
        movements = len(bilateral_nets(book.flows, excluded))
    else:
        movements = sum(1 for by_asset in pos.values() for net in by_asset.values() if net)
    positive_cash = sum(net for by_asset in pos.values() for a, net in by_asset.items() if net > 0 and a in cash_assets)
    gross_cash: dict[str, int] = {}
    for asset in sorted(cash_assets & set(book.flows)):
        gross_cash[asset] = sum(amount for payer, row in book.flows[asset].items() if payer not in excluded
                                for payee, amount in row.items() if payee not in excluded)
    cycle = book.figures.get("cycle", 0) + 1
    data = {
        "cycle": str(cycle),
        "trades": str(book.figures.get("trades", 0)),
        "gross_movements": str(gross_movements),
        "net_movements": str(movements),
        "positive_net_cash": str(positive_cash),
        "gross_cash": ",".join(f"{a}={v}" for a, v in gross_cash.items()),
        "unwound": ",".join(unwound),
    }
    for party in list(book.last_positions):
        state.pop(book.last_positions, party)
    for party, by_asset in sorted(pos.items()):
        state.put(book.last_positions, party, dict(sorted(by_asset.items())))
    state.put(book.figures, "cycle", cycle)
    state.put(book.figures, "trades", 0)
    for key in [k for k in book.figures if k.startswith("total:")]:
        state.pop(book.figures, key)
    for key in list(book.flows):
        state.pop(book.flows, key)
    for key in list(book.members):
        state.pop(book.members, key)
    for key in list(book.gross):
        state.pop(book.gross, key)
    state.emit(NAME, "cycle_closed", str(cycle), data)


def close(state: State, cmd: CloseCycle, auth: Authority) -> int:
    if auth is not None and not state.has_role(auth, ROLE_OPERATOR):
        return C.UNAUTHORIZED
    close_cycle(state)
    return C.OK


def configure(state: State, cmd: ConfigureCycles, auth: Authority) -> int:
    if auth is not None and not state.has_role(auth, ROLE_OPERATOR):
        return C.UNAUTHORIZED
    if cmd.period < 0:
        return C.INVALID_FIELD
    book = _book(state)
    state.put(book.figures, "period", cmd.period)
    state.put(book.figures, "bilateral", int(cmd.bilateral))
    old = book.figures.get("timer")
    if old:
        state.cancel(old)
    first = (state.now // cmd.period + 1) * cmd.period if cmd.period else 0  # aligned to UTC multiples
    timer = state.schedule(first, NAME, "close", "") if cmd.period else 0
    state.put(book.figures, "timer", timer)
    return C.OK


class Netting(Protocol):
    name = NAME
    reserved_prefixes = ("netting:",)  # its escrow names: the engine refuses them in Hold, Release, ...
    version = 2  # 2: a freeze unwinds a participant only if it touches an asset it trades in the cycle
    state_type = NetBook
    codes = CODES

    def handlers(self) -> dict[type[Command], Handler]:
        return {Obligate: obligate, CloseCycle: close, ConfigureCycles: configure}

    def on_due(self, state: State, timer: Timer) -> int:
        if timer.kind == "close":
            close_cycle(state)
            book = _book(state)
            period = book.figures.get("period", 0)
            if period:
                state.put(book.figures, "timer", state.schedule(timer.due_at + period, NAME, "close", ""))
        return C.OK
