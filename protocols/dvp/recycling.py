"""Recycling: retry queued trades when an account they wait on rises.

Takes the accounts credited by a command that just committed (the
engine's `on_rise`); retries, in FIFO order of arrival, the queued trades
that wait on those accounts and that each account covered when the command
ended. A later trade that fits still overtakes earlier ones that do not.
Credits made by these retries start another round (the engine loops).

Two paths give the same codes, events and state:

- the general path (`recycle_scan`) looks at every trade waiting on each
  risen account, keeps those whose need the account covers, and retries
  them all in arrival order: a retry whose leg has since run short again
  changes nothing (`book.try_queued` checks that leg first);
- the indexed path (`recycle_indexed`) asks each account's waitlist for
  the next trade in arrival order whose need is at most what the account
  holds now (and held when the round began), so it retries only trades
  that settle or move on. Its cost per credit is a comparison when nothing
  fits and O(log n) per retry otherwise, whatever the queue's length.

The general path runs when partial settlement is on (a retry may then
settle part of a trade whose leg is short) or when its switch is off
(`engine.fastpath`).
"""

from __future__ import annotations

import heapq

from engine import codes as C
from engine.fastpath import switches
from engine.state import State

from ..waitlist import Waitlist
from .book import (
    DEFERRED,
    book_of,
    need_of,
    partial_enabled,
    try_queued,
    wait_on,
    waited_account,
    waitlists,
)
from .records import OFFSET_TRADES_MAX, Trade, trade_key


def on_rise(state: State, accounts: list[tuple[str, str]]) -> None:
    """Recycle the queued trades the risen accounts can now cover."""
    if switches.dvp_indexed_recycling and not partial_enabled(state):
        recycle_indexed(state, accounts)
    else:
        recycle_scan(state, accounts)


def _current(queue: dict[str, Trade], wl: Waitlist, account: tuple[str, str], entry) -> Trade | None:
    """The queued trade an entry stands for, if the trade still waits on this account with the entry's
    arrival and need; else drop the entry (it is stale) and give None.

    An entry is named by (key, arrival, need), so a record a rollback
    restored still has its own entry: the index never misses a waiting
    trade, it only holds stale entries until they are found.
    """
    order, need, ident = entry
    t = queue.get(ident[0])
    if t is None or t.arrival != order or waited_account(t) != account or need_of(t) != need:
        wl.remove(ident)
        return None
    return t


def recycle_scan(state: State, accounts: list[tuple[str, str]]) -> None:
    """The general path: every waiting trade an account covers, retried in arrival order."""
    queue = book_of(state).queue
    lists = waitlists(state)
    partial = partial_enabled(state)
    retry: list[Trade] = []
    for account in accounts:
        wl = lists.get(account)
        if not wl:
            continue
        asset, party = account
        have = state.available(party, asset)
        if not (have > 0 and partial) and have < wl.least():
            continue  # every trade waiting here needs more than the account holds
        for entry in wl.entries():
            t = _current(queue, wl, account, entry)
            if t is not None and (need_of(t) <= have or (partial and have > 0)):
                retry.append(t)
        if not wl:
            del lists[account]
    for t in sorted(retry, key=lambda x: x.arrival):
        current = queue.get(trade_key(t))
        if current is not None:
            try_queued(state, current, "recycling")


def recycle_indexed(state: State, accounts: list[tuple[str, str]]) -> None:
    """The indexed path: only the retries that settle a trade or move it on.

    Each risen account's next candidate (the first trade after the last one
    retried whose need it covers, now and at the rise) sits in a heap; a
    retry changes at most four accounts, so only their candidates are
    looked up again: O(log n) per retry, whatever the number of accounts.
    """
    queue = book_of(state).queue
    lists = waitlists(state)
    cursors: list[tuple[Waitlist, tuple[str, str], int]] = []  # (waitlist, account, what it held at the rise)
    for account in dict.fromkeys(accounts):
        wl = lists.get(account)
        if wl and state.available(account[1], account[0]) >= wl.least():
            cursors.append((wl, account, state.available(account[1], account[0])))
    if not cursors:
        return
    where = {account: i for i, (_wl, account, _have) in enumerate(cursors)}
    deferred: list = []
    state.runtime[DEFERRED] = deferred
    after = None  # arrival of the last trade retried: the round goes through arrivals once

    def candidate(i: int) -> tuple[int, int, Trade] | None:
        wl, account, have = cursors[i]
        now = state.available(account[1], account[0])
        most = have if have < now else now
        while True:
            entry = wl.first(after, most)
            if entry is None:
                return None
            t = _current(queue, wl, account, entry)
            if t is not None:
                return (t.arrival, i, t)

    try:
        current: list[tuple[int, int, Trade] | None] = [candidate(i) for i in range(len(cursors))]
        heap = [c[:2] for c in current if c is not None]
        heapq.heapify(heap)
        while heap:
            arrival, i = heapq.heappop(heap)
            found = current[i]
            if found is None or found[0] != arrival:
                continue  # superseded: this cursor's candidate was looked up again since
            t = found[2]
            after = arrival
            try_queued(state, t, "recycling")
            touched = {i}
            for account in ((t.security, t.seller), (t.security, t.buyer), (t.cash_asset, t.buyer),
                            (t.cash_asset, t.seller)):
                j = where.get(account)
                if j is not None:
                    touched.add(j)
            for j in touched:
                current[j] = found = candidate(j)
                if found is not None:
                    heapq.heappush(heap, found[:2])
    finally:
        del state.runtime[DEFERRED]
    for _account, t in deferred:
        wait_on(state, t)
    for wl, account, _have in cursors:
        if not wl and lists.get(account) is wl:
            del lists[account]


def recycle_all(state: State) -> int:
    """Try every queued trade alone, in FIFO order; return how many settled."""
    book = book_of(state)
    settled = 0
    for t in sorted(book.queue.values(), key=lambda x: x.arrival)[:OFFSET_TRADES_MAX]:
        key = trade_key(t)
        if key in book.queue and try_queued(state, book.queue[key], "recycling") == C.OK:
            settled += 1
    return settled
