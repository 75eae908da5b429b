"""Gross DvP: atomic settlement, matching, queue, recycling, offsetting, cut-off."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dvp_world import World, fresh
from engine import codes as C
from engine.records import Freeze, Move
from protocols import dvp


def kinds(events, ref=None):
    return [e.kind for e in events if ref is None or e.ref == ref]


# ---------------------------------------------------------------- settling


def test_a_funded_dvp_settles_both_legs_at_once():
    w = World(cash={"B": 100_000}, bonds={"A": 10})
    assert w.settle("T1", "A", "B", 4, 40_000) == C.OK
    assert (w.bal("A", "BOND"), w.bal("B", "BOND")) == (6, 4)
    assert (w.bal("A"), w.bal("B")) == (40_000, 60_000)
    assert w.events() == []  # settled on arrival: the OK result says so
    assert w.queue() == {}


def test_a_buyer_short_of_cash_queues_the_trade_and_moves_nothing():
    w = World(cash={"B": 100}, bonds={"A": 10})
    assert w.settle("T1", "A", "B", 4, 40_000) == C.OK
    assert [(e.kind, e.data) for e in w.events()] == [("queued", {"reason": "insufficient_cash"})]
    assert (w.bal("A", "BOND"), w.bal("B"), w.bal("A")) == (10, 100, 0)
    assert list(w.queue()) == ["T1"]


def test_a_seller_short_of_securities_queues_with_that_reason():
    w = World(cash={"B": 100_000}, bonds={"A": 1})
    w.settle("T1", "A", "B", 4, 40_000)
    assert w.events()[0].data == {"reason": "insufficient_securities"}


def test_recycling_settles_a_queued_trade_when_cash_arrives():
    w = World(cash={"B": 100}, bonds={"A": 10})
    w.settle("T1", "A", "B", 4, 40_000)
    w.mint("B", 39_900)
    assert kinds(w.events(), "T1") == ["settled"]
    assert w.events()[0].data == {"by": "recycling"}
    assert (w.bal("B", "BOND"), w.bal("A")) == (4, 40_000)


def test_recycling_follows_fifo_order_of_arrival():
    w = World(cash={"B": 0}, bonds={"A": 10})
    w.settle("FIRST", "A", "B", 1, 30_000)
    w.settle("SECOND", "A", "B", 1, 20_000)
    w.mint("B", 30_000)  # enough for either, not both: the first to arrive goes first
    assert kinds(w.events()) == ["settled"]
    assert w.events()[0].ref == "FIRST"
    assert list(w.queue()) == ["SECOND"]


def test_a_move_into_the_waited_account_also_triggers_recycling():
    w = World(cash={"B": 0, "C": 50_000}, bonds={"A": 10})
    w.settle("T1", "A", "B", 1, 30_000)
    assert w.run("C", [Move(id=fresh(), asset="USD", source="C", target="B", amount=30_000)]) == [C.OK]
    assert kinds(w.events(), "T1") == ["settled"]


# ---------------------------------------------------------------- refusals

REFUSALS = [
    ("the parties are the same", dict(seller="A", buyer="A"), dvp.SAME_PARTY),
    ("the security is a cash asset", dict(security="USD"), dvp.WRONG_ASSET_KIND),
    ("the security is unknown", dict(security="NOPE"), C.UNKNOWN_ASSET),
    ("the quantity is zero", dict(quantity=0), C.INVALID_AMOUNT),
    ("the amount is negative", dict(amount=-5), C.INVALID_AMOUNT),
]


@pytest.mark.parametrize("change,code", [(r[1], r[2]) for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_invalid_instructions_are_refused_and_change_nothing(change, code):
    w = World(cash={"B": 100_000}, bonds={"A": 10})
    before = w.ledger.balances()
    fields = dict(trade="T1", seller="A", buyer="B", security="BOND", quantity=1, cash_asset="USD", amount=100)
    fields.update(change)
    cmd = dvp.Settle(id=fresh(), **fields)
    signers = tuple(dict.fromkeys((fields["seller"], fields["buyer"])))
    assert w.run(signers, [cmd]) == [code]
    assert w.ledger.balances() == before and w.queue() == {}


def test_a_joint_instruction_signed_by_one_party_only_is_unauthorized():
    w = World(cash={"B": 100_000}, bonds={"A": 10})
    cmd = dvp.Settle(id=fresh(), trade="T1", seller="A", buyer="B", security="BOND", quantity=1, cash_asset="USD",
                     amount=100)
    assert w.run("A", [cmd]) == [C.UNAUTHORIZED]


def test_a_trade_id_already_queued_is_refused():
    w = World(cash={"B": 0}, bonds={"A": 10})
    w.settle("T1", "A", "B", 1, 100)
    assert w.settle("T1", "A", "B", 1, 100) == dvp.TRADE_EXISTS


# ---------------------------------------------------------------- matching


def instruct(w: World, side: str, trade="M1", **over) -> int:
    fields = dict(trade=trade, side=side, seller="A", buyer="B", security="BOND", quantity=2, cash_asset="USD",
                  amount=2_000)
    fields.update(over)
    signer = fields["seller"] if side == "deliver" else fields["buyer"]
    return w.run(signer, [dvp.Instruct(id=fresh(), **fields)])[0]


def test_two_matching_instructions_settle():
    w = World(cash={"B": 10_000}, bonds={"A": 10})
    assert instruct(w, "deliver") == C.OK
    assert kinds(w.events()) == ["unmatched"]
    assert instruct(w, "receive") == C.OK
    assert kinds(w.events()) == ["matched", "settled"]
    assert w.bal("B", "BOND") == 2


@pytest.mark.parametrize("field,value", [("quantity", 3), ("amount", 2_001), ("settle_at", 1), ("security", "BILL")],
                         ids=["quantities differ", "amounts differ", "settlement times differ", "securities differ"])
def test_instructions_that_differ_in_a_matching_field_do_not_match(field, value):
    w = World(cash={"B": 10_000}, bonds={"A": 10})
    instruct(w, "deliver")
    instruct(w, "receive", **{field: value})
    assert kinds(w.events()) == ["unmatched"]
    w.run("OP", [dvp.Cutoff(id=fresh())])
    assert [(e.kind, e.data.get("reason")) for e in w.events() if e.kind == "failed"] == [
        ("failed", "unmatched"), ("failed", "unmatched")]


def test_an_instruction_signed_by_the_other_side_is_unauthorized():
    w = World(cash={"B": 10_000}, bonds={"A": 10})
    cmd = dvp.Instruct(id=fresh(), trade="M1", side="deliver", seller="A", buyer="B", security="BOND", quantity=2,
                       cash_asset="USD", amount=2_000)
    assert w.run("B", [cmd]) == [C.UNAUTHORIZED]


def test_the_same_side_twice_is_refused():
    w = World(cash={"B": 10_000}, bonds={"A": 10})
    instruct(w, "deliver")
    assert instruct(w, "deliver") == dvp.TRADE_EXISTS


# ---------------------------------------------------------------- cancel


def test_a_party_cancels_its_queued_trade_and_a_stranger_cannot():
    w = World(cash={"B": 0}, bonds={"A": 10})
    w.settle("T1", "A", "B", 1, 100)
    assert w.run("C", [dvp.Cancel(id=fresh(), trade="T1")]) == [C.UNAUTHORIZED]
    assert w.run("A", [dvp.Cancel(id=fresh(), trade="T1")]) == [C.OK]
    assert kinds(w.events()) == ["cancelled"] and w.queue() == {}
    assert w.run("A", [dvp.Cancel(id=fresh(), trade="T1")]) == [dvp.UNKNOWN_TRADE]


def test_a_trade_id_queued_by_one_pair_does_not_block_another_pair():
    """Trade ids are unique per (seller, buyer): a member cannot squat another pair's id."""
    w = World(cash={"B": 1_000, "D": 0}, bonds={"A": 10, "C": 10})
    assert w.settle("T1", "C", "D", 1, 100) == C.OK  # D has no cash: queued under C|D|T1
    assert w.settle("T1", "A", "B", 1, 100) == C.OK  # settles at once
    assert w.bal("B", "BOND") == 1 and list(w.queue()) == ["T1"] and w.queue()["T1"].seller == "C"


def test_an_instruction_under_another_pairs_id_does_not_block_or_match_it():
    w = World(cash={"B": 10_000}, bonds={"A": 10, "C": 10})
    assert instruct(w, "deliver", seller="C", buyer="D") == C.OK  # C's squat on M1
    assert instruct(w, "deliver") == C.OK
    assert instruct(w, "receive") == C.OK
    assert kinds(w.events()) == ["matched", "settled"] and w.bal("B", "BOND") == 2
    assert instruct(w, "receive", seller="C", buyer="D") == C.OK  # D's side: matches C's, D has no cash
    assert kinds(w.events()) == ["matched", "queued"]


def test_cancel_finds_the_signers_trade_among_pairs_sharing_an_id():
    w = World(cash={"B": 0, "D": 0}, bonds={"A": 10, "C": 10})
    w.settle("T1", "A", "B", 1, 100)
    w.settle("T1", "C", "D", 1, 100)
    w.settle("T1", "A", "D", 1, 100)
    assert w.run("B", [dvp.Cancel(id=fresh(), trade="T1")]) == [C.OK]  # B is party to A|B|T1 only
    assert sorted((t.seller, t.buyer) for t in w.ledger.protocol_state(dvp.NAME).queue.values()) == [
        ("A", "D"), ("C", "D")]
    assert w.run("D", [dvp.Cancel(id=fresh(), trade="T1")]) == [C.INVALID_FIELD]  # ambiguous: C|D and A|D
    assert w.run("D", [dvp.Cancel(id=fresh(), trade="T1", seller="C", buyer="D")]) == [C.OK]
    assert w.run("B", [dvp.Cancel(id=fresh(), trade="T1")]) == [C.UNAUTHORIZED]  # no longer a party to any
    assert w.run("B", [dvp.Cancel(id=fresh(), trade="T1", seller="A", buyer="D")]) == [C.UNAUTHORIZED]
    assert w.run("A", [dvp.Cancel(id=fresh(), trade="T1", seller="A", buyer="B")]) == [dvp.UNKNOWN_TRADE]
    assert [(t.seller, t.buyer) for t in w.ledger.protocol_state(dvp.NAME).queue.values()] == [("A", "D")]


def test_each_party_cancels_only_its_own_side_when_both_sides_wait_unmatched():
    w = World(cash={"B": 10_000}, bonds={"A": 10})
    assert instruct(w, "deliver", quantity=1) == C.OK and instruct(w, "receive", quantity=2) == C.OK  # no match
    assert w.run("B", [dvp.Cancel(id=fresh(), trade="M1")]) == [C.OK]
    assert [(e.kind, e.data) for e in w.events()] == [("cancelled", {"side": "receive"})]
    assert w.run("B", [dvp.Cancel(id=fresh(), trade="M1")]) == [C.UNAUTHORIZED]  # the deliver side is A's
    assert w.run("A", [dvp.Cancel(id=fresh(), trade="M1", seller="A", buyer="B")]) == [C.OK]
    assert w.ledger.protocol_state(dvp.NAME).unmatched == {}


@pytest.mark.parametrize("seller,buyer", [("A", "B|y"), ("A", ""), ("", "B"), ("A", "NOBODY")],
                         ids=["a buyer that is no participant id", "the buyer left out", "the seller left out",
                              "an unknown buyer"])
def test_cancel_naming_parties_needs_both_and_each_a_participant(seller, buyer):
    w = World(cash={"B": 0}, bonds={"A": 10})
    w.settle("y|x", "A", "B", 1, 100)
    assert w.run("A", [dvp.Cancel(id=fresh(), trade="x", seller=seller, buyer=buyer)]) == [C.INVALID_FIELD]
    assert list(w.queue()) == ["y|x"]
    assert w.run("A", [dvp.Cancel(id=fresh(), trade="y|x", seller="A", buyer="B")]) == [C.OK]
    assert [(e.kind, e.ref) for e in w.events()] == [("cancelled", "y|x")]


def test_an_instruction_a_stranger_sends_does_not_make_a_partys_cancel_ambiguous():
    w = World(cash={"B": 0}, bonds={"A": 10, "C": 10})
    w.settle("T1", "A", "B", 1, 100)
    assert instruct(w, "deliver", trade="T1", seller="C", buyer="A") == C.OK  # names A, but only C may cancel it
    assert w.run("A", [dvp.Cancel(id=fresh(), trade="T1")]) == [C.OK]
    assert w.queue() == {} and len(w.ledger.protocol_state(dvp.NAME).unmatched) == 1


def test_a_trade_id_waiting_unmatched_cannot_also_settle_jointly():
    """Regression: a Settle under the key of a waiting instruction settled, and the instruction later matched too."""
    w = World(cash={"B": 10_000}, bonds={"A": 10})
    assert instruct(w, "deliver") == C.OK
    assert w.settle("M1", "A", "B", 2, 2_000) == dvp.TRADE_EXISTS
    assert w.bal("B", "BOND") == 0
    assert instruct(w, "receive") == C.OK
    assert kinds(w.events()) == ["matched", "settled"] and w.bal("B", "BOND") == 2


def test_two_pairs_sharing_an_id_each_settle_at_their_own_time_and_fail_at_cutoff_on_their_own():
    w = World(cash={"B": 1_000, "D": 0}, bonds={"A": 10, "C": 10})
    assert w.settle("T1", "A", "B", 1, 100, settle_at=w.clock() + 60) == C.OK
    assert w.settle("T1", "C", "D", 1, 100, settle_at=w.clock() + 30) == C.OK
    w.advance(30)
    assert kinds(w.events()) == []  # C|D's time came but D has no cash: it stays queued
    w.advance(30)
    assert [(e.kind, e.ref) for e in w.events()] == [("settled", "T1")] and w.bal("B", "BOND") == 1
    w.run("OP", [dvp.Cutoff(id=fresh())])
    assert [(e.kind, e.ref, e.data.get("reason")) for e in w.events() if e.kind == "failed"] == [
        ("failed", "T1", "insufficient_cash")]


# ---------------------------------------------------------------- cut-off


def test_cutoff_fails_what_is_still_queued_with_its_reason():
    w = World(cash={"B": 0, "C": 1_000_000}, bonds={"A": 10})
    w.settle("CASH", "A", "B", 1, 100)
    w.settle("SECS", "B", "C", 5, 100)
    w.run("OP", [dvp.Cutoff(id=fresh())])
    failed = {e.ref: e.data["reason"] for e in w.events() if e.kind == "failed"}
    assert failed == {"CASH": "insufficient_cash", "SECS": "insufficient_securities"}
    assert w.queue() == {}


def test_a_scheduled_cutoff_runs_when_time_reaches_it():
    w = World(cash={"B": 0}, bonds={"A": 10})
    w.settle("T1", "A", "B", 1, 100)
    w.run("OP", [dvp.ScheduleCutoff(id=fresh(), at=w.clock.now + 3600)])
    w.advance(3599)
    assert "T1" in w.queue()
    w.advance(1)
    assert [e.kind for e in w.events() if e.ref == "T1"] == ["failed"]


def test_a_frozen_party_does_not_settle_and_fails_as_frozen_at_cutoff():
    w = World(cash={"B": 100_000}, bonds={"A": 10})
    assert w.run("CMP", [Freeze(id=fresh(), participant="A")]) == [C.OK]
    w.settle("T1", "A", "B", 1, 100)
    assert w.events()[0].data == {"reason": "party_frozen"}
    w.run("OP", [dvp.Cutoff(id=fresh())])
    assert [e.data.get("reason") for e in w.events() if e.kind == "failed"] == ["party_frozen"]


def test_a_trade_with_a_future_settlement_time_waits_for_it():
    w = World(cash={"B": 100_000}, bonds={"A": 10})
    w.settle("T1", "A", "B", 1, 100, settle_at=w.clock.now + 60)
    assert w.events()[0].data == {"reason": "not_yet"}
    w.advance(60)
    assert [e.kind for e in w.events() if e.ref == "T1"] == ["settled"]


# ---------------------------------------------------------------- offsetting


def test_a_gridlock_of_three_settles_only_by_offsetting():
    # Each buyer's cash comes only from its own sale: none can settle alone.
    w = World(cash={}, bonds={"A": 1, "B": 1, "C": 1})
    for trade, seller, buyer in (("G1", "A", "B"), ("G2", "B", "C"), ("G3", "C", "A")):
        assert w.settle(trade, seller, buyer, 1, 50_000) == C.OK
    assert sorted(w.queue()) == ["G1", "G2", "G3"]
    w.advance(1)  # the instant ends: the liquidity pass runs (no earlier pass, so no interval to wait)
    assert sorted((e.ref, e.data["by"]) for e in w.events() if e.kind == "settled") == [
        ("G1", "multilateral_offset"), ("G2", "multilateral_offset"), ("G3", "multilateral_offset")]
    assert w.queue() == {}
    assert [w.bal(p, "BOND") for p in "ABC"] == [1, 1, 1]
    assert w.all_balances_non_negative()


def test_bilateral_offsetting_settles_two_trades_that_cross():
    w = World(cash={"A": 10_000}, bonds={"A": 1, "B": 1})
    w.settle("X1", "A", "B", 1, 60_000)  # B cannot pay 600.00
    w.settle("X2", "B", "A", 1, 55_000)  # A cannot pay 550.00 ... but nets to B paying 50.00
    w.mint("B", 5_000)
    w.advance(1)
    assert sorted((e.ref, e.data["by"]) for e in w.events() if e.kind == "settled") == [
        ("X1", "bilateral_offset"), ("X2", "bilateral_offset")]
    assert (w.bal("A"), w.bal("B")) == (15_000, 0)


def test_offsetting_leaves_out_a_trade_that_would_overdraw_and_keeps_fifo_priority():
    w = World(cash={}, bonds={"A": 1, "B": 1, "C": 1})
    w.settle("G1", "A", "B", 1, 50_000)
    w.settle("G2", "B", "A", 1, 50_000)
    w.settle("LATE", "C", "A", 1, 70_000)  # A cannot pay this one: it stays queued
    w.advance(1)
    assert sorted(e.ref for e in w.events() if e.kind == "settled") == ["G1", "G2"]
    assert list(w.queue()) == ["LATE"]


def test_the_liquidity_pass_waits_for_the_offset_interval():
    w = World(cash={}, bonds={"A": 1, "B": 1})
    w.config(dvp.OFFSET_INTERVAL_KEY, "600")
    w.settle("Y1", "A", "B", 1, 100)
    w.advance(1)  # leaves T0: the first pass runs (nothing to offset: one trade)
    w.settle("Y2", "B", "A", 1, 100)
    w.advance(1)  # leaves T0+1
    assert "Y1" in w.queue()  # fewer than 600 s since the last pass
    w.advance(597)
    w.advance(1)  # leaves instant T0+599: still fewer than 600 s
    assert "Y1" in w.queue()
    w.advance(1)  # leaves instant T0+600: the pass runs
    assert w.queue() == {}


trade_strategy = st.tuples(st.sampled_from("ABCD"), st.sampled_from("ABCD"), st.integers(1, 3),
                           st.integers(1, 50_000)).filter(lambda t: t[0] != t[1])


@settings(max_examples=60, deadline=None)
@given(st.lists(trade_strategy, min_size=1, max_size=25), st.dictionaries(st.sampled_from("ABCD"),
                                                                         st.integers(0, 60_000)))
def test_offset_selection_never_overdraws_and_settles_everything_it_picks(trades, cash):
    w = World(cash=cash, bonds={p: 3 for p in "ABCD"})
    for n, (seller, buyer, q, amount) in enumerate(trades):
        w.settle(f"P{n}", seller, buyer, q, amount)
    before = w.ledger.balances()
    queued = sorted(w.queue().values(), key=lambda t: t.arrival)
    chosen = dvp.offset_select(w.ledger.state, queued)
    # The chosen set is feasible: every account ends non-negative.
    end = {p: dict(h) for p, h in before.items()}
    for t in chosen:
        for asset, party, delta in ((t.security, t.seller, -t.quantity), (t.security, t.buyer, t.quantity),
                                    (t.cash_asset, t.buyer, -t.amount), (t.cash_asset, t.seller, t.amount)):
            end.setdefault(party, {})[asset] = end.get(party, {}).get(asset, 0) + delta
    assert all(v >= 0 for h in end.values() for v in h.values())
    w.advance(1)
    assert w.all_balances_non_negative()
    # Value is conserved per asset.
    after = w.ledger.balances()
    for asset in ("USD", "BOND"):
        assert sum(h.get(asset, 0) for h in after.values()) == sum(h.get(asset, 0) for h in before.values())


def test_partial_settlement_is_off_by_default_and_settles_the_coverable_part_when_on():
    w = World(cash={"B": 1_000_000}, bonds={"A": 3})
    w.settle("P1", "A", "B", 10, 100_000)
    assert w.bal("B", "BOND") == 0
    w2 = World(cash={"B": 1_000_000}, bonds={"A": 3})
    w2.config(dvp.PARTIAL_KEY, "true")
    w2.settle("P1", "A", "B", 10, 100_000)
    assert (w2.bal("B", "BOND"), w2.bal("A")) == (3, 30_000)
    rest = w2.queue()["P1"]
    assert (rest.quantity, rest.amount) == (7, 70_000)
    w2.mint("A", 7, asset="BOND")
    assert w2.queue() == {} and w2.bal("B", "BOND") == 10 and w2.bal("A") == 100_000


def _mints_seen(w: World) -> list:
    """Fund D's cash, C's bonds, B's cash in turn; return what each mint set off."""
    seen = []
    for who, amount, asset in (("D", 25_000, "USD"), ("C", 5, "BOND"), ("B", 30_000, "USD")):
        w.mint(who, amount, asset)
        seen.append([(e.kind, e.ref) for e in w.events()])
    return seen


def test_recycling_after_a_restart_from_a_snapshot_matches_a_ledger_that_never_stopped(tmp_path):
    def scenario(w: World, restart: bool) -> list:
        w.settle("Q1", "A", "B", 5, 30_000)  # B short of cash
        w.settle("Q2", "C", "D", 5, 10_000)  # C short of bonds, D short of cash
        w.settle("Q3", "A", "D", 1, 10_000)
        if restart:
            w.reopen()
        return _mints_seen(w) + [w.ledger.digest()]

    steady = scenario(World(cash={}, bonds={"A": 10}, path=str(tmp_path / "a.db")), restart=False)
    restarted = scenario(World(cash={}, bonds={"A": 10}, path=str(tmp_path / "b.db")), restart=True)
    assert restarted == steady
    assert steady[0] == [("settled", "Q3")] and steady[1] == [("settled", "Q2")] and steady[2] == [("settled", "Q1")]


@pytest.mark.parametrize("use_snapshot", [True, False], ids=["from a snapshot", "from the journal alone"])
def test_pairs_sharing_trade_ids_recycle_and_settle_on_time_alike_after_a_restart(tmp_path, use_snapshot):
    def scenario(w: World, restart: bool) -> list:
        w.settle("T", "A", "B", 5, 30_000)  # B short of cash
        w.settle("T", "C", "D", 5, 10_000)  # C short of bonds, D short of cash
        w.settle("T", "A", "D", 1, 10_000, settle_at=w.clock() + 60)  # D short of cash, and not due yet
        instruct(w, "deliver", trade="T", seller="A", buyer="C")
        if restart:
            w.reopen(snapshot=use_snapshot)
        seen = _mints_seen(w)
        seen.append([(e.kind, e.ref) for e in w.advance(60)])
        seen.append(instruct(w, "receive", trade="T", seller="A", buyer="C"))
        seen.append(sorted(w.ledger.protocol_state(dvp.NAME).queue))
        return seen + [w.ledger.digest()]

    steady = scenario(World(cash={"C": 10_000}, bonds={"A": 20}, path=str(tmp_path / "a.db")), restart=False)
    restarted = scenario(World(cash={"C": 10_000}, bonds={"A": 20}, path=str(tmp_path / "b.db")), restart=True)
    assert restarted == steady
    assert steady[:4] == [[], [("settled", "T")], [("settled", "T")], [("settled", "T")]]
    assert steady[4:6] == [C.OK, []]


def test_a_cutoff_in_a_failed_chain_leaves_recycling_working():
    w = World(cash={"B": 0}, bonds={"A": 10})
    w.settle("T1", "A", "B", 1, 100)
    bad = Move(id=fresh(), asset="USD", source="OP", target="A", amount=1)
    assert w.run("OP", [dvp.Cutoff(id=fresh(), linked=True), bad]) == [C.LINKED_EVENT_FAILED, C.INSUFFICIENT_FUNDS]
    assert "T1" in w.queue()
    w.mint("B", 100)
    assert [e.kind for e in w.events() if e.ref == "T1"] == ["settled"]


def test_a_setting_that_is_not_a_number_falls_back_to_its_default():
    w = World(cash={}, bonds={"A": 1, "B": 1})
    w.config(dvp.OFFSET_INTERVAL_KEY, "5m")
    w.settle("Y1", "A", "B", 1, 100)
    w.settle("Y2", "B", "A", 1, 100)
    w.advance(1)  # first pass: the default interval has long passed since time 0
    assert w.queue() == {}
