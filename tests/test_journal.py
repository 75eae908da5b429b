"""The journal: restart (with and without snapshots), tampering and
corruption caught on open and by `dvp verify`, and the demo's journal.

Every test that stores a journal runs on each backend (the `backend`
fixture: a SQLite file, then a database on a real PostgreSQL server) and
tampers with what is stored through the backend's own connection.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable

import msgspec
import pytest

from backends import PG_HOWTO
from conftest import (
    BANK_A,
    BANK_B,
    BANK_C,
    COMPLIANCE,
    UST,
    USD,
    World,
    make_world,
    observable,
)
from engine.cli import main as dvp
from engine.demo import run_demo
from engine.journal import JournalError
from engine.ledger import Ledger
from engine.records import Entry, Envelope, Freeze, Hold, Move, Release, Unfreeze
from engine.state import Snapshot

_encode = msgspec.msgpack.Encoder(order="deterministic").encode


def history(w: World, rounds: int = 10, start: int = 0) -> None:
    """Submit rounds `start`.. of a deterministic mix: moves, holds, expiries, freezes, a failing chain."""
    for i in range(start, start + rounds):
        w.send(BANK_A, [
            Move(id=f"h{i}-pay", asset=USD, source=BANK_A, target=BANK_B, amount=100 * (i + 1)),
            Hold(id=f"h{i}-hold", asset=USD, owner=BANK_A, beneficiary=BANK_C, amount=1_000,
                 expires_at=w.clock.now + 30),
        ])
        w.send(BANK_B, [
            Move(id=f"h{i}-sec", asset=UST, source=BANK_B, target=BANK_A, amount=5, linked=True),
            Move(id=f"h{i}-big", asset=USD, source=BANK_B, target=BANK_A, amount=10**12),
        ])
        if i % 3 == 0:
            w.send(BANK_A, [Release(id=f"h{i}-rel", hold=f"h{i}-hold", to="beneficiary")])
            w.send(COMPLIANCE, [Freeze(id=f"h{i}-frz", participant=BANK_C, asset=USD)])
            w.send(COMPLIANCE, [Unfreeze(id=f"h{i}-unf", participant=BANK_C, asset=USD)])
        w.clock.advance(20)


def fingerprint_of(ledger: Ledger) -> tuple:
    return (ledger.head_seq, ledger.head_hash, ledger.digest(), ledger.balances(), observable(ledger))


@pytest.fixture
def db(backend):
    """A closed journal with some history and no snapshots; returns (location, fingerprint)."""
    path = backend.location()
    w = make_world(path, snapshot_every=0)
    history(w)
    w.ledger.advance(w.clock.now + 100)  # the head entry carries hold_expired events
    expected = fingerprint_of(w.ledger)
    w.close()
    return path, expected


def replay_counter(monkeypatch) -> list[int]:
    replayed: list[int] = []
    original = Ledger._replay

    def spy(self, entry, digest):
        replayed.append(entry.seq)
        return original(self, entry, digest)

    monkeypatch.setattr(Ledger, "_replay", spy)
    return replayed


# ------------------------------------------------------------------ restart


RESTARTS = [
    ("a journal without snapshots is replayed from genesis", 0, True),
    ("a journal with snapshots resumes from the newest one", 4, True),
    ("a journal with snapshots can still be replayed from genesis", 4, False),
]


@pytest.mark.parametrize("snapshot_every, use_snapshots", [r[1:] for r in RESTARTS], ids=[r[0] for r in RESTARTS])
def test_reopening_gives_the_same_state(backend, monkeypatch, snapshot_every, use_snapshots):
    path = backend.location()
    w = make_world(path, snapshot_every=snapshot_every)
    history(w)
    expected = fingerprint_of(w.ledger)
    assert any(w.ledger.state.holds.values()), "the history leaves holds open across the restart"
    w.close()

    replayed = replay_counter(monkeypatch)
    with Ledger.open(path, clock=w.clock, protocols=[], use_snapshots=use_snapshots) as reopened:
        assert fingerprint_of(reopened) == expected
        assert reopened.recovery_notes == []
        snapshots = reopened.journal.snapshots()
        assert bool(snapshots) == bool(snapshot_every)
        start = max(snapshots) if snapshots and use_snapshots else 0
        assert start < expected[0], "some entries come after the newest snapshot"
        assert replayed == list(range(start + 1, expected[0] + 1))


def test_a_reopened_ledger_continues_exactly_like_one_never_closed(backend):
    """Run the same history in memory and in a stored journal with a restart midway: same hashes."""
    memory = make_world()
    history(memory, rounds=8)
    memory.ledger.advance(memory.clock.now + 100)

    disk = make_world(backend.location(), snapshot_every=5)
    history(disk, rounds=4)
    disk.reopen(snapshot_every=5)
    assert disk.ledger.journal.snapshots(), "the restart resumed from a snapshot"
    history(disk, rounds=4, start=4)  # the same rounds, continued after the restart
    disk.ledger.advance(disk.clock.now + 100)
    try:
        assert fingerprint_of(disk.ledger) == fingerprint_of(memory.ledger)
    finally:
        memory.close()
        disk.close()


def test_snapshots_are_written_every_n_entries(backend):
    w = make_world(backend.location(), snapshot_every=3)
    history(w, rounds=3)
    head = w.ledger.head_seq
    assert w.ledger.journal.snapshots() == list(range(3, head + 1, 3))
    w.close()


# ---------------------------------------------------------------- snapshots


def _flip_newest_snapshot_byte(conn, newest: int) -> None:
    body = bytearray(conn.execute("SELECT body FROM snapshots WHERE seq = ?", (newest,)).fetchone()[0])
    body[len(body) // 2] ^= 0x40
    conn.execute("UPDATE snapshots SET body = ? WHERE seq = ?", (bytes(body), newest))


def _older_state_under_newest_seq(conn, newest: int) -> None:
    """Store an older snapshot's state, renumbered and with a valid checksum, as the newest."""
    older = conn.execute("SELECT body FROM snapshots WHERE seq < ? ORDER BY seq DESC", (newest,)).fetchone()[0]
    snap = msgspec.msgpack.decode(older, type=Snapshot)
    body = _encode(msgspec.structs.replace(snap, seq=newest))
    conn.execute("UPDATE snapshots SET hash = ?, body = ? WHERE seq = ?",
                 (hashlib.sha256(body).digest(), body, newest))


BAD_SNAPSHOTS = [
    ("a snapshot with a flipped byte fails its checksum and is ignored", _flip_newest_snapshot_byte),
    ("a well-formed snapshot of another state fails the journal's digest and is ignored",
     _older_state_under_newest_seq),
]


@pytest.mark.parametrize("corrupt", [c[1] for c in BAD_SNAPSHOTS], ids=[c[0] for c in BAD_SNAPSHOTS])
def test_a_bad_snapshot_is_ignored_and_the_state_is_still_right(backend, monkeypatch, capsys, corrupt):
    path = backend.location()
    w = make_world(path, snapshot_every=4)
    history(w)
    expected = fingerprint_of(w.ledger)
    snapshots = w.ledger.journal.snapshots()
    w.close()
    newest, fallback = snapshots[-1], snapshots[-2]
    with backend.tamper(path) as conn:
        corrupt(conn, newest)

    replayed = replay_counter(monkeypatch)
    with Ledger.open(path, protocols=[]) as reopened:
        assert reopened.recovery_notes == [f"snapshot {newest} does not match the journal; ignored"]
        assert fingerprint_of(reopened) == expected
        assert replayed[0] == fallback + 1, "recovery falls back to the next older snapshot"

    assert dvp(["verify", path]) == 1
    assert f"snapshot {newest} does not match the journal" in capsys.readouterr().err


def test_verify_rejects_a_snapshot_whose_command_ids_disagree_with_the_journal(backend, capsys):
    """A snapshot restores the idempotency table too: one that forgot an id would let a
    retried command run twice after a restart, so the auditor must compare it."""
    path = backend.location()
    w = make_world(path, snapshot_every=0)
    pay = Move(id="pay-once", asset=USD, source=BANK_A, target=BANK_B, amount=500)
    assert w.send(BANK_A, [pay]) == ["ok"]
    w.ledger.snapshot()
    seq = w.ledger.head_seq
    w.close()
    with backend.tamper(path) as conn:
        snap = msgspec.msgpack.decode(conn.execute("SELECT body FROM snapshots WHERE seq = ?", (seq,)).fetchone()[0],
                                      type=Snapshot)
        assert "pay-once" in snap.ids
        del snap.ids["pay-once"]
        body = _encode(snap)
        conn.execute("UPDATE snapshots SET hash = ?, body = ? WHERE seq = ?",
                     (hashlib.sha256(body).digest(), body, seq))
    assert dvp(["verify", path]) == 1, "verify accepted a snapshot that lost a command id"
    assert "snapshot" in capsys.readouterr().err


# --------------------------------------------------------------- corruption


def _body(conn, seq: int) -> bytes:
    return conn.execute("SELECT body FROM journal WHERE seq = ?", (seq,)).fetchone()[0]


def _head(conn) -> int:
    return conn.execute("SELECT MAX(seq) FROM journal").fetchone()[0]


def _put(conn, seq: int, body: bytes, rehash: bool) -> None:
    if rehash:
        conn.execute("UPDATE journal SET body = ?, hash = ? WHERE seq = ?", (body, hashlib.sha256(body).digest(), seq))
    else:
        conn.execute("UPDATE journal SET body = ? WHERE seq = ?", (body, seq))


def _rewrite_entry(conn, seq: int, **changes) -> None:
    entry = msgspec.msgpack.decode(_body(conn, seq), type=Entry)
    _put(conn, seq, _encode(msgspec.structs.replace(entry, **changes)), rehash=True)


def flip_a_byte(conn) -> None:
    body = bytearray(_body(conn, 5))
    body[len(body) // 2] ^= 0x01
    _put(conn, 5, bytes(body), rehash=False)


def delete_an_entry(conn) -> None:
    conn.execute("DELETE FROM journal WHERE seq = 5")


def swap_two_bodies(conn) -> None:
    four, five = _body(conn, 4), _body(conn, 5)
    _put(conn, 4, five, rehash=False)
    _put(conn, 5, four, rehash=False)


def swap_two_entries(conn) -> None:
    rows = {seq: (h, b) for seq, h, b in conn.execute("SELECT seq, hash, body FROM journal WHERE seq IN (4, 5)")}
    for seq, other in ((4, 5), (5, 4)):
        conn.execute("UPDATE journal SET hash = ?, body = ? WHERE seq = ?", (*rows[other], seq))


def truncate_the_last_body(conn) -> None:
    head = _head(conn)
    _put(conn, head, _body(conn, head)[:-7], rehash=False)


def truncate_the_last_body_and_its_hash(conn) -> None:
    head = _head(conn)
    _put(conn, head, _body(conn, head)[:-7], rehash=True)


def rewrite_a_middle_entry(conn) -> None:
    entry = msgspec.msgpack.decode(_body(conn, 5), type=Entry)
    _rewrite_entry(conn, 5, at=entry.at + 1)


def rewrite_the_last_results(conn) -> None:
    head = _head(conn)
    entry = msgspec.msgpack.decode(_body(conn, head - 1), type=Entry)
    assert entry.results, "the entry before the head has commands"
    head_entry = msgspec.msgpack.decode(_body(conn, head), type=Entry)
    # the head is an `advance` with no commands; tamper with the entry before it and drop the head
    conn.execute("DELETE FROM journal WHERE seq = ?", (head,))
    _rewrite_entry(conn, head - 1, results=tuple(r ^ 1 for r in entry.results))
    assert head_entry.results == ()


def rewrite_the_last_digest(conn) -> None:
    _rewrite_entry(conn, _head(conn), digest=bytes(32))


def drop_the_last_events(conn) -> None:
    head = _head(conn)
    assert msgspec.msgpack.decode(_body(conn, head), type=Entry).events
    _rewrite_entry(conn, head, events=())


def _replace_last_payload(conn, change: Callable[[bytes], bytes]) -> None:
    """Drop the head (an `advance`) and change the payload of the entry before it."""
    head = _head(conn)
    conn.execute("DELETE FROM journal WHERE seq = ?", (head,))
    entry = msgspec.msgpack.decode(_body(conn, head - 1), type=Entry)
    env = entry.envelopes[0]
    forged = Envelope(env.chain_id, change(env.payload), env.signatures, env.not_after)
    _rewrite_entry(conn, head - 1, envelopes=(forged,) + entry.envelopes[1:])


def _unfreeze_someone_else(payload: bytes) -> bytes:
    commands = msgspec.msgpack.decode(payload)
    assert commands[0][:2] == ["unfreeze", BANK_C]
    commands[0][1] = BANK_A
    return msgspec.msgpack.encode(commands)


def forge_a_command_into_the_last_entry(conn) -> None:
    _replace_last_payload(conn, _unfreeze_someone_else)


def garble_a_payload_in_the_last_entry(conn) -> None:
    _replace_last_payload(conn, lambda payload: b"\xc1" + payload)


def malform_the_last_entry(conn) -> None:
    """Keep the entry's sequence number and link (so the chain checks pass) but break its shape."""
    head = _head(conn)
    entry = msgspec.msgpack.decode(_body(conn, head), type=Entry)
    _put(conn, head, _encode({"seq": entry.seq, "prev": entry.prev, "at": entry.at, "results": "none"}), rehash=True)


def empty_the_journal(conn) -> None:
    conn.execute("DELETE FROM journal")


CORRUPTIONS: list[tuple[str, Callable, str]] = [
    ("a flipped byte in an entry body is caught by its hash", flip_a_byte, r"entry 5 does not match its hash"),
    ("a deleted entry is caught as missing", delete_an_entry, r"entry 5 is missing"),
    ("two entries' bodies swapped are caught by their hashes", swap_two_bodies, r"entry 4 does not match its hash"),
    ("two whole entries swapped are caught as reordered", swap_two_entries,
     r"entry stored at 4 says it is entry 5 \(reordered\)"),
    ("a truncated last entry is caught by its hash", truncate_the_last_body, r"entry \d+ does not match its hash"),
    ("a truncated last entry with a recomputed hash does not decode", truncate_the_last_body_and_its_hash,
     r"entry \d+ does not decode"),
    ("a rewritten entry with a recomputed hash breaks the next link", rewrite_a_middle_entry,
     r"entry 6 does not link to entry 5"),
    ("rewritten results of the last entry are caught by replay", rewrite_the_last_results,
     r"replayed results differ"),
    ("a rewritten state digest of the last entry is caught by replay", rewrite_the_last_digest,
     r"replayed state digest differs"),
    ("dropped events of the last entry are caught by replay", drop_the_last_events, r"replayed events differ"),
    ("a command altered under its signature is caught by replay", forge_a_command_into_the_last_entry,
     r"replayed results differ"),
    ("an undecodable command payload is reported as corruption", garble_a_payload_in_the_last_entry,
     r"entry \d+"),
    ("an entry that is not a well-formed entry is reported as corruption", malform_the_last_entry, r"entry \d+"),
    ("an emptied journal is refused", empty_the_journal, r"the journal is empty"),
]


@pytest.mark.parametrize("corrupt, message", [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_a_corrupted_journal_is_refused_on_open_and_by_verify(db, backend, capsys, corrupt, message):
    path, _ = db
    with backend.tamper(path) as conn:
        corrupt(conn)

    with pytest.raises(JournalError, match=message) as raised:
        Ledger.open(path, protocols=[])
    assert path in str(raised.value), "the error names the journal"

    assert dvp(["verify", path]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dvp verify: FAILED:") and re.search(message, err)


def test_a_clean_journal_verifies(db, capsys):
    path, (head_seq, head_hash, digest, _, _) = db
    assert dvp(["verify", path]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dvp verify: OK: {path}")
    assert f"entries    {head_seq + 1} " in out
    assert head_hash.hex() in out and digest.hex() in out


def test_verify_checks_snapshots_too(backend, capsys):
    path = backend.location()
    w = make_world(path, snapshot_every=4)
    history(w, rounds=4)
    count = len(w.ledger.journal.snapshots())
    w.close()
    assert count >= 2
    assert dvp(["verify", path]) == 0
    assert f"snapshots  {count} checked" in capsys.readouterr().out


def test_verify_runs_as_a_command_and_exits_non_zero_on_corruption(db, backend):
    path, _ = db
    clean = subprocess.run([sys.executable, "-m", "engine.cli", "verify", path], capture_output=True, text=True,
                           timeout=120)
    assert clean.returncode == 0, clean.stderr
    assert "dvp verify: OK" in clean.stdout
    with backend.tamper(path) as conn:
        flip_a_byte(conn)
    broken = subprocess.run([sys.executable, "-m", "engine.cli", "verify", path], capture_output=True, text=True,
                            timeout=120)
    assert broken.returncode != 0
    assert "dvp verify: FAILED" in broken.stderr and "entry 5 does not match its hash" in broken.stderr


def _write_garbage(path: str) -> None:
    with open(path, "wb") as handle:
        handle.write(b"not sqlite at all" * 100)


def _make_other_database(path: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE accounts (id TEXT)")
    conn.close()


NOT_JOURNALS = [
    ("a path that does not exist", lambda path: None, r"no such ledger journal"),
    ("a file that is not a database", _write_garbage, r"not a ledger journal"),
    ("a database without a journal table", _make_other_database, r"not a ledger journal"),
    ("a directory", os.mkdir, r"not a ledger journal \(it is a directory\)"),
]


@pytest.mark.parametrize("make, message", [c[1:] for c in NOT_JOURNALS], ids=[c[0] for c in NOT_JOURNALS])
def test_verify_refuses_what_is_not_a_journal(tmp_path, capsys, make, message):
    path = str(tmp_path / "thing.db")
    make(path)
    assert dvp(["verify", path]) == 1
    err = capsys.readouterr().err
    assert "dvp verify: FAILED" in err and re.search(message, err)


def test_a_damaged_sqlite_file_is_refused_in_one_line_whatever_byte_is_flipped(tmp_path, capsys):
    """A flipped byte anywhere in the file (page headers, b-tree cells, free space) is a JournalError or
    harmless; never a traceback from `dvp verify` or `Ledger.open`."""
    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=0)
    history(w)
    head_hash = w.ledger.head_hash
    w.close()
    with open(path, "rb") as handle:
        original = handle.read()
    outcomes = set()
    for offset in range(0, len(original), max(1, len(original) // 97)):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        with open(path, "wb") as handle:
            handle.write(damaged)
        status = dvp(["verify", path])
        err = capsys.readouterr().err
        assert status in (0, 1) and err.count("\n") <= 1, (offset, err)
        if status == 0:
            with Ledger.open(path, protocols=[]) as ledger:
                assert ledger.head_hash == head_hash, f"offset {offset}: a damaged file verified as another journal"
        else:
            with pytest.raises(JournalError):
                Ledger.open(path, protocols=[]).close()
        outcomes.add(status)
    assert outcomes == {0, 1}, "some flips are refused and some fall in unused space"


def _make_database_without_tables(pg_server, url: str) -> None:
    pg_server.create_database(url)


def _make_database_with_other_tables(pg_server, url: str) -> None:
    import psycopg

    pg_server.create_database(url)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE journal (seq bigint)")  # a table of that name, but not the ledger's


PG_NOT_JOURNALS = [
    ("a database that does not exist", lambda server, url: None, r"no such ledger journal"),
    ("a database without the journal's tables", _make_database_without_tables,
     r"not a ledger journal \(no table dvp.journal\)"),
    ("a database with other tables of the same names", _make_database_with_other_tables,
     r"not a ledger journal \(no table dvp.journal\)"),
]


@pytest.mark.parametrize("make, message", [c[1:] for c in PG_NOT_JOURNALS], ids=[c[0] for c in PG_NOT_JOURNALS])
def test_verify_refuses_a_postgres_database_that_is_not_a_journal(pg_server, capsys, make, message):
    url = pg_server.new_url("thing")
    make(pg_server, url)
    assert dvp(["verify", url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dvp verify: FAILED" in err and url in err and re.search(message, err), err
    with pytest.raises((JournalError, FileNotFoundError), match=message):
        Ledger.open(url, protocols=[])


def test_verify_of_a_server_that_does_not_answer_fails_in_one_line(capsys):
    pytest.importorskip("psycopg", reason=PG_HOWTO)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        url = f"postgresql://dvp@127.0.0.1:{port}/ledger"
        assert dvp(["verify", url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dvp verify: FAILED" in err and "cannot connect" in err, err


# --------------------------------------------------------------------- demo


def test_the_demo_journal_verifies_and_shows_the_refused_forgery(backend, capsys):
    path = backend.location("demo")
    assert dvp(["demo", "--db", path]) == 0
    out = capsys.readouterr().out
    assert "forgery" in out and "bad_signature" in out
    assert dvp(["verify", path]) == 0
    assert "dvp verify: OK" in capsys.readouterr().out


def test_the_demo_is_deterministic_and_refuses_the_forgery():
    first, rows = run_demo()
    second, _ = run_demo()
    try:
        assert first.head_hash == second.head_hash and first.digest() == second.digest()
        by_what = {what: result for _, what, result in rows}
        forgery = next(result for what, result in by_what.items() if what.startswith("forgery"))
        assert forgery == "bad_signature"
        assert first.balance("BANK_A", "USD") == 99_500_000
        assert first.balance("BANK_B", "UST10Y") == 1_000_000
    finally:
        first.close()
        second.close()


def test_the_demo_runs_as_a_command(backend):
    path = backend.location("demo")
    demo = subprocess.run([sys.executable, "-m", "engine.cli", "demo", "--db", path], capture_output=True,
                          text=True, timeout=120)
    assert demo.returncode == 0, demo.stderr
    assert "bad_signature" in demo.stdout
    check = subprocess.run([sys.executable, "-m", "engine.cli", "verify", path], capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0, check.stderr
