"""A stateful property test: the real ledger beside a tiny dict model.

Hypothesis drives mints, burns, moves, linked pairs of moves, holds, releases
both ways, time advances past hold expiries, freezes and unfreezes. The model
predicts every result code; after every step the ledger must agree with the
model and keep the invariants: value conserved per asset, supply changed only
by mint and burn, no negative balance, a released hold never comes back, and
linked pairs all-or-nothing.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, event, settings
from hypothesis.errors import InvalidArgument
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, precondition, rule

from conftest import BANKS, CASHBANK, COMPLIANCE, FUNDING, TREASURY, UST, USD, make_world
from engine.records import Burn, Freeze, Hold, Mint, Move, Release, Unfreeze

ASSETS = (USD, UST)
ISSUER = {USD: CASHBANK, UST: TREASURY}
HOLDERS = BANKS + (CASHBANK, TREASURY)
ALL = "*"

banks = st.sampled_from(BANKS)
assets = st.sampled_from(ASSETS)
small_amounts = st.integers(min_value=1, max_value=20_000)
amounts = st.one_of(small_amounts, st.integers(min_value=1, max_value=60_000_000))  # some underfunded


def note(text: str) -> None:
    """Count an outcome in Hypothesis' statistics (`--hypothesis-show-statistics`)."""
    try:
        event(text)
    except InvalidArgument:  # run outside Hypothesis, as in the fixed program below
        pass


class LedgerModel(RuleBasedStateMachine):
    """Drive a ledger and a model of it; compare them after every step."""

    holds = Bundle("holds")

    def __init__(self):
        super().__init__()
        self.world = make_world()
        self.ledger = self.world.ledger
        self.now = self.ledger.now
        self.ids = itertools.count()
        self.balances = {(p, a): FUNDING.get((p, a), 0) for p in HOLDERS for a in ASSETS}
        self.supply = {a: sum(n for (_, x), n in FUNDING.items() if x == a) for a in ASSETS}
        self.model_holds: dict[str, tuple[str, str, str, int, int, int]] = {}  # id -> (asset, owner, ben, amt, exp, n)
        self.released: set[str] = set()
        self.frozen: dict[str, set[str]] = {}

    def teardown(self):
        self.world.close()

    # -------------------------------------------------------------- model

    def new_id(self, kind: str) -> str:
        return f"{kind}-{next(self.ids)}"

    def is_frozen(self, participant: str, asset: str) -> bool:
        marks = self.frozen.get(participant, set())
        return ALL in marks or asset in marks

    def expect_move(self, balances, asset, source, target, amount) -> str:
        if self.is_frozen(source, asset) or self.is_frozen(target, asset):
            return "account_frozen"
        if balances[(source, asset)] < amount:  # engine.codes: insufficient_funds (39) before same_account (45)
            return "insufficient_funds"
        if source == target:
            return "same_account"
        balances[(source, asset)] -= amount
        balances[(target, asset)] += amount
        return "ok"

    def submit(self, signer: str, commands, cosigner: str | None = None) -> list[str]:
        signers = [signer] if cosigner in (None, signer) else [signer, cosigner]
        results = self.world.submit([self.world.cosigned(signers, commands)])
        label = "linked pair" if len(commands) > 1 else type(commands[0]).__name__.lower()
        note(f"{label}: {', '.join(sorted(set(results)))}")
        return results

    # -------------------------------------------------------------- rules

    @rule(asset=assets, recipient=st.sampled_from(BANKS + ("issuer",)), amount=amounts)
    def mint(self, asset, recipient, amount):
        target = ISSUER[asset] if recipient == "issuer" else recipient
        expect = "account_frozen" if self.is_frozen(target, asset) else "ok"
        results = self.submit(ISSUER[asset], [Mint(id=self.new_id("mint"), asset=asset, target=target,
                                                   amount=amount)])
        assert results == [expect]
        if expect == "ok":
            self.balances[(target, asset)] += amount
            self.supply[asset] += amount

    @rule(asset=assets, amount=small_amounts)
    def burn(self, asset, amount):
        issuer = ISSUER[asset]
        expect = "ok" if self.balances[(issuer, asset)] >= amount else "insufficient_funds"
        assert self.submit(issuer, [Burn(id=self.new_id("burn"), asset=asset, amount=amount)]) == [expect]
        if expect == "ok":
            self.balances[(issuer, asset)] -= amount
            self.supply[asset] -= amount

    @rule(asset=assets, source=banks, recipient=banks, amount=amounts)
    def move(self, asset, source, recipient, amount):
        expect = self.expect_move(self.balances, asset, source, recipient, amount)
        cmd = Move(id=self.new_id("move"), asset=asset, source=source, target=recipient, amount=amount)
        assert self.submit(source, [cmd]) == [expect]

    @rule(first=st.tuples(assets, banks, banks, amounts), second=st.tuples(assets, banks, banks, amounts))
    def linked_pair(self, first, second):
        trial = dict(self.balances)
        a = self.expect_move(trial, *first)
        b = self.expect_move(trial, *second) if a == "ok" else "linked_event_failed"
        if a == "ok" and b != "ok":
            a = "linked_event_failed"
        elif a != "ok":
            b = "linked_event_failed"
        before = dict(self.ledger.state.balances[first[0]]), dict(self.ledger.state.balances[second[0]])
        commands = [
            Move(id=self.new_id("leg"), asset=first[0], source=first[1], target=first[2], amount=first[3],
                 linked=True),
            Move(id=self.new_id("leg"), asset=second[0], source=second[1], target=second[2], amount=second[3]),
        ]
        results = self.submit(first[1], commands, cosigner=second[1])
        assert results == [a, b]
        if results == ["ok", "ok"]:
            self.balances = trial
        else:  # all-or-nothing: neither leg left a trace
            after = dict(self.ledger.state.balances[first[0]]), dict(self.ledger.state.balances[second[0]])
            assert after == before

    @rule(target=holds, asset=assets, owner=banks, beneficiary=banks, amount=amounts,
          expires_in=st.one_of(st.just(0), st.integers(min_value=1, max_value=120)))
    def hold(self, asset, owner, beneficiary, amount, expires_in):
        hold_id = self.new_id("hold")
        expires_at = self.now + expires_in if expires_in else 0
        if self.is_frozen(owner, asset):
            expect = "account_frozen"
        elif self.balances[(owner, asset)] < amount:
            expect = "insufficient_funds"
        else:
            expect = "ok"
        cmd = Hold(id=hold_id, asset=asset, owner=owner, beneficiary=beneficiary, amount=amount,
                   expires_at=expires_at)
        assert self.submit(owner, [cmd]) == [expect]
        if expect != "ok":
            return multiple()
        self.balances[(owner, asset)] -= amount
        self.model_holds[hold_id] = (asset, owner, beneficiary, amount, expires_at, int(hold_id.split("-")[1]))
        return hold_id

    @rule(hold_id=holds, to=st.sampled_from(("beneficiary", "owner")))
    def release(self, hold_id, to):
        record = self.model_holds.get(hold_id)
        if record is None:
            assert hold_id in self.released
            signer = "BANK_A"
            expect = "unknown_hold"
        else:
            asset, owner, beneficiary, amount, _, _ = record
            signer = owner if to == "beneficiary" else beneficiary
            target = beneficiary if to == "beneficiary" else owner
            expect = "account_frozen" if self.is_frozen(target, asset) else "ok"
        results = self.submit(signer, [Release(id=self.new_id("release"), hold=hold_id, to=to)])
        assert results == [expect]
        if expect == "ok":
            del self.model_holds[hold_id]
            self.released.add(hold_id)
            self.balances[(target, asset)] += amount

    @rule(hold_id=holds, stranger=banks)
    def release_by_a_stranger(self, hold_id, stranger):
        record = self.model_holds.get(hold_id)
        if record is None or stranger in (record[1], record[2]):
            return
        results = self.submit(stranger, [Release(id=self.new_id("release"), hold=hold_id, to="owner")])
        assert results == ["hold_not_releasable"]

    @rule(seconds=st.integers(min_value=1, max_value=150))
    def advance(self, seconds):
        self.now += seconds
        due = sorted((exp, n, hid) for hid, (_, _, _, _, exp, n) in self.model_holds.items()
                     if exp and exp <= self.now)
        events = self.ledger.advance(self.now)
        note(f"advance: {len(events)} holds expired" if events else "advance: nothing due")
        assert [(e.kind, e.ref, e.at) for e in events] == [("hold_expired", hid, exp) for exp, _, hid in due]
        for _, _, hid in due:
            asset, owner, _, amount, _, _ = self.model_holds.pop(hid)
            self.released.add(hid)
            self.balances[(owner, asset)] += amount
        assert self.ledger.now == self.now

    @rule(participant=banks, asset=st.sampled_from(ASSETS + (ALL,)))
    def freeze(self, participant, asset):
        cmd = Freeze(id=self.new_id("freeze"), participant=participant, asset=asset)
        assert self.submit(COMPLIANCE, [cmd]) == ["ok"]
        self.frozen.setdefault(participant, set()).add(asset)

    @precondition(lambda self: self.frozen)
    @rule(data=st.data(), any_mark=st.booleans())
    def unfreeze(self, data, any_mark):
        participant = data.draw(st.sampled_from(sorted(self.frozen)))
        marks = self.frozen[participant]
        asset = data.draw(st.sampled_from(sorted(marks) if not any_mark else list(ASSETS + (ALL,))))
        expect = "ok" if asset in marks else "invalid_field"
        cmd = Unfreeze(id=self.new_id("unfreeze"), participant=participant, asset=asset)
        assert self.submit(COMPLIANCE, [cmd]) == [expect]
        if expect == "ok":
            marks.discard(asset)
            if not marks:
                del self.frozen[participant]

    # --------------------------------------------------------- invariants

    @invariant()
    def balances_equal_the_model(self):
        state = self.ledger.state
        for (participant, asset), amount in self.balances.items():
            assert state.balance(participant, asset) == amount, (participant, asset)

    @invariant()
    def no_balance_is_negative(self):
        for book in self.ledger.state.balances.values():
            assert all(amount >= 0 for amount in book.values())

    @invariant()
    def value_is_conserved_per_asset(self):
        state = self.ledger.state
        for asset in ASSETS:
            held = sum(h.amount for h in state.holds.values() if h.asset == asset)
            assert sum(state.balances[asset].values()) + held == state.supply[asset]
            assert state.supply[asset] == self.supply[asset], "supply changes only by mint and burn"

    @invariant()
    def holds_equal_the_model_and_released_ones_never_return(self):
        state = self.ledger.state
        assert set(state.holds) == set(self.model_holds)
        assert not set(state.holds) & self.released
        for hid, (asset, owner, beneficiary, amount, expires_at, _) in self.model_holds.items():
            h = state.holds[hid]
            assert (h.asset, h.owner, h.beneficiary, h.amount, h.expires_at) == \
                (asset, owner, beneficiary, amount, expires_at)

    @invariant()
    def freezes_equal_the_model(self):
        state = self.ledger.state
        assert {p: set(marks) for p, marks in state.frozen.items()} == self.frozen


LedgerModel.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLedgerAgreesWithTheModel = LedgerModel.TestCase


def test_the_model_machine_exercises_the_ledger():
    """Guard against a vacuous run: one fixed program must reach every kind of outcome."""
    machine = LedgerModel()
    try:
        machine.mint(USD, "BANK_C", 5_000)
        machine.burn(UST, 10)
        machine.move(USD, "BANK_A", "BANK_C", 1_000)
        machine.move(USD, "BANK_C", "BANK_C", 1)
        machine.linked_pair((USD, "BANK_A", "BANK_B", 10), (UST, "BANK_C", "BANK_A", 10**6))
        first = machine.hold(USD, "BANK_A", "BANK_B", 700, 30)
        second = machine.hold(UST, "BANK_B", "BANK_C", 5, 0)
        machine.release(second, "owner")
        machine.release(second, "beneficiary")
        machine.freeze("BANK_B", ALL)
        machine.release_by_a_stranger(first, "BANK_C")
        machine.unfreeze(_FixedData(["BANK_B", ALL]), any_mark=False)
        machine.advance(31)
        for check in (machine.balances_equal_the_model, machine.no_balance_is_negative,
                      machine.value_is_conserved_per_asset,
                      machine.holds_equal_the_model_and_released_ones_never_return,
                      machine.freezes_equal_the_model):
            check()
        assert machine.released == {first, second}
        assert machine.balances[("BANK_A", USD)] == FUNDING[("BANK_A", USD)] - 1_000
        assert machine.ledger.balance("BANK_A", USD) == FUNDING[("BANK_A", USD)] - 1_000
        assert [e.ref for e in machine.ledger.entry(machine.ledger.head_seq).events] == [first]
    finally:
        machine.teardown()


class _FixedData:
    """Stand in for `st.data()` with a scripted sequence of draws."""

    def __init__(self, values):
        self.values = list(values)

    def draw(self, strategy):
        return self.values.pop(0)
