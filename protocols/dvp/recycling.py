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
    """The queued trade an entry stands for, if it still waits on this account; else drop the entry.

    An entry whose trade waits here with another arrival or need (a record
    restored by a rollback, or re-queued under the same key) is re-added
    with the record's figures, which are what count.
    """
    order, need, key = entry
    t = queue.get(key)
    if t is None or waited_account(t) != account:
        wl.remove(key)
        return None
    if t.arrival != order or need_of(t) != need:
        wl.add(t.arrival, need_of(t), key)
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
    """The indexed path: only the retries that settle a trade or move it on."""
    queue = book_of(state).queue
    lists = waitlists(state)
    cursors: list[tuple[Waitlist, tuple[str, str], int]] = []  # (waitlist, account, what it held at the rise)
    for account in accounts:
        wl = lists.get(account)
        if not wl:
            continue
        have = state.available(account[1], account[0])
        if have >= wl.least():
            cursors.append((wl, account, have))
    if not cursors:
        return
    deferred: list = []
    state.runtime[DEFERRED] = deferred
    try:
        after = None  # arrival of the last trade retried: the round goes through arrivals once
        while True:
            best: Trade | None = None
            for wl, account, have in cursors:
                now = state.available(account[1], account[0])
                most = have if have < now else now
                while True:
                    entry = wl.first(after, most)
                    if entry is None:
                        break
                    if best is not None and not entry[0] < best.arrival:
                        break
                    t = _current(queue, wl, account, entry)
                    if t is not None and t.arrival == entry[0] and need_of(t) == entry[1]:
                        best = t
                        break
            if best is None:
                break
            after = best.arrival
            try_queued(state, best, "recycling")
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
