"""Atomic delivery versus payment, gross (BIS model 1).

A DvP moves `quantity` of a security from seller to buyer and `amount` of a
cash asset from buyer to seller in one atomic step, or neither.

Instructions arrive either jointly signed by both parties (`Settle`) or one
side at a time (`Instruct`), each signed by its own party; two one-sided
instructions match when trade id, security, quantity, cash asset, amount,
counterparties and intended settlement time (`settle_at`) are all equal.

A matched trade settles at once if both parties have the assets available
and neither is frozen or inactive. Otherwise it joins the settlement queue
(FIFO by arrival) and is recycled whenever a balance it waits on rises
(right after the command that raised it commits). The liquidity-saving
pass — bilateral offsetting (per pair of parties), then multilateral —
settles a set of trades together although none could alone. It runs when
ledger time leaves an instant, if trades queued since its last run and at
least `dvp.offset_interval` seconds (default 300) passed since then, as an
RTGS runs its optimisation periodically; and always at the cut-off.

The offsetting algorithm is the classic iterative removal used by RTGS
liquidity-saving mechanisms (Bech & Soramäki 2001; Güntzer, Jungnickel &
Leclerc 1998): take all candidate trades, compute each account's end
position (available balance plus net flow); while some account would end
negative, remove the latest-arrived candidate that debits it (so earlier
instructions keep priority), updating positions incrementally. What
remains settles atomically with every balance non-negative at the end of
the step. Work is bounded by `OFFSET_TRADES_MAX` trades per run.

At the cut-off every queued trade fails with `insufficient_securities`,
`insufficient_cash`, `party_frozen` or `party_inactive`, and every
unmatched instruction fails as `unmatched`. A party may cancel its
instruction while it waits. Optional partial settlement (config
`dvp.partial_settlement` = `true`) settles the part the parties can cover
and leaves the rest queued.

Trade ids are unique per pair of parties: the book keys each trade by
seller, buyer and id (`trade_key`), so one pair's id never blocks or
matches another pair's trade.

Events (in the entry): `unmatched`, `queued`, `settled`,
`partially_settled`, `failed`, `cancelled`, each with the trade id as
`ref`. A `Settle` that settles at once emits nothing: its OK result says so.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine import codes as C
from engine.protocol import Protocol
from engine.records import ROLE_OPERATOR, STATUS_ACTIVE, Command
from engine.state import State, Timer

NAME = "dvp"
OFFSET_TRADES_MAX = 100_000

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
OFFSET_INTERVAL_KEY = "dvp.offset_interval"
OFFSET_INTERVAL_SECONDS_DEFAULT = 300


# ----------------------------------------------------------------- commands


class Settle(Command, tag="dvp_settle"):
    """A jointly signed DvP instruction (needs the seller's and buyer's authority)."""

    trade: str
    seller: str
    buyer: str
    security: str
    quantity: int
    cash_asset: str
    amount: int
    settle_at: int = 0


class Instruct(Command, tag="dvp_instruct"):
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


class Cancel(Command, tag="dvp_cancel"):
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


class Cutoff(Command, tag="dvp_cutoff"):
    """End the settlement day now (operator): queued and unmatched work fails."""


class ScheduleCutoff(Command, tag="dvp_schedule_cutoff"):
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


def trade_key(t) -> str:
    """A trade's key: trade ids are unique per (seller, buyer), so no member can take another pair's id.

    `|` cannot occur in a participant id, so the key is unambiguous.
    """
    return f"{t.seller}|{t.buyer}|{t.trade}"


def _key(tkey: str, side: str) -> str:
    return f"{tkey}/{side}"


def _taken(book: Book, key: str) -> bool:
    """Tell whether a trade key is in use: queued, or an instruction of it waiting unmatched."""
    return key in book.queue or (bool(book.unmatched) and (_key(key, "deliver") in book.unmatched
                                                          or _key(key, "receive") in book.unmatched))


def _other(side: str) -> str:
    return "receive" if side == "deliver" else "deliver"


# ------------------------------------------------------------- validation


def validate_trade(state: State, cmd, active: bool = False, fits=None) -> int:
    """Check a DvP's fields against the ledger, in this order: both parties known
    (and, with `active`, both active), seller and buyer distinct, both assets
    known, of the right kinds, positive amounts (and, with `fits`, amounts
    `fits(cmd)` accepts), a trade id."""
    for party in (cmd.seller, cmd.buyer):
        if party not in state.participants:
            return C.UNKNOWN_PARTICIPANT
    if active and (state.participants[cmd.seller].status or state.participants[cmd.buyer].status):
        return C.PARTICIPANT_INACTIVE
    if cmd.seller == cmd.buyer:
        return SAME_PARTY
    security = state.assets.get(cmd.security)
    cash = state.assets.get(cmd.cash_asset)
    if security is None or cash is None:
        return C.UNKNOWN_ASSET
    if security.kind != "security" or cash.kind != "cash":
        return WRONG_ASSET_KIND
    if cmd.quantity <= 0 or cmd.amount <= 0 or (fits is not None and not fits(cmd)):
        return C.INVALID_AMOUNT
    if not cmd.trade:
        return C.INVALID_FIELD
    return C.OK


def _book(state: State) -> Book:
    return state.protocols[NAME]


def _next_arrival(state: State, book: Book) -> int:
    n = book.counters.get("arrival", 0) + 1
    state.put(book.counters, "arrival", n)
    return n


# ------------------------------------------------------------- settlement


def blocking_code(state: State, t: Trade) -> int:
    """Return why `t` cannot settle now (OK if it can)."""
    parts = state.participants
    for party in (t.seller, t.buyer):
        if parts[party].status != STATUS_ACTIVE:
            return PARTY_INACTIVE
    if state.frozen and any(state.is_frozen(p, a) for p in (t.seller, t.buyer) for a in (t.security, t.cash_asset)):
        return PARTY_FROZEN
    if t.settle_at > state.now:
        return NOT_YET
    if state.available(t.seller, t.security) < t.quantity:
        return INSUFFICIENT_SECURITIES
    if state.available(t.buyer, t.cash_asset) < t.amount:
        return INSUFFICIENT_CASH
    return C.OK


_SHORT = (C.OK, INSUFFICIENT_SECURITIES, INSUFFICIENT_CASH)


def _settle_now(state: State, t: Trade) -> int:
    """Settle both legs in one step (both are checked before either moves), or say why not."""
    parts = state.participants
    if parts[t.seller].status or parts[t.buyer].status:
        return PARTY_INACTIVE
    if state.frozen or t.settle_at > state.now:
        code = blocking_code(state, t)
        if code:
            return code
    return _SHORT[state.exchange(t.security, t.quantity, t.cash_asset, t.amount, t.seller, t.buyer)]


def _index(state: State) -> dict[tuple[str, str], dict[str, None]]:
    """Runtime index: watched account -> trade ids waiting on it (may hold stale ids)."""
    runtime = state.runtime.get(NAME)
    if runtime is None:
        runtime = state.runtime[NAME] = {}
    return runtime


def _waited_account(t: Trade) -> tuple[str, str] | None:
    if t.waits == "securities":
        return (t.security, t.seller)
    if t.waits == "cash":
        return (t.cash_asset, t.buyer)
    return None


def _least(state: State) -> dict[tuple[str, str], int]:
    """Runtime: per watched account, a lower bound of what its waiting trades need."""
    least = state.runtime.get(NAME + ".least")
    if least is None:
        least = state.runtime[NAME + ".least"] = {}
    return least


def _wait_on(state: State, t: Trade) -> None:
    """Index a queued trade under the account it waits on (its `waits` leg).

    The index is derived from the queue records alone (entries of trades no
    longer queued, or now waiting elsewhere, are dropped lazily), so a ledger
    rebuilt from a snapshot recycles exactly as one that never stopped.
    """
    account = _waited_account(t)
    if account is not None:
        _index(state).setdefault(account, {})[trade_key(t)] = None
        state.watch_account(*account)
        need = t.quantity if t.waits == "securities" else t.amount
        least = _least(state)
        if need < least.get(account, need + 1):
            least[account] = need


def _note_block(state: State, t: Trade, code: int) -> Trade:
    """Record which leg blocked a queued trade this time, and index it there."""
    waits = WAITS.get(code, "")
    if waits != t.waits:
        t = msgspec.structs.replace(t, waits=waits)
        state.put(_book(state).queue, trade_key(t), t)
        _wait_on(state, t)
    return t


def _enter(state: State, t: Trade | Settle) -> int:
    """A matched trade: settle now, or queue it (and say why).

    `t` may be the `Settle` command itself (same field names as `Trade`):
    the common case settles at once without building a record.
    """
    book = _book(state)
    key = trade_key(t)
    if _taken(book, key):
        return TRADE_EXISTS
    if t.settle_at <= state.now:
        code = _settle_now(state, t)  # checks before it writes: nothing to roll back on refusal
        if code == C.OK:
            return C.OK
    else:
        code = NOT_YET
        state.schedule(t.settle_at, NAME, "settle", key)
    t = Trade(t.trade, t.seller, t.buyer, t.security, t.quantity, t.cash_asset, t.amount, t.settle_at,
              _next_arrival(state, book), WAITS.get(code, ""))
    if code != NOT_YET and _partial_enabled(state):
        t = _settle_part(state, t)
    state.put(book.queue, key, t)
    state.put(book.counters, "dirty", 1)
    state.put(book.fresh, key, 1)
    state.emit(NAME, "queued", t.trade, {"reason": CODES[code]})
    _wait_on(state, t)
    return C.OK


def _dequeue_settled(state: State, t: Trade, how: str) -> None:
    state.pop(_book(state).queue, trade_key(t))
    state.emit(NAME, "settled", t.trade, {"by": how})


def _try_queued(state: State, t: Trade, how: str) -> int:
    """Try one queued trade alone: settle it, or (if enabled) settle the part that is covered."""
    code = _settle_now(state, t)
    if code == C.OK:
        _dequeue_settled(state, t, how)
        return code
    if code != NOT_YET and _partial_enabled(state):
        rest = _settle_part(state, t)
        if rest is not t:
            state.put(_book(state).queue, trade_key(t), rest)
            t = rest
            _wait_on(state, t)  # its need fell: lower the account's bound
    _note_block(state, t, code)
    return code


def config_int(state: State, key: str, default: int) -> int:
    """A non-negative integer setting; a value that is not one counts as the default."""
    text = state.config.get(key)
    return int(text) if text is not None and text.isascii() and text.isdigit() else default


def _partial_enabled(state: State) -> bool:
    return state.config.get(PARTIAL_KEY) == "true"


def _settle_part(state: State, t: Trade) -> Trade:
    """Settle the part both parties can cover; return what is left to settle."""
    if blocking_code(state, t) not in (INSUFFICIENT_CASH, INSUFFICIENT_SECURITIES):
        return t
    cash = state.available(t.buyer, t.cash_asset)
    part = min(state.available(t.seller, t.security), cash * t.quantity // t.amount)
    if part <= 0 or part >= t.quantity:
        return t
    pay = (2 * t.amount * part + t.quantity) // (2 * t.quantity)  # pro rata, half-up
    if pay > cash:
        pay = cash
    moved = state.transfer(t.security, t.seller, t.buyer, part) or state.transfer(t.cash_asset, t.buyer, t.seller, pay)
    assert moved == C.OK, "partial settlement checked availability"
    state.emit(NAME, "partially_settled", t.trade, {"quantity": str(part), "amount": str(pay)})
    return msgspec.structs.replace(t, quantity=t.quantity - part, amount=t.amount - pay)


# --------------------------------------------------------------- offsetting


def offset_select(state: State, trades: list[Trade]) -> list[Trade]:
    """Pick the largest FIFO-respecting subset of `trades` that can settle together.

    Iterative removal: while an account would end below zero, drop the
    latest-arrived remaining trade that debits it.
    """
    net: dict[tuple[str, str], int] = {}
    debits: dict[tuple[str, str], list[int]] = {}
    for i, t in enumerate(trades):
        s = (t.security, t.seller)
        b = (t.security, t.buyer)
        c = (t.cash_asset, t.buyer)
        d = (t.cash_asset, t.seller)
        net[s] = net.get(s, 0) - t.quantity
        net[b] = net.get(b, 0) + t.quantity
        net[c] = net.get(c, 0) - t.amount
        net[d] = net.get(d, 0) + t.amount
        debits.setdefault(s, []).append(i)
        debits.setdefault(c, []).append(i)
    have = {account: state.available(account[1], account[0]) for account in net}
    alive = [True] * len(trades)
    work = [a for a in net if have[a] + net[a] < 0]
    while work:
        account = work.pop()
        stack = debits[account]
        while have[account] + net[account] < 0:
            while not alive[stack[-1]]:
                stack.pop()
            i = stack.pop()
            alive[i] = False
            t = trades[i]
            s = (t.security, t.seller)
            b = (t.security, t.buyer)
            c = (t.cash_asset, t.buyer)
            d = (t.cash_asset, t.seller)
            net[s] += t.quantity
            net[b] -= t.quantity
            net[c] += t.amount
            net[d] -= t.amount
            for other in (b, d):
                if have[other] + net[other] < 0:
                    work.append(other)
    return [t for i, t in enumerate(trades) if alive[i]]


def _settle_set(state: State, trades: list[Trade], how: str) -> int:
    """Settle a set of trades in one atomic step by their net flows."""
    net = _net_flows(trades)
    for (asset, party), delta in sorted(net.items()):
        if delta < 0:
            code = state.debit(asset, party, -delta)
            if code:
                return code
    for (asset, party), delta in sorted(net.items()):
        if delta > 0:
            state.credit(asset, party, delta)
    for t in trades:
        _dequeue_settled(state, t, how)
    return C.OK


def recycle_all(state: State) -> int:
    """Try every queued trade alone, in FIFO order; return how many settled."""
    book = _book(state)
    settled = 0
    for t in sorted(book.queue.values(), key=lambda x: x.arrival)[:OFFSET_TRADES_MAX]:
        key = trade_key(t)
        if key in book.queue and _try_queued(state, book.queue[key], "recycling") == C.OK:
            settled += 1
    return settled


def _net_flows(trades: list[Trade]) -> dict[tuple[str, str], int]:
    """Each account's net flow, (asset, participant) -> received - delivered, over `trades`."""
    net: dict[tuple[str, str], int] = {}
    for t in trades:
        for account, delta in (((t.security, t.seller), -t.quantity), ((t.security, t.buyer), t.quantity),
                               ((t.cash_asset, t.buyer), -t.amount), ((t.cash_asset, t.seller), t.amount)):
            net[account] = net.get(account, 0) + delta
    return net


def _feasible(state: State, trades: list[Trade]) -> bool:
    """Tell whether `trades` can settle together: no account would end below zero."""
    return all(delta >= 0 or state.available(party, asset) + delta >= 0
               for (asset, party), delta in _net_flows(trades).items())


def _can_settle(state: State, t: Trade) -> bool:
    """Parties active and not frozen, settlement time reached: only balances may block it."""
    parts = state.participants
    if parts[t.seller].status or parts[t.buyer].status or t.settle_at > state.now:
        return False
    if state.frozen:
        return not any(state.is_frozen(p, a) for p in (t.seller, t.buyer) for a in (t.security, t.cash_asset))
    return True


def liquidity_pass(state: State) -> int:
    """Offset the queue bilaterally, then multilaterally; return how many trades settled.

    Bilateral: for each pair of parties with a trade queued since the last
    pass and trades both ways, all their queued trades settle together if
    the pair's net flows are covered. Multilateral: iterative removal
    (`offset_select`) over the whole queue, oldest first, up to
    `OFFSET_TRADES_MAX` trades.
    """
    book = _book(state)
    settled = 0
    candidates = [t for t in sorted(book.queue.values(), key=lambda x: x.arrival)
                  if _can_settle(state, t)][:OFFSET_TRADES_MAX]
    fresh_pairs = {tuple(sorted((t.seller, t.buyer))) for i in book.fresh if (t := book.queue.get(i)) is not None}
    for trade in list(book.fresh):
        state.pop(book.fresh, trade)
    pairs: dict[tuple[str, str], list[Trade]] = {}
    for t in candidates:
        pair = tuple(sorted((t.seller, t.buyer)))
        if pair in fresh_pairs:
            pairs.setdefault(pair, []).append(t)  # type: ignore[arg-type]
    for pair in sorted(pairs):
        group = pairs[pair]
        if len({t.seller for t in group}) > 1 and _feasible(state, group):  # trades both ways, covered net
            if state.attempt(_settle_set, state, group, "bilateral_offset") == C.OK:
                settled += len(group)
    rest = [t for t in candidates if trade_key(t) in book.queue]
    if len(rest) > 1:
        chosen = offset_select(state, rest)
        if chosen and state.attempt(_settle_set, state, chosen, "multilateral_offset") == C.OK:
            settled += len(chosen)
    return settled


# ----------------------------------------------------------------- handlers


def settle(state: State, cmd: Settle, auth) -> int:
    """Settle a jointly signed DvP now, or queue it.

    The common case (active parties, right asset kinds, positive amounts, no
    freezes, due now, trade id not queued) is checked inline and settles
    through `exchange`; anything else takes the general path.
    """
    seller = cmd.seller
    buyer = cmd.buyer
    if auth is not None and (seller not in auth or buyer not in auth):
        return C.UNAUTHORIZED
    parts = state.participants
    ps = parts.get(seller)
    pb = parts.get(buyer)
    security = state.assets.get(cmd.security)
    cash = state.assets.get(cmd.cash_asset)
    if (ps is not None and pb is not None and not ps.status and not pb.status and seller != buyer
            and security is not None and cash is not None and security.kind == "security" and cash.kind == "cash"
            and cmd.quantity > 0 and cmd.amount > 0 and cmd.trade and not state.frozen
            and cmd.settle_at <= state.now and not _taken(state.protocols[NAME], trade_key(cmd))):
        if not state.exchange(cmd.security, cmd.quantity, cmd.cash_asset, cmd.amount, seller, buyer, final=True):
            return C.OK
    code = validate_trade(state, cmd)
    if code:
        return code
    return _enter(state, cmd)


def instruct(state: State, cmd: Instruct, auth) -> int:
    party = cmd.seller if cmd.side == "deliver" else cmd.buyer
    if auth is not None and party not in auth:
        return C.UNAUTHORIZED
    code = validate_trade(state, cmd)
    if code:
        return code
    book = _book(state)
    key = trade_key(cmd)
    mine = _key(key, cmd.side)
    if mine in book.unmatched or key in book.queue:
        return TRADE_EXISTS
    t = Trade(cmd.trade, cmd.seller, cmd.buyer, cmd.security, cmd.quantity, cmd.cash_asset, cmd.amount,
              cmd.settle_at, 0)
    theirs_key = _key(key, _other(cmd.side))
    theirs = book.unmatched.get(theirs_key)
    if theirs is not None and msgspec.structs.replace(theirs.trade, arrival=0) == t:
        state.pop(book.unmatched, theirs_key)
        state.emit(NAME, "matched", cmd.trade)
        code = _enter(state, t)
        if code == C.OK and key not in book.queue:
            state.emit(NAME, "settled", cmd.trade, {"by": "match"})
        return code
    state.put(book.unmatched, mine, Waiting(cmd.side, msgspec.structs.replace(t, arrival=_next_arrival(state, book))))
    state.emit(NAME, "unmatched", cmd.trade, {"side": cmd.side})
    return C.OK


def _waiting_under(book: Book, key: str) -> list[tuple[str, str | None]]:
    """What waits under a trade key: [(key, None)] for a queued trade, [(key, side), ...] for instructions."""
    if key in book.queue:
        return [(key, None)]
    return [(key, side) for side in ("deliver", "receive") if _key(key, side) in book.unmatched]


def _may_cancel(book: Book, key: str, side: str | None, auth) -> bool:
    """Either party may cancel a queued trade; only its instructing party an unmatched instruction."""
    if auth is None:
        return True
    t = book.queue[key] if side is None else book.unmatched[_key(key, side)].trade
    if side is None:
        return t.seller in auth or t.buyer in auth
    return (t.seller if side == "deliver" else t.buyer) in auth


def cancel(state: State, cmd: Cancel, auth) -> int:
    """Withdraw what the signers may cancel under one trade key (see `Cancel`)."""
    book = _book(state)
    if cmd.seller or cmd.buyer:
        if cmd.seller not in state.participants or cmd.buyer not in state.participants:
            return C.INVALID_FIELD  # both parties, each a participant id (which cannot hold the key's `|`)
        found = _waiting_under(book, trade_key(cmd))
    else:  # no parties named: look through the book for this id
        keys = [key for key, t in book.queue.items() if t.trade == cmd.trade]
        keys += [key.rpartition("/")[0] for key, w in book.unmatched.items() if w.trade.trade == cmd.trade]
        found = [item for key in sorted(set(keys)) for item in _waiting_under(book, key)]
    if not found:
        return UNKNOWN_TRADE
    mine = [(key, side) for key, side in found if _may_cancel(book, key, side, auth)]
    if not mine:
        return C.UNAUTHORIZED
    if len({key for key, _ in mine}) > 1:
        return C.INVALID_FIELD  # ambiguous: name the seller and the buyer
    for key, side in mine:
        if side is None:
            t = book.queue[key]
            state.pop(book.queue, key)
            state.emit(NAME, "cancelled", t.trade)
        else:
            waiting = book.unmatched[_key(key, side)]
            state.pop(book.unmatched, _key(key, side))
            state.emit(NAME, "cancelled", waiting.trade.trade, {"side": side})
    return C.OK


def run_cutoff(state: State) -> None:
    """Give the queue a last liquidity pass, then fail everything still waiting."""
    book = _book(state)
    recycle_all(state)
    liquidity_pass(state)
    for t in sorted(book.queue.values(), key=lambda x: x.arrival):
        code = blocking_code(state, t)
        reason = REASONS.get(code, CODES[INSUFFICIENT_CASH] if code == C.OK else CODES.get(code, "failed"))
        state.pop(book.queue, trade_key(t))
        state.emit(NAME, "failed", t.trade, {"reason": reason})
    for key, waiting in sorted(book.unmatched.items(), key=lambda kv: kv[1].trade.arrival):
        state.pop(book.unmatched, key)
        state.emit(NAME, "failed", waiting.trade.trade, {"reason": "unmatched", "side": waiting.side})
    state.put(book.counters, "dirty", 0)
    for trade in list(book.fresh):
        state.pop(book.fresh, trade)
    # The runtime indexes are left alone: this may still roll back, and stale entries are pruned on use.
    state.emit(NAME, "cutoff", "")
    state.notify("cutoff", "")


def cutoff(state: State, cmd: Cutoff, auth) -> int:
    if auth is not None and not state.has_role(auth, ROLE_OPERATOR):
        return C.UNAUTHORIZED
    run_cutoff(state)
    return C.OK


def schedule_cutoff(state: State, cmd: ScheduleCutoff, auth) -> int:
    if auth is not None and not state.has_role(auth, ROLE_OPERATOR):
        return C.UNAUTHORIZED
    if cmd.at <= state.now:
        return C.INVALID_FIELD
    state.schedule(cmd.at, NAME, "cutoff", "")
    return C.OK


class DvP(Protocol):
    name = NAME
    version = 2  # 2: trades keyed by seller, buyer and id
    state_type = Book
    codes = CODES

    def handlers(self):
        return {Settle: settle, Instruct: instruct, Cancel: cancel, Cutoff: cutoff, ScheduleCutoff: schedule_cutoff}

    def on_due(self, state: State, timer: Timer) -> int:
        if timer.kind == "cutoff":
            run_cutoff(state)
        elif timer.kind == "settle":
            t = _book(state).queue.get(timer.ref)
            if t is not None:
                _try_queued(state, t, "settlement_time")
        return C.OK

    def on_rise(self, state: State, accounts: list[tuple[str, str]]) -> None:
        """Recycle, in FIFO order, the queued trades a risen account can now cover.

        A trade whose need on the risen account is still above its available
        balance is not retried, so a busy account does not make every trade
        waiting on it try again.
        """
        book = _book(state)
        queue = book.queue
        index = _index(state)
        retry: list[Trade] = []
        for account in accounts:
            waiting = index.get(account)
            if not waiting:
                continue
            asset, party = account
            have = state.available(party, asset)
            partial = have > 0 and _partial_enabled(state)
            least = _least(state)
            if not partial and have < least.get(account, 0):
                continue  # every trade waiting here needs more than the account holds
            smallest = None
            for trade in list(waiting):
                t = queue.get(trade)
                if t is None or _waited_account(t) != account:
                    del waiting[trade]  # settled, cancelled, or waiting on its other leg now
                    continue
                need = t.quantity if t.waits == "securities" else t.amount
                if need <= have or partial:
                    retry.append(t)
                if smallest is None or need < smallest:
                    smallest = need
            if smallest is not None:
                least[account] = smallest  # a lower bound of every need still indexed here
            if not waiting:
                del index[account]  # `state.watch` keeps the account: other protocols may watch it too
        for t in sorted(set(retry), key=lambda x: x.arrival):
            current = queue.get(trade_key(t))
            if current is not None:
                _try_queued(state, current, "recycling")

    def on_time(self, state: State) -> None:
        book = _book(state)
        if not (book.counters.get("dirty") and book.queue):
            return
        interval = config_int(state, OFFSET_INTERVAL_KEY, OFFSET_INTERVAL_SECONDS_DEFAULT)
        if state.now - book.counters.get("offset_at", 0) < interval:
            return
        state.put(book.counters, "dirty", 0)
        state.put(book.counters, "offset_at", state.now)
        liquidity_pass(state)

    def loaded(self, state: State) -> None:
        _index(state).clear()
        _least(state).clear()
        for t in _book(state).queue.values():
            _wait_on(state, t)

    # ------------------------------------------------------------------ reads

    query_kinds = ("trade",)
    record_outcomes = {"settled": "settled", "failed": "failed", "cancelled": "cancelled"}

    def query(self, state: State, kind: str, key: str) -> list:
        """The queued and unmatched trades with trade id `key` (one per pair of parties): a scan of the book."""
        from engine.protocol import QueryAnswer

        if kind != "trade":
            return []
        book = _book(state)
        found = [QueryAnswer(kind="trade", key=key, status="queued", parties=(t.seller, t.buyer),
                             record=msgspec.structs.asdict(t))
                 for t in book.queue.values() if t.trade == key]
        for waiting in book.unmatched.values():
            t = waiting.trade
            if t.trade == key:
                found.append(QueryAnswer(kind="trade", key=key, status="unmatched", parties=(t.seller, t.buyer),
                                         record={**msgspec.structs.asdict(t), "side": waiting.side}))
        return found

    def record_of(self, command: Command):
        """A Settle or Instruct names its trade and both parties; a Cancel its trade (and the parties, if named)."""
        from engine.protocol import QueryAnswer

        if isinstance(command, (Settle, Instruct)):
            fields = msgspec.structs.asdict(command)
            record = {name: fields[name] for name in ("trade", "seller", "buyer", "security", "quantity",
                                                       "cash_asset", "amount", "settle_at")}
            return QueryAnswer(kind="trade", key=command.trade, status="settled",
                               parties=(command.seller, command.buyer), record=record)
        if isinstance(command, Cancel):
            parties = (command.seller, command.buyer) if command.seller and command.buyer else ()
            return QueryAnswer(kind="trade", key=command.trade, status="cancelled", parties=parties)
        return None
