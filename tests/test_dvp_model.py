"""A stateful property test of DvP against a small model written from its rules.

Hypothesis drives a real ledger (`dvp_world.World`: three banks, cash and
two securities, all scarce so that queues form) and, beside it,
`dvp_model.Model`: a plain-Python account of balances, freezes, the
settlement queue, the unmatched instructions, the timers of trades due
later, and what the liquidity pass remembers, written from the rules the
protocol's docstrings state; it calls none of the protocol's functions.
Where a docstring leaves the outcome open (the order in which offsetting
handles accounts that would end negative), `dvp_model.offset_select`
says which choice it makes and a plain test below pins it.

The rules Hypothesis draws: jointly signed `Settle`s (some due later, some
refused), rings of them that gridlock, one side's `Instruct` and its
counterpart (matching or not), credits (`Mint`, `Move`, top-ups of an
account a queued trade waits on) that recycle the queue, `Cancel`,
freezes and unfreezes, ticks that let the liquidity pass run (config
`dvp.offset_interval`: 0, 60 or 300 s) and fire trades due later, and the
cut-off. Each example runs the fast paths or, drawn at the start, their
general paths (`engine.fastpath`). Partial settlement stays off.

After every step the ledger and the model must agree on each result code,
the protocol's events in order (which trades were queued and why, settled
and how, failed and why, with the shortfall, cancelled), every balance and
supply, the queue (each trade's terms, arrival and the leg it waits on),
the unmatched instructions; and the ledger must keep the invariants: value
conserved per asset (supply == balances + holds), no negative balance,
each trade ends at most once (the book's count of waiting work changes
exactly as the step's events say), and FIFO recycling, checked on the
ledger's own books (`fifo_on`).

Not modelled: partial settlement, suspended participants, encumbrances,
scheduled cut-offs, envelopes of several commands.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dvp_model import ASSETS, BANKS, CASH, SECURITIES, Deal, Model
from dvp_world import World, fresh
from engine import codes as C
from engine.fastpath import general_paths
from engine.records import Freeze, Mint, Move, Unfreeze
from protocols import dvp

TRADE_IDS = ("T1", "T2", "T3", "T4", "T5")  # few: ids are reused, by one pair and across pairs
PAIRS = tuple((s, b) for s in BANKS for b in BANKS if s != b)


def note(text: str) -> None:
    """Count something in Hypothesis' statistics (`--hypothesis-show-statistics`)."""
    try:
        event(text)
    except InvalidArgument:  # outside a Hypothesis run (the fixed programs below)
        pass


# ===================================================================== ledger-side checks


def waited(t) -> tuple[str, str] | None:
    """The account (party, asset) a ledger queue record waits on."""
    if t.waits == "securities":
        return (t.seller, t.security)
    if t.waits == "cash":
        return (t.buyer, t.cash_asset)
    return None


def each_trade_ends_at_most_once(before: dict[str, int], after: dict[str, int], events) -> None:
    """The book's waiting work changes exactly as the events say: each queued trade or unmatched
    instruction ends once (settled, failed or cancelled), and a settled trade never returns."""
    change: dict[str, int] = {}
    for kind, ref, data in events:
        delta = {"unmatched": 1, "queued": 1, "matched": -1, "failed": -1, "cancelled": -1,
                 "settled": 0 if data.get("by") == "match" else -1}.get(kind, 0)
        change[ref] = change.get(ref, 0) + delta
    for ref in set(before) | set(after) | set(change):
        assert after.get(ref, 0) == before.get(ref, 0) + change.get(ref, 0), ref


def fifo_on(account, have: int, before: dict, after: dict) -> bool:
    """FIFO, checked on the ledger's books before and after a credit to `account` (which then held
    `have`): walk the trades that waited on it in arrival order. Each one the account covered at its
    turn was retried: it settled (and took what it needed) or moved on to wait on its other leg (or
    on nothing, if a party is frozen); each one it did not cover waits as before.

    Checked when every trade that left the queue waited on the credited account (so no later round
    touched them; a cascade into other accounts is counted and skipped). Tell whether a later trade
    overtook an earlier one that did not fit."""
    waiting = sorted((t for t in before.values() if waited(t) == account), key=lambda t: t.arrival)
    keys = {f"{t.seller}|{t.buyer}|{t.trade}" for t in waiting}
    gone = set(before) - set(after)
    if not waiting:
        return False
    if not gone <= keys:
        note("fifo: a credit cascades beyond the credited account (not checked)")
        return False
    settled_later_than_a_waiting_one = False
    skipped = False
    for t in waiting:
        key = f"{t.seller}|{t.buyer}|{t.trade}"
        need = t.quantity if t.waits == "securities" else t.amount
        if key in gone:
            assert need <= have, f"{t.trade} settled without fitting"
            have -= need
            settled_later_than_a_waiting_one |= skipped
        elif after[key] == t:
            assert need > have, f"{t.trade} fitted but was not retried in FIFO order"
            skipped = True
        else:
            assert need <= have and waited(after[key]) != account, f"{t.trade} changed without fitting"
    return settled_later_than_a_waiting_one


# ===================================================================== the machine

deals = st.builds(
    lambda trade, pair, security, quantity, hundreds, later: (Deal(trade, pair[0], pair[1], security, quantity,
                                                                   100 * hundreds), later),
    st.sampled_from(TRADE_IDS), st.sampled_from(PAIRS), st.sampled_from(("BOND", "BOND", "BILL")),
    st.integers(1, 3), st.integers(1, 6), st.sampled_from((0, 0, 0, 0, 0, 30, 90)))


class DvPAgainstModel(RuleBasedStateMachine):
    """Drive a ledger with DvP and the model side by side; compare them after every step."""

    @initialize(cash=st.lists(st.integers(0, 6), min_size=3, max_size=3),
                bonds=st.lists(st.integers(0, 6), min_size=3, max_size=3),
                bills=st.lists(st.integers(0, 3), min_size=3, max_size=3),
                interval=st.sampled_from((0, 60, 300)), general=st.booleans())
    def open_the_day(self, cash, bonds, bills, interval, general):
        """Fund the banks, set the pass's interval, and run the fast paths or their general paths."""
        self.paths = general_paths() if general else contextlib.nullcontext()
        self.paths.__enter__()
        note("paths: general" if general else "paths: fast")
        funding = {}
        for bank, c, b, s in zip(BANKS, cash, bonds, bills):
            funding.update({(bank, CASH): 100 * c, (bank, "BOND"): b, (bank, "BILL"): s})
        self.world = World(cash={bank: funding[(bank, CASH)] for bank in BANKS},
                           bonds={bank: funding[(bank, "BOND")] for bank in BANKS})
        for bank in BANKS:
            if funding[(bank, "BILL")]:
                self.world.mint(bank, funding[(bank, "BILL")], "BILL")
        self.world.config(dvp.OFFSET_INTERVAL_KEY, str(interval))
        self.ledger = self.world.ledger
        self.model = Model(funding, interval, self.ledger.now)
        self.most_queued = 0
        self.seen: set[str] = set()  # every note, also outside Hypothesis (the fixed program below)

    def teardown(self):
        world = getattr(self, "world", None)
        if world is not None:
            world.ledger.close()
        paths = getattr(self, "paths", None)
        if paths is not None:
            paths.__exit__(None, None, None)

    # ------------------------------------------------------------ stepping

    def book(self):
        return self.ledger.protocol_state(dvp.NAME)

    def waiting_count(self) -> dict[str, int]:
        """Per trade id, how many trades are queued and instructions wait unmatched (ledger)."""
        book = self.book()
        count: dict[str, int] = {}
        for t in list(book.queue.values()) + [w.trade for w in book.unmatched.values()]:
            count[t.trade] = count.get(t.trade, 0) + 1
        return count

    def step(self, signers, commands, expected: list[str], seconds: int = 0) -> list:
        """Submit one envelope (or, with `seconds`, move time on); require the model's codes and events."""
        before = self.waiting_count()
        if seconds:
            codes = []
            events = self.world.advance(seconds)
        else:
            codes = self.world.run(signers, commands)
            events = self.ledger.last_events
        self.model.recycle()
        got = [(e.kind, e.ref, dict(e.data)) for e in events if e.protocol == dvp.NAME]
        want = self.model.take_events()
        assert [C.name(c) for c in codes] == expected
        assert got == want
        each_trade_ends_at_most_once(before, self.waiting_count(), got)
        for kind, _, data in got:
            if kind == "settled":
                self.model.notes.append(f"settled by {data['by']}")
        if any(not q.waits and self.model.why_not(q.deal) is None for q in self.model.queue.values()):
            self.model.notes.append("queue: a trade that could settle waits on no account (a freeze lifted)")
        for text in dict.fromkeys(self.model.notes):
            note(text)
            self.seen.add(text)
        self.model.notes.clear()
        return got

    # ------------------------------------------------------------ rules

    @rule(deal=deals, flaw=st.sampled_from((None,) * 8 + ("one signer", "same party", "zero quantity")))
    def settle(self, deal, flaw):
        d, later = deal
        d = dataclasses.replace(d, settle_at=self.model.now + later if later else 0)
        signers = (d.seller, d.buyer)
        if flaw == "one signer":
            signers = (d.seller,)
        elif flaw == "same party":
            d = dataclasses.replace(d, buyer=d.seller)
            signers = (d.seller,)
        elif flaw == "zero quantity":
            d = dataclasses.replace(d, quantity=0)
        cmd = dvp.Settle(id=fresh(), trade=d.trade, seller=d.seller, buyer=d.buyer, security=d.security,
                         quantity=d.quantity, cash_asset=CASH, amount=d.amount, settle_at=d.settle_at)
        expect = self.model.settle(d, signers)
        note(f"settle: {expect}")
        self.step(signers, [cmd], [expect])

    @rule(ring=st.permutations(BANKS).flatmap(lambda order: st.sampled_from((order[:2], order))),
          security=st.sampled_from(SECURITIES), even=st.booleans(), data=st.data())
    def ring(self, ring, security, even, data):
        """Trades around a ring of banks (two: a pair that crosses), each jointly signed: the shape that
        gridlocks when the banks are short and offsetting can untie. `even`: one quantity and one amount
        all round, so the ring's net flows are nil."""
        quantity, hundreds = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 6))
        for seller, buyer in zip(ring, ring[1:] + ring[:1]):
            if not even:
                quantity, hundreds = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 6))
            d = Deal(data.draw(st.sampled_from(TRADE_IDS)), seller, buyer, security, quantity, 100 * hundreds)
            cmd = dvp.Settle(id=fresh(), trade=d.trade, seller=seller, buyer=buyer, security=security,
                             quantity=d.quantity, cash_asset=CASH, amount=d.amount)
            self.step((seller, buyer), [cmd], [self.model.settle(d, (seller, buyer))])
        note(f"ring: of {len(ring)}, {'even' if even else 'uneven'}")

    def submit_instruction(self, d: Deal, side: str, signer: str) -> None:
        cmd = dvp.Instruct(id=fresh(), trade=d.trade, side=side, seller=d.seller, buyer=d.buyer,
                           security=d.security, quantity=d.quantity, cash_asset=CASH, amount=d.amount,
                           settle_at=d.settle_at)
        expect = self.model.instruct(d, side, signer)
        note(f"instruct: {expect}")
        self.step((signer,), [cmd], [expect])

    @rule(deal=deals, side=st.sampled_from(("deliver", "receive")),
          wrong_signer=st.sampled_from((False,) * 6 + (True,)))
    def instruct(self, deal, side, wrong_signer):
        d, later = deal
        d = dataclasses.replace(d, settle_at=self.model.now + later if later else 0)
        signer = d.seller if (side == "deliver") != wrong_signer else d.buyer
        self.submit_instruction(d, side, signer)

    @precondition(lambda self: self.model.unmatched)
    @rule(data=st.data(), change=st.sampled_from((None, None, None, "amount", "settle_at", "same side")))
    def answer_an_instruction(self, data, change):
        """The other side instructs a waiting trade: the same terms (they match), or not."""
        (key, side) = data.draw(st.sampled_from(sorted(self.model.unmatched)))
        d, _ = self.model.unmatched[(key, side)]
        other = "receive" if side == "deliver" else "deliver"
        if change == "amount":
            d = dataclasses.replace(d, amount=d.amount + 100)
        elif change == "settle_at":
            d = dataclasses.replace(d, settle_at=d.settle_at + 30 if d.settle_at else self.model.now + 30)
        elif change == "same side":
            other = side
        self.submit_instruction(d, other, d.seller if other == "deliver" else d.buyer)

    @rule(data=st.data(), who=st.sampled_from(("seller", "buyer", "stranger")),
          naming=st.sampled_from(("both", "none", "both", "seller only", "any id")))
    def cancel(self, data, who, naming):
        """A party withdraws what waits (naming the pair, or not), or an id that may hold nothing."""
        items = sorted(self.model.queue) + sorted(k for k, _ in self.model.unmatched)
        if naming == "any id" or not items:
            trade, signer = data.draw(st.sampled_from(TRADE_IDS)), data.draw(st.sampled_from(BANKS))
            named = ("", "")
        else:
            seller, buyer, trade = data.draw(st.sampled_from(items))
            signer = {"seller": seller, "buyer": buyer}.get(who) or next(b for b in BANKS if b not in (seller, buyer))
            named = {"both": (seller, buyer), "none": ("", ""), "seller only": (seller, "")}[naming]
        expect = self.model.cancel(trade, *named, signer)
        note(f"cancel: {expect}")
        self.step((signer,), [dvp.Cancel(id=fresh(), trade=trade, seller=named[0], buyer=named[1])], [expect])

    def credit_step(self, account: tuple[str, str], signers, command, expect: str) -> None:
        """A credit; then check FIFO recycling on the credited account against the ledger's own books."""
        party, asset = account
        before = dict(self.book().queue)
        have = self.ledger.state.available(party, asset) + (command.amount if expect == "ok" else 0)
        self.step(signers, [command], [expect])
        if expect == "ok":
            if fifo_on(account, have, before, dict(self.book().queue)):
                text = "fifo: a later trade overtakes an earlier one that does not fit (ledger)"
                note(text)
                self.seen.add(text)

    @rule(pair=st.sampled_from(PAIRS), asset=st.sampled_from(ASSETS), units=st.integers(1, 4), by_move=st.booleans())
    def credit(self, pair, asset, units, by_move):
        """A Mint to a bank, or a Move between two (which may lack it)."""
        source, target = pair
        n = units * 100 if asset == CASH else units
        if by_move:
            expect = self.model.move(asset, source, target, n)
            cmd = Move(id=fresh(), asset=asset, source=source, target=target, amount=n)
            signers = (source,)
        else:
            expect = self.model.mint(target, asset, n)
            cmd = Mint(id=fresh(), asset=asset, target=target, amount=n)
            signers = ("ISS",)
        note(f"credit: {type(cmd).__name__.lower()}, {expect}")
        self.credit_step((target, asset), signers, cmd, expect)

    @precondition(lambda self: any(q.waits for q in self.model.queue.values()))
    @rule(data=st.data(), extra=st.sampled_from((0, 0, 1)), by_move=st.booleans(), smallest=st.booleans())
    def top_up_a_waiting_account(self, data, extra, by_move, smallest):
        """Bring a queued trade what it lacks on the account it waits on (sometimes one more trade's worth):
        a Move from a bank that holds it, else a Mint. `smallest`: where several trades wait on one
        account, the one that needs least (so a later trade may overtake earlier ones)."""
        waiting = sorted(k for k, q in self.model.queue.items() if q.waits)
        by_account: dict = {}
        for k in waiting:
            by_account.setdefault(self.model.queue[k].account(), []).append(self.model.queue[k])
        crowded = sorted(a for a, qs in by_account.items() if len(qs) > 1)
        if smallest and crowded:
            q = min(by_account[data.draw(st.sampled_from(crowded))], key=lambda q: (q.need(), q.arrival))
        else:
            q = self.model.queue[data.draw(st.sampled_from(waiting))]
        party, asset = q.account()
        n = q.need() * (1 + extra) - self.model.bal[(party, asset)]
        sources = [b for b in BANKS if b != party and self.model.bal[(b, asset)] >= n]
        if by_move and sources:
            source = data.draw(st.sampled_from(sources))
            expect = self.model.move(asset, source, party, n)
            note(f"top up: by a move, {expect}")
            cmd = Move(id=fresh(), asset=asset, source=source, target=party, amount=n)
            self.credit_step((party, asset), (source,), cmd, expect)
        else:
            expect = self.model.mint(party, asset, n)
            note(f"top up: by a mint, {expect}")
            cmd = Mint(id=fresh(), asset=asset, target=party, amount=n)
            self.credit_step((party, asset), ("ISS",), cmd, expect)

    @rule(data=st.data(), action=st.sampled_from(("pass", "freeze", "pass", "unfreeze", "unfreeze any")))
    def compliance(self, data, action):
        """Freeze a bank in one asset or all ("*"), or lift a mark (one that is there, or any)."""
        marks = sorted((p, a) for p, assets in self.model.frozen.items() for a in assets)
        if action == "pass" or (action == "unfreeze" and not marks):
            return  # freezes in every other step would stall most days
        if action == "unfreeze":
            party, asset = data.draw(st.sampled_from(marks))
        else:
            party, asset = data.draw(st.sampled_from(BANKS)), data.draw(st.sampled_from(ASSETS + ("*",)))
        if action == "freeze":
            cmd, expect = Freeze(id=fresh(), participant=party, asset=asset), self.model.freeze(party, asset)
        else:
            cmd, expect = Unfreeze(id=fresh(), participant=party, asset=asset), self.model.unfreeze(party, asset)
        note(f"compliance: {action.split()[0]}, {expect}")
        self.step(("CMP",), [cmd], [expect])

    @rule(seconds=st.sampled_from((1, 20, 60, 120, 300, 301)))
    def tick(self, seconds):
        self.model.tick(seconds)
        self.step((), [], [], seconds=seconds)
        assert self.ledger.now == self.model.now

    @precondition(lambda self: self.model.queue or self.model.unmatched)
    @rule(go=st.sampled_from((False, False, True)))
    def cutoff(self, go):
        if not go:  # a cut-off every step would empty the queue before it grows: one in three
            return
        expect = self.model.cutoff()
        self.step(("OP",), [dvp.Cutoff(id=fresh())], [expect])

    # ------------------------------------------------------------ invariants

    @invariant()
    def the_books_agree(self):
        book = self.book()
        queue = {(t.seller, t.buyer, t.trade): (t.security, t.quantity, t.amount, t.settle_at, t.arrival, t.waits)
                 for t in book.queue.values()}
        assert queue == {k: (q.deal.security, q.deal.quantity, q.deal.amount, q.deal.settle_at, q.arrival, q.waits)
                         for k, q in self.model.queue.items()}
        unmatched = {((w.trade.seller, w.trade.buyer, w.trade.trade), w.side):
                     (w.trade.security, w.trade.quantity, w.trade.amount, w.trade.settle_at, w.trade.arrival)
                     for w in book.unmatched.values()}
        assert unmatched == {ks: (d.security, d.quantity, d.amount, d.settle_at, arrival)
                             for ks, (d, arrival) in self.model.unmatched.items()}
        if len(queue) > self.most_queued:
            self.most_queued = len(queue)
            note(f"queue: {min(len(queue), 5)}{'+' if len(queue) >= 5 else ''} trades at once")

    @invariant()
    def balances_agree_and_none_is_negative(self):
        state = self.ledger.state
        for (party, asset), amount in self.model.bal.items():
            assert state.balance(party, asset) == amount, (party, asset)
        for asset, book in state.balances.items():
            assert all(v >= 0 for v in book.values()), asset
            assert set(book) <= set(BANKS), asset

    @invariant()
    def value_is_conserved_per_asset(self):
        state = self.ledger.state
        for asset in ASSETS:
            held = sum(h.amount for h in state.holds.values() if h.asset == asset)
            assert sum(state.balances.get(asset, {}).values()) + held == state.supply[asset] == \
                self.model.supply[asset], asset


DvPAgainstModel.TestCase.settings = settings(
    max_examples=75,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestDvPAgreesWithTheModel = DvPAgainstModel.TestCase


class _Script:
    """Stand in for `st.data()` with a scripted sequence of draws."""

    def __init__(self, *values):
        self.values = list(values)

    def draw(self, strategy):
        return self.values.pop(0)


def test_the_machine_reaches_queues_recycling_offsetting_and_the_cutoff():
    """Guard against a vacuous model: one fixed program reaches each outcome, ledger and model agreeing."""
    m = DvPAgainstModel()
    try:
        m.open_the_day(cash=[0, 0, 0], bonds=[1, 1, 1], bills=[0, 0, 0], interval=0, general=False)
        m.ring(ring=("A", "B", "C"), security="BOND", even=True, data=_Script(1, 1, "T1", "T2", "T3"))
        m.tick(seconds=1)  # nobody can pay, the ring nets to nil: multilateral offsetting
        m.settle(deal=(Deal("T4", "A", "B", "BOND", 1, 300), 0), flaw=None)  # B has no cash
        m.top_up_a_waiting_account(data=_Script(("A", "B", "T4")), extra=0, by_move=False, smallest=False)
        m.settle(deal=(Deal("X1", "B", "C", "BOND", 1, 200), 0), flaw=None)  # a pair that crosses
        m.settle(deal=(Deal("X2", "C", "B", "BOND", 1, 200), 0), flaw=None)
        m.tick(seconds=1)  # bilateral offsetting
        m.settle(deal=(Deal("Y1", "B", "A", "BOND", 1, 500), 0), flaw=None)  # A holds 300
        m.settle(deal=(Deal("Y2", "B", "A", "BOND", 1, 400), 0), flaw=None)
        m.credit(pair=("B", "A"), asset="USD", units=1, by_move=False)  # 400: Y2 fits and overtakes Y1
        m.instruct(deal=(Deal("M1", "A", "C", "BOND", 2, 100), 0), side="deliver", wrong_signer=False)
        m.answer_an_instruction(data=_Script((("A", "C", "M1"), "deliver")), change=None)
        m.cancel(data=_Script(("A", "C", "M1")), who="buyer", naming="both")
        m.compliance(data=_Script("C", "*"), action="freeze")
        m.settle(deal=(Deal("F1", "B", "C", "BOND", 1, 100), 0), flaw=None)
        m.instruct(deal=(Deal("U1", "A", "B", "BILL", 1, 100), 0), side="receive", wrong_signer=False)
        m.cutoff(go=True)
        for check in (m.the_books_agree, m.balances_agree_and_none_is_negative, m.value_is_conserved_per_asset):
            check()
        assert m.seen >= {
            "queued: insufficient_cash", "queued: insufficient_securities", "queued: party_frozen",
            "settled by multilateral_offset", "settled by bilateral_offset", "settled by recycling",
            "recycling: a later trade that fits overtakes an earlier one",
            "fifo: a later trade overtakes an earlier one that does not fit (ledger)",
            "instruct: matched, queued", "cutoff: failed insufficient_cash", "cutoff: failed party_frozen",
            "cutoff: failed unmatched",
        }, sorted(m.seen)
        assert m.model.queue == {} and m.model.unmatched == {}
    finally:
        m.teardown()


# ===================================================================== found by the model


def test_offsetting_handles_the_account_found_last_first():
    """The iterative removal's outcome depends on which negative account it handles first.

    Queued: T1 (C sells A 1 BOND for 200), T2 (C sells B 1 BOND for 100),
    T3 (A sells C 1 BOND for 100). Together, C's BOND (debited by T1, T2)
    and A's cash (debited by T1) end negative. Handling C's BOND first
    removes T2, its latest debit; then A's cash removes T1, and C can no
    longer pay for T3: nothing settles. The protocol handles the account
    found last first: A's cash removes T1, and the chain T3, T2 settles.
    The docstring's rule allows both; replays depend on this order.
    """
    w = World(cash={"B": 100}, bonds={"A": 2})
    assert w.settle("T1", "C", "A", 1, 200) == C.OK
    assert w.settle("T2", "C", "B", 1, 100) == C.OK
    assert w.settle("T3", "A", "C", 1, 100) == C.OK
    assert [(t.trade, t.waits) for t in w.queue().values()] == [("T1", "securities"), ("T2", "securities"),
                                                                ("T3", "cash")]
    events = w.advance(1)
    assert [(e.kind, e.ref, e.data) for e in events] == [("settled", "T2", {"by": "multilateral_offset"}),
                                                         ("settled", "T3", {"by": "multilateral_offset"})]
    assert [(t.trade, t.waits) for t in w.queue().values()] == [("T1", "securities")]
    assert {p: (w.bal(p, "BOND"), w.bal(p)) for p in "ABC"} == {"A": (1, 100), "B": (1, 0), "C": (0, 0)}


def _a_day_the_cutoffs_own_pass_unblocks():
    """T1 (A sells C 1 BOND for 100) waits for A's BOND, which only the pair A, B's offsetting brings."""
    w = World(cash={"C": 100}, bonds={"B": 2})
    assert w.settle("T1", "A", "C", 1, 100) == C.OK  # A has no BOND yet
    assert w.settle("X1", "A", "B", 1, 100) == C.OK  # A and B cross: settled together, A gains 1 BOND
    assert w.settle("X2", "B", "A", 2, 100) == C.OK
    assert sorted(w.queue()) == ["T1", "X1", "X2"]
    return w


def test_a_pass_before_the_cutoff_settles_the_trade_its_offsetting_unblocks():
    w = _a_day_the_cutoffs_own_pass_unblocks()
    events = w.advance(1)
    assert [(e.ref, e.data["by"]) for e in events] == [("X1", "bilateral_offset"), ("X2", "bilateral_offset"),
                                                       ("T1", "recycling")]
    assert {p: (w.bal(p, "BOND"), w.bal(p)) for p in "ABC"} == {"A": (0, 100), "B": (1, 0), "C": (1, 0)}


def test_the_cutoff_settles_a_trade_its_own_pass_unblocks_rather_than_failing_it():
    """The cut-off's pass settles X1 and X2 and so gives A the BOND T1 needs, and C holds the 100 it pays;
    but the queue is failed before those credits recycle: T1 fails as `insufficient_cash`, with no
    shortfall, though it could settle. A pass one second earlier settles it (the test above)."""
    w = _a_day_the_cutoffs_own_pass_unblocks()
    assert w.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]
    outcome = [(e.kind, e.ref, e.data) for e in w.events() if e.kind in ("settled", "failed")]
    assert ("failed", "T1", {"reason": "insufficient_cash"}) not in outcome
    assert ("settled", "T1", {"by": "recycling"}) in outcome


def test_a_move_into_a_waited_account_recycles_while_another_account_is_frozen():
    """Found by the model: while any account on the ledger was frozen, a Move took the engine's general
    path (`machine._move`), which credited the target without noting the rise, so the trades waiting on
    that account were not retried (a Mint, or a Move with no freeze anywhere, did retry them)."""
    w = World(cash={"C": 30_000}, bonds={"A": 10})
    assert w.settle("T1", "A", "B", 1, 30_000) == C.OK  # B has no cash: queued, waiting on B's USD
    assert w.run("CMP", [Freeze(id=fresh(), participant="D")]) == [C.OK]  # a freeze that touches no party of T1
    assert w.run("C", [Move(id=fresh(), asset="USD", source="C", target="B", amount=30_000)]) == [C.OK]
    assert [(e.kind, e.ref, e.data) for e in w.events()] == [("settled", "T1", {"by": "recycling"})]
    assert (w.bal("B", "BOND"), w.bal("A")) == (1, 30_000)
