"""Liquidity-saving offsetting: settle together a set of queued trades none of which can settle alone.

Takes the settlement queue; gives `liquidity_pass`, which runs bilateral
offsetting, then multilateral, each as one atomic step in which every
balance ends non-negative.

- Bilateral: for each pair of parties with a trade queued since the last
  pass and trades both ways, all the pair's queued trades settle together
  if the pair's net flows are covered.
- Multilateral: the classic iterative removal of RTGS liquidity-saving
  mechanisms (Bech & Soramaki 2001; Guentzer, Jungnickel & Leclerc 1998):
  take every candidate trade, compute each account's end position
  (available balance plus net flow); while some account would end
  negative, remove the latest-arrived candidate that debits it, so earlier
  instructions keep priority. What remains settles at once.

Work is bounded by `OFFSET_TRADES_MAX` trades per pass, oldest first.
"""

from __future__ import annotations

from engine import codes as C
from engine.state import State

from .book import book_of, can_settle, dequeue_settled
from .records import OFFSET_TRADES_MAX, Trade, trade_key


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
    candidates = [t for t in sorted(book.queue.values(), key=lambda x: x.arrival)
                  if can_settle(state, t)][:OFFSET_TRADES_MAX]
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
