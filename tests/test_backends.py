"""What the backends add to the journal: one writer at a time, readers beside it, read-only
audits, `dvp copy` between SQLite and PostgreSQL, and sibling chains' locations.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from conftest import BANK_A, BANK_B, USD, make_world
from engine.cli import main as dvp
from engine.journal import JournalError, JournalLocked, chain_location, open_journal, writer_pid
from engine.journal_copy import copy_journal
from engine.ledger import Ledger, LedgerFault
from engine.records import Move
from engine.verify import verify_journal
from test_journal import fingerprint_of, flip_a_byte, history

# ------------------------------------------------------------ the interface


def test_every_backend_implements_the_journal_interface(backend):
    from engine.journal import Journal, MemoryJournal

    location = backend.location()
    journal = open_journal(location, create=True)
    try:
        assert isinstance(journal, Journal) and isinstance(MemoryJournal(), Journal)
        assert journal.is_empty() and journal.snapshots() == []
        journal.append_many([(0, b"h0", b"b0", None), (1, b"h1", b"b1", b"s1"), (2, b"h2", b"b2", None)])
        journal.append(3, b"h3", b"b3", b"s3")
        journal.put_snapshot(2, b"s2")
        assert list(journal.rows(1)) == [(1, b"h1", b"b1"), (2, b"h2", b"b2"), (3, b"h3", b"b3")]
        assert journal.body(2) == b"b2" and journal.snapshots() == [1, 2, 3] and journal.snapshot(3) == b"s3"
        with pytest.raises(JournalError, match="entry 9 is missing"):
            journal.body(9)
        with pytest.raises(JournalError):  # an entry number taken twice: the whole batch is refused
            journal.append_many([(4, b"h4", b"b4", None), (3, b"x", b"x", None)])
        assert [seq for seq, _, _ in journal.rows()] == [0, 1, 2, 3], "nothing of a refused batch was kept"
    finally:
        journal.close()


def test_a_postgres_writer_whose_session_is_cut_stops_and_reopens_at_the_last_commit(pg_server):
    import psycopg

    url = pg_server.new_url("cut")
    w = make_world(url, snapshot_every=0)
    assert w.send(BANK_A, [Move(id="kept", asset=USD, source=BANK_A, target=BANK_B, amount=300)]) == ["ok"]
    expected = (w.ledger.head_seq, w.ledger.head_hash, w.ledger.digest())
    with psycopg.connect(url, autocommit=True) as admin:  # the server ends the writer's session
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name LIKE 'dvp writer%%' AND datname = current_database()")
    with pytest.raises(LedgerFault, match="was not committed"):
        w.send(BANK_A, [Move(id="lost", asset=USD, source=BANK_A, target=BANK_B, amount=400)])
    with pytest.raises(LedgerFault):
        w.send(BANK_A, [Move(id="refused", asset=USD, source=BANK_A, target=BANK_B, amount=1)])
    with Ledger.open(url, protocols=[]) as reopened:  # the lock went with the session
        assert (reopened.head_seq, reopened.head_hash, reopened.digest()) == expected
        assert reopened.balance(BANK_B, USD) == 50_000_300
    with contextlib.suppress(Exception):
        w.close()


# ------------------------------------------------------------- one writer


def test_a_second_writer_in_the_same_process_is_refused_naming_its_pid(backend):
    path = backend.location()
    w = make_world(path)
    try:
        for opening in (lambda: Ledger.open(path, protocols=[]),
                        lambda: Ledger.create(path, chain_id="x", operator="OP", operator_key=bytes(32))):
            with pytest.raises(JournalLocked) as refused:
                opening()
            message = str(refused.value)
            assert message.startswith(path) and f"pid {os.getpid()}" in message and "\n" not in message, message
        assert w.send(BANK_A, [Move(id="after-refusal", asset=USD, source=BANK_A, target=BANK_B, amount=1)]) \
            == ["ok"], "a refused second writer leaves the first one working"
    finally:
        w.close()
    with Ledger.open(path, protocols=[]) as again:  # the lock went with the first writer's close
        assert again.balance(BANK_B, USD) == 50_000_001


def test_a_second_writer_through_a_symlink_is_refused_too(tmp_path):
    path = str(tmp_path / "ledger.db")
    w = make_world(path)
    os.symlink(path, tmp_path / "alias.db")
    try:
        with pytest.raises(JournalLocked, match=f"pid {os.getpid()}"):
            Ledger.open(str(tmp_path / "alias.db"), protocols=[])
    finally:
        w.close()


def test_a_writer_waits_for_the_lock_when_asked(backend):
    path = backend.location()
    w = make_world(path)
    closer = threading.Timer(0.5, w.close)
    closer.start()
    started = time.monotonic()
    with Ledger.open(path, protocols=[], lock_timeout=20) as next_writer:
        waited = time.monotonic() - started
        assert next_writer.head_seq == 3
    closer.join()
    assert waited >= 0.4, "the second writer opened before the first one closed"


def test_a_reader_beside_a_live_writer_sees_what_is_committed_and_cannot_write(backend):
    path = backend.location()
    w = make_world(path)
    try:
        with Ledger.open(path, protocols=[], readonly=True) as reader:
            assert reader.head_seq == w.ledger.head_seq and reader.digest() == w.ledger.digest()
            with pytest.raises(LedgerFault, match="read-only"):
                reader.submit([])
            with pytest.raises(LedgerFault, match="read-only"):
                reader.snapshot()
            w.send(BANK_A, [Move(id="while-read", asset=USD, source=BANK_A, target=BANK_B, amount=7)])
            assert verify_journal(path).entries == w.ledger.head_seq + 1, "an audit beside the writer sees its work"
    finally:
        w.close()


def test_the_sqlite_lock_file_names_the_writer_and_is_free_after_close(tmp_path):
    path = str(tmp_path / "ledger.db")
    w = make_world(path)
    assert writer_pid(path) == os.getpid()
    with open(path + ".lock") as handle:
        assert handle.read().strip() == str(os.getpid())
    w.close()
    assert writer_pid(path) is None


def test_a_writer_on_a_read_only_directory_is_refused_in_one_line(tmp_path, capsys):
    path = str(tmp_path / "ledger.db")
    make_world(path).close()
    os.remove(path + ".lock")
    if not _run_on_read_only_mount(tmp_path, ["-c", "import sys"]).returncode == 0:
        pytest.skip("cannot make a read-only mount here (needs unshare -m and mount)")
    code = ("import sys; from engine.ledger import Ledger; from engine.journal import JournalError\n"
            "try:\n    Ledger.open(sys.argv[1], protocols=[])\n"
            "except JournalError as exc:\n    print(exc); sys.exit(3)\n")
    done = _run_on_read_only_mount(tmp_path, ["-c", code, path])
    assert done.returncode == 3, done.stderr
    assert "cannot take the writer's lock" in done.stdout and "Read-only file system" in done.stdout


# ------------------------------------------------------ read-only audits


def _run_on_read_only_mount(directory, args: list[str]) -> subprocess.CompletedProcess:
    """Run python with `args` where `directory` is a read-only bind mount (root needs no permission bits)."""
    if not (shutil.which("unshare") and shutil.which("mount")):
        return subprocess.CompletedProcess([], 127, "", "no unshare")
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(directory), sys.executable, *args],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("writer_alive", [False, True],
                         ids=["a journal closed cleanly (no -wal file)", "a journal whose writer is still running"])
def test_verify_audits_a_journal_on_a_read_only_mount(tmp_path, writer_alive):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=4)
    history(w, rounds=3)
    expected = w.ledger.head_hash.hex()
    if not writer_alive:
        w.close()
        assert not os.path.exists(path + "-wal")
    try:
        probe = _run_on_read_only_mount(tmp_path, ["-c", "import sys"])
        if probe.returncode != 0:
            pytest.skip(f"cannot make a read-only mount here: {probe.stderr.strip()[:200]}")
        done = _run_on_read_only_mount(tmp_path, ["-m", "engine.cli", "verify", path])
        assert done.returncode == 0, done.stderr
        assert "dvp verify: OK" in done.stdout and expected in done.stdout
    finally:
        if writer_alive:
            w.close()


# --------------------------------------------------------------- copying


def _sqlite(tmp_path, pg_server, name: str) -> str:
    return str(tmp_path / f"{name}.db")


def _postgres(tmp_path, pg_server, name: str) -> str:
    return pg_server.new_url(name)


KINDS = {"sqlite": _sqlite, "postgres": _postgres}
DIRECTIONS = [("sqlite", "postgres"), ("postgres", "sqlite"), ("postgres", "postgres"), ("sqlite", "sqlite")]
DIRECTION_IDS = [f"{a} to {b}" for a, b in DIRECTIONS]


@pytest.fixture
def place(tmp_path, request):
    """place(kind, name) -> a new location of that backend (the PostgreSQL server only when asked for)."""
    def make(kind: str, name: str) -> str:
        server = request.getfixturevalue("pg_server") if kind == "postgres" else None
        return KINDS[kind](tmp_path, server, name)

    return make


@pytest.mark.parametrize("src_kind, dst_kind", DIRECTIONS, ids=DIRECTION_IDS)
def test_copy_gives_the_same_journal_at_the_other_end(place, capsys, src_kind, dst_kind):
    src, dst = place(src_kind, "src"), place(dst_kind, "dst")
    w = make_world(src, snapshot_every=4)
    history(w, rounds=4)
    w.ledger.advance(w.clock.now + 100)
    expected = fingerprint_of(w.ledger)
    snapshots = w.ledger.journal.snapshots()
    w.close()

    assert dvp(["copy", src, dst]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"dvp copy: OK: {src} -> {dst}")
    assert f"entries    {expected[0] + 1} (snapshots {len(snapshots)})" in out
    assert expected[1].hex() in out and expected[2].hex() in out
    assert verify_journal(dst).head == verify_journal(src).head == expected[1].hex()
    with Ledger.open(dst, protocols=[]) as copied:
        assert fingerprint_of(copied) == expected
        assert copied.journal.snapshots() == snapshots
        assert copied.recovery_notes == []


def test_copy_of_a_journal_with_a_live_writer_copies_what_was_committed(place):
    src, dst = place("postgres", "live"), place("sqlite", "dst")
    w = make_world(src)
    try:
        report = copy_journal(src, dst)
        assert report.head == w.ledger.head_hash.hex() and report.entries == w.ledger.head_seq + 1
    finally:
        w.close()


def test_a_copied_journal_takes_new_entries_like_its_source(place):
    src, dst = place("sqlite", "src"), place("postgres", "dst")
    memory = make_world()
    history(memory, rounds=4)
    w = make_world(src, snapshot_every=3)
    history(w, rounds=2)
    w.close()
    copy_journal(src, dst)
    w.path = dst
    w.ledger = Ledger.open(dst, clock=w.clock, protocols=[])
    history(w, rounds=2, start=2)
    try:
        assert fingerprint_of(w.ledger) == fingerprint_of(memory.ledger)
    finally:
        w.close()
        memory.close()


@pytest.mark.parametrize("src_kind, dst_kind", DIRECTIONS[:2], ids=DIRECTION_IDS[:2])
def test_copy_refuses_a_corrupted_source_and_writes_nothing(place, backend_tamper, capsys, src_kind, dst_kind):
    src, dst = place(src_kind, "src"), place(dst_kind, "dst")
    w = make_world(src, snapshot_every=0)
    history(w, rounds=3)
    w.close()
    with backend_tamper(src_kind, src) as conn:
        flip_a_byte(conn)
    assert dvp(["copy", src, dst]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dvp copy: FAILED:") and "entry 5 does not match its hash" in err
    if dst_kind == "sqlite":
        assert not os.path.exists(dst), "a failed copy leaves no file behind"
    else:
        with pytest.raises((JournalError, FileNotFoundError), match="empty|no such"):
            Ledger.open(dst, protocols=[])


def test_copy_refuses_a_destination_that_holds_a_journal_and_leaves_it_alone(place, capsys):
    src, dst = place("sqlite", "src"), place("postgres", "dst")
    make_world(src).close()
    w = make_world(dst)
    history(w, rounds=1)
    before = w.ledger.head_hash
    w.close()
    assert dvp(["copy", src, dst]) == 1
    assert "a journal exists here" in capsys.readouterr().err
    with Ledger.open(dst, protocols=[]) as kept:
        assert kept.head_hash == before


def test_copy_refuses_a_destination_another_writer_holds(place, capsys):
    src, dst = place("sqlite", "src"), place("postgres", "dst")
    make_world(src).close()
    journal = open_journal(dst, create=True)
    try:
        assert dvp(["copy", src, dst]) == 1
        err = capsys.readouterr().err
        assert "another writer holds this journal" in err and f"pid {os.getpid()}" in err
    finally:
        journal.close()


def test_a_copy_that_is_refused_for_a_bad_snapshot_names_it(place, backend_tamper, capsys):
    src, dst = place("sqlite", "src"), place("postgres", "dst")
    w = make_world(src, snapshot_every=3)
    history(w, rounds=2)
    newest = w.ledger.journal.snapshots()[-1]
    w.close()
    from test_journal import _older_state_under_newest_seq

    with backend_tamper("sqlite", src) as conn:
        _older_state_under_newest_seq(conn, newest)
    assert dvp(["copy", src, dst]) == 1
    assert f"snapshot {newest} does not match the journal" in capsys.readouterr().err


@pytest.fixture
def backend_tamper(request, tmp_path):
    from backends import PgBackend, SqliteBackend

    def tamper(kind: str, location: str):
        if kind == "postgres":
            return PgBackend(request.getfixturevalue("pg_server")).tamper(location)
        return SqliteBackend(tmp_path).tamper(location)

    return tamper


# ------------------------------------------------------- sibling chains

CHAIN_LOCATIONS = [
    ("a SQLite journal's sibling is the file PATH-<chain>", "/data/ledger.db", "bonds", "/data/ledger.db-bonds"),
    ("a PostgreSQL journal's sibling is the database <dbname>-<chain> on the same server",
     "postgresql://dvp@db1:5432/ledger?sslmode=require", "bonds",
     "postgresql://dvp@db1:5432/ledger-bonds?sslmode=require"),
    ("a chain id's punctuation is escaped in the URL's path", "postgresql://u@h/ledger", "cash:us/1",
     "postgresql://u@h/ledger-cash%3Aus%2F1"),
    ("a database named by the dbname parameter is replaced there", "postgresql://u@h/?dbname=main", "bonds",
     "postgresql://u@h/?dbname=main-bonds"),
    ("a memory journal's sibling is another memory journal", ":memory:", "bonds", ":memory:"),
]


@pytest.mark.parametrize("location, chain, expected", [c[1:] for c in CHAIN_LOCATIONS],
                         ids=[c[0] for c in CHAIN_LOCATIONS])
def test_chain_location_places_a_sibling_chain(location, chain, expected):
    assert chain_location(location, chain) == expected


BAD_CHAINS = [
    ("a chain with a slash would reach another directory", "/data/ledger.db", "a/b", r"cannot name a SQLite"),
    ("a chain named wal collides with SQLite's own file", "/data/ledger.db", "wal", r"cannot name a SQLite"),
    ("a chain named shm collides with SQLite's own file", "/data/ledger.db", "shm", r"cannot name a SQLite"),
    ("a chain ending in .lock collides with a writer's lock", "/data/ledger.db", "x.lock", r"cannot name a SQLite"),
    ("a chain with a space is not a chain id", "/data/ledger.db", "bad chain", r"not a valid chain id"),
    ("a database name past PostgreSQL's 63 bytes is refused, not truncated", "postgresql://u@h/ledger", "c" * 60,
     r"exceeds PostgreSQL's 63 bytes"),
    ("a URL without a database cannot place siblings", "postgresql://u@h", "bonds", r"name the database"),
]


@pytest.mark.parametrize("location, chain, message", [c[1:] for c in BAD_CHAINS], ids=[c[0] for c in BAD_CHAINS])
def test_chain_location_refuses_what_cannot_name_a_journal(location, chain, message):
    with pytest.raises(ValueError, match=message):
        chain_location(location, chain)


def test_error_messages_do_not_show_a_password():
    from engine.journal import display_location

    shown = display_location("postgresql://alice:s3cret@db1:5432/ledger")
    assert "s3cret" not in shown and shown == "postgresql://alice:***@db1:5432/ledger"


def test_a_cross_chain_swap_settles_with_each_chain_in_its_own_postgres_database(pg_server):
    """Scale-out: each chain is its own ledger and writer; the HTLC coordinator settles across them."""
    from protocols.swap import SwapCoordinator, SwapTerms, derived_secret
    from test_htlc import Chain

    main = pg_server.new_url("main")
    bonds_url, cash_url = chain_location(main, "bond-chain"), chain_location(main, "cash-chain")
    bonds = Chain("bond-chain", "BOND", funded="B", amount=5, path=bonds_url)
    cash = Chain("cash-chain", "USD", funded="A", amount=10_000, path=cash_url)
    terms = SwapTerms(trade="X1", seller="B", buyer="A", security="BOND", quantity=5, cash_asset="USD",
                      amount=1_000, timeout=3600)
    secret = derived_secret(b"A", "X1")
    coordinator = SwapCoordinator(bonds.ledger, cash.ledger, bonds.s, cash.s)
    coordinator.initiate(terms, secret)
    coordinator.respond(terms)
    assert coordinator.claim_second(terms, secret) == 0
    # the coordinator restarts, and so do both writers: everything it needs is in the two databases
    bonds.ledger.close()
    cash.ledger.close()
    bonds.ledger = Ledger.open(bonds_url, clock=bonds.clock)
    cash.ledger = Ledger.open(cash_url, clock=cash.clock)
    try:
        assert SwapCoordinator(bonds.ledger, cash.ledger, bonds.s, cash.s).follow(terms) == "claimed"
        assert bonds.bal("A") == 5 and bonds.bal("B") == 0
        assert cash.bal("B") == 1_000 and cash.bal("A") == 9_000
        heads = {bonds_url: bonds.ledger.head_hash.hex(), cash_url: cash.ledger.head_hash.hex()}
    finally:
        bonds.ledger.close()
        cash.ledger.close()
    for url, head in heads.items():
        report = verify_journal(url)
        assert report.head == head and re.search(r"/\w+-(bond|cash)-chain$", url)
    assert verify_journal(bonds_url).chain_id == "bond-chain" and verify_journal(cash_url).chain_id == "cash-chain"


def test_a_cross_chain_replay_keeps_each_chains_journal_in_its_own_postgres_database(pg_server, tmp_path):
    """Scale-out through the replay: `dvp replay FILE --db postgresql://...` of a two-chain day puts each
    chain's journal in its own database, and gives the report (and hashes) the SQLite replay gives."""
    from pathlib import Path

    from protocols.replay import replay

    path = str(Path(__file__).resolve().parent.parent / "examples" / "crosschain.jsonl")
    on_sqlite = replay(path, db=str(tmp_path / "x.db"))
    expected = on_sqlite.report()
    on_sqlite.close()
    main = pg_server.new_url("xmain")
    pg_server.created.append(chain_location(main, "deposits").rsplit("/", 1)[1])  # dropped with the rest
    assert dvp(["replay", path, "--db", main, "--report", str(tmp_path / "r.json"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["trades"] == expected["trades"] and report["balances"] == expected["balances"]
    assert report["ledger"] == expected["ledger"]  # the same head on each chain
    side = chain_location(main, "deposits")
    assert side != main and side.rsplit("/", 1)[1] != main.rsplit("/", 1)[1]
    for url, chain in ((main, "main"), (side, "deposits")):
        audited = verify_journal(url)
        assert audited.chain_id == chain and audited.entries > 1
