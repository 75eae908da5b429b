"""Hostile probes of issue 10's authorization work: door-refused envelopes, reserved escrow prefixes,
foreign command ids across batches, and DvP retries when a freeze or suspension lifts."""

from __future__ import annotations

import pytest
from conftest import (
    BANK_A,
    BANK_B,
    BANK_C,
    CHAIN,
    MALLORY,
    OPERATOR,
    OTHER_CHAIN,
    USD,
    key_for,
    make_world,
    new_id,
)
from dvp_world import World as DvpWorld
from dvp_world import fresh

from engine import codes as C
from engine.identity import Signer
from engine.ledger import MalformedEnvelope
from engine.records import (
    Admit,
    Envelope,
    Freeze,
    Hold,
    Move,
    Reinstate,
    Release,
    Remove,
    Signature,
    Suspend,
    Unfreeze,
)
from protocols import dvp, htlc


def _names(codes) -> list[str]:
    return [C.name(c) for c in codes]


def _moves(n: int, source=MALLORY, linked=False) -> list[Move]:
    return [Move(id=new_id("h"), asset=USD, source=source, target=BANK_B, amount=1, linked=linked and k < n - 1)
            for k in range(n)]


def _with_payload(env: Envelope, payload: bytes) -> Envelope:
    return Envelope(env.chain_id, payload, env.signatures)


# ------------------------------------------------------------ header lies


@pytest.mark.parametrize("payload", [b"", b"\x81\xa1a\x01", b"\xdd\xff\xff\xff\xff", b"\xdc\x00", b"\x9f"])
def test_a_strangers_payload_with_no_honest_array_header_refuses_the_batch_and_changes_nothing(payload):
    w = make_world()
    stranger = _with_payload(w.env(MALLORY, _moves(1)), payload)
    good = w.env(BANK_A, [Move(id=new_id(), asset=USD, source=BANK_A, target=BANK_B, amount=1)])
    head, before = w.ledger.head_seq, w.ledger.balances()
    with pytest.raises(MalformedEnvelope):
        w.ledger.submit([good, stranger])
    assert w.ledger.head_seq == head and w.ledger.balances() == before


def test_a_header_claiming_fewer_commands_than_the_payload_holds_is_counted_as_claimed():
    w = make_world()
    honest = w.env(MALLORY, _moves(3))
    lying = _with_payload(honest, b"\x91" + honest.payload[1:])
    assert w.submit([lying]) == ["unknown_signer"]


def test_refused_and_accepted_envelopes_with_linked_chains_keep_every_result_in_place():
    w = make_world()
    a, b = w.bal(BANK_A, USD), w.bal(BANK_B, USD)
    chain_ok = w.env(BANK_A, _moves(3, source=BANK_A, linked=True))
    stranger = w.env(MALLORY, _moves(2, linked=True))
    other = Signer(BANK_C, key_for(BANK_C), OTHER_CHAIN).envelope(_moves(1, source=BANK_C))
    chain_bad = w.env(BANK_A, [Move(id=new_id(), asset=USD, source=BANK_A, target=BANK_B, amount=1, linked=True),
                              Move(id=new_id(), asset=USD, source=BANK_A, target=BANK_A, amount=1)])
    out = w.submit([stranger, chain_ok, other, chain_bad, stranger])
    assert out == (["unknown_signer"] * 2 + ["ok"] * 3 + ["wrong_chain"] + ["linked_event_failed", "same_account"]
                   + ["unknown_signer"] * 2)
    assert w.bal(BANK_A, USD) == a - 3 and w.bal(BANK_B, USD) == b + 3


def test_an_admit_after_the_strangers_envelope_does_not_let_it_act():
    w = make_world()
    newbank = Signer(MALLORY, key_for(MALLORY), CHAIN)
    first = newbank.envelope([Move(id=new_id(), asset=USD, source=MALLORY, target=BANK_B, amount=1)])
    admit = w.env(OPERATOR, [Admit(id=new_id(), participant=MALLORY, public_key=newbank.public_key)])
    before = w.ledger.balances()
    assert w.submit([first, admit]) == ["unknown_signer", "ok"]
    assert w.ledger.balances() == before


def test_an_admit_the_machine_refuses_still_leaves_the_stranger_refused():
    w = make_world()
    stranger = Signer(MALLORY, key_for(MALLORY), CHAIN)
    fake_admit = w.env(BANK_A, [Admit(id=new_id(), participant=MALLORY, public_key=stranger.public_key)])
    env = stranger.envelope(_moves(2))
    assert w.submit([fake_admit, env]) == ["unauthorized", "unknown_signer", "unknown_signer"]


def _journal_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def test_a_forged_admit_does_not_open_the_door_to_a_strangers_flood(tmp_path):
    """An Admit under a forged operator (or any member's) signature cannot run, so it must not let a stranger's
    envelope through the door: that would let anyone, holding no member's key, journal a payload in full."""
    path = tmp_path / "j.db"
    w = make_world(str(path))
    stranger = Signer(MALLORY, key_for(MALLORY), CHAIN)
    for who in (OPERATOR, BANK_A):
        forged = w.env(who, [Admit(id=new_id(), participant=MALLORY, public_key=stranger.public_key)])
        forged = Envelope(forged.chain_id, forged.payload, (Signature(who, forged.signatures[0].seq, b"\0" * 64),))
        big = stranger.envelope(_moves(20_000))
        before = _journal_bytes(path)
        assert w.submit([forged, big]) == ["bad_signature"] + ["unknown_signer"] * 20_000
        assert _journal_bytes(path) - before < len(big.payload) // 50
    w.reopen()
    w.close()


def test_a_real_operator_admit_still_lets_the_admitted_signer_act_in_the_same_batch():
    w = make_world()
    stranger = Signer(MALLORY, key_for(MALLORY), CHAIN)
    admit = w.env(OPERATOR, [Admit(id=new_id(), participant=MALLORY, public_key=stranger.public_key)])
    pay = w.env(BANK_A, [Move(id=new_id(), asset=USD, source=BANK_A, target=MALLORY, amount=3)])
    back = stranger.envelope([Move(id=new_id(), asset=USD, source=MALLORY, target=BANK_B, amount=2)])
    assert w.submit([admit, pay, back]) == ["ok", "ok", "ok"]
    assert w.bal(MALLORY, USD) == 1


@pytest.mark.xfail(strict=True, reason="the door reads no signature: an envelope naming a member under a forged "
                   "signature (forgeable by anyone) is decoded and journalled whole; closing it needs signature "
                   "checks at the door, off the verification pool, more than a small fix")
def test_an_envelope_naming_a_member_under_a_forged_signature_is_not_journalled_whole(tmp_path):
    path = tmp_path / "j.db"
    w = make_world(str(path))
    honest = w.env(BANK_A, _moves(20_000, source=BANK_A))
    forged = Envelope(honest.chain_id, honest.payload, (Signature(BANK_A, honest.signatures[0].seq, b"\0" * 64),))
    before = _journal_bytes(path)
    assert w.submit([forged]) == ["bad_signature"] * 20_000
    assert _journal_bytes(path) - before < len(forged.payload) // 50
    w.close()


# ------------------------------------------------------------ reserved prefixes


@pytest.mark.parametrize("hold_id", ["htlc:", "htlc:L1", "dvp:x", "repo:", "netting:"])
def test_an_engine_hold_under_any_reserved_prefix_is_unauthorized(hold_id):
    from protocols import netting, prices, repo
    w = make_world(protocols=[htlc.HTLC(), dvp.DvP(), netting.Netting(), prices.Prices(), repo.Repos()])
    before = w.ledger.balances()
    out = w.send(BANK_A, [Hold(id=hold_id, asset=USD, owner=BANK_A, beneficiary=BANK_B, amount=5)])
    assert out == ["unauthorized"] and w.ledger.balances() == before


@pytest.mark.parametrize("hold_id", ["HTLC:L1", "htlc\u200b:L1", "\uff48tlc:L1", " htlc:L1"])
def test_a_look_alike_of_a_reserved_prefix_is_a_plain_engine_hold_that_never_touches_the_lock(hold_id):
    w = make_world(protocols=[htlc.HTLC()])
    a, b = w.bal(BANK_A, USD), w.bal(BANK_B, USD)
    out = w.send(BANK_A, [Hold(id=hold_id, asset=USD, owner=BANK_A, beneficiary=BANK_B, amount=5)])
    assert out == ["ok"]
    lock = htlc.Lock(id=new_id(), lock="L1", sender=BANK_A, receiver=BANK_B, asset=USD, amount=7,
                     hashlock=b"\1" * 32, expires_at=w.ledger.now + 3600)
    assert w.send(BANK_A, [lock]) == ["ok"]
    assert w.send(BANK_A, [Release(id=new_id(), hold=hold_id, to="beneficiary")]) == ["ok"]
    assert w.bal(BANK_A, USD) == a - 12 and w.bal(BANK_B, USD) == b + 5
    assert w.ledger.state.holds["htlc:L1"].amount == 7


# ------------------------------------------------------------ foreign ids


def test_a_foreign_id_in_the_next_batch_of_submit_many_is_unauthorized():
    w = make_world()
    mine = Move(id="sm-1", asset=USD, source=BANK_A, target=BANK_B, amount=10)
    theirs = Move(id="sm-1", asset=USD, source=BANK_C, target=BANK_B, amount=10)
    batches = [[w.env(BANK_A, [mine])], [w.env(BANK_C, [theirs])], [w.env(BANK_A, [mine])]]
    assert [_names(r) for r in w.ledger.submit_many(batches)] == [["ok"], ["unauthorized"], ["ok"]]


def test_a_foreign_id_after_a_door_refused_envelope_shifted_positions_is_still_the_owners(tmp_path):
    """Positions of ids count only the envelopes kept: a refused one before the owner must not shift whose id
    it is, in this batch, the next and after a reopen."""
    w = make_world(str(tmp_path / "j.db"))
    stranger = w.env(MALLORY, _moves(5))
    mine = Move(id="pos-1", asset=USD, source=BANK_A, target=BANK_B, amount=10)
    other = Move(id=new_id(), asset=USD, source=BANK_B, target=BANK_C, amount=1)
    assert w.submit([stranger, w.env(BANK_B, [other]), w.env(BANK_A, [mine])]) == ["unknown_signer"] * 5 + ["ok"] * 2
    for _ in range(2):
        assert w.send(BANK_C, [Move(id="pos-1", asset=USD, source=BANK_C, target=BANK_B, amount=1)]) == \
            ["unauthorized"]
        assert w.send(BANK_B, [other]) == ["ok"]
        assert w.send(BANK_A, [mine]) == ["ok"]
        w.reopen()
    w.close()


def test_a_foreign_id_is_unauthorized_even_when_the_owner_was_later_removed():
    w = make_world()
    mine = Move(id="rm-1", asset=USD, source=BANK_A, target=BANK_B, amount=10)
    assert w.send(BANK_A, [mine]) == ["ok"]
    assert w.send(OPERATOR, [Remove(id=new_id(), participant=BANK_A)]) == ["ok"]
    assert w.send(BANK_C, [mine]) == ["unauthorized"]


# ------------------------------------------------------------ DvP retries


def test_unfreezing_one_asset_leaves_a_trade_blocked_by_a_freeze_on_the_other():
    w = DvpWorld(cash={"B": 5_000}, bonds={"A": 100})
    assert w.run("CMP", [Freeze(id=fresh(), participant="A", asset="BOND"),
                         Freeze(id=fresh(), participant="A", asset="USD")]) == [C.OK, C.OK]
    w.settle("T1", "A", "B", 10, 1_000)  # queued: A is frozen
    assert (w.bal("A", "BOND"), w.bal("B")) == (100, 5_000)
    assert w.run("CMP", [Unfreeze(id=fresh(), participant="A", asset="USD")]) == [C.OK]
    assert (w.bal("A", "BOND"), w.bal("B")) == (100, 5_000)
    assert w.run("CMP", [Unfreeze(id=fresh(), participant="A", asset="BOND")]) == [C.OK]
    assert (w.bal("A", "BOND"), w.bal("B"), w.bal("A")) == (90, 4_000, 1_000)


def test_an_unfreeze_in_a_failed_chain_settles_nothing_and_a_later_unfreeze_still_retries():
    w = DvpWorld(cash={"B": 5_000}, bonds={"A": 100})
    assert w.run("CMP", [Freeze(id=fresh(), participant="A", asset="*")]) == [C.OK]
    w.settle("T1", "A", "B", 10, 1_000)  # queued: A is blocked
    assert (w.bal("A", "BOND"), w.bal("B")) == (100, 5_000)
    failing = [Unfreeze(id=fresh(), participant="A", asset="*", linked=True),
               Unfreeze(id=fresh(), participant="A", asset="USD")]  # not frozen on USD alone: invalid_field
    assert _names(w.run("CMP", failing)) == ["linked_event_failed", "invalid_field"]
    assert (w.bal("A", "BOND"), w.bal("B")) == (100, 5_000)
    assert w.ledger.state.frozen  # still frozen
    assert w.run("CMP", [Unfreeze(id=fresh(), participant="A", asset="*")]) == [C.OK]
    assert (w.bal("A", "BOND"), w.bal("B")) == (90, 4_000)


def test_reinstating_a_removed_member_is_refused_and_settles_nothing():
    w = DvpWorld(cash={"B": 5_000}, bonds={"A": 100})
    assert w.run("CMP", [Freeze(id=fresh(), participant="A", asset="BOND")]) == [C.OK]
    assert w.settle("T1", "A", "B", 10, 1_000) == C.OK  # queued: A is frozen
    assert w.run("OP", [Suspend(id=fresh(), participant="A")]) == [C.OK]
    assert w.run("OP", [Remove(id=fresh(), participant="A")]) == [C.OK]
    assert w.run("CMP", [Unfreeze(id=fresh(), participant="A", asset="BOND")]) == [C.OK]
    assert len(dvp.book_of(w.ledger.state).queue) == 1
    assert _names(w.run("OP", [Reinstate(id=fresh(), participant="A")])) == ["participant_inactive"]
    assert (w.bal("A", "BOND"), w.bal("B")) == (100, 5_000)


def test_a_stranger_admitted_by_the_previous_batch_of_submit_many_is_decoded_and_acts():
    """submit_many prepares the next batch before the current one commits: a signer unknown then but admitted
    by the current batch must reach the machine (counted at first, decoded at commit)."""
    w = make_world()
    stranger = Signer(MALLORY, key_for(MALLORY), CHAIN)
    admit = w.env(OPERATOR, [Admit(id=new_id(), participant=MALLORY, public_key=stranger.public_key)])
    fund = w.env(BANK_A, [Move(id=new_id(), asset=USD, source=BANK_A, target=MALLORY, amount=5)])
    spend = stranger.envelope([Move(id=new_id(), asset=USD, source=MALLORY, target=BANK_B, amount=4)])
    out = [_names(r) for r in w.ledger.submit_many([[admit, fund], [spend]])]
    assert out == [["ok", "ok"], ["ok"]] and w.bal(MALLORY, USD) == 1


def test_a_stranger_admitted_meanwhile_whose_payload_does_not_decode_refuses_only_its_own_batch():
    w = make_world()
    stranger = Signer(MALLORY, key_for(MALLORY), CHAIN)
    admit = w.env(OPERATOR, [Admit(id=new_id(), participant=MALLORY, public_key=stranger.public_key)])
    honest = stranger.envelope(_moves(2))
    junk = _with_payload(honest, honest.payload[:1] + b"\xc1" * (len(honest.payload) - 1))
    head = w.ledger.head_seq
    it = w.ledger.submit_many([[admit], [junk]])
    assert _names(next(it)) == ["ok"]
    before = w.ledger.balances()
    with pytest.raises(MalformedEnvelope):
        next(it)
    assert w.ledger.head_seq == head + 1 and w.ledger.balances() == before


def test_a_foreign_id_of_a_hot_path_pair_is_unauthorized_and_stays_so_after_a_reopen(tmp_path):
    w = make_world(str(tmp_path / "j.db"))
    leg1 = Move(id="pair-1", asset=USD, source=BANK_A, target=BANK_B, amount=3, linked=True)
    leg2 = Move(id="pair-2", asset=USD, source=BANK_A, target=BANK_C, amount=2)
    assert w.send(BANK_A, [leg1, leg2]) == ["ok", "ok"]
    b = w.bal(BANK_B, USD)
    for _ in range(2):
        steal = Move(id="pair-2", asset=USD, source=BANK_B, target=BANK_C, amount=1)
        assert w.send(BANK_B, [Move(id=new_id(), asset=USD, source=BANK_B, target=BANK_C, amount=1, linked=True),
                               steal]) == ["linked_event_failed", "unauthorized"]
        assert w.send(BANK_A, [leg1, leg2]) == ["ok", "ok"]
        assert w.bal(BANK_B, USD) == b
        w.reopen()
    w.close()


def test_reinstating_a_suspended_and_frozen_party_waits_for_the_unfreeze_too():
    w = DvpWorld(cash={"B": 5_000}, bonds={"A": 100})
    assert w.run("CMP", [Freeze(id=fresh(), participant="A", asset="BOND")]) == [C.OK]
    assert w.settle("T1", "A", "B", 10, 1_000) == C.OK  # queued (A frozen); then A is suspended too
    assert w.run("OP", [Suspend(id=fresh(), participant="A")]) == [C.OK]
    assert len(dvp.book_of(w.ledger.state).queue) == 1
    assert w.run("OP", [Reinstate(id=fresh(), participant="A")]) == [C.OK]
    assert (w.bal("A", "BOND"), w.bal("B")) == (100, 5_000)
    assert w.run("CMP", [Unfreeze(id=fresh(), participant="A", asset="BOND")]) == [C.OK]
    assert (w.bal("A", "BOND"), w.bal("B"), w.bal("A")) == (90, 4_000, 1_000)


def test_an_unfreeze_before_a_trades_settlement_time_settles_it_only_when_due():
    w = DvpWorld(cash={"B": 5_000}, bonds={"A": 100})
    assert w.run("CMP", [Freeze(id=fresh(), participant="A", asset="*")]) == [C.OK]
    w.settle("T1", "A", "B", 10, 1_000, settle_at=w.ledger.now + 600)
    assert w.run("CMP", [Unfreeze(id=fresh(), participant="A", asset="*")]) == [C.OK]
    assert (w.bal("A", "BOND"), w.bal("B")) == (100, 5_000)
    w.advance(600)
    assert (w.bal("A", "BOND"), w.bal("B")) == (90, 4_000)


def test_an_unfreeze_of_the_counterparty_does_not_settle_a_trade_the_other_party_blocks():
    w = DvpWorld(cash={"B": 5_000}, bonds={"A": 100})
    assert w.run("CMP", [Freeze(id=fresh(), participant="A", asset="*"),
                         Freeze(id=fresh(), participant="B", asset="USD")]) == [C.OK, C.OK]
    w.settle("T1", "A", "B", 10, 1_000)
    assert w.run("CMP", [Unfreeze(id=fresh(), participant="B", asset="USD")]) == [C.OK]
    assert (w.bal("A", "BOND"), w.bal("B")) == (100, 5_000)
    assert w.run("CMP", [Unfreeze(id=fresh(), participant="A", asset="*")]) == [C.OK]
    assert (w.bal("A", "BOND"), w.bal("B")) == (90, 4_000)


# ------------------------------------------------------------ swap ids squatted


def test_a_squatted_follow_claim_id_does_not_leave_the_follower_without_its_payment():
    """Ids are global and the swap coordinator's are predictable (`swap:<trade>:4`): the initiator, a member of
    the first ledger, uses that id first for a command of its own. The follower's claim must still go through
    before T1, else the first lock refunds and the initiator keeps both assets."""
    from test_htlc import Chain
    from test_swap import SECRET, T0, TIMEOUT

    from protocols.swap import SwapCoordinator, SwapTerms

    bonds = Chain("bond-chain", "BOND", funded="B", amount=5)
    cash = Chain("cash-chain", "USD", funded="A", amount=10_000)
    terms = SwapTerms(trade="X1", seller="B", buyer="A", security="BOND", quantity=5, cash_asset="USD",
                      amount=1_000, timeout=TIMEOUT)
    coord = SwapCoordinator(bonds.ledger, cash.ledger, bonds.s, cash.s)
    coord.initiate(terms, SECRET)
    squat = Move(id="swap:X1:4", asset="USD", source="A", target="ISS", amount=1)
    assert cash.run("A", [squat]) == [C.OK]
    coord.respond(terms)
    assert coord.claim_second(terms, SECRET) == C.OK
    assert coord.follow(terms) == "claimed"
    for chain in (bonds, cash):
        chain.at(T0 + 2 * TIMEOUT)
    assert bonds.bal("A") == 5 and cash.bal("B") == 1_000  # both assets moved; nothing refunded


def test_a_foreign_id_in_a_hot_path_pair_of_the_same_batch_is_unauthorized_and_moves_nothing():
    w = make_world()
    a_pair = [Move(id="hp-1", asset=USD, source=BANK_A, target=BANK_B, amount=3, linked=True),
              Move(id="hp-2", asset=USD, source=BANK_A, target=BANK_C, amount=2)]
    b_pair = [Move(id=new_id(), asset=USD, source=BANK_B, target=BANK_C, amount=1, linked=True),
              Move(id="hp-2", asset=USD, source=BANK_B, target=BANK_A, amount=2)]
    b, c = w.bal(BANK_B, USD), w.bal(BANK_C, USD)
    assert w.submit([w.env(BANK_A, a_pair), w.env(BANK_B, b_pair)]) == ["ok", "ok", "linked_event_failed",
                                                                        "unauthorized"]
    assert w.bal(BANK_B, USD) == b + 3 and w.bal(BANK_C, USD) == c + 2


def test_leaving_out_door_refused_envelopes_changes_no_other_result_or_balance():
    """A batch with strangers' and other chains' envelopes scattered in it gives, for the others, exactly the
    results and state the same batch without them gives."""
    import random

    rng = random.Random(10)
    for _ in range(30):
        plain, mixed = make_world(), make_world()
        kept = []
        for k in range(rng.randrange(1, 6)):
            who = rng.choice([BANK_A, BANK_B])
            cmds = []
            for j in range(rng.randrange(1, 4)):
                cmds.append(Move(id=f"d{k}-{j}", asset=USD, source=who, target=rng.choice([BANK_A, BANK_B, BANK_C]),
                                 amount=rng.choice([1, 5, 10**12]), linked=rng.random() < 0.5))
            kept.append((who, cmds))
        envs_plain = [plain.env(who, cmds) for who, cmds in kept]
        envs_mixed = []
        sizes = []
        for who, cmds in kept:
            if rng.random() < 0.5:
                junk = mixed.env(MALLORY, _moves(rng.randrange(0, 3)))
                envs_mixed.append(junk)
                sizes.append(None)
            envs_mixed.append(mixed.env(who, cmds))
            sizes.append(len(cmds))
        expected = plain.submit(envs_plain)
        got = mixed.submit(envs_mixed)
        stripped, at = [], 0
        for env, n in zip(envs_mixed, sizes):
            m = n if n is not None else len(mixed.ledger.machine.decode(env.payload))
            if n is not None:
                stripped.extend(got[at:at + m])
            else:
                assert got[at:at + m] == ["unknown_signer"] * m
            at += m
        assert at == len(got) and stripped == expected
        assert mixed.ledger.balances() == plain.ledger.balances()
