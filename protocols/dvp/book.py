"""DvP settlement mechanics: settle a trade now, queue it, retry it, index what it waits on.

Takes the ledger `State` and trades (`records.Trade`, or a `Settle`
command, which has the same field names); gives the one-step settlement of
both legs (`settle_now`), entry into the queue (`enter`), a retry of a
queued trade (`try_queued`) and the runtime waitlists that say which
queued trades wait on which account (`waitlists`, `wait_on`).

A queued trade waits on one account: the leg that blocked it last
(`Trade.waits`: the seller's securities or the buyer's cash). A retry
checks that leg first: while it is still short nothing changes, so a retry
that cannot settle costs nothing and, when the leg is covered, settles the
trade or moves it to wait on its other leg (or on nothing, if a party is
frozen or inactive). Partial settlement, an option, settles what both
parties cover and leaves the rest queued.
"""

from __future__ import annotations

import msgspec

from engine import codes as C
from engine.machine import AMOUNT_MAX
from engine.records import STATUS_ACTIVE
from engine.state import State

from ..waitlist import Waitlist
from .records import (
    CODES,
    INSUFFICIENT_CASH,
    INSUFFICIENT_SECURITIES,
    NAME,
    NOT_YET,
    OFFSETTING_KEY,
    PARTIAL_KEY,
    PARTY_FROZEN,
    PARTY_INACTIVE,
    QUEUE_KEY,
    REASONS,
    TRADE_EXISTS,
    WAITS,
    Book,
    Trade,
    taken,
    trade_key,
)

WAITLISTS = NAME + ".waitlists"  # runtime: (asset, participant) -> Waitlist of trade keys
DEFERRED = NAME + ".deferred"  # runtime: waitlist entries added while a recycling round runs


def book_of(state: State) -> Book:
    return state.protocols[NAME]


def next_arrival(state: State, book: Book) -> int:
    n = book.counters.get("arrival", 0) + 1
    state.put(book.counters, "arrival", n)
    return n


def config_int(state: State, key: str, default: int) -> int:
    """A non-negative integer setting of 64 bits; a value that is not one counts as the default."""
    text = state.config.get(key)
    if text is None or not (text.isascii() and text.isdigit()) or len(text) > 19:  # 19 digits: int() is cheap
        return default
    value = int(text)
    return value if value <= AMOUNT_MAX else default


def partial_enabled(state: State) -> bool:
    return state.config.get(PARTIAL_KEY) == "true"


def queue_enabled(state: State) -> bool:
    """The settlement queue is on unless `dvp.queue` is "false" (then a trade short of funds fails at once)."""
    return state.config.get(QUEUE_KEY) != "false"


def offsetting_enabled(state: State) -> bool:
    """The liquidity-saving pass runs unless `dvp.offsetting` is "false"."""
    return state.config.get(OFFSETTING_KEY) != "false"


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


def settle_now(state: State, t: Trade) -> int:
    """Settle both legs in one step (both are checked before either moves), or say why not."""
    parts = state.participants
    if parts[t.seller].status or parts[t.buyer].status:
        return PARTY_INACTIVE
    if state.frozen or t.settle_at > state.now:
        code = blocking_code(state, t)
        if code:
            return code
    return _SHORT[state.exchange(t.security, t.quantity, t.cash_asset, t.amount, t.seller, t.buyer)]


def enter(state: State, t: Trade | msgspec.Struct) -> int:
    """A matched trade: settle now, or queue it (and say why); with the queue off, fail it at once.

    `t` may be the `Settle` command itself (same field names as `Trade`):
    the common case settles at once without building a record.
    """
    return enter_outcome(state, t)[0]


def enter_outcome(state: State, t: Trade | msgspec.Struct) -> tuple[int, str]:
    """`enter`, also saying what became of the trade: "settled", "queued" or "failed" ("" if refused)."""
    book = book_of(state)
    key = trade_key(t)
    if taken(book, key):
        return TRADE_EXISTS, ""
    if t.settle_at <= state.now:
        code = settle_now(state, t)  # checks before it writes: nothing to roll back on refusal
        if code == C.OK:
            return C.OK, "settled"
        if not queue_enabled(state):  # no queue: it fails now, as a queued trade would at the cut-off
            fail_now(state, t, code)
            return C.OK, "failed"
    else:
        code = NOT_YET
        state.schedule(t.settle_at, NAME, "settle", key)
    t = Trade(t.trade, t.seller, t.buyer, t.security, t.quantity, t.cash_asset, t.amount, t.settle_at,
              next_arrival(state, book), WAITS.get(code, ""))
    if code != NOT_YET and partial_enabled(state):
        t = settle_part(state, t)
    state.put(book.queue, key, t)
    note_trade(state, t.trade, key)
    state.put(book.counters, "dirty", 1)
    state.put(book.fresh, key, 1)
    state.emit(NAME, "queued", t.trade, {"reason": CODES[code]})
    wait_on(state, t)
    return C.OK, "queued"


def fail_now(state: State, t: Trade | msgspec.Struct, code: int) -> None:
    """Emit a trade's failure: the reason (from the code that blocks it) and, when short of funds, who
    lacked what and by how much. The caller takes it out of the book, if it was there."""
    reason = REASONS.get(code, CODES[INSUFFICIENT_CASH] if code == C.OK else CODES.get(code, "failed"))
    state.emit(NAME, "failed", t.trade, {"reason": reason, **shortfall(state, t, code)})


def shortfall(state: State, t: Trade | msgspec.Struct, code: int) -> dict[str, str]:
    """Who lacked what, and how much, when a trade fails for lack of funds (empty otherwise)."""
    if code == INSUFFICIENT_SECURITIES:
        party, asset, need = t.seller, t.security, t.quantity
    elif code == INSUFFICIENT_CASH:
        party, asset, need = t.buyer, t.cash_asset, t.amount
    else:
        return {}
    short = need - state.available(party, asset)
    return {"party": party, "asset": asset, "short": str(short)} if short > 0 else {}


def dequeue_settled(state: State, t: Trade, how: str) -> None:
    state.pop(book_of(state).queue, trade_key(t))
    state.emit(NAME, "settled", t.trade, {"by": how})


def try_queued(state: State, t: Trade, how: str) -> int:
    """Retry one queued trade alone: settle it, move it to wait on what blocks it now, or
    (if enabled) settle the part that is covered.

    The leg it waits on is checked first: while that leg is short, the
    retry changes nothing (recycling relies on this to skip such retries).
    """
    partial = partial_enabled(state)
    if not partial:
        if t.waits == "securities":
            if state.available(t.seller, t.security) < t.quantity:
                return INSUFFICIENT_SECURITIES
        elif t.waits == "cash" and state.available(t.buyer, t.cash_asset) < t.amount:
            return INSUFFICIENT_CASH
    code = settle_now(state, t)
    if code == C.OK:
        dequeue_settled(state, t, how)
        return code
    if code != NOT_YET and partial:
        rest = settle_part(state, t)
        if rest is not t:
            state.put(book_of(state).queue, trade_key(t), rest)
            t = rest
            wait_on(state, t)  # its need fell
    note_block(state, t, code)
    return code


def settle_part(state: State, t: Trade) -> Trade:
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


def can_settle(state: State, t: Trade) -> bool:
    """Parties active and not frozen, settlement time reached: only balances may block it."""
    parts = state.participants
    if parts[t.seller].status or parts[t.buyer].status or t.settle_at > state.now:
        return False
    if state.frozen:
        return not any(state.is_frozen(p, a) for p in (t.seller, t.buyer) for a in (t.security, t.cash_asset))
    return True


# ---------------------------------------------------------------- waitlists


def waitlists(state: State) -> dict[tuple[str, str], Waitlist]:
    """Runtime index: per account, the queued trades waiting on it (entries may be stale)."""
    found = state.runtime.get(WAITLISTS)
    if found is None:
        found = state.runtime[WAITLISTS] = {}
    return found


def waited_account(t: Trade) -> tuple[str, str] | None:
    if t.waits == "securities":
        return (t.security, t.seller)
    if t.waits == "cash":
        return (t.cash_asset, t.buyer)
    return None


def need_of(t: Trade) -> int:
    """What a queued trade needs on the account it waits on."""
    return t.quantity if t.waits == "securities" else t.amount


def wait_on(state: State, t: Trade) -> None:
    """Index a queued trade under the account it waits on (its `waits` leg).

    The index is derived from the queue records alone: an entry whose trade
    is no longer queued there is dropped when found, so a ledger rebuilt
    from a snapshot recycles exactly as one that never stopped. While a
    recycling round runs, new entries wait until it ends (a round retries
    what waited when it began).
    """
    account = waited_account(t)
    if account is None:
        note_unplaced(state, t)
        return
    state.watch_account(*account)
    deferred = state.runtime.get(DEFERRED)
    if deferred is not None:
        deferred.append((account, t))
        return
    lists = waitlists(state)
    wl = lists.get(account)
    if wl is None:
        wl = lists[account] = Waitlist()
    need = need_of(t)
    wl.add(t.arrival, need, (trade_key(t), t.arrival, need))


BLOCKED = NAME + ".blocked"  # runtime: party -> {trade key: None}, queued trades that wait on no account
BLOCKED_ADDED = NAME + ".blocked_added"  # runtime: entries added to BLOCKED since it was last rebuilt


def note_unplaced(state: State, t: Trade) -> None:
    """Index a queued trade that waits on no account (a party frozen or inactive, or not yet due) under both
    its parties, so lifting a block on either retries it (`retry_blocked`). Entries may be stale (readers
    check them against the queue); they are dropped at the end of a batch once they outnumber the queue."""
    index = state.runtime.get(BLOCKED)
    if index is None:
        index = state.runtime[BLOCKED] = {}
    key = trade_key(t)
    for party in (t.seller, t.buyer):
        keys = index.get(party)
        if keys is None:
            keys = index[party] = {}
        keys[key] = None
    state.runtime[BLOCKED_ADDED] = state.runtime.get(BLOCKED_ADDED, 0) + 2


def retry_blocked(state: State, party: str) -> None:
    """Retry, in FIFO order, the due queued trades of `party` that wait on no account: a block on it lifted."""
    keys = state.runtime.get(BLOCKED, {}).get(party)
    if not keys:
        return
    queue = book_of(state).queue
    found = []
    for key in keys:
        t = queue.get(key)
        if t is not None and not t.waits and party in (t.seller, t.buyer) and t.settle_at <= state.now:
            found.append(t)
    for t in sorted(found, key=lambda x: x.arrival):
        current = queue.get(trade_key(t))
        if current is not None and not current.waits:
            try_queued(state, current, "recycling")


def sweep_blocked(state: State) -> None:
    """Drop stale entries of the blocked index once they outnumber the queue (at the end of a batch)."""
    queue = book_of(state).queue
    if state.runtime.get(BLOCKED_ADDED, 0) <= 2 * len(queue) + 1024:
        return
    state.runtime.pop(BLOCKED, None)
    state.runtime[BLOCKED_ADDED] = 0
    state.runtime[BLOCKED_ADDED] = 0
    for t in sorted(queue.values(), key=lambda x: x.arrival):
        if not t.waits:
            note_unplaced(state, t)


def note_block(state: State, t: Trade, code: int) -> Trade:
    """Record which leg blocked a queued trade this time, and index it there."""
    waits = WAITS.get(code, "")
    if waits != t.waits:
        t = msgspec.structs.replace(t, waits=waits)
        state.put(book_of(state).queue, trade_key(t), t)
        wait_on(state, t)
    return t


TRADE_KEYS = NAME + ".trade_keys"  # runtime: trade id -> keys (seller|buyer|id) it was queued or instructed under


def note_trade(state: State, trade: str, key: str) -> None:
    """Index a trade key under its trade id, for reads by id (entries may be stale: readers check them)."""
    index = state.runtime.get(TRADE_KEYS)
    if index is None:
        index = state.runtime[TRADE_KEYS] = {}
    keys = index.get(trade)
    if keys is None:
        index[trade] = {key}
    else:
        keys.add(key)


def rebuild_trade_keys(state: State) -> None:
    """Drop the stale entries of the trade-id index: rebuild it from the book, once it has grown past twice
    the book's size (at the end of a batch, when nothing can roll back), so its size follows the book."""
    index = state.runtime.get(TRADE_KEYS)
    book = book_of(state)
    if index is None or len(index) <= 2 * (len(book.queue) + len(book.unmatched)) + 1024:
        return
    state.runtime.pop(TRADE_KEYS)
    for key, t in book.queue.items():
        note_trade(state, t.trade, key)
    for key, waiting in book.unmatched.items():
        note_trade(state, waiting.trade.trade, key.rpartition("/")[0])


def keys_of(state: State, trade: str) -> list[str]:
    """The keys a trade id may stand for now (checked against the book by the reader), sorted."""
    return sorted(state.runtime.get(TRADE_KEYS, {}).get(trade, ()))


def sweep_waitlists(state: State) -> None:
    """Rebuild the waitlists from the queue once their stale entries outnumber it (at the end of a batch,
    when nothing can roll back), so the index's size follows the queue."""
    lists = state.runtime.get(WAITLISTS)
    if lists and sum(len(wl) for wl in lists.values()) > 2 * len(book_of(state).queue) + 1024:
        rebuild_waitlists(state)


def rebuild_waitlists(state: State) -> None:
    """Derive the waitlists from the queue (after a snapshot load)."""
    waitlists(state).clear()
    state.runtime.pop(DEFERRED, None)
    state.runtime.pop(BLOCKED, None)
    state.runtime[BLOCKED_ADDED] = 0
    state.runtime.pop(TRADE_KEYS, None)
    book = book_of(state)
    for t in sorted(book.queue.values(), key=lambda x: x.arrival):
        wait_on(state, t)
        note_trade(state, t.trade, trade_key(t))
    for key, waiting in book.unmatched.items():
        note_trade(state, waiting.trade.trade, key.rpartition("/")[0])
