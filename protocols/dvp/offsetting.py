"""Liquidity-saving offsetting: settle together a set of queued trades none of which can settle alone.

Takes the settlement queue; gives `liquidity_pass`, which runs bilateral
offsetting, then multilateral, each as one atomic step in which every
balance ends non-negative.

- Bilateral: for each pair of parties with a trade queued since the last
  pass and trades both ways, all the pair's queued trades settle together
  if the pair's net flows are covered.
- Multilateral: the iterative removal of RTGS liquidity-saving mechanisms
  (Bech & Soramaki 2001; Guentzer, Jungnickel & Leclerc 1998): take every
  candidate trade, compute each account's end position (available balance
  plus net flow); while some account would end negative, remove the
  latest-arrived candidate that debits it, so earlier instructions keep
  priority. What remains settles at once. Which trades remain depends on
  the order negative accounts are taken, and this order is part of the
  rules (replays depend on it): the accounts that end negative at the start
  are listed in the order they first appear in the oldest-first trades, and
  taken from the end of that list (a stack); an account that a removal
  drives negative (the removed trade credited it) is pushed on the stack
  and so taken next. Each account taken loses its latest debits until it
  ends non-negative. The result is a set every balance can bear, found
  greedily; it is not always the largest such set.

Work is bounded by `OFFSET_TRADES_MAX` trades per pass, oldest first.
"""

from __future__ import annotations

from engine import codes as C
from engine.state import State

from .book import book_of, can_settle, dequeue_settled
from .records import OFFSET_TRADES_MAX, Trade, trade_key


def offset_select(state: State, trades: list[Trade]) -> list[Trade]:
    """Pick a FIFO-respecting subset of `trades` (oldest first) that can settle together.

    Iterative removal, in the order the module docstring states: while an
    account would end below zero, drop the latest-arrived remaining trade
    that debits it. (The accounts of each trade are computed once.)
    """
    net: dict[tuple[str, str], int] = {}
    debits: dict[tuple[str, str], list[int]] = {}
    accounts: list[tuple] = []
    get = net.get
    for i, t in enumerate(trades):
        security, cash, seller, buyer = t.security, t.cash_asset, t.seller, t.buyer
        quantity, amount = t.quantity, t.amount
        s = (security, seller)
        b = (security, buyer)
        c = (cash, buyer)
        d = (cash, seller)
        accounts.append((s, b, c, d))
        net[s] = get(s, 0) - quantity
        net[b] = get(b, 0) + quantity
        net[c] = get(c, 0) - amount
        net[d] = get(d, 0) + amount
        stack = debits.get(s)
        if stack is None:
            debits[s] = [i]
        else:
            stack.append(i)
        stack = debits.get(c)
        if stack is None:
            debits[c] = [i]
        else:
            stack.append(i)
    available = state.available
    have = {account: available(account[1], account[0]) for account in net}
    alive = [True] * len(trades)
    work = [a for a, v in net.items() if have[a] + v < 0]
    while work:
        account = work.pop()
        stack = debits[account]
        floor = have[account]
        while floor + net[account] < 0:
            while not alive[stack[-1]]:
                stack.pop()
            i = stack.pop()
            alive[i] = False
            t = trades[i]
            s, b, c, d = accounts[i]
            net[s] += t.quantity
            net[b] -= t.quantity
            net[c] += t.amount
            net[d] -= t.amount
            if have[b] + net[b] < 0:
                work.append(b)
            if have[d] + net[d] < 0:
                work.append(d)
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
        dequeue_settled(state, t, how)
    return C.OK


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


def liquidity_pass(state: State) -> int:
    """Offset the queue bilaterally, then multilaterally; return how many trades settled.

    Bilateral: for each pair of parties with a trade queued since the last
    pass and trades both ways, all their queued trades settle together if
    the pair's net flows are covered. Multilateral: iterative removal
    (`offset_select`) over the whole queue, oldest first, up to
    `OFFSET_TRADES_MAX` trades.
    """
    book = book_of(state)
    settled = 0
    parts = state.participants
    now = state.now
    if state.frozen or any(p.status for p in parts.values()):
        candidates = [t for t in book.queue.values() if can_settle(state, t)]
    else:  # no freezes, every member active: only the settlement time may keep a trade out
        candidates = [t for t in book.queue.values() if t.settle_at <= now]
    candidates.sort(key=lambda x: x.arrival)
    del candidates[OFFSET_TRADES_MAX:]
    fresh_pairs = set()
    for key in book.fresh:
        t = book.queue.get(key)
        if t is not None:
            fresh_pairs.add((t.seller, t.buyer) if t.seller < t.buyer else (t.buyer, t.seller))
    for trade in list(book.fresh):
        state.pop(book.fresh, trade)
    pairs: dict[tuple[str, str], list[Trade]] = {}
    if fresh_pairs:
        for t in candidates:
            pair = (t.seller, t.buyer) if t.seller < t.buyer else (t.buyer, t.seller)
            if pair in fresh_pairs:
                group = pairs.get(pair)
                if group is None:
                    pairs[pair] = [t]
                else:
                    group.append(t)
    for pair in sorted(pairs):
        group = pairs[pair]
        if len({t.seller for t in group}) > 1 and _feasible(state, group):  # trades both ways, covered net
            if state.attempt(_settle_set, state, group, "bilateral_offset") == C.OK:
                settled += len(group)
    rest = [t for t in candidates if trade_key(t) in book.queue] if settled else candidates
    if len(rest) > 1:
        chosen = offset_select(state, rest)
        if chosen and state.attempt(_settle_set, state, chosen, "multilateral_offset") == C.OK:
            settled += len(chosen)
    return settled
