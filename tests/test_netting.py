"""Deferred net settlement: positions, atomic settlement, unwind order, bilateral option."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dvp_world import World, fresh
from engine import codes as C
from protocols import netting


def obligate(w: World, trade: str, seller: str, buyer: str, quantity: int, amount: int) -> int:
    cmd = netting.Obligate(id=fresh(), trade=trade, seller=seller, buyer=buyer, security="BOND", quantity=quantity,
                           cash_asset="USD", amount=amount)
    return w.run((seller, buyer), [cmd])[0]


def close(w: World) -> dict:
    assert w.run("OP", [netting.CloseCycle(id=fresh())]) == [C.OK]
    closed = [e for e in w.events() if e.kind == "cycle_closed"]
    return closed[0].data if closed else {}


def positions(w: World) -> dict:
    return w.ledger.protocol_state(netting.NAME).last_positions


def test_net_positions_are_received_minus_delivered_and_sum_to_zero():
    w = World(cash={"A": 1_000_000, "B": 1_000_000, "C": 1_000_000}, bonds={"A": 10, "B": 10, "C": 10})
    obligate(w, "N1", "A", "B", 3, 30_000)
    obligate(w, "N2", "B", "C", 2, 25_000)
    obligate(w, "N3", "C", "A", 1, 12_000)
    data = close(w)
    assert positions(w) == {
        "A": {"BOND": -3 + 1, "USD": 30_000 - 12_000},
        "B": {"BOND": 3 - 2, "USD": -30_000 + 25_000},
        "C": {"BOND": 2 - 1, "USD": -25_000 + 12_000},
    }
    for asset in ("BOND", "USD"):
        assert sum(p[asset] for p in positions(w).values()) == 0
    assert (w.bal("A"), w.bal("B"), w.bal("C")) == (1_018_000, 995_000, 987_000)
    assert data["unwound"] == "" and data["net_movements"] == "6" and data["gross_movements"] == "6"
    assert data["positive_net_cash"] == "18000" and data["gross_cash"] == "USD=67000"


def test_nothing_moves_before_the_cycle_closes():
    w = World(cash={"B": 1_000_000}, bonds={"A": 10})
    obligate(w, "N1", "A", "B", 3, 30_000)
    assert (w.bal("A", "BOND"), w.bal("B")) == (10, 1_000_000)


def test_a_participant_short_of_cash_is_unwound_and_the_rest_settles():
    # C owes 1,000.00 net but holds 10.00: its trades leave the cycle.
    w = World(cash={"A": 500_000, "B": 500_000, "C": 1_000}, bonds={"A": 10, "B": 10})
    obligate(w, "N1", "A", "B", 2, 20_000)
    obligate(w, "N2", "B", "A", 1, 10_000)
    obligate(w, "N3", "A", "C", 1, 100_000)
    data = close(w)
    assert data["unwound"] == "C"
    assert positions(w) == {"A": {"BOND": -1, "USD": 10_000}, "B": {"BOND": 1, "USD": -10_000}}
    assert (w.bal("A"), w.bal("B"), w.bal("C")) == (510_000, 490_000, 1_000)
    assert w.bal("C", "BOND") == 0


def test_unwind_order_takes_the_largest_cash_shortfall_first_then_ids():
    # B and C are both short; B's shortfall is larger, so B goes first. Removing B
    # also removes C's need (C only bought from B), so C stays.
    w = World(cash={"A": 0, "B": 0, "C": 5_000, "D": 0}, bonds={"A": 10, "B": 10, "D": 10})
    obligate(w, "N1", "A", "B", 1, 90_000)
    obligate(w, "N2", "B", "C", 1, 10_000)
    obligate(w, "N3", "D", "C", 1, 4_000)
    data = close(w)
    assert data["unwound"] == "B"
    assert w.bal("C", "BOND") == 1 and w.bal("D") == 4_000


def test_a_securities_shortfall_unwinds_the_seller():
    w = World(cash={"A": 100_000, "B": 100_000}, bonds={"A": 1})
    obligate(w, "N1", "A", "B", 5, 50_000)
    assert close(w)["unwound"] == "A"
    assert (w.bal("A", "BOND"), w.bal("B")) == (1, 100_000)


def test_bilateral_netting_counts_one_movement_per_pair_and_asset():
    w = World(cash={"A": 1_000_000, "B": 1_000_000, "C": 1_000_000}, bonds={"A": 10, "B": 10, "C": 10})
    w.run("OP", [netting.ConfigureCycles(id=fresh(), period=0, bilateral=True)])
    obligate(w, "N1", "A", "B", 3, 30_000)
    obligate(w, "N2", "B", "A", 1, 10_000)
    obligate(w, "N3", "B", "C", 2, 25_000)
    data = close(w)
    # pairs (A,B) and (B,C), each with a BOND and a USD net: 4 movements; multilateral would be 6
    assert data["net_movements"] == "4"
    assert (w.bal("A"), w.bal("B"), w.bal("C")) == (1_020_000, 1_005_000, 975_000)


def test_cycles_close_at_utc_multiples_of_the_period():
    w = World(cash={"B": 1_000_000}, bonds={"A": 10})
    w.run("OP", [netting.ConfigureCycles(id=fresh(), period=3600)])
    obligate(w, "N1", "A", "B", 1, 1_000)
    boundary = (w.clock.now // 3600 + 1) * 3600
    w.advance(boundary - w.clock.now - 1)
    assert w.bal("B", "BOND") == 0
    w.advance(1)
    assert w.bal("B", "BOND") == 1
    assert [e.kind for e in w.events()] == ["cycle_closed"]


def test_obligations_need_both_parties_authority():
    w = World(cash={"B": 1_000_000}, bonds={"A": 10})
    cmd = netting.Obligate(id=fresh(), trade="N1", seller="A", buyer="B", security="BOND", quantity=1,
                           cash_asset="USD", amount=1)
    assert w.run("A", [cmd]) == [C.UNAUTHORIZED]


trades = st.lists(st.tuples(st.sampled_from("ABCD"), st.sampled_from("ABCD"), st.integers(1, 4),
                            st.integers(1, 100_000)).filter(lambda t: t[0] != t[1]), min_size=1, max_size=30)


@settings(max_examples=50, deadline=None)
@given(trades)
def test_for_funded_trades_gross_and_net_end_in_identical_balances(trade_list):
    funding = dict(cash={p: 10_000_000 for p in "ABCD"}, bonds={p: 200 for p in "ABCD"})
    gross, net = World(**funding), World(**funding)
    for n, (seller, buyer, q, amount) in enumerate(trade_list):
        assert gross.settle(f"T{n}", seller, buyer, q, amount) == C.OK
        assert obligate(net, f"T{n}", seller, buyer, q, amount) == C.OK
    close(net)
    assert gross.ledger.balances() == net.ledger.balances()
    for asset in ("BOND", "USD"):
        assert sum(p.get(asset, 0) for p in positions(net).values()) == 0


def test_a_frozen_participant_is_unwound_before_anything_moves():
    from engine.records import Freeze

    w = World(cash={"A": 1_000_000, "B": 1_000_000, "C": 1_000_000}, bonds={"A": 10, "C": 10})
    obligate(w, "N1", "A", "B", 1, 1_000)
    obligate(w, "N2", "C", "B", 1, 1_000)
    assert w.run("CMP", [Freeze(id=fresh(), participant="A")]) == [C.OK]
    data = close(w)
    assert data["unwound"] == "A"
    assert (w.bal("A", "BOND"), w.bal("C", "BOND"), w.bal("B", "BOND")) == (10, 9, 1)


@pytest.mark.parametrize("asset,unwound", [("BOND", "A"), ("*", "A"), ("USD", "A"), ("BILL", "")],
                         ids=["frozen on the bond it sells", "frozen on everything", "frozen on the cash it receives",
                              "frozen on a bond it does not trade"])
def test_a_freeze_unwinds_a_participant_only_if_it_touches_what_it_trades(asset, unwound):
    from engine.records import Freeze

    w = World(cash={"A": 1_000_000, "B": 1_000_000, "C": 1_000_000}, bonds={"A": 10, "C": 10})
    obligate(w, "N1", "A", "B", 1, 1_000)
    obligate(w, "N2", "C", "B", 1, 1_000)
    assert w.run("CMP", [Freeze(id=fresh(), participant="A", asset=asset)]) == [C.OK]
    data = close(w)
    assert data["unwound"] == unwound
    assert w.bal("A", "BOND") == (10 if unwound else 9) and w.bal("C", "BOND") == 9


def test_a_cycle_never_grows_past_the_largest_amount():
    w = World(cash={"B": 1}, bonds={"A": 10})
    huge = 2**62
    assert obligate(w, "N1", "A", "B", 1, huge) == C.OK
    assert obligate(w, "N2", "A", "B", 1, huge) == C.INVALID_AMOUNT
    close(w)  # no fault: B cannot pay and is unwound
    assert w.bal("A", "BOND") == 10
