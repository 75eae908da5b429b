"""Repo legs waiting for the borrower's cash: open margin calls and queued closing legs.

Takes the accounts credited by a command that just committed (the
engine's `on_rise`); meets the open calls and settles the queued closing
legs of the borrowers whose cash rose, in order of deadline (a closing
leg's deadline is the repo's end), then repo id.

Two paths give the same codes, events and state:

- the general path (`recycle_scan`) tries every waiting leg of each risen
  borrower in that order; a leg the cash does not cover changes nothing;
- the indexed path (`recycle_indexed`) asks the borrower's waitlist for the
  next leg in that order whose amount the cash covers now, so it tries only
  legs that settle (or that a freeze blocks). A closing leg's amount is
  fixed once it queues (interest stops accruing at `end`); a call's follows
  its amendments.
"""

from __future__ import annotations

import heapq

from engine.fastpath import switches
from engine.state import State

from ..waitlist import Waitlist
from .records import NAME, Repo, book_of, index_of
from .valuation import interest

WAITLISTS = NAME + ".waitlists"  # runtime: (cash asset, borrower) -> Waitlist of repo ids
DEFERRED = NAME + ".deferred"


def waitlists(state: State) -> dict[tuple[str, str], Waitlist]:
    found = state.runtime.get(WAITLISTS)
    if found is None:
        found = state.runtime[WAITLISTS] = {}
    return found


def _waiting(state: State, repo_id: str, r: Repo) -> tuple[tuple[int, str], int] | None:
    """(order, need) of a repo's leg waiting for cash, or None if none waits."""
    if r.call:
        return (r.deadline, repo_id), r.call
    if r.closing:
        due = r.principal + interest(state, r, r.end) - r.margin
        return (r.end, repo_id), max(due, 0)
    return None


def wait_for_cash(state: State, repo_id: str, r: Repo) -> None:
    """Note that `r`'s call or closing leg waits for its borrower's cash (watched, and indexed)."""
    state.watch_account(r.cash_asset, r.borrower)
    waiting = _waiting(state, repo_id, r)
    if waiting is None:
        return
    deferred = state.runtime.get(DEFERRED)
    if deferred is not None:
        deferred.append((repo_id, r))
        return
    account = (r.cash_asset, r.borrower)
    lists = waitlists(state)
    wl = lists.get(account)
    if wl is None:
        wl = lists[account] = Waitlist()
    wl.add(waiting[0], waiting[1], (repo_id, waiting[0], waiting[1]))  # named by its figures: never replaced


def rebuild_waitlists(state: State) -> None:
    waitlists(state).clear()
    state.runtime.pop(DEFERRED, None)
    for repo_id, r in sorted(book_of(state).repos.items()):
        if r.call or r.closing:
            wait_for_cash(state, repo_id, r)


def _try(state: State, repo_id: str, r: Repo) -> None:
    from .lifecycle import close_now
    from .margin import meet

    if r.closing:
        state.attempt(close_now, state, repo_id, "recycling")
    elif r.call:
        meet(state, repo_id)  # checks the borrower's cash before it moves anything


def on_rise(state: State, accounts: list[tuple[str, str]]) -> None:
    if switches.repo_indexed_recycling:
        recycle_indexed(state, accounts)
    else:
        recycle_scan(state, accounts)


def recycle_scan(state: State, accounts: list[tuple[str, str]]) -> None:
    """The general path: every waiting leg of each risen borrower, by deadline then repo id."""
    book = book_of(state)
    by_borrower = index_of(state, "borrower")
    waiting = []
    for asset, party in accounts:
        for repo_id in by_borrower.get(party, ()):
            r = book.repos.get(repo_id)
            if r is not None and r.borrower == party and r.cash_asset == asset and (r.call or r.closing):
                waiting.append((r.deadline if r.call else r.end, repo_id))
    for _due, repo_id in sorted(set(waiting)):
        r = book.repos.get(repo_id)
        if r is not None:
            _try(state, repo_id, r)


def recycle_indexed(state: State, accounts: list[tuple[str, str]]) -> None:
    """The indexed path: only the legs the borrower's cash covers, in the same order.

    Each risen account's next leg sits in a heap; a leg that moves cash
    changes its borrower's and lender's accounts only, so only their
    candidates are looked up again.
    """
    repos = book_of(state).repos
    lists = waitlists(state)
    cursors = [(lists[a], a) for a in dict.fromkeys(accounts) if lists.get(a)]
    if not cursors:
        return
    where = {account: i for i, (_wl, account) in enumerate(cursors)}
    deferred: list = []
    state.runtime[DEFERRED] = deferred
    after = None

    def candidate(i: int):
        wl, (asset, party) = cursors[i]
        have = state.available(party, asset)
        while True:
            entry = wl.first(after, have)
            if entry is None:
                return None
            order, need, ident = entry
            r = repos.get(ident[0])
            if r is not None and r.borrower == party and r.cash_asset == asset \
                    and _waiting(state, ident[0], r) == (order, need):
                return (order, i, ident[0], r)
            wl.remove(ident)  # stale: the repo moved on, or its figures changed since

    try:
        current = [candidate(i) for i in range(len(cursors))]
        heap = [c[:2] for c in current if c is not None]
        heapq.heapify(heap)
        while heap:
            order, i = heapq.heappop(heap)
            found = current[i]
            if found is None or found[0] != order:
                continue
            _order, _i, repo_id, r = found
            after = order
            _try(state, repo_id, r)
            touched = {i}
            for account in ((r.cash_asset, r.borrower), (r.cash_asset, r.lender)):
                j = where.get(account)
                if j is not None:
                    touched.add(j)
            for j in touched:
                current[j] = found = candidate(j)
                if found is not None:
                    heapq.heappush(heap, found[:2])
    finally:
        del state.runtime[DEFERRED]
    for repo_id, r in deferred:
        current_repo = repos.get(repo_id)
        if current_repo is not None:
            wait_for_cash(state, repo_id, current_repo)
    for wl, account in cursors:
        if not wl and lists.get(account) is wl:
            del lists[account]


def sweep_waitlists(state: State) -> None:
    """Rebuild the waitlists from the book once stale entries outnumber the waiting legs (end of a batch)."""
    lists = state.runtime.get(WAITLISTS)
    if lists and sum(len(wl) for wl in lists.values()) > 2 * len(book_of(state).repos) + 1024:
        rebuild_waitlists(state)
