"""Queries for embedders: a trade's status, an account's history, a repo's state (engine.queries, engine.history).

Each scenario is written inline; amounts are computed by hand in the comments.
"""

from __future__ import annotations

import random

import pytest

from dvp_world import T0, World, fresh
from engine import codes as C
from engine.history import AccountChange
from engine.journal import JournalError
from engine.ledger import Ledger
from engine.queries import MarginCallState, Shortfall, TradeStatus, records, trades
from engine.records import Hold, Move
from protocols import dvp, netting, prices
from test_repo import HOUR, Desk
from test_repo import T0 as R0

PROTOCOLS = [dvp.DvP(), netting.Netting(), prices.Prices()]


# ------------------------------------------------------------------ trade status


def settles_at_once(w: World) -> None:
    assert w.settle("T", "A", "B", 10, 500) == C.OK


def queues_then_recycles(w: World) -> None:
    assert w.settle("T", "A", "B", 10, 5_000) == C.OK  # B holds 1,000: queued on cash
    w.clock.advance(60)
    w.mint("B", 4_000)  # B now holds 5,000: the credit recycles T


def still_queued(w: World) -> None:
    assert w.settle("T", "A", "B", 10, 5_000) == C.OK


def fails_short_of_cash(w: World) -> None:
    assert w.settle("T", "A", "B", 10, 5_000) == C.OK
    w.clock.advance(60)
    assert w.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]  # B is 4,000 short


def fails_short_of_securities(w: World) -> None:
    assert w.settle("T", "A", "B", 150, 500) == C.OK  # A holds 100 BOND
    w.clock.advance(60)
    assert w.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]


def cancelled(w: World) -> None:
    assert w.settle("T", "A", "B", 10, 5_000) == C.OK
    w.clock.advance(60)
    assert w.run("B", [dvp.Cancel(id=fresh(), trade="T")]) == [C.OK]


def _side(side: str, quantity: int = 10, amount: int = 500) -> dvp.Instruct:
    return dvp.Instruct(id=fresh(), trade="T", side=side, seller="A", buyer="B", security="BOND", quantity=quantity,
                        cash_asset="USD", amount=amount)


def matched(w: World) -> None:
    assert w.run("A", [_side("deliver")]) == [C.OK]
    w.clock.advance(60)
    assert w.run("B", [_side("receive")]) == [C.OK]


def unmatched(w: World) -> None:
    assert w.run("A", [_side("deliver")]) == [C.OK]


def unmatched_at_the_cutoff(w: World) -> None:
    assert w.run("A", [_side("deliver")]) == [C.OK]
    w.clock.advance(60)
    assert w.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]


def refused(w: World) -> None:
    cmd = dvp.Settle(id=fresh(), trade="T", seller="A", buyer="B", security="BOND", quantity=10, cash_asset="USD",
                     amount=500)
    assert w.run("A", [cmd]) == [C.UNAUTHORIZED]  # the buyer did not sign


def never_used(w: World) -> None:
    pass


# (scenario, status, live, reason, short, event kinds, ended after T0 by)
TRADE_CASES = [
    (settles_at_once, "settled", False, "", None, [], 0),
    (queues_then_recycles, "settled", False, "", None, ["queued", "settled"], 60),
    (still_queued, "queued", True, "insufficient_cash", None, ["queued"], None),
    (fails_short_of_cash, "failed", False, "insufficient_cash", Shortfall(party="B", asset="USD", amount=4_000),
     ["queued", "failed"], 60),
    (fails_short_of_securities, "failed", False, "insufficient_securities",
     Shortfall(party="A", asset="BOND", amount=50), ["queued", "failed"], 60),
    (cancelled, "cancelled", False, "", None, ["queued", "cancelled"], 60),
    (matched, "settled", False, "", None, ["unmatched", "matched", "settled"], 60),
    (unmatched, "unmatched", True, "", None, ["unmatched"], None),
    (unmatched_at_the_cutoff, "failed", False, "unmatched", None, ["unmatched", "failed"], 60),
]


@pytest.mark.parametrize("scenario,status,live,reason,short,kinds,ended", TRADE_CASES, ids=[
    "a jointly signed trade that settles at once is settled when it was instructed",
    "a trade that queued and then settled by recycling when cash came is settled at the credit",
    "a trade still waiting for cash is queued, live, with its reason",
    "a trade that failed at the cut-off for cash says who was short of what and by how much",
    "a trade that failed at the cut-off for securities names the seller's shortfall",
    "a cancelled trade is cancelled",
    "two one-sided instructions that matched are settled",
    "a lone instruction is unmatched and live",
    "a lone instruction at the cut-off failed as unmatched",
])
def test_a_trade_reads_as_it_happened(scenario, status, live, reason, short, kinds, ended):
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    scenario(w)
    t = w.ledger.trade("T")
    assert isinstance(t, TradeStatus)
    assert (t.status, t.live, t.reason, t.short) == (status, live, reason, short)
    assert [e.kind for e in t.events] == kinds
    assert t.ended_at == (None if ended is None else T0 + ended)
    assert (t.trade, t.seller, t.buyer, t.security, t.cash_asset) == ("T", "A", "B", "BOND", "USD")
    assert t.instructed_at == T0 and t.commands[0].seq > 0 and t.seq == max(c.seq for c in t.commands + t.events)
    assert not t.shared_id


@pytest.mark.parametrize("scenario", [refused, never_used], ids=[
    "a trade whose only instruction was refused does not exist", "an id never used does not exist"])
def test_no_trade(scenario):
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    scenario(w)
    assert w.ledger.trade("T") is None and trades(w.ledger, "T") == []


def test_the_commands_of_a_trade_carry_their_results_signers_and_terms():
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    assert w.settle("T", "A", "B", 10, 5_000) == C.OK
    w.clock.advance(30)
    assert w.settle("T", "A", "B", 10, 5_000) == dvp.TRADE_EXISTS  # the same pair again while it waits
    t = w.ledger.trade("T")
    assert [(c.type, c.result_name, c.signers) for c in t.commands] == [
        ("dvp_settle", "ok", ("A", "B")), ("dvp_settle", "trade_exists", ("A", "B"))]
    assert t.commands[1].at == T0 + 30 and (t.quantity, t.amount) == (10, 5_000)


def test_a_command_sent_again_is_the_same_trade_not_a_new_one():
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    cmd = dvp.Settle(id="same", trade="T", seller="A", buyer="B", security="BOND", quantity=10, cash_asset="USD",
                     amount=500)
    assert w.run(("A", "B"), [cmd]) == [C.OK]
    assert w.run(("A", "B"), [cmd]) == [C.OK]  # idempotent: changes nothing
    found = trades(w.ledger, "T")
    assert len(found) == 1 and [c.id for c in found[0].commands] == ["same", "same"]


def test_an_id_used_again_by_the_same_pair_after_it_settled_is_a_new_trade():
    w = World(cash={"B": 10_000}, bonds={"A": 100})
    assert w.settle("T", "A", "B", 10, 500) == C.OK
    w.clock.advance(60)
    assert w.settle("T", "A", "B", 20, 90_000) == C.OK  # queued
    first, second = trades(w.ledger, "T")
    assert (first.status, first.quantity, second.status, second.quantity) == ("settled", 10, "queued", 20)
    assert w.ledger.trade("T").quantity == 20


def test_pairs_sharing_an_id_are_told_apart_by_naming_them():
    w = World(cash={"B": 1_000, "D": 1_000}, bonds={"A": 100, "C": 100})
    assert w.settle("T", "A", "B", 10, 500) == C.OK  # settles
    assert w.settle("T", "C", "D", 10, 5_000) == C.OK  # queued
    with pytest.raises(ValueError, match="several pairs"):
        w.ledger.trade("T")
    assert w.ledger.trade("T", seller="A", buyer="B").status == "settled"
    assert w.ledger.trade("T", seller="C", buyer="D").status == "queued"
    assert not w.ledger.trade("T", seller="C", buyer="D").shared_id  # its queued event came from its own command


def test_an_event_that_two_open_trades_could_own_marks_both_shared():
    w = World(cash={"B": 1_000, "D": 1_000}, bonds={"A": 100, "C": 100})
    assert w.settle("T", "A", "B", 10, 5_000) == C.OK
    assert w.settle("T", "C", "D", 10, 5_000) == C.OK
    assert w.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]  # two `failed` events with ref T, from one command
    both = trades(w.ledger, "T")
    assert [t.status for t in both] == ["failed", "failed"] and all(t.shared_id for t in both)


def test_a_trade_reads_the_same_after_reopening_and_from_a_reader(tmp_path):
    path = str(tmp_path / "ledger.db")
    w = World(cash={"B": 1_000}, bonds={"A": 100}, path=path)
    queues_then_recycles(w)
    before = w.ledger.trade("T")
    w.reopen(snapshot=True)
    assert w.ledger.trade("T") == before
    reader = Ledger.open(path, readonly=True, protocols=PROTOCOLS)
    try:
        assert reader.trade("T") == before
    finally:
        reader.close()


def test_a_ledger_without_a_trade_protocol_says_so():
    ledger = Ledger.create(chain_id="bare", operator="OP", operator_key=bytes(32), protocols=[])
    with pytest.raises(LookupError, match="trade"):
        ledger.trade("T")
    with pytest.raises(LookupError, match="repo"):
        records(ledger, "repo", "R1")


# --------------------------------------------------------------- account history


def _changes(w: World, who: str, asset: str = "USD", **kw) -> list[tuple]:
    return [(c.cause, c.delta, [x.type for x in c.commands], [(e.kind, e.ref) for e in c.events])
            for c in w.ledger.history(who, asset, **kw)]


def test_each_change_names_its_command_and_the_events_it_set_off():
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    assert w.settle("T1", "A", "B", 10, 400) == C.OK  # B: -400
    assert w.settle("T2", "A", "B", 10, 5_000) == C.OK  # queued: no change
    w.mint("B", 4_400)  # B: +4,400, then T2 recycles: -5,000, one step
    assert _changes(w, "B") == [
        ("command", 1_000, ["mint"], []),
        ("command", -400, ["dvp_settle"], []),
        ("command", -600, ["mint"], [("settled", "T2")]),
    ]
    assert _changes(w, "A") == [("command", 400, ["dvp_settle"], []), ("command", 5_000, ["mint"], [("settled", "T2")])]


def test_pairs_of_moves_in_one_envelope_are_one_change_each():
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    pairs = [Move(id=fresh(), asset="BOND", source="A", target="B", amount=10, linked=True),
             Move(id=fresh(), asset="USD", source="B", target="A", amount=100),
             Move(id=fresh(), asset="BOND", source="A", target="B", amount=10, linked=True),
             Move(id=fresh(), asset="USD", source="B", target="A", amount=200)]
    assert w.run(("A", "B"), pairs) == [C.OK] * 4  # the batch hot path settles both pairs
    changes = w.ledger.history("A", "USD")
    assert [(c.delta, [x.position for x in c.commands]) for c in changes] == [(100, [0, 1]), (200, [2, 3])]
    assert [(c.balance_before, c.balance_after) for c in changes] == [(0, 100), (100, 300)]


def test_a_chain_that_failed_and_rolled_back_is_no_change():
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    chain = [Move(id=fresh(), asset="USD", source="B", target="A", amount=100, linked=True),
             Move(id=fresh(), asset="BOND", source="A", target="B", amount=1_000)]  # A holds 100: fails
    assert w.run(("A", "B"), chain) == [C.LINKED_EVENT_FAILED, C.INSUFFICIENT_FUNDS]
    assert _changes(w, "A") == [] and len(_changes(w, "B")) == 1


def test_due_work_is_its_own_step():
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    assert w.run("B", [Hold(id="h1", asset="USD", owner="B", beneficiary="A", amount=300,
                            expires_at=T0 + 60)]) == [C.OK]
    w.advance(60)  # the hold expires: back to B before any command of the entry
    assert _changes(w, "B") == [("command", 1_000, ["mint"], []), ("command", -300, ["hold"], []),
                                ("due", 300, [], [("hold_expired", "h1")])]
    assert w.ledger.history("B", "USD")[-1].at == T0 + 60


def test_history_goes_on_from_the_last_change_seen_and_stops_where_asked():
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    for amount in (100, 200, 300):
        assert w.settle(fresh("T"), "A", "B", 1, amount) == C.OK
    whole = w.ledger.history("A", "USD")
    assert [c.delta for c in whole] == [100, 200, 300]
    rest = w.ledger.history("A", "USD", since_seq=whole[0].seq)
    assert rest == whole[1:]
    assert w.ledger.history("A", "USD", until_seq=whole[1].seq) == whole[:2]


def test_history_from_a_snapshot_equals_history_from_genesis(tmp_path):
    path = str(tmp_path / "ledger.db")
    w = World(cash={"B": 100_000}, bonds={"A": 1_000}, path=path)
    rng = random.Random(5)
    for _ in range(40):
        w.settle(fresh("T"), "A", "B", rng.randint(1, 40), rng.randint(1, 4_000))
        if rng.random() < 0.3:
            w.mint("B", rng.randint(1, 2_000))
        if rng.random() < 0.2:
            w.ledger.snapshot()
    whole = w.ledger.history("B", "USD")
    middle = whole[len(whole) // 2].seq
    assert w.ledger.journal.snapshots() and min(w.ledger.journal.snapshots()) < middle
    assert w.ledger.history("B", "USD", since_seq=middle) == [c for c in whole if c.seq > middle]
    assert sum(c.delta for c in whole) == w.bal("B")
    for earlier, later in zip(whole, whole[1:]):
        assert earlier.balance_after == later.balance_before


def test_history_changes_nothing():
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    queues_then_recycles(w)
    head, digest = w.ledger.head_seq, w.ledger.digest()
    w.ledger.history("B", "USD")
    assert (w.ledger.head_seq, w.ledger.digest()) == (head, digest)
    assert w.settle("T-next", "A", "B", 1, 1) == C.OK  # the writer goes on


@pytest.mark.parametrize("who,asset,kw,match", [
    ("ZZZ", "USD", {}, "unknown participant 'ZZZ'"),
    ("A", "EUR", {}, "unknown asset 'EUR'"),
    ("A", "USD", {"since_seq": 999}, "outside the journal"),
    ("A", "USD", {"since_seq": -1}, "outside the journal"),
    ("A", "USD", {"since_seq": 3, "until_seq": 2}, "outside the journal"),
], ids=["an unknown participant is refused", "an unknown asset is refused", "a start past the head is refused",
        "a negative start is refused", "an end before the start is refused"])
def test_bad_history_requests_are_refused(who, asset, kw, match):
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    with pytest.raises(ValueError, match=match):
        w.ledger.history(who, asset, **kw)


def test_a_journal_that_does_not_replay_is_refused(monkeypatch):
    w = World(cash={"B": 1_000}, bonds={"A": 100})
    settles_at_once(w)
    monkeypatch.setattr(w.ledger.machine, "after_batch", [lambda state: state.emit("x", "y", "z")])
    with pytest.raises(JournalError, match="replays to other results or events"):
        w.ledger.history("A", "USD")


def test_history_of_random_days_adds_up(tmp_path):
    """On random days: the changes add up to the balance, chain end to end, and each names a command or due work."""
    for seed in range(3):
        rng = random.Random(seed)
        w = World(cash={b: rng.randint(0, 5_000) for b in "ABCD"}, bonds={b: rng.randint(0, 50) for b in "ABCD"})
        for _ in range(60):
            s, b = rng.sample("ABCD", 2)
            w.settle(fresh("T"), s, b, rng.randint(1, 20), rng.randint(1, 3_000))
            if rng.random() < 0.2:
                w.mint(rng.choice("ABCD"), rng.randint(1, 3_000))
            if rng.random() < 0.1:
                w.advance(rng.randint(1, 600))
        w.run("OP", [dvp.Cutoff(id=fresh())])
        for who in "ABCD":
            for asset in ("USD", "BOND"):
                changes = w.ledger.history(who, asset)
                assert all(isinstance(c, AccountChange) and c.delta for c in changes)
                assert sum(c.delta for c in changes) == w.bal(who, asset)
                assert all(a.balance_after == b.balance_before for a, b in zip(changes, changes[1:]))
                assert all(c.commands or c.cause != "command" for c in changes)


# --------------------------------------------------------------------- repo state


def test_a_repo_reads_as_it_goes_open_called_met_closed():
    d = Desk(cash_b=20_000_000)  # the borrower holds USD 200,000.00 for margin
    assert d.open(principal=950_000_000) == C.OK
    r = d.ledger.repo("R1")
    # 10,000,000 face at 99.00: MV 9,900,000.00; 2% haircut: CV 9,702,000.00; E = the principal
    assert (r.status, r.live, r.market_value, r.collateral_value, r.exposure, r.haircut) == (
        "open", True, 990_000_000, 970_200_000, 950_000_000, "0.02")
    assert (r.margin, r.call, r.calls, r.interest, r.start, r.at) == (0, None, 0, 0, R0, R0)
    d.clock.advance(HOUR)
    d.price("NOTE", "96.00")
    # MV 9,600,000.00, CV 9,408,000.00; I(1h) = 950,000,000 * 0.0531 * 3600 / (360 * 86400) = 5,838.54 -> 5,839;
    # E = 950,005,839; the call for E - CV = 9,205,839 is met from the borrower's cash at once
    r = d.ledger.repo("R1")
    assert (r.market_value, r.collateral_value, r.interest, r.margin, r.call, r.calls) == (
        960_000_000, 940_800_000, 5_839, 9_205_839, None, 1)
    assert r.exposure == 950_000_000 + 5_839 - 9_205_839
    assert [e.kind for e in r.events] == ["repo_opened", "margin_call", "margin_met"]
    d.advance(5 * HOUR)
    # closing leg at the end: I(6h) = 35,031.25 -> 35,031; paid 950,000,000 + 35,031 - 9,205,839
    r = d.ledger.repo("R1")
    assert (r.status, r.live, r.interest, r.margin, r.at, r.close_out) == (
        "closed", False, 35_031, 9_205_839, R0 + 6 * HOUR, None)
    assert [c.delta for c in d.ledger.history("B", "USD")][-1] == -(950_000_000 + 35_031 - 9_205_839)


def test_an_open_call_the_borrower_cannot_meet_shows_with_its_deadline_then_the_default():
    d = Desk()
    assert d.open(principal=950_000_000) == C.OK
    assert d.run("B", [Move(id=fresh(), asset="USD", source="B", target="L", amount=950_000_000)]) == [C.OK]
    d.clock.advance(HOUR)  # the borrower paid the principal away: it has no cash for a call
    d.price("NOTE", "96.00")
    r = d.ledger.repo("R1")
    assert r.call == MarginCallState(number=1, amount=9_205_839, deadline=R0 + HOUR + 30 * 60)
    assert r.margin == 0 and r.exposure == 950_005_839
    d.advance(30 * 60)  # the deadline: the repo defaults; close-out E - MV
    r = d.ledger.repo("R1")
    # I(1h30) = 950,000,000 * 0.0531 * 5400 / 31,104,000 = 8,757.81 -> 8,758; E - MV = 950,008,758 - 960,000,000
    assert (r.status, r.live, r.reason, r.exposure, r.market_value, r.close_out, r.margin) == (
        "defaulted", False, "margin_call_unmet", 950_008_758, 960_000_000, -9_991_242, 0)


def test_a_substituted_repo_shows_its_new_collateral_open_and_ended():
    d = Desk()
    assert d.open(principal=900_000_000) == C.OK
    from protocols import repo as repo_protocol

    assert d.run("B", [repo_protocol.Substitute(id=fresh(), repo="R1", collateral="BILL",
                                                quantity=10_000_000)]) == [C.OK]
    assert (d.ledger.repo("R1").collateral, d.ledger.repo("R1").quantity) == ("BILL", 10_000_000)
    assert d.run(("B", "L"), [repo_protocol.CloseRepo(id=fresh(), repo="R1")]) == [C.OK]  # at once: no interest
    r = d.ledger.repo("R1")
    assert (r.status, r.collateral, r.quantity, r.interest, r.margin) == ("closed", "BILL", 10_000_000, 0, 0)


def test_a_repo_that_never_opened_is_none():
    d = Desk(note_b=1_000)  # far too little collateral
    assert d.open(principal=950_000_000) != C.OK
    assert d.ledger.repo("R1") is None and d.ledger.repo("R-unknown") is None
