"""DvP command handlers: settle, instruct and match, cancel, and the cut-off.

Takes the protocol's commands with the authority of their envelope; gives
a result code per command (OK, or the rule that refused it), and moves or
queues trades through `book`. The cut-off recycles the queue one last
time, runs a liquidity pass, and fails what is still waiting.
"""

from __future__ import annotations

import msgspec

from engine import codes as C
from engine.fastpath import switches
from engine.records import ID_LENGTH_MAX, ROLE_OPERATOR
from engine.state import State

from .book import blocking_code, book_of, enter, enter_outcome, fail_now, next_arrival, note_trade, offsetting_enabled
from .offsetting import liquidity_pass
from .recycling import recycle_all
from .records import (
    NAME,
    SAME_PARTY,
    TRADE_EXISTS,
    UNKNOWN_TRADE,
    WRONG_ASSET_KIND,
    Book,
    Cancel,
    Cutoff,
    Instruct,
    ScheduleCutoff,
    Settle,
    Trade,
    Waiting,
    other_side,
    side_key,
    taken,
    trade_key,
)


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
    if not cmd.trade or len(cmd.trade) > ID_LENGTH_MAX:
        return C.INVALID_FIELD
    return C.OK


def settle(state: State, cmd: Settle, auth) -> int:
    """Settle a jointly signed DvP now, or queue it.

    The common case (active parties, right asset kinds, positive amounts, no
    freezes, due now, trade id not queued) is checked inline and settles
    through `exchange`; anything else takes the general path (`enter`),
    which gives the same codes and state (switch: `dvp.inline_settle`).
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
            and cmd.quantity > 0 and cmd.amount > 0 and 0 < len(cmd.trade) <= ID_LENGTH_MAX and not state.frozen
            and cmd.settle_at <= state.now and switches.dvp_inline_settle
            and not taken(state.protocols[NAME], trade_key(cmd))):
        if not state.exchange(cmd.security, cmd.quantity, cmd.cash_asset, cmd.amount, seller, buyer, final=True):
            return C.OK
    code = validate_trade(state, cmd)
    if code:
        return code
    return enter(state, cmd)


def instruct(state: State, cmd: Instruct, auth) -> int:
    party = cmd.seller if cmd.side == "deliver" else cmd.buyer
    if auth is not None and party not in auth:
        return C.UNAUTHORIZED
    code = validate_trade(state, cmd)
    if code:
        return code
    book = book_of(state)
    key = trade_key(cmd)
    mine = side_key(key, cmd.side)
    if mine in book.unmatched or key in book.queue:
        return TRADE_EXISTS
    t = Trade(cmd.trade, cmd.seller, cmd.buyer, cmd.security, cmd.quantity, cmd.cash_asset, cmd.amount,
              cmd.settle_at, 0)
    theirs_key = side_key(key, other_side(cmd.side))
    theirs = book.unmatched.get(theirs_key)
    if theirs is not None and msgspec.structs.replace(theirs.trade, arrival=0) == t:
        state.pop(book.unmatched, theirs_key)
        state.emit(NAME, "matched", cmd.trade)
        code, outcome = enter_outcome(state, t)
        if outcome == "settled":
            state.emit(NAME, "settled", cmd.trade, {"by": "match"})
        return code
    state.put(book.unmatched, mine, Waiting(cmd.side, msgspec.structs.replace(t, arrival=next_arrival(state, book))))
    note_trade(state, cmd.trade, key)
    state.emit(NAME, "unmatched", cmd.trade, {"side": cmd.side})
    return C.OK


def _waiting_under(book: Book, key: str) -> list[tuple[str, str | None]]:
    """What waits under a trade key: [(key, None)] for a queued trade, [(key, side), ...] for instructions."""
    if key in book.queue:
        return [(key, None)]
    return [(key, side) for side in ("deliver", "receive") if side_key(key, side) in book.unmatched]


def _may_cancel(book: Book, key: str, side: str | None, auth) -> bool:
    """Either party may cancel a queued trade; only its instructing party an unmatched instruction."""
    if auth is None:
        return True
    t = book.queue[key] if side is None else book.unmatched[side_key(key, side)].trade
    if side is None:
        return t.seller in auth or t.buyer in auth
    return (t.seller if side == "deliver" else t.buyer) in auth


def cancel(state: State, cmd: Cancel, auth) -> int:
    """Withdraw what the signers may cancel under one trade key (see `Cancel`)."""
    book = book_of(state)
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
            waiting = book.unmatched[side_key(key, side)]
            state.pop(book.unmatched, side_key(key, side))
            state.emit(NAME, "cancelled", waiting.trade.trade, {"side": side})
    return C.OK


def run_cutoff(state: State) -> None:
    """Give the queue a last chance, then fail everything still waiting.

    The last chance: every queued trade retried alone, in FIFO order; a
    liquidity pass (unless `dvp.offsetting` is off); and, if the pass
    settled anything (its credits may cover trades it left out), every
    queued trade retried once more.
    """
    book = book_of(state)
    recycle_all(state)
    if offsetting_enabled(state) and liquidity_pass(state):
        recycle_all(state)
    for t in sorted(book.queue.values(), key=lambda x: x.arrival):
        code = blocking_code(state, t)
        state.pop(book.queue, trade_key(t))
        fail_now(state, t, code)
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
