"""The extension point, through the example protocol `protocols.scheduled`:
commands, due work, events, rollback, digests, snapshots and restart.
"""

from __future__ import annotations

import hashlib
import sqlite3

import msgspec
import pytest

from conftest import BANK_A, BANK_B, BANK_C, FUNDING, T0, USD, World, make_world, names, observable
from engine import codes as C
from engine.cli import main as dvp
from engine.journal import JournalError
from engine.ledger import Ledger, MalformedEnvelope
from engine.records import Command, Move
from engine.state import Snapshot
from protocols.scheduled import CODE_PAY_AT_NOT_FUTURE, CODE_UNKNOWN_PAYMENT, CancelPayment, Payment, \
    ScheduledPayments, SchedulePayment

PAY_AT = T0 + 3_600


def schedule(pid="pay-1", payer=BANK_A, payee=BANK_B, amount=25_000, pay_at=PAY_AT, **kw) -> SchedulePayment:
    return SchedulePayment(id=pid, asset=kw.pop("asset", USD), payer=payer, payee=payee, amount=amount,
                           pay_at=pay_at, **kw)


def book(w: World):
    return w.ledger.protocol_state("scheduled")


@pytest.fixture
def sw():
    w = make_world(protocols=[ScheduledPayments()])
    yield w
    w.close()


def test_the_protocol_registers_its_result_code_names(sw):
    assert C.name(CODE_PAY_AT_NOT_FUTURE) == "pay_at_not_future"
    assert C.name(CODE_UNKNOWN_PAYMENT) == "unknown_payment"


def test_a_scheduled_payment_escrows_the_amount_at_once(sw):
    assert sw.send(BANK_A, [schedule()]) == ["ok"]
    assert sw.bal(BANK_A, USD) == FUNDING[(BANK_A, USD)] - 25_000
    assert sw.ledger.state.holds["pay-1"].amount == 25_000
    assert book(sw).pending["pay-1"] == Payment(BANK_A, BANK_B, USD, 25_000, PAY_AT, 1)
    assert sw.send(BANK_A, [Move(id="spend", asset=USD, source=BANK_A, target=BANK_C,
                                 amount=FUNDING[(BANK_A, USD)] - 24_999)]) == ["insufficient_funds"]


def test_a_scheduled_payment_is_paid_when_time_reaches_it_and_the_entry_records_it(sw):
    sw.send(BANK_A, [schedule()])
    assert sw.ledger.advance(PAY_AT - 1) == []
    assert sw.bal(BANK_B, USD) == FUNDING[(BANK_B, USD)]
    events = sw.ledger.advance(PAY_AT + 50)
    assert [(e.at, e.protocol, e.kind, e.ref) for e in events] == [(PAY_AT, "scheduled", "paid", "pay-1")]
    entry = sw.ledger.entry(sw.ledger.head_seq)
    assert list(entry.events) == events and entry.at == PAY_AT + 50
    assert sw.bal(BANK_B, USD) == FUNDING[(BANK_B, USD)] + 25_000
    assert sw.bal(BANK_A, USD) == FUNDING[(BANK_A, USD)] - 25_000
    assert book(sw).pending == {} and book(sw).stats == {"paid": 1}
    assert sw.ledger.state.holds == {} and sw.ledger.state.timers == {}


def test_due_payments_run_before_the_commands_of_the_batch_that_passes_their_time(sw):
    sw.send(BANK_A, [schedule(payee=BANK_C, amount=9_000)])
    sw.clock.set(PAY_AT)
    move = Move(id="spend-it", asset=USD, source=BANK_C, target=BANK_B, amount=9_000)
    assert sw.send(BANK_C, [move]) == ["ok"], "BANK_C spends money paid to it at the start of the batch"
    assert [e.kind for e in sw.ledger.entry(sw.ledger.head_seq).events] == ["paid"]


def test_the_payer_cancels_before_the_due_time_and_gets_the_amount_back(sw):
    sw.send(BANK_A, [schedule()])
    assert sw.send(BANK_A, [CancelPayment(id="cancel-1", payment="pay-1")]) == ["ok"]
    assert sw.bal(BANK_A, USD) == FUNDING[(BANK_A, USD)]
    assert book(sw).pending == {} and sw.ledger.state.holds == {} and sw.ledger.state.timers == {}
    assert sw.ledger.advance(PAY_AT + 1) == []
    assert sw.bal(BANK_B, USD) == FUNDING[(BANK_B, USD)]
    assert book(sw).stats == {}


def test_a_paid_payment_can_no_longer_be_cancelled(sw):
    sw.send(BANK_A, [schedule()])
    sw.ledger.advance(PAY_AT)
    assert sw.send(BANK_A, [CancelPayment(id="too-late", payment="pay-1")]) == ["unknown_payment"]


REFUSALS = [
    ("a payment due now is refused", lambda w: (BANK_A, [schedule(pay_at=T0)]), ["pay_at_not_future"]),
    ("a payment due in the past is refused", lambda w: (BANK_A, [schedule(pay_at=T0 - 1)]), ["pay_at_not_future"]),
    ("a payment of zero is refused", lambda w: (BANK_A, [schedule(amount=0)]), ["invalid_amount"]),
    ("a payment above the payer's balance is refused",
     lambda w: (BANK_A, [schedule(amount=FUNDING[(BANK_A, USD)] + 1)]), ["insufficient_funds"]),
    ("a payment of an unknown asset is refused", lambda w: (BANK_A, [schedule(asset="EUR")]), ["unknown_asset"]),
    ("a payment to an unknown payee is refused", lambda w: (BANK_A, [schedule(payee="NOBODY")]),
     ["unknown_participant"]),
    ("a payment out of another bank's account is refused", lambda w: (BANK_B, [schedule()]), ["unauthorized"]),
    ("cancelling a payment that does not exist is refused",
     lambda w: (BANK_A, [CancelPayment(id="c", payment="nope")]), ["unknown_payment"]),
    ("only the payer may cancel", lambda w: _scheduled_then(w, BANK_B, CancelPayment(id="c", payment="p-x")),
     ["unauthorized"]),
]


def _scheduled_then(w: World, who: str, command):
    assert w.send(BANK_A, [schedule(pid="p-x")]) == ["ok"]
    return who, [command]



@pytest.mark.parametrize("build, expect", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refused_protocol_commands_change_nothing(sw, build, expect):
    who, commands = build(sw)
    before = observable(sw.ledger)
    assert sw.send(who, commands) == expect
    assert observable(sw.ledger) == before


def _failing_chain(w: World) -> list[str]:
    return w.send(BANK_A, [
        schedule(pid="chained", linked=True),
        Move(id="too-much", asset=USD, source=BANK_A, target=BANK_B, amount=10**12),
    ])


def test_a_failed_chain_leaves_no_payment_no_hold_and_nothing_to_pay_later(sw):
    book_before = msgspec.to_builtins(book(sw))
    assert _failing_chain(sw) == ["linked_event_failed", "insufficient_funds"]
    assert msgspec.to_builtins(book(sw)) == book_before
    assert sw.ledger.state.holds == {} and sw.ledger.state.timers == {}
    assert sw.bal(BANK_A, USD) == FUNDING[(BANK_A, USD)]
    assert sw.ledger.advance(PAY_AT + 1) == []
    assert sw.bal(BANK_B, USD) == FUNDING[(BANK_B, USD)]
    assert "chained" not in sw.ledger.state.ids
    assert sw.send(BANK_A, [schedule(pid="chained", pay_at=PAY_AT + 3_600)]) == ["ok"], "the id may be reused"


def test_a_failed_chain_leaves_no_trace_in_the_state(sw):
    """Rollback must restore everything the chain touched, including the timer counter."""
    before = observable(sw.ledger)
    assert _failing_chain(sw) == ["linked_event_failed", "insufficient_funds"]
    assert observable(sw.ledger) == before


def test_protocol_state_is_part_of_the_state_digest(sw):
    digest = sw.ledger.digest()
    state = sw.ledger.state
    saved = state.protocols["scheduled"]
    state.protocols["scheduled"] = msgspec.structs.replace(saved, stats={"paid": 1})
    try:
        assert sw.ledger.digest() != digest
    finally:
        state.protocols["scheduled"] = saved
    assert sw.ledger.digest() == digest


RESTARTS = [("replaying the journal", 0), ("loading a snapshot", 1)]


@pytest.mark.parametrize("snapshot_every", [r[1] for r in RESTARTS], ids=[r[0] for r in RESTARTS])
def test_protocol_state_survives_a_restart_and_pays_after_it(tmp_path, snapshot_every):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, protocols=[ScheduledPayments()], snapshot_every=snapshot_every)
    try:
        w.send(BANK_A, [schedule(), schedule(pid="pay-2", payee=BANK_C, amount=1_000, pay_at=PAY_AT + 10)])
        w.send(BANK_A, [CancelPayment(id="cancel-2", payment="pay-2")])
        before = (w.ledger.digest(), msgspec.to_builtins(book(w)), w.ledger.head_hash)
        w.reopen(snapshot_every=snapshot_every)
        assert bool(w.ledger.journal.snapshots()) == bool(snapshot_every)
        assert (w.ledger.digest(), msgspec.to_builtins(book(w)), w.ledger.head_hash) == before
        assert list(book(w).pending) == ["pay-1"]
        events = w.ledger.advance(PAY_AT + 100)
        assert [(e.kind, e.ref) for e in events] == [("paid", "pay-1")]
        assert w.bal(BANK_B, USD) == FUNDING[(BANK_B, USD)] + 25_000
        assert w.bal(BANK_C, USD) == 0
    finally:
        w.close()


def test_a_snapshot_with_altered_protocol_state_is_caught_by_the_digest(tmp_path):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, protocols=[ScheduledPayments()], snapshot_every=0)
    w.send(BANK_A, [schedule()])
    w.ledger.snapshot()
    seq = w.ledger.head_seq
    w.close()
    conn = sqlite3.connect(path)
    with conn:
        snap = msgspec.msgpack.decode(conn.execute("SELECT body FROM snapshots").fetchone()[0], type=Snapshot)
        forged_book = msgspec.msgpack.encode({"pending": {}, "stats": {"paid": 1}})
        body = msgspec.msgpack.Encoder(order="deterministic").encode(
            msgspec.structs.replace(snap, protocols={"scheduled": forged_book}))
        conn.execute("UPDATE snapshots SET hash = ?, body = ?", (hashlib.sha256(body).digest(), body))
    conn.close()
    with Ledger.open(path, protocols=[ScheduledPayments()]) as reopened:
        assert reopened.recovery_notes == [f"snapshot {seq} does not match the journal; ignored"]
        assert list(reopened.protocol_state("scheduled").pending) == ["pay-1"]


def test_opening_a_journal_without_the_protocol_it_needs_is_refused(tmp_path):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, protocols=[ScheduledPayments()])
    w.send(BANK_A, [schedule()])
    w.close()
    with pytest.raises(JournalError, match=r"needs protocols that are not installed: scheduled") as raised:
        Ledger.open(path, protocols=[])
    assert path in str(raised.value)
    with Ledger.open(path) as found:  # found through the `dvp.protocols` entry point
        assert list(found.protocol_state("scheduled").pending) == ["pay-1"]


class ScheduledPaymentsV3(ScheduledPayments):
    version = 3


def test_the_genesis_records_a_protocols_rules_version_from_2_on(tmp_path):
    w = make_world(":memory:", protocols=[ScheduledPaymentsV3()])
    assert w.ledger.state.genesis.protocols == ("scheduled@3",)
    w.close()
    w = make_world(":memory:", protocols=[ScheduledPayments()])
    assert w.ledger.state.genesis.protocols == ("scheduled",)  # version 1: the name alone, as before versions
    w.close()


@pytest.mark.parametrize("written,installed,journal_version", [
    (ScheduledPayments, ScheduledPaymentsV3, 1), (ScheduledPaymentsV3, ScheduledPayments, 3)],
    ids=["an older journal", "a newer journal"])
def test_a_journal_written_under_other_rules_is_refused_by_open_and_verify(tmp_path, capsys, written, installed,
                                                                          journal_version):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, protocols=[written()])
    w.send(BANK_A, [schedule()])
    w.close()
    expected = (f"written under other rules of scheduled \\(journal: version {journal_version}, "
                f"installed: version {installed.version}\\)")
    with pytest.raises(JournalError, match=expected) as raised:
        Ledger.open(path, protocols=[installed()])
    assert path in str(raised.value)
    # `dvp verify` finds the installed protocol (version 1) through its entry point
    assert (dvp(["verify", path]) == 0) == (written.version == 1)
    if written.version != 1:
        assert "written under other rules of scheduled" in capsys.readouterr().err
    with Ledger.open(path, protocols=[written()]) as same:
        assert list(same.protocol_state("scheduled").pending) == ["pay-1"]


@pytest.mark.parametrize("old", [1, 2], ids=["keyed by trade id alone", "recycling in the order legs were checked"])
def test_a_dvp_journal_from_before_the_current_rules_is_refused_clearly(tmp_path, old):
    """DvP rules version 1 keyed trades by their id alone; version 2 by seller, buyer and id; version 3
    has a recycled trade check first the leg it waits on; version 4 retries blocked trades when the block lifts."""
    from engine.identity import derive_key
    from engine.ledger import ManualClock
    from protocols import dvp as dvp_protocol

    class OldDvP(dvp_protocol.DvP):
        version = old

    path = str(tmp_path / "old.db")
    key = derive_key("old-dvp/OP")
    Ledger.create(path, chain_id="old", operator="OP", operator_key=bytes(key.verify_key), clock=ManualClock(0),
                  protocols=[OldDvP()]).close()
    with pytest.raises(JournalError, match=rf"other rules of dvp \(journal: version {old}, installed: version {dvp_protocol.DvP.version}\)"):
        Ledger.open(path, protocols=[dvp_protocol.DvP()])


def test_verify_finds_the_protocol_through_its_entry_point(tmp_path, capsys):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, protocols=[ScheduledPayments()])
    w.send(BANK_A, [schedule()])
    w.ledger.advance(PAY_AT)
    w.close()
    assert dvp(["verify", path]) == 0
    assert "dvp verify: OK" in capsys.readouterr().out


def test_protocol_commands_do_not_decode_on_a_ledger_without_the_protocol(world):
    head = world.ledger.head_seq
    with pytest.raises(MalformedEnvelope):
        world.ledger.submit([world.env(BANK_A, [schedule()])])
    assert world.ledger.head_seq == head


class _Boom(Command, tag="boom"):
    """A command whose handler writes, then raises: a protocol bug or unexpected input."""

    amount: int


class _Explosive(ScheduledPayments):
    name = "explosive"

    def handlers(self):
        def boom(state, cmd, auth):
            state.transfer(USD, BANK_A, BANK_B, cmd.amount)
            raise ValueError("unexpected input")

        return {_Boom: boom}


def test_a_handler_that_raises_is_refused_with_handler_error_and_leaves_no_trace():
    w = make_world(protocols=[_Explosive()])
    try:
        before = w.ledger.balances()
        assert names(w.ledger.submit([w.signers[BANK_A].envelope([_Boom(id="b1", amount=1_000)])])) == [
            "handler_error"]
        assert w.ledger.balances() == before
        assert w.ledger.submit([w.signers[BANK_A].envelope([Move(id="after", asset=USD, source=BANK_A,
                                                                 target=BANK_B, amount=1)])]) == [C.OK]
    finally:
        w.close()


def test_frozen_parties_are_neither_scheduled_nor_paid(sw):
    from conftest import COMPLIANCE, new_id
    from engine.records import Freeze

    assert names(sw.ledger.submit([sw.signers[COMPLIANCE].envelope([Freeze(id=new_id(), participant=BANK_C)])])) \
        == ["ok"]
    assert names(sw.ledger.submit([sw.signers[BANK_A].envelope([schedule("p-frozen", payee=BANK_C)])])) == [
        "account_frozen"]
    assert names(sw.ledger.submit([sw.signers[BANK_A].envelope([schedule("p-later", payee=BANK_B)])])) == ["ok"]
    held = sw.bal(BANK_A, USD)
    assert names(sw.ledger.submit([sw.signers[COMPLIANCE].envelope([Freeze(id=new_id(), participant=BANK_B)])])) \
        == ["ok"]
    sw.ledger.advance(PAY_AT)
    assert [e.kind for e in sw.ledger.last_events] == ["refunded"]
    assert sw.bal(BANK_A, USD) == held + 25_000


class _FaultyPayments(ScheduledPayments):
    """Pays as usual, then raises on one payment: a protocol bug met by due work."""

    name = "scheduled"

    def on_due(self, state, timer):
        code = super().on_due(state, timer)
        if timer.ref == "pay-2":
            raise ValueError("bug in due work")
        return code


def test_a_due_handler_that_raises_undoes_only_its_own_timer():
    w = make_world(protocols=[_FaultyPayments()])
    try:
        a = w.signers[BANK_A]
        assert w.ledger.submit([a.envelope([schedule("pay-1", pay_at=T0 + 3_600),
                                            schedule("pay-2", pay_at=T0 + 3_610)])]) == [C.OK, C.OK]
        before_b = w.bal(BANK_B, USD)
        w.ledger.advance(T0 + 3_700)
        assert w.bal(BANK_B, USD) == before_b + 25_000  # pay-1 paid; pay-2's payment undone
        assert w.ledger.now == T0 + 3_700
        assert sorted(book(w).pending) == ["pay-2"]  # its record stays, so nothing is lost silently
        held = w.bal(BANK_A, USD)
        assert w.ledger.submit([a.envelope([CancelPayment(id="cancel-2", payment="pay-2")])]) == [C.OK]
        assert w.bal(BANK_A, USD) == held + 25_000  # the payer can still take the amount back
    finally:
        w.close()
