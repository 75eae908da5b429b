"""Snapshots are checked against the journal before they are trusted, and what opening skips is noted.

A snapshot is a cache: the chained journal is the truth. Its state must
give the digest its entry records, and its command-id index (which no
digest covers) must equal the one re-derived from the entries up to it,
read in the same pass that checks the chain. So a snapshot rewritten with
a recomputed checksum, its command-id index emptied say, is left out, a
retried command id is answered from the index and pays once, and `recovery_notes` names the snapshot left out. A snapshot
beyond the journal's head (entries deleted at the end) is noted too.
"""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from conftest import BANK_A, BANK_B, USD, make_world

from engine.ledger import Ledger
from engine.machine import ID_POSITION_BITS
from engine.records import Move
from engine.state import Snapshot

_encode = msgspec.msgpack.Encoder(order="deterministic").encode
PAY = Move(id="pay-once", asset=USD, source=BANK_A, target=BANK_B, amount=500)


def empty_ids(conn, seq: int) -> None:
    """Rewrite snapshot `seq` with an empty command-id index and a checksum that matches it."""
    body = conn.execute("SELECT body FROM snapshots WHERE seq = ?", (seq,)).fetchone()[0]
    snap = msgspec.msgpack.decode(body, type=Snapshot)
    assert PAY.id in snap.ids
    body = _encode(msgspec.structs.replace(snap, ids={}))
    conn.execute("UPDATE snapshots SET hash = ?, body = ? WHERE seq = ?", (hashlib.sha256(body).digest(), body, seq))


def filler(w, n: int, prefix: str) -> None:
    for i in range(n):
        assert w.send(BANK_B, [Move(id=f"{prefix}-{i}", asset=USD, source=BANK_B, target=BANK_A, amount=1)]) == ["ok"]


def retry_pays_once(backend, path: str, w, expected_note: str) -> None:
    balance = w.ledger.balance(BANK_B, USD)
    w.close()
    with Ledger.open(path, clock=w.clock, protocols=[]) as reopened:
        assert expected_note in reopened.recovery_notes, reopened.recovery_notes
        assert reopened.balance(BANK_B, USD) == balance
        assert PAY.id in reopened.state.ids
        signer = w[BANK_A]
        signer.seq = reopened.last_seq(BANK_A)
        assert reopened.submit([signer.envelope([PAY])]) == [0], "the retry is answered as already done"
        assert reopened.balance(BANK_B, USD) == balance, "a retried command id paid twice"


def test_a_periodic_snapshot_whose_id_index_was_emptied_is_discarded(backend):
    path = backend.location()
    w = make_world(path, snapshot_every=3)
    assert w.send(BANK_A, [PAY]) == ["ok"]
    filler(w, 4, "fill")
    newest = w.ledger.journal.snapshots()[-1]
    assert newest > w.ledger.state.ids[PAY.id] >> ID_POSITION_BITS
    with backend.tamper(path) as conn:
        empty_ids(conn, newest)
    retry_pays_once(backend, path, w, f"snapshot {newest} does not match the journal (its command ids); ignored")


@pytest.mark.parametrize("after", [0, 2], ids=["at-the-head", "entries-after-it"])
def test_a_snapshot_taken_by_hand_whose_id_index_was_emptied_is_discarded(backend, after):
    path = backend.location()
    w = make_world(path, snapshot_every=0)
    assert w.send(BANK_A, [PAY]) == ["ok"]
    filler(w, 2, "before")
    w.ledger.snapshot()
    seq = w.ledger.head_seq
    filler(w, after, "after")
    with backend.tamper(path) as conn:
        empty_ids(conn, seq)
    retry_pays_once(backend, path, w, f"snapshot {seq} does not match the journal (its command ids); ignored")


@pytest.mark.parametrize("after", [0, 2], ids=["at-the-head", "entries-after-it"])
def test_an_untouched_snapshot_is_used_and_nothing_is_noted(backend, monkeypatch, after):
    path = backend.location()
    w = make_world(path, snapshot_every=0)
    assert w.send(BANK_A, [PAY]) == ["ok"]
    w.ledger.snapshot()
    seq = w.ledger.head_seq
    filler(w, after, "after")
    expected = (w.ledger.digest(), dict(w.ledger.state.ids))
    w.close()
    loaded = []
    original = Ledger._load_snapshot
    monkeypatch.setattr(Ledger, "_load_snapshot", lambda self, s, **kw: loaded.append(s) or original(self, s, **kw))
    with Ledger.open(path, protocols=[]) as reopened:
        assert reopened.recovery_notes == []
        assert loaded == [seq]
        assert (reopened.digest(), reopened.state.ids) == expected


def test_a_snapshot_beyond_the_head_is_noted(backend):
    """The last entry deleted, with the snapshot stored beside it: opening serves the shorter journal
    (that limit is recorded in docs/integrity.md) but says it skipped a snapshot past the head."""
    path = backend.location()
    w = make_world(path, snapshot_every=3)
    filler(w, 3, "fill")
    head = w.ledger.head_seq
    assert w.ledger.journal.snapshots()[-1] == head
    w.close()
    with backend.tamper(path) as conn:
        conn.execute("DELETE FROM journal WHERE seq = ?", (head,))
    with Ledger.open(path, protocols=[]) as reopened:
        assert reopened.head_seq == head - 1
        assert any(f"snapshot {head} is beyond the journal's head {head - 1}" in n for n in reopened.recovery_notes), \
            reopened.recovery_notes
