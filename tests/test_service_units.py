"""The service's parts without a server: request signing, nonces, rates, the read hooks, the journal indexes."""

from __future__ import annotations

import pytest

from dvp_world import World, fresh
from engine import codes as C
from engine.identity import Signer, derive_key
from engine.records import Move
from engine.service.auth import NonceMemory, RateLimiter, Refused, parse_signed, request_message, sign_request
from engine.service.views import Reader, Recorder, envelope_digest, unpack
from protocols import dvp

NOW = 1_800_000_000


def recorder_of(world: World) -> Recorder:
    """Index a world's journal as the service does when it opens a ledger."""
    ledger = world.ledger
    recorder = Recorder(list(ledger.machine.protocols.values()), 1000)
    for entry in ledger.entries(1):
        recorder.observe(entry, [ledger.machine.decode(env.payload) for env in entry.envelopes])
    return recorder


A, B, C_ = Reader("A", False), Reader("B", False), Reader("C", False)
AUDIT = Reader("AUD", True)


# ---------------------------------------------------------- signed requests


def headers(**over):
    h = sign_request(Signer("A", derive_key("a"), "chain"), "GET", "/v1/accounts/A", timestamp=NOW, nonce="ab" * 8)
    h.update(over)
    return h


@pytest.mark.parametrize("changed,name", [
    pytest.param({"x-dvp-signature": ""}, "unsigned_request", id="a missing signature is an unsigned_request"),
    pytest.param({"x-dvp-timestamp": "12.5"}, "bad_request_signature", id="a fractional timestamp is refused"),
    pytest.param({"x-dvp-timestamp": str(NOW - 31)}, "stale_request", id="31 seconds old is stale"),
    pytest.param({"x-dvp-timestamp": str(NOW + 31)}, "stale_request", id="31 seconds ahead is stale"),
    pytest.param({"x-dvp-nonce": "abc"}, "bad_request_signature", id="a three-digit nonce is refused"),
    pytest.param({"x-dvp-nonce": "XY" * 8}, "bad_request_signature", id="a nonce that is not hex is refused"),
    pytest.param({"x-dvp-signature": "00" * 10}, "bad_request_signature", id="a short signature is refused"),
])
def test_malformed_or_stale_signing_headers_are_refused(changed, name):
    with pytest.raises(Refused) as refused:
        parse_signed(headers(**changed), NOW, 30)
    assert refused.value.name == name


def test_a_request_signature_covers_method_target_body_and_chain():
    base = request_message("chain", "A", "GET", "/v1/x", NOW, "n" * 16, b"")
    for other in (request_message("other", "A", "GET", "/v1/x", NOW, "n" * 16, b""),
                  request_message("chain", "A", "POST", "/v1/x", NOW, "n" * 16, b""),
                  request_message("chain", "A", "GET", "/v1/x?y=1", NOW, "n" * 16, b""),
                  request_message("chain", "A", "GET", "/v1/x", NOW, "n" * 16, b"body"),
                  request_message("chain", "A", "GET", "/v1/x", NOW + 1, "n" * 16, b"")):
        assert other != base
    assert parse_signed(headers(), NOW + 30, 30).participant == "A"


def test_a_nonce_is_refused_within_the_window_and_forgotten_after_it():
    memory = NonceMemory(capacity=10, window_seconds=30)
    memory.check_and_remember("A", "n1", NOW)
    memory.check_and_remember("B", "n1", NOW)  # nonces are per participant
    with pytest.raises(Refused) as refused:
        memory.check_and_remember("A", "n1", NOW + 59)
    assert refused.value.name == "replayed_request"
    memory.check_and_remember("A", "n2", NOW + 61)  # drops what is older than two windows
    assert len(memory) == 1


def test_a_full_nonce_memory_refuses_instead_of_forgetting_a_live_nonce():
    memory = NonceMemory(capacity=2, window_seconds=30)
    memory.check_and_remember("A", "n1", NOW)
    memory.check_and_remember("A", "n2", NOW)
    with pytest.raises(Refused) as refused:
        memory.check_and_remember("A", "n3", NOW + 1)
    assert (refused.value.status, refused.value.name) == (503, "nonce_memory_full")
    with pytest.raises(Refused):
        memory.check_and_remember("A", "n1", NOW + 1)


def test_the_rate_limiter_refuses_past_one_seconds_worth_and_refills():
    limiter = RateLimiter(rate=3, what="reads_per_second")
    for _ in range(3):
        limiter.take("A", 1, NOW)
    with pytest.raises(Refused) as refused:
        limiter.take("A", 1, NOW)
    assert refused.value.status == 429 and "reads_per_second=3" in refused.value.detail
    limiter.take("B", 1, NOW)  # per key
    limiter.take("A", 1, NOW + 0.34)


# -------------------------------------------------------------- read hooks


def test_dvp_answers_queued_and_unmatched_trades_and_their_parties():
    w = World(cash={"B": 1_000}, bonds={"A": 10, "C": 10})
    assert w.settle("T1", "A", "B", 5, 5_000) == C.OK  # B is short: queued
    fields = dict(trade="T1", seller="C", buyer="D", security="BOND", quantity=1, cash_asset="USD", amount=1)
    assert w.run("C", [dvp.Instruct(id=fresh(), side="deliver", **fields)]) == [C.OK]
    answers = dvp.DvP().query(w.ledger.state, "trade", "T1")
    assert sorted((a.status, a.parties) for a in answers) == [("queued", ("A", "B")), ("unmatched", ("C", "D"))]
    assert dvp.DvP().query(w.ledger.state, "trade", "T2") == []
    assert dvp.DvP().query(w.ledger.state, "repo", "T1") == []


def test_a_queued_trade_settled_by_recycling_reads_settled_to_its_parties_only():
    w = World(cash={"B": 1_000, "C": 10_000}, bonds={"A": 10})
    assert w.settle("T1", "A", "B", 5, 5_000) == C.OK
    assert w.run("C", [Move(id=fresh(), asset="USD", source="C", target="B", amount=5_000)]) == [C.OK]
    recorder = recorder_of(w)
    (record,) = recorder.answer(w.ledger.state, "trade", "T1", A)
    assert (record.status, record.live, record.parties) == ("settled", False, ["A", "B"])
    assert recorder.answer(w.ledger.state, "trade", "T1", C_) == []
    assert recorder.answer(w.ledger.state, "trade", "T1", AUDIT)[0].status == "settled"
    assert recorder.answer(w.ledger.state, "nothing", "T1", A) is None


def test_a_trade_failed_at_the_cutoff_reads_failed_with_its_reason():
    w = World(cash={"B": 1_000}, bonds={"A": 10})
    assert w.settle("T1", "A", "B", 5, 5_000) == C.OK
    assert w.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]
    (record,) = recorder_of(w).answer(w.ledger.state, "trade", "T1", B)
    # B holds 1,000 of the 5,000 it owes: it is 4,000 short
    assert (record.status, record.detail) == ("failed", {"reason": "insufficient_cash", "party": "B", "asset": "USD",
                                                         "short": "4000"})


def test_entry_views_show_a_member_its_own_commands_and_the_events_of_its_trades():
    w = World(cash={"B": 1_000, "C": 10_000}, bonds={"A": 10})
    w.settle("T1", "A", "B", 5, 5_000)
    w.run("C", [Move(id="c-pays-b", asset="USD", source="C", target="B", amount=5_000),
                Move(id="c-pays-d", asset="USD", source="C", target="D", amount=1)])
    ledger = w.ledger
    recorder = recorder_of(w)
    entry = ledger.entry(ledger.head_seq)
    commands = [ledger.machine.decode(env.payload) for env in entry.envelopes]
    views = {r.id: recorder.entry_view(entry, b"\0" * 32, commands, r) for r in (A, B, Reader("D", False), AUDIT)}
    assert [c.command["id"] for c in views["B"].commands] == ["c-pays-b"]
    assert [c.command["id"] for c in views["D"].commands] == ["c-pays-d"] and not views["D"].events
    assert views["A"].commands == [] and [e.kind for e in views["A"].events] == ["settled"]
    assert views["AUD"].complete and len(views["AUD"].commands) == 2 and not views["A"].complete


def test_the_envelope_index_names_the_entry_and_commands_of_every_authorized_envelope():
    w = World(cash={"A": 100})
    env = w.signers["A"].envelope([Move(id=fresh(), asset="USD", source="A", target="B", amount=1),
                                   Move(id=fresh(), asset="USD", source="A", target="B", amount=10**9)])
    bs_claim = w.signers["B"].envelope([Move(id=fresh(), asset="USD", source="A", target="B", amount=1)])
    assert w.ledger.submit([bs_claim, env]) == [C.UNAUTHORIZED, C.OK, C.INSUFFICIENT_FUNDS]
    recorder = recorder_of(w)
    assert unpack(recorder.applied[envelope_digest(env)]) == (w.ledger.head_seq, 1, 2)
    bad = Signer("A", derive_key("not A"), w.ledger.chain_id).envelope([Move(id=fresh(), asset="USD", source="A",
                                                                            target="B", amount=1)])
    assert w.ledger.submit([bad]) == [C.BAD_SIGNATURE]
    assert envelope_digest(bad) not in recorder_of(w).applied, "an envelope refused as a whole is not applied"


def test_submit_reuses_the_callers_signature_checks_and_checks_the_others_itself():
    w = World(cash={"A": 100})
    good = w.signers["A"].envelope([Move(id=fresh(), asset="USD", source="A", target="B", amount=1)])
    forged = Signer("A", derive_key("not A"), w.ledger.chain_id, 10).envelope(
        [Move(id=fresh(), asset="USD", source="A", target="B", amount=1)])
    checked = w.ledger.machine.signature_jobs(w.ledger.state, [good], {})
    assert w.ledger.submit([good, forged], verdicts={job: True for job in checked}) == [C.OK, C.BAD_SIGNATURE]
    assert w.ledger.balance("B", "USD") == 1


def test_the_writer_splits_many_signature_checks_with_its_pool_and_keeps_their_order():
    pytest.importorskip("prometheus_client")
    from engine.identity import signing_message, verify_many
    from engine.service.metrics import Metrics
    from engine.service.wire import Limits
    from engine.service.writer import Writer

    key = derive_key("pool")
    jobs = []
    for i in range(600):
        message = signing_message("chain", "A", i, 0, bytes(32))
        sig = key.sign(message).signature if i % 7 else bytes(64)  # every seventh is forged
        jobs.append((bytes(key.verify_key), message, sig))
    writer = Writer(":unused:", limits=Limits(), metrics=Metrics(), verify_workers=1)
    try:
        assert writer._verify(jobs) == verify_many(jobs) == [bool(i % 7) for i in range(600)]
    finally:
        writer._pool.shutdown()


# ----------------------------------------------- records sharing one key


def _views(w: World, reader: Reader, start: int = 1) -> list:
    """Every entry from `start` cut to `reader`, as the service shows them."""
    ledger = w.ledger
    recorder = recorder_of(w)
    return [recorder.entry_view(e, b"\0" * 32, [ledger.machine.decode(env.payload) for env in e.envelopes], reader)
            for e in ledger.entries(start)]


def _instruct(trade: str, side: str, seller: str, buyer: str, quantity: int = 1, amount: int = 100):
    return dvp.Instruct(id=fresh(), trade=trade, side=side, seller=seller, buyer=buyer, security="BOND",
                        quantity=quantity, cash_asset="USD", amount=amount)


def test_a_member_naming_anothers_trade_id_sees_none_of_its_events():
    w = World(cash={"B": 1_000, "D": 1_000}, bonds={"A": 10, "C": 10})
    start = w.ledger.head_seq + 1
    assert w.settle("T1", "A", "B", 5, 5_000) == C.OK  # B is short: queued, with the reason
    assert w.run("C", [_instruct("T1", "deliver", "C", "D")]) == [C.OK]  # C takes the same trade id
    assert w.run("C", [dvp.Cancel(id=fresh(), trade="T1", seller="C", buyer="D")]) == [C.OK]
    seen = [(ev.kind, dict(ev.data)) for v in _views(w, C_, start) for ev in v.events]
    assert seen == [("unmatched", {"side": "deliver"}), ("cancelled", {"side": "deliver"})], "only C's own"
    assert [ev.kind for v in _views(w, A, start) for ev in v.events] == ["queued"]
    assert [ev.kind for v in _views(w, AUDIT, start) for ev in v.events] == ["queued", "unmatched", "cancelled"]


def test_a_member_cannot_change_how_anothers_settled_trade_reads():
    w = World(cash={"B": 10_000}, bonds={"A": 10, "C": 10})
    assert w.settle("T2", "A", "B", 5, 5_000) == C.OK  # settled at once
    assert w.run("C", [_instruct("T2", "deliver", "C", "D")]) == [C.OK]
    assert w.run("C", [dvp.Cancel(id=fresh(), trade="T2")]) == [C.OK]  # without parties: C's own instruction
    recorder = recorder_of(w)
    (record,) = recorder.answer(w.ledger.state, "trade", "T2", A)
    assert (record.status, record.parties) == ("settled", ["A", "B"])
    (record,) = recorder.answer(w.ledger.state, "trade", "T2", C_)
    assert (record.status, record.parties) == ("cancelled", ["C", "D"])


def test_a_trade_id_reused_after_it_ended_shows_the_new_pair_nothing_of_the_old_one():
    w = World(cash={"B": 1_000, "D": 10_000}, bonds={"A": 10, "C": 10})
    start = w.ledger.head_seq + 1
    assert w.settle("T3", "A", "B", 5, 5_000) == C.OK  # queued: B is short
    assert w.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]
    assert w.settle("T3", "C", "D", 5, 5_000) == C.OK  # the id again, another pair, settled at once
    assert w.run("C", [_instruct("T3", "deliver", "C", "D")]) == [C.OK]
    assert [ev.kind for v in _views(w, C_, start) for ev in v.events] == ["unmatched"]
    (record,) = recorder_of(w).answer(w.ledger.state, "trade", "T3", B)
    assert (record.status, record.detail) == ("failed", {"reason": "insufficient_cash", "party": "B", "asset": "USD",
                                                         "short": "4000"})


def test_an_event_two_open_trades_could_be_is_shown_to_neither_pair_and_their_ends_read_unknown():
    w = World(cash={"B": 1_000, "D": 1_000}, bonds={"A": 10, "C": 10})
    start = w.ledger.head_seq + 1
    assert w.settle("T4", "A", "B", 5, 5_000) == C.OK  # both queued under one id
    assert w.settle("T4", "C", "D", 5, 5_000) == C.OK
    assert w.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]  # fails both: which failure is whose, the key cannot say
    kinds = [ev.kind for v in _views(w, A, start) for ev in v.events]
    assert kinds == ["queued"], "A sees its own queueing, and neither failure"
    assert [ev.kind for v in _views(w, AUDIT, start) for ev in v.events].count("failed") == 2
    recorder = recorder_of(w)
    for reader in (A, C_):
        (record,) = recorder.answer(w.ledger.state, "trade", "T4", reader)
        assert (record.status, record.live) == ("unknown", False)


def test_a_cancel_naming_the_trade_id_alone_is_shown_to_the_counterparty_of_the_signers_trade_only():
    w = World(cash={"B": 1_000, "D": 1_000}, bonds={"A": 10, "C": 10})
    start = w.ledger.head_seq + 1
    assert w.settle("T5", "A", "B", 5, 5_000) == C.OK  # queued
    assert w.run("C", [_instruct("T5", "deliver", "C", "D")]) == [C.OK]
    assert w.run("A", [dvp.Cancel(id=fresh(), trade="T5")]) == [C.OK]  # A cancels its own, by id alone
    shown = {r.id: [c.command["type"] for v in _views(w, r, start) for c in v.commands] for r in (B, C_)}
    assert shown["B"].count("dvp_cancel") == 1 and "dvp_cancel" not in shown["C"]
    assert [ev.kind for v in _views(w, B, start) for ev in v.events] == ["queued", "cancelled"]


@pytest.mark.parametrize("seq,first,count", [
    pytest.param(7, 0, 1 << 20, id="an envelope of a whole batch of 2**20 commands keeps its count"),
    pytest.param(3, (1 << 20) - 1, 1, id="the last position of a full batch keeps its place"),
    pytest.param(10**12, 5, 32_768, id="a far sequence number keeps its position and count"),
])
def test_the_envelope_index_packs_every_place_a_batch_allows(seq, first, count):
    from engine.service.views import pack

    assert unpack(pack(seq, first, count)) == (seq, first, count)
