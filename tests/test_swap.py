"""Cross-ledger DvP through the swap coordinator: the swap property on every path."""

from __future__ import annotations

import pytest

from engine.ledger import Ledger
from protocols import htlc
from protocols.swap import SwapCoordinator, SwapError, SwapTerms, derived_secret
from test_htlc import HOUR, T0, Chain

TIMEOUT = HOUR
SECRET = derived_secret(b"A", "X1")


def setup(tmp_path=None):
    bonds = Chain("bond-chain", "BOND", funded="B", amount=5)
    cash = Chain("cash-chain", "USD", funded="A", amount=10_000)
    terms = SwapTerms(trade="X1", seller="B", buyer="A", security="BOND", quantity=5, cash_asset="USD",
                      amount=1_000, timeout=TIMEOUT)
    return bonds, cash, SwapCoordinator(bonds.ledger, cash.ledger, bonds.s, cash.s), terms


def at(t, *chains):
    for chain in chains:
        chain.at(t)


def moved(bonds, cash) -> bool:
    return bonds.bal("A") == 5 and cash.bal("B") == 1_000


def refunded(bonds, cash) -> bool:
    return bonds.bal("B") == 5 and cash.bal("A") == 10_000


def test_the_happy_path_moves_both_assets():
    bonds, cash, coord, terms = setup()
    coord.initiate(terms, SECRET)
    coord.respond(terms)
    assert coord.claim_second(terms, SECRET) == 0
    assert coord.follow(terms) == "claimed"
    assert moved(bonds, cash)


def test_the_second_party_never_locks_and_the_first_lock_refunds_at_t1():
    bonds, cash, coord, terms = setup()
    coord.initiate(terms, SECRET)
    at(T0 + 2 * TIMEOUT - 1, bonds, cash)
    assert cash.record("X1").status == "open"
    at(T0 + 2 * TIMEOUT, bonds, cash)
    assert cash.record("X1").status == "refunded" and refunded(bonds, cash)


def test_the_initiator_never_claims_and_both_refund():
    bonds, cash, coord, terms = setup()
    coord.initiate(terms, SECRET)
    coord.respond(terms)
    at(T0 + 2 * TIMEOUT, bonds, cash)
    assert coord.follow(terms) == "refunded" and refunded(bonds, cash)


def test_the_initiator_claims_too_late_is_refused_and_both_refund():
    bonds, cash, coord, terms = setup()
    coord.initiate(terms, SECRET)
    coord.respond(terms)
    at(T0 + TIMEOUT, bonds, cash)  # T2 has passed
    assert coord.claim_second(terms, SECRET) in (htlc.LOCK_EXPIRED, htlc.LOCK_CLOSED)
    at(T0 + 2 * TIMEOUT, bonds, cash)
    assert coord.follow(terms) == "refunded" and refunded(bonds, cash)


def test_a_coordinator_restarted_after_the_reveal_resumes_from_the_journals(tmp_path):
    bonds, cash, coord, terms = setup()
    coord.initiate(terms, SECRET)
    coord.respond(terms)
    coord.claim_second(terms, SECRET)
    at(T0 + 2 * TIMEOUT - 60, bonds, cash)  # the coordinator was down until just before T1
    fresh = SwapCoordinator(bonds.ledger, cash.ledger, bonds.s, cash.s)  # knows nothing but the ledgers
    assert fresh.follow(terms) == "claimed" and moved(bonds, cash)


def test_a_coordinator_resumes_after_both_ledgers_restart_from_their_journals(tmp_path):
    bonds = Chain("bond-chain", "BOND", funded="B", amount=5, path=str(tmp_path / "bonds.db"))
    cash = Chain("cash-chain", "USD", funded="A", amount=10_000, path=str(tmp_path / "cash.db"))
    terms = SwapTerms(trade="X1", seller="B", buyer="A", security="BOND", quantity=5, cash_asset="USD",
                      amount=1_000, timeout=TIMEOUT)
    coord = SwapCoordinator(bonds.ledger, cash.ledger, bonds.s, cash.s)
    coord.initiate(terms, SECRET)
    coord.respond(terms)
    coord.claim_second(terms, SECRET)
    for chain in (bonds, cash):  # everything stops after the reveal
        chain.ledger.close()
        chain.ledger = Ledger.open(chain.ledger.journal.path, clock=chain.clock, protocols=[htlc.HTLC()])
    at(T0 + 2 * TIMEOUT - 1, bonds, cash)
    fresh = SwapCoordinator(bonds.ledger, cash.ledger, bonds.s, cash.s)
    assert fresh.follow(terms) == "claimed" and moved(bonds, cash)


def test_a_second_lock_too_close_to_the_first_is_refused():
    bonds, cash, coord, terms = setup()
    coord.initiate(terms, SECRET)
    with pytest.raises(SwapError, match="unsafe_timeout"):
        coord.respond(terms, safety_margin=TIMEOUT + 1)


def test_the_seller_can_initiate():
    bonds, cash, coord, terms = setup()
    terms = SwapTerms(**{**{f: getattr(terms, f) for f in terms.__struct_fields__}, "initiator": "seller"})
    coord.initiate(terms, SECRET)  # the seller locks the bonds first
    assert bonds.record("X1").expires_at == T0 + 2 * TIMEOUT
    coord.respond(terms)
    assert coord.claim_second(terms, SECRET) == 0  # the seller claims the cash
    assert coord.follow(terms) == "claimed" and moved(bonds, cash)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(respond=st.booleans(), respond_delay=st.integers(0, TIMEOUT // 2),
       claim=st.booleans(), claim_delay=st.integers(0, 2 * TIMEOUT),
       crash=st.booleans(), follow_lag=st.integers(1, TIMEOUT // 2 - 1),
       initiator=st.sampled_from(["buyer", "seller"]))
def test_the_swap_property_holds_for_every_schedule_where_the_follower_acts_in_time(
        respond, respond_delay, claim, claim_delay, crash, follow_lag, initiator):
    bonds, cash, coord, terms = setup()
    terms = SwapTerms(**{**{f: getattr(terms, f) for f in terms.__struct_fields__}, "initiator": initiator})
    coord.initiate(terms, SECRET)
    t2 = None
    if respond:
        at(T0 + respond_delay, bonds, cash)
        coord.respond(terms, safety_margin=TIMEOUT // 2)
        t2 = T0 + respond_delay + TIMEOUT
    if claim and respond:
        when = max(T0 + respond_delay, T0 + claim_delay)
        at(when, bonds, cash)
        coord.claim_second(terms, SECRET)  # refused if late: then the follower has nothing to follow
        # The honest follower acts before T1 (= T0 + 2 * TIMEOUT), after the reveal, possibly after a crash.
        follow_at = min(max(when, t2 if t2 else when) + follow_lag, T0 + 2 * TIMEOUT - 1)
        at(max(follow_at, when), bonds, cash)
        follower = SwapCoordinator(bonds.ledger, cash.ledger, bonds.s, cash.s) if crash else coord
        follower.follow(terms)
    at(T0 + 3 * TIMEOUT, bonds, cash)  # every lock has expired by now: the sweep refunds what is left
    assert moved(bonds, cash) or refunded(bonds, cash)
    assert bonds.bal("A") + bonds.bal("B") == 5 and cash.bal("A") + cash.bal("B") == 10_000
