"""A model of gross DvP written from the protocol's rules, for `test_dvp_model`.

Takes commands as plain values (`Deal`s, parties, amounts) and gives what
the rules say should follow: a result code name per command, the
protocol's events in order, and the state after it (balances and supply,
freezes, the queue with each trade's arrival and the leg it waits on, the
unmatched instructions, the timers of trades due later, and the liquidity
pass's bookkeeping). It is written from the docstrings of
`protocols/dvp/__init__.py`, `book.py`, `recycling.py`, `offsetting.py`
and `handlers.py`, and imports nothing from the protocol or the engine.
Partial settlement, suspensions and encumbrances are not modelled.

`Accounts` keeps balances and freezes; `Model` adds the DvP rules;
`offset_select` is the multilateral pass's iterative removal.
"""

from __future__ import annotations

import dataclasses
import itertools

BANKS = ("A", "B", "C")
SECURITIES = ("BOND", "BILL")
CASH = "USD"
ASSETS = (CASH,) + SECURITIES
LEG = {"insufficient_securities": "securities", "insufficient_cash": "cash"}  # what a trade then waits on


@dataclasses.dataclass(frozen=True)
class Deal:
    """The terms of a trade, as both sides instruct them."""

    trade: str
    seller: str
    buyer: str
    security: str
    quantity: int
    amount: int
    settle_at: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.seller, self.buyer, self.trade)


@dataclasses.dataclass(frozen=True)
class Queued:
    deal: Deal
    arrival: int
    waits: str  # "securities", "cash" or "" (due later, or a party frozen)

    def account(self) -> tuple[str, str] | None:
        """The account (party, asset) the trade waits on."""
        if self.waits == "securities":
            return (self.deal.seller, self.deal.security)
        if self.waits == "cash":
            return (self.deal.buyer, CASH)
        return None

    def need(self) -> int:
        return self.deal.quantity if self.waits == "securities" else self.deal.amount


class Accounts:
    """Balances, supply and freezes, and the accounts credited since the last recycling (`rose`)."""

    def __init__(self, funding: dict[tuple[str, str], int]):
        self.bal = {(p, a): 0 for p in BANKS for a in ASSETS}
        self.bal.update(funding)
        self.supply = {a: sum(n for (_, x), n in funding.items() if x == a) for a in ASSETS}
        self.frozen: dict[str, set[str]] = {}  # party -> frozen assets ("*": all)
        self.rose: list[tuple[str, str]] = []  # accounts credited, not yet recycled

    def credit(self, party: str, asset: str, n: int) -> None:
        self.bal[(party, asset)] += n
        self.rose.append((party, asset))

    def debit(self, party: str, asset: str, n: int) -> None:
        assert self.bal[(party, asset)] >= n, "the model overdrew an account"
        self.bal[(party, asset)] -= n

    def is_frozen(self, party: str, asset: str) -> bool:
        marks = self.frozen.get(party, ())
        return "*" in marks or asset in marks

    def touches_a_freeze(self, d: Deal) -> bool:
        return any(self.is_frozen(p, a) for p in (d.seller, d.buyer) for a in (d.security, CASH))

    def exchange(self, d: Deal) -> None:
        self.debit(d.seller, d.security, d.quantity)
        self.debit(d.buyer, CASH, d.amount)
        self.credit(d.buyer, d.security, d.quantity)
        self.credit(d.seller, CASH, d.amount)

    def mint(self, party: str, asset: str, n: int) -> str:
        if self.is_frozen(party, asset):
            return "account_frozen"
        self.credit(party, asset, n)
        self.supply[asset] += n
        return "ok"

    def move(self, asset: str, source: str, target: str, n: int) -> str:
        if self.is_frozen(source, asset) or self.is_frozen(target, asset):
            return "account_frozen"
        if self.bal[(source, asset)] < n:
            return "insufficient_funds"
        self.debit(source, asset, n)
        self.credit(target, asset, n)
        return "ok"

    def freeze(self, party: str, asset: str) -> str:
        self.frozen.setdefault(party, set()).add(asset)
        return "ok"

    def unfreeze(self, party: str, asset: str) -> str:
        """Lift a freeze mark (the DvP model then retries what it blocked: `Model.unfreeze`)."""
        marks = self.frozen.get(party, set())
        if asset not in marks:
            return "invalid_field"
        marks.discard(asset)
        if not marks:
            del self.frozen[party]
        return "ok"


class Model(Accounts):
    """DvP from its rules: the queue, unmatched instructions, timers, and what the pass remembers."""

    def __init__(self, funding: dict[tuple[str, str], int], interval: int, now: int):
        super().__init__(funding)
        self.interval = interval
        self.now = now
        self.queue: dict[tuple[str, str, str], Queued] = {}
        self.unmatched: dict[tuple[tuple[str, str, str], str], tuple[Deal, int]] = {}  # (key, side) -> deal, arrival
        self.arrivals = itertools.count(1)  # one sequence for queued trades and unmatched instructions
        self.timers: list[tuple[int, int, tuple[str, str, str]]] = []  # (due, order, key): trades due later
        self.timer_order = itertools.count()
        self.dirty = False  # a trade queued since the last pass
        self.offset_at = 0  # when the last pass ran (on time)
        self.fresh: set[tuple[str, str, str]] = set()  # keys queued since the last pass
        self.events: list[tuple[str, str, dict]] = []
        self.notes: list[str] = []  # for the statistics

    def emit(self, kind: str, ref: str, **data: str) -> None:
        self.events.append((kind, ref, data))

    def take_events(self) -> list[tuple[str, str, dict]]:
        events, self.events = self.events, []
        return events

    def why_not(self, d: Deal) -> str | None:
        """Why a trade cannot settle now: a party frozen in either asset, due later, then the
        seller's securities, then the buyer's cash."""
        if self.touches_a_freeze(d):
            return "party_frozen"
        if d.settle_at > self.now:
            return "not_yet"
        if self.bal[(d.seller, d.security)] < d.quantity:
            return "insufficient_securities"
        if self.bal[(d.buyer, CASH)] < d.amount:
            return "insufficient_cash"
        return None

    def taken(self, key) -> bool:
        return key in self.queue or (key, "deliver") in self.unmatched or (key, "receive") in self.unmatched

    # ------------------------------------------------------------ commands

    def enter(self, d: Deal) -> str:
        """A matched trade: settle it now if it can, else queue it, waiting on what blocked it."""
        if self.taken(d.key):
            return "trade_exists"
        if d.settle_at > self.now:
            why = "not_yet"
            self.timers.append((d.settle_at, next(self.timer_order), d.key))
        else:
            why = self.why_not(d)
            if why is None:
                self.exchange(d)
                return "ok"
        self.queue[d.key] = Queued(d, next(self.arrivals), LEG.get(why, ""))
        self.dirty = True
        self.fresh.add(d.key)
        self.emit("queued", d.trade, reason=why)
        self.notes.append(f"queued: {why}")
        return "ok"

    @staticmethod
    def invalid(d: Deal) -> str | None:
        if d.seller == d.buyer:
            return "same_party"
        if d.quantity <= 0 or d.amount <= 0:
            return "invalid_amount"
        return None

    def settle(self, d: Deal, signers: tuple[str, ...]) -> str:
        if d.seller not in signers or d.buyer not in signers:
            return "unauthorized"
        return self.invalid(d) or self.enter(d)

    def instruct(self, d: Deal, side: str, signer: str) -> str:
        if (d.seller if side == "deliver" else d.buyer) != signer:
            return "unauthorized"
        code = self.invalid(d)
        if code:
            return code
        if (d.key, side) in self.unmatched or d.key in self.queue:
            return "trade_exists"
        other = (d.key, "receive" if side == "deliver" else "deliver")
        theirs = self.unmatched.get(other)
        if theirs is not None and theirs[0] == d:  # every term equal: they match
            del self.unmatched[other]
            self.emit("matched", d.trade)
            self.enter(d)
            if d.key not in self.queue:
                self.emit("settled", d.trade, by="match")
            self.notes.append("instruct: matched, " + ("queued" if d.key in self.queue else "settled"))
            return "ok"
        self.unmatched[(d.key, side)] = (d, next(self.arrivals))
        self.emit("unmatched", d.trade, side=side)
        self.notes.append("instruct: waits unmatched" + (" beside a different other side" if theirs else ""))
        return "ok"

    def cancel(self, trade: str, seller: str, buyer: str, signer: str) -> str:
        """Either party may cancel a queued trade; only its instructing party an unmatched instruction."""
        if seller or buyer:
            if seller not in BANKS or buyer not in BANKS:
                return "invalid_field"
            keys = [(seller, buyer, trade)]
        else:
            keys = sorted({k for k in self.queue if k[2] == trade} | {k for k, _ in self.unmatched if k[2] == trade})
        found = []
        for key in keys:
            if key in self.queue:
                found.append((key, None))
            else:
                found += [(key, side) for side in ("deliver", "receive") if (key, side) in self.unmatched]
        if not found:
            return "unknown_trade"
        mine = [(key, side) for key, side in found
                if (side is None and signer in key[:2]) or (side == "deliver" and signer == key[0])
                or (side == "receive" and signer == key[1])]
        if not mine:
            return "unauthorized"
        if len({key for key, _ in mine}) > 1:
            return "invalid_field"
        for key, side in mine:
            if side is None:
                del self.queue[key]
                self.emit("cancelled", trade)
            else:
                del self.unmatched[(key, side)]
                self.emit("cancelled", trade, side=side)
        return "ok"

    def cutoff(self) -> str:
        """Retry every queued trade in arrival order, run a pass and, if it settled anything, retry every
        queued trade again; then fail what still waits."""
        for key in self.by_arrival(self.queue):
            if key in self.queue:
                self.retry(key, "recycling")
        if self.liquidity_pass():
            for key in self.by_arrival(self.queue):
                if key in self.queue:
                    self.retry(key, "recycling")
        for key in self.by_arrival(self.queue):
            q = self.queue.pop(key)
            d = q.deal
            why = self.why_not(d)
            if why is None:
                why = "insufficient_cash"  # what blocking_code's OK maps to: it could settle, yet fails
                self.notes.append("cutoff: a trade that could settle fails")
            data = {"reason": why}
            party, asset, need = {"insufficient_securities": (d.seller, d.security, d.quantity),
                                  "insufficient_cash": (d.buyer, CASH, d.amount)}.get(why, (None, None, 0))
            if party is not None and need > self.bal[(party, asset)]:
                data.update(party=party, asset=asset, short=str(need - self.bal[(party, asset)]))
            self.emit("failed", d.trade, **data)
            self.notes.append(f"cutoff: failed {why}")
        for key, side in sorted(self.unmatched, key=lambda ks: self.unmatched[ks][1]):
            d, _ = self.unmatched.pop((key, side))
            self.emit("failed", d.trade, reason="unmatched", side=side)
            self.notes.append("cutoff: failed unmatched")
        self.dirty = False
        self.fresh.clear()
        self.emit("cutoff", "")
        return "ok"

    def unfreeze(self, party: str, asset: str) -> str:
        """Lift a freeze mark, then retry, in arrival order, the party's due queued trades that wait on no
        account (a freeze blocked them): each settles or waits on the leg it lacks."""
        code = super().unfreeze(party, asset)
        if code == "ok":
            for key in self.by_arrival(self.queue):
                q = self.queue.get(key)
                if q is not None and not q.waits and party in (q.deal.seller, q.deal.buyer) \
                        and q.deal.settle_at <= self.now:
                    self.retry(key, "recycling")
        return code

    # ------------------------------------------------------------ recycling

    def by_arrival(self, queue) -> list:
        return sorted(queue, key=lambda k: queue[k].arrival)

    def retry(self, key, how: str) -> None:
        """Retry one queued trade: while the leg it waits on is short nothing changes; else it settles
        or waits on what blocks it now."""
        q = self.queue[key]
        account = q.account()
        if account is not None and self.bal[(account[0], account[1])] < q.need():
            return
        why = self.why_not(q.deal)
        if why is None:
            self.exchange(q.deal)
            del self.queue[key]
            self.emit("settled", q.deal.trade, by=how)
            return
        if LEG.get(why, "") != q.waits:
            self.queue[key] = dataclasses.replace(q, waits=LEG.get(why, ""))

    def recycle(self) -> None:
        """After a command: the trades waiting on each credited account whose need the account covers
        are retried in arrival order; credits made by those retries start another round."""
        rounds = 0
        while self.rose:
            accounts = list(dict.fromkeys(self.rose))
            self.rose = []
            chosen = []
            for account in accounts:
                have = self.bal[account]
                waiting = [k for k in self.by_arrival(self.queue) if self.queue[k].account() == account]
                covered = [k for k in waiting if self.queue[k].need() <= have]
                chosen += covered
                self.fifo_notes(account, waiting, covered)
            if not chosen:
                continue
            rounds += 1
            for key in sorted(chosen, key=lambda k: self.queue[k].arrival):
                if key in self.queue:
                    self.retry(key, "recycling")
        if rounds > 1:
            self.notes.append("recycling: credits made by retries started another round")

    def fifo_notes(self, account, waiting, covered) -> None:
        if covered and waiting[: len(covered)] != covered:
            self.notes.append("recycling: a later trade that fits overtakes an earlier one")
        if len(covered) > 1:
            self.notes.append("recycling: one credit covers several trades")

    # ------------------------------------------------------------ the pass

    def on_time(self) -> None:
        """When time leaves an instant: a pass, if trades queued since the last and the interval passed."""
        if not (self.dirty and self.queue) or self.now - self.offset_at < self.interval:
            return
        self.dirty = False
        self.offset_at = self.now
        self.liquidity_pass()

    def settle_together(self, trades: list[Queued], how: str) -> None:
        for account, position in end_positions(self.bal, trades).items():
            assert position >= 0, "the model offsets into an overdraft"
            delta = position - self.bal[account]
            if delta > 0:
                self.credit(account[0], account[1], delta)
            else:
                self.bal[account] = position
        for q in trades:
            del self.queue[q.deal.key]
            self.emit("settled", q.deal.trade, by=how)

    def liquidity_pass(self) -> int:
        """Bilateral offsetting per pair with a trade queued since the last pass, then multilateral."""
        candidates = [self.queue[k] for k in self.by_arrival(self.queue)
                      if self.queue[k].deal.settle_at <= self.now and not self.touches_a_freeze(self.queue[k].deal)]
        fresh_pairs = {tuple(sorted(k[:2])) for k in self.fresh if k in self.queue}
        self.fresh.clear()
        pairs: dict[tuple, list[Queued]] = {}
        for q in candidates:
            pair = tuple(sorted((q.deal.seller, q.deal.buyer)))
            if pair in fresh_pairs:
                pairs.setdefault(pair, []).append(q)
        settled = 0
        for pair in sorted(pairs):
            group = pairs[pair]
            both_ways = len({q.deal.seller for q in group}) > 1
            if both_ways and all(v >= 0 for v in end_positions(self.bal, group).values()):
                self.settle_together(group, "bilateral_offset")
                settled += len(group)
                self.notes.append("offsetting: a bilateral set settles")
        rest = [q for q in candidates if q.deal.key in self.queue]
        if len(rest) > 1:
            chosen = offset_select(self.bal, rest)
            if chosen:
                self.settle_together(chosen, "multilateral_offset")
                settled += len(chosen)
                self.notes.append(f"offsetting: a multilateral set of {min(len(chosen), 4)}"
                                  f"{'+' if len(chosen) >= 4 else ''} settles")
        if not settled:
            self.notes.append("offsetting: a pass settles nothing")
        return settled

    def tick(self, seconds: int) -> None:
        """Ledger time moves on: at each instant it leaves the pass may run; then trades due fire."""
        until = self.now + seconds
        while True:
            self.on_time()
            self.recycle()
            due = sorted(t for t in self.timers if t[0] <= until)
            if not due:
                break
            self.now = max(self.now, due[0][0])
            for timer in due:
                if timer[0] > self.now:
                    break
                self.timers.remove(timer)
                if timer[2] in self.queue:  # whatever trade holds the key now
                    self.retry(timer[2], "settlement_time")
                    self.notes.append("timer: a trade due later is retried")
                self.recycle()
        self.now = until


# ------------------------------------------------------------ the multilateral pass


def end_positions(bal: dict, trades: list[Queued]) -> dict[tuple[str, str], int]:
    """Each touched account's balance after all `trades` settled together."""
    end: dict[tuple[str, str], int] = {}
    for q in trades:
        d = q.deal
        for account, delta in (((d.seller, d.security), -d.quantity), ((d.buyer, d.security), d.quantity),
                               ((d.buyer, CASH), -d.amount), ((d.seller, CASH), d.amount)):
            end[account] = end.get(account, bal[account]) + delta
    return end


def offset_select(bal: dict, trades: list[Queued]) -> list[Queued]:
    """Iterative removal: while some account would end negative, remove the latest-arrived
    candidate that debits it.

    Which negative account is handled first changes the outcome (see
    `test_dvp_model.test_offsetting_handles_the_account_found_last_first`)
    and `offsetting.py` does not say; the protocol handles them as a stack: at
    first every account ending negative, in the order the trades (by
    arrival) first touch them (seller's security, buyer's security,
    buyer's cash, seller's cash), the last found first; an account is
    handled until it would end non-negative; an account a removal
    pushes below zero (the removed trade's buyer's security, then its
    seller's cash) is handled next, the cash one first.
    """
    alive = list(trades)
    end = end_positions(bal, alive)  # dicts keep the order the trades first touch each account
    pending = [account for account, position in end.items() if position < 0]
    while pending:
        account = pending.pop()
        while end[account] < 0:
            q = max((q for q in alive if account in ((q.deal.seller, q.deal.security), (q.deal.buyer, CASH))),
                    key=lambda q: q.arrival)
            alive.remove(q)
            d = q.deal
            end[(d.seller, d.security)] += d.quantity
            end[(d.buyer, d.security)] -= d.quantity
            end[(d.buyer, CASH)] += d.amount
            end[(d.seller, CASH)] -= d.amount
            pending += [a for a in ((d.buyer, d.security), (d.seller, CASH)) if end[a] < 0]
    return alive
