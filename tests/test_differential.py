"""Every protocol fast path gives exactly what its general path gives, on random days.

The same random batches run through two ledgers: one with every fast path
on, one with the paths under test switched off (`engine.fastpath`). After
every batch the result codes, the events and the journal hash (which
covers results, events and the state digest) must be equal. The days are
made hard on purpose: scarce cash and securities, long queues, partial
settlement switched on and off, freezes, suspensions, cancels, cut-offs.
"""

from __future__ import annotations

import itertools
import random
from unittest import mock

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.fastpath import general_paths
from engine.records import Freeze, Mint, Move, Reinstate, SetConfig, Suspend, Tick, Unfreeze
from protocols import dvp
from protocols.dvp import recycling

import dvp_world
from dvp_world import World

BANKS = ("A", "B", "C", "D")
CASH = {"A": 400, "B": 150, "C": 60, "D": 0}
BONDS = {"A": 6, "B": 2, "C": 9, "D": 0}
TRADE_IDS = tuple(f"T{k}" for k in range(12)) + ("X" * 129, "")  # and two ids the rules refuse


def _pair_of_parties():
    """Mostly the short parties (C and D) trade, so queues form and credits recycle them."""
    return st.one_of(st.permutations(BANKS).map(lambda p: (p[0], p[1])),
                     st.permutations(("C", "D", "B")).map(lambda p: (p[0], p[1])))


settles = st.builds(
    lambda parties, trade, quantity, amount, security: ("settle", parties, trade, quantity, amount, security),
    _pair_of_parties(), st.sampled_from(TRADE_IDS), st.sampled_from((1, 2, 3, 5)),
    st.sampled_from((10, 25, 60, 140)), st.sampled_from(("BOND", "BOND", "BILL")),
)
instructs = st.builds(
    lambda parties, trade, side, quantity, amount: ("instruct", parties, trade, side, quantity, amount),
    _pair_of_parties(), st.sampled_from(TRADE_IDS), st.sampled_from(("deliver", "receive")),
    st.sampled_from((1, 3)), st.sampled_from((10, 60))
)
credits = st.builds(lambda who, asset, amount: ("mint", who, asset, amount),
                    st.sampled_from(("D", "C", "D", "B", "A")), st.sampled_from(("USD", "USD", "BOND", "BILL")),
                    st.sampled_from((1, 5, 12, 40, 200)))
moves = st.builds(lambda parties, asset, amount: ("move", parties, asset, amount),
                  _pair_of_parties(), st.sampled_from(("USD", "BOND")), st.sampled_from((1, 3, 30, 90)))
controls = st.one_of(
    st.builds(lambda who: ("freeze", who), st.sampled_from(BANKS)),
    st.builds(lambda who: ("unfreeze", who), st.sampled_from(BANKS)),
    st.builds(lambda who: ("suspend", who), st.sampled_from(BANKS)),
    st.builds(lambda who: ("reinstate", who), st.sampled_from(BANKS)),
    st.builds(lambda trade, parties: ("cancel", trade, parties), st.sampled_from(TRADE_IDS), _pair_of_parties()),
    st.sampled_from((("partial", "true"), ("partial", "false"), ("tick", 1), ("tick", 400), ("cutoff",))),
)
steps = st.one_of(*[settles] * 6, instructs, *[credits] * 6, moves, moves, controls)  # controls: rare, but there
days = st.lists(st.lists(steps, min_size=1, max_size=6), min_size=2, max_size=16)


def _envelope(w: World, step, n: int):
    """(signers, commands) for one step of a day."""
    kind = step[0]
    cid = f"s{n}"
    if kind == "settle":
        _, (seller, buyer), trade, quantity, amount, security = step
        return (seller, buyer), [dvp.Settle(id=cid, trade=trade, seller=seller, buyer=buyer, security=security,
                                            quantity=quantity, cash_asset="USD", amount=amount)]
    if kind == "instruct":
        _, (seller, buyer), trade, side, quantity, amount = step
        return (seller if side == "deliver" else buyer,), [
            dvp.Instruct(id=cid, trade=trade, side=side, seller=seller, buyer=buyer, security="BOND",
                         quantity=quantity, cash_asset="USD", amount=amount)]
    if kind == "mint":
        _, who, asset, amount = step
        return ("ISS",), [Mint(id=cid, asset=asset, target=who, amount=amount)]
    if kind == "move":
        _, (source, target), asset, amount = step
        return (source,), [Move(id=cid, asset=asset, source=source, target=target, amount=amount)]
    if kind in ("freeze", "unfreeze"):
        cls = Freeze if kind == "freeze" else Unfreeze
        return ("CMP",), [cls(id=cid, participant=step[1])]
    if kind in ("suspend", "reinstate"):
        cls = Suspend if kind == "suspend" else Reinstate
        return ("OP",), [cls(id=cid, participant=step[1])]
    if kind == "cancel":
        _, trade, (seller, buyer) = step
        return (seller,), [dvp.Cancel(id=cid, trade=trade, seller=seller, buyer=buyer)]
    if kind == "partial":
        return ("OP",), [SetConfig(id=cid, key=dvp.PARTIAL_KEY, value=step[1])]
    if kind == "tick":
        return ("OP",), [Tick(id=cid, to=w.clock.now + step[1])]
    return ("OP",), [dvp.Cutoff(id=cid)]


def run_day(day, *general: str):
    """Run a day's batches (each a list of steps, one envelope per step); what each batch gave."""
    dvp_world._ids = itertools.count(1)
    w = World(cash=CASH, bonds=BONDS)
    w.config(dvp.OFFSET_INTERVAL_KEY, "60")
    out = []
    n = itertools.count()
    with general_paths(*general) if general else _nothing():
        for batch in day:
            w.clock.advance(7)
            envelopes = []
            for step in batch:
                signers, commands = _envelope(w, step, next(n))
                env = w.signers[signers[0]].envelope(commands)
                for name in signers[1:]:
                    env = w.signers[name].cosign(env)
                envelopes.append(env)
            codes = w.ledger.submit(envelopes)
            out.append((codes, list(w.ledger.last_events), w.ledger.head_hash))
    w.ledger.close()
    return out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def random_day(seed: int) -> list:
    """A seeded hard day: mostly the short parties trade, credits trickle in, controls are rare and undone."""
    rng = random.Random(seed)
    short = ("C", "D", "D", "C", "B")
    day = []
    for _ in range(rng.randint(8, 30)):
        batch = []
        for _ in range(rng.randint(1, 6)):
            roll = rng.random()
            if roll < 0.45:
                seller, buyer = rng.sample(short if rng.random() < 0.8 else BANKS, 2)
                batch.append(("settle", (seller, buyer), rng.choice(TRADE_IDS), rng.choice((1, 2, 3)),
                              rng.choice((10, 25, 40, 60)), rng.choice(("BOND", "BOND", "BILL"))))
            elif roll < 0.75:
                batch.append(("mint", rng.choice(short), rng.choice(("USD", "USD", "BOND", "BILL")),
                              rng.choice((5, 12, 25, 40, 90))))
            elif roll < 0.82:
                batch.append(("move", tuple(rng.sample(BANKS, 2)), rng.choice(("USD", "BOND")), rng.choice((3, 30))))
            elif roll < 0.87:
                batch.append(("instruct", tuple(rng.sample(short[:2], 2)), rng.choice(TRADE_IDS),
                              rng.choice(("deliver", "receive")), 1, 25))
            elif roll < 0.90:
                batch.append(("cancel", rng.choice(TRADE_IDS), tuple(rng.sample(short[:2], 2))))
            elif roll < 0.95:
                batch.append(("tick", rng.choice((1, 70, 400))))
            elif roll < 0.97:
                who = rng.choice(BANKS)
                kind = rng.choice((("suspend", "reinstate"), ("freeze", "unfreeze")))
                batch.append((kind[0], who))
                day.append(batch)
                batch = [(kind[1], who)] if rng.random() < 0.5 else []
            elif roll < 0.99:
                batch.append(("partial", rng.choice(("true", "false"))))
            else:
                batch.append(("cutoff",))
        day.append(batch or [("tick", 1)])
    return day


def _recycled(out) -> int:
    return sum(1 for _codes, events, _h in out for e in events if e.kind == "settled" and e.data.get("by") == "recycling")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days)
def test_indexed_recycling_gives_the_scans_codes_events_and_hashes(day):
    fast = run_day(day)
    event(f"trades settled by recycling: {min(_recycled(fast), 4)}{'+' if _recycled(fast) >= 4 else ''}")
    assert fast == run_day(day, "dvp.indexed_recycling")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32))
def test_indexed_recycling_agrees_on_seeded_hard_days(seed):
    day = random_day(seed)
    fast = run_day(day)
    event(f"trades settled by recycling: {min(_recycled(fast), 8)}{'+' if _recycled(fast) >= 8 else ''}")
    assert fast == run_day(day, "dvp.indexed_recycling")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days)
def test_the_inline_settle_gives_the_general_paths_codes_events_and_hashes(day):
    assert run_day(day) == run_day(day, "dvp.inline_settle")


# A table of days the random search might take long to reach, each one run both ways.
LONG_QUEUE = [[("settle", ("C", "D"), f"T{k}", 1, 10 + k, "BOND") for k in range(10)]] + [
    [("mint", "D", "USD", 25)], [("mint", "D", "USD", 12)], [("mint", "D", "USD", 200)]]
OVERTAKING = [[("settle", ("C", "D"), "T0", 1, 100, "BOND"), ("settle", ("C", "D"), "T1", 1, 20, "BOND"),
               ("settle", ("C", "D"), "T2", 1, 90, "BOND")], [("mint", "D", "USD", 95)]]
BOTH_LEGS_SHORT = [[("settle", ("D", "C"), "T0", 2, 50, "BOND")], [("mint", "D", "BOND", 2)],
                   [("move", ("C", "A"), "USD", 60)], [("mint", "C", "USD", 49)], [("mint", "C", "USD", 1)]]
SUSPENDED_WAITER = [[("settle", ("C", "D"), "T0", 1, 30, "BOND")], [("suspend", "C")], [("mint", "D", "USD", 40)],
                    [("reinstate", "C")], [("mint", "D", "USD", 1)]]
PARTIAL_THEN_OFF = [[("partial", "true")], [("settle", ("C", "D"), "T0", 4, 40, "BOND")],
                    [("mint", "D", "USD", 20)], [("partial", "false")], [("mint", "D", "USD", 30)]]
RISES_IN_ONE_ROUND = [[("settle", ("C", "D"), "T0", 1, 30, "BOND"), ("settle", ("D", "B"), "T1", 1, 30, "BOND")],
                      [("settle", ("A", "C"), "T2", 1, 5, "BOND"), ("mint", "D", "USD", 30)]]
CASES = [
    ("a long queue on one account wakes only what fits", LONG_QUEUE),
    ("a later trade that fits overtakes an earlier one that does not", OVERTAKING),
    ("a trade short of both legs moves to wait on the other", BOTH_LEGS_SHORT),
    ("a suspended party's trade waits until reinstated", SUSPENDED_WAITER),
    ("partial settlement switched on, then off", PARTIAL_THEN_OFF),
    ("several accounts rise in one round", RISES_IN_ONE_ROUND),
]


@pytest.mark.parametrize("day", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_hard_days_give_the_same_journal_both_ways(day):
    fast = run_day(day)
    assert fast == run_day(day, "dvp.indexed_recycling")
    assert fast == run_day(day, "dvp.inline_settle")


def test_a_long_queue_settles_in_arrival_order_as_cash_arrives():
    out = run_day(LONG_QUEUE)
    settled = [e.ref for _c, events, _h in out for e in events if e.kind == "settled"]
    # D first holds 25: T0 (10) and T1 (11) settle in order, 4 is left; 12 more (16) settles T2 (12); then the rest
    assert settled[:3] == ["T0", "T1", "T2"]
    assert settled == [f"T{k}" for k in range(9)]  # C holds 9 bonds: T9 now waits on C's securities


def test_a_later_trade_that_fits_overtakes_an_earlier_one():
    out = run_day(OVERTAKING)
    settled = [e.ref for _c, events, _h in out for e in events if e.kind == "settled"]
    assert settled == ["T1"]  # 95 covers T1 (20), then T0 (100) and T2 (90) no longer fit


def test_the_indexed_path_retries_only_what_settles_or_moves():
    """On a long queue one credit that covers one trade costs one retry, not one per waiting trade."""
    day = [[("settle", ("C", "D"), f"T{k}", 1, 50, "BOND") for k in range(12)]]
    day += [[("mint", "D", "USD", 50)] for _ in range(12)]
    calls = {"n": 0}
    real = recycling.try_queued

    def counting(*args):
        calls["n"] += 1
        return real(*args)

    with mock.patch.object(recycling, "try_queued", counting):
        fast = run_day(day)
    indexed = calls["n"]
    calls["n"] = 0
    with mock.patch.object(recycling, "try_queued", counting):
        general = run_day(day, "dvp.indexed_recycling")
    assert fast == general
    assert indexed == 12  # each credit of 50 settles exactly one trade
    assert calls["n"] > 3 * indexed  # the scan tries every trade the account covered when it rose


def test_the_comparison_can_fail():
    """A general path that breaks FIFO gives another journal: the differential test would see it."""
    fast = run_day(OVERTAKING)
    with mock.patch.object(recycling, "sorted", lambda xs, key: sorted(xs, key=key, reverse=True), create=True):
        broken = run_day(OVERTAKING, "dvp.indexed_recycling")
    assert fast != broken
