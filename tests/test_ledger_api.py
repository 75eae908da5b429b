"""The embedding API: subscriptions, reading entries, malformed input, ledger
time, and the stop after a storage failure.
"""

from __future__ import annotations

import hashlib
import sqlite3

import msgspec
import pytest

from conftest import BANK_A, BANK_B, BANK_C, CHAIN, FUNDING, T0, USD, make_world, names, observable
from engine.ledger import Ledger, LedgerFault, MalformedEnvelope, ManualClock
from engine.records import Entry, Envelope, Hold, Move


def pay(cid: str, amount: int = 100, source=BANK_A, target=BANK_B) -> Move:
    return Move(id=cid, asset=USD, source=source, target=target, amount=amount)


# ------------------------------------------------------------- subscribers


def test_a_subscriber_receives_each_committed_entry_until_it_unsubscribes(world):
    received: list[Entry] = []
    unsubscribe = world.ledger.subscribe(received.append)
    world.send(BANK_A, [pay("s1"), pay("s2", 10**12)])
    world.send(BANK_A, [pay("s3")])
    assert [e.seq for e in received] == [world.ledger.head_seq - 1, world.ledger.head_seq]
    assert received == [world.ledger.entry(e.seq) for e in received]
    assert names(received[0].results) == ["ok", "insufficient_funds"]
    assert received[1].digest == world.ledger.digest()
    unsubscribe()
    world.send(BANK_A, [pay("s4")])
    assert len(received) == 2


def test_a_subscriber_sees_the_state_already_applied(world):
    seen = []
    world.ledger.subscribe(lambda entry: seen.append((entry.seq, world.ledger.head_seq, world.bal(BANK_B, USD))))
    world.send(BANK_A, [pay("s1", 250)])
    assert seen == [(world.ledger.head_seq, world.ledger.head_seq, FUNDING[(BANK_B, USD)] + 250)]


def test_subscribers_are_called_in_order_and_independently(world):
    calls = []
    stop_first = world.ledger.subscribe(lambda e: calls.append(("first", e.seq)))
    world.ledger.subscribe(lambda e: calls.append(("second", e.seq)))
    world.send(BANK_A, [pay("s1")])
    stop_first()
    world.send(BANK_A, [pay("s2")])
    head = world.ledger.head_seq
    assert calls == [("first", head - 1), ("second", head - 1), ("second", head)]


# ----------------------------------------------------------------- reading


def test_entries_iterate_the_journal_from_genesis_in_order(world):
    world.send(BANK_A, [pay("e1")])
    world.ledger.advance(T0 + 10)
    entries = list(world.ledger.entries())
    assert [e.seq for e in entries] == list(range(world.ledger.head_seq + 1))
    assert entries[0].genesis is not None and entries[0].genesis.chain_id == CHAIN
    assert all(e.genesis is None for e in entries[1:])
    assert [e.seq for e in world.ledger.entries(start=3)] == list(range(3, world.ledger.head_seq + 1))
    assert entries[-1].envelopes == () and entries[-1].at == T0 + 10


def test_entries_link_by_hash(world):
    world.send(BANK_A, [pay("l1")])
    rows = list(world.ledger.journal.rows())
    entries = list(world.ledger.entries())
    for (seq, digest, body), entry in zip(rows, entries):
        assert hashlib.sha256(body).digest() == digest
        assert entry.prev == (rows[seq - 1][1] if seq else bytes(32))
    assert rows[-1][1] == world.ledger.head_hash


def test_commands_of_an_entry_align_with_its_results(world):
    envelopes = [world.env(BANK_A, [pay("c1"), pay("c2", 0)]), world.env(BANK_B, [pay("c3", 5, BANK_B, BANK_A)])]
    world.submit(envelopes)
    entry = world.ledger.entry(world.ledger.head_seq)
    commands = world.ledger.commands(entry)
    assert [c.id for c in commands] == ["c1", "c2", "c3"]
    assert names(entry.results) == ["ok", "invalid_amount", "ok"]


def test_last_seq_reports_each_signers_last_sequence_number(world):
    before = world.ledger.last_seq(BANK_A)
    world.send(BANK_A, [pay("q1")])
    world.send(BANK_A, [pay("q2")])
    assert world.ledger.last_seq(BANK_A) == before + 2
    assert world.ledger.last_seq("NOBODY") == 0


# --------------------------------------------------------------- malformed


def _garbage(w):
    return [Envelope(CHAIN, b"garbage")]


def _not_an_envelope(w):
    return [{"chain_id": CHAIN, "payload": b""}]


def _one_bad_among_good(w):
    return [w.env(BANK_A, [pay("good-1")]), Envelope(CHAIN, b"\x93\x01\x02"), w.env(BANK_A, [pay("good-2")])]


def _empty_id(w):
    return [w.env(BANK_A, [pay("")])]


def _overlong_id(w):
    return [w.env(BANK_A, [pay("x" * 129)])]


def _wrong_field_type(w):
    payload = msgspec.msgpack.encode([["move", "USD", BANK_A, BANK_B, "100", "bad-type", False]])
    # signed by a member, so it reaches decoding (a stranger's or an unsigned one is refused before it)
    return [Envelope(CHAIN, payload, (w[BANK_A].signature(payload),))]


MALFORMED = [
    ("a payload that is not msgpack", _garbage),
    ("something that is not an envelope", _not_an_envelope),
    ("one undecodable envelope among good ones", _one_bad_among_good),
    ("a command with an empty id", _empty_id),
    ("a command with an id of 129 characters", _overlong_id),
    ("an amount given as a string", _wrong_field_type),
]


@pytest.mark.parametrize("build", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_a_malformed_batch_raises_and_nothing_is_journaled(world, build):
    envelopes = build(world)
    head, digest, before = world.ledger.head_seq, world.ledger.digest(), observable(world.ledger)
    seqs = dict(world.ledger.state.seqs)
    with pytest.raises(MalformedEnvelope):
        world.ledger.submit(envelopes)
    assert world.ledger.head_seq == head and len(list(world.ledger.entries())) == head + 1
    assert world.ledger.digest() == digest and observable(world.ledger) == before
    assert world.ledger.state.seqs == seqs
    assert world.send(BANK_A, [pay("after")]) == ["ok"], "the ledger keeps working"


# -------------------------------------------------------------------- time


def test_ledger_time_never_goes_backwards(world):
    world.send(BANK_A, [pay("t1")], at=T0 + 500)
    assert world.ledger.now == T0 + 500
    world.send(BANK_A, [pay("t2")], at=T0 + 100)
    entry = world.ledger.entry(world.ledger.head_seq)
    assert entry.at == T0 + 500 and world.ledger.now == T0 + 500
    world.clock.set(T0 + 200)  # a clock behind the ledger is raised too
    world.send(BANK_A, [pay("t3")])
    assert world.ledger.entry(world.ledger.head_seq).at == T0 + 500


def test_an_earlier_time_cannot_dodge_an_expiry(world):
    hold = Hold(id="expiring", asset=USD, owner=BANK_A, beneficiary=BANK_B, amount=10, expires_at=T0 + 60)
    assert world.send(BANK_A, [hold]) == ["ok"]
    world.ledger.advance(T0 + 60)
    assert world.send(BANK_B, [Move(id="r", asset=USD, source=BANK_B, target=BANK_C, amount=1)], at=T0) == ["ok"]
    assert "expiring" not in world.ledger.state.holds


def test_the_ledger_clock_drives_time_by_default():
    w = make_world()
    try:
        w.clock.advance(42)
        w.send(BANK_A, [pay("c1")])
        assert w.ledger.now == T0 + 42 == w.ledger.entry(w.ledger.head_seq).at
        events = w.ledger.advance(T0 + 100)
        assert events == [] and w.clock.now == T0 + 100 and w.ledger.now == T0 + 100
    finally:
        w.close()


def test_reopening_never_moves_an_injected_clock_back(tmp_path):
    path = str(tmp_path / "ledger.db")
    w = make_world(path)
    w.ledger.advance(T0 + 1_000)
    w.close()
    behind = ManualClock(T0)
    with Ledger.open(path, clock=behind, protocols=[]) as reopened:
        assert behind.now == T0 + 1_000 and reopened.now == T0 + 1_000


# ---------------------------------------------------------------- failures


class DiskFull(OSError):
    pass


def test_a_storage_failure_stops_the_ledger_and_reopening_gives_the_state_before_it(tmp_path, monkeypatch):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=0)
    assert w.send(BANK_A, [pay("kept", 300)]) == ["ok"]
    expected = (w.ledger.head_seq, w.ledger.head_hash, w.ledger.digest(), w.ledger.balances())

    def fail(*args, **kwargs):
        raise DiskFull("no space left on device")

    monkeypatch.setattr(w.ledger.journal, "append", fail)
    with pytest.raises(LedgerFault, match="no space left"):
        w.ledger.submit([w.env(BANK_A, [pay("lost", 400)])])
    monkeypatch.undo()  # storage is back, but the ledger stays stopped
    with pytest.raises(LedgerFault):
        w.ledger.submit([w.env(BANK_A, [pay("refused", 1)])])
    with pytest.raises(LedgerFault):
        w.ledger.advance(T0 + 10)
    assert w.ledger.head_seq == expected[0]
    w.ledger.close()

    with Ledger.open(path, clock=w.clock, protocols=[]) as reopened:
        assert (reopened.head_seq, reopened.head_hash, reopened.digest(), reopened.balances()) == expected
        assert reopened.balance(BANK_B, USD) == FUNDING[(BANK_B, USD)] + 300
        resumed = w[BANK_A]
        resumed.seq = reopened.last_seq(BANK_A)
        assert names(reopened.submit([resumed.envelope([pay("lost", 400)])])) == ["ok"]
        assert reopened.balance(BANK_B, USD) == FUNDING[(BANK_B, USD)] + 700


def test_a_failed_commit_is_not_partially_visible_in_the_file(tmp_path, monkeypatch):
    """The entry and its snapshot are one transaction: a failure writing the snapshot loses both."""
    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=1)
    head = w.ledger.head_seq
    journal = w.ledger.journal
    original = journal._put_snapshot

    def fail(seq, body):
        original(seq, body)
        raise DiskFull("disk died after the snapshot row")

    monkeypatch.setattr(journal, "_put_snapshot", fail)
    with pytest.raises(LedgerFault):
        w.ledger.submit([w.env(BANK_A, [pay("half", 5)])])
    w.ledger.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT MAX(seq) FROM journal").fetchone()[0] == head
        assert conn.execute("SELECT MAX(seq) FROM snapshots").fetchone()[0] == head
    finally:
        conn.close()


def test_a_subscriber_is_not_called_for_a_batch_that_failed_to_commit(world, monkeypatch):
    received = []
    world.ledger.subscribe(received.append)
    monkeypatch.setattr(world.ledger.journal, "append", lambda *a, **k: (_ for _ in ()).throw(DiskFull("gone")))
    with pytest.raises(LedgerFault):
        world.send(BANK_A, [pay("x")])
    assert received == []


def test_submit_many_with_a_verify_pool_gives_what_submit_gives_and_stops_at_a_malformed_batch(tmp_path):
    from conftest import make_world
    from engine.records import Envelope as Env

    def batches(w):
        out = []
        for n in range(4):
            out.append([w.env(BANK_A, [Move(id=f"m{n}", asset=USD, source=BANK_A, target=BANK_B, amount=n + 1)])])
        return out

    one = make_world()
    expected = [one.ledger.submit(b) for b in batches(one)]
    two = make_world()
    two.ledger.verify_workers = 1
    try:
        assert list(two.ledger.submit_many(batches(two))) == expected
        assert two.ledger.digest() == one.ledger.digest()
        good = [two.env(BANK_A, [Move(id="m9", asset=USD, source=BANK_A, target=BANK_B, amount=1)])]
        bad = [Env(two.ledger.chain_id, b"garbage")]
        runner = two.ledger.submit_many([good, bad])
        assert next(runner) == [0]
        with pytest.raises(MalformedEnvelope):
            next(runner)
    finally:
        one.close()
        two.close()
