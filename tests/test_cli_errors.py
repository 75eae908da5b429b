"""Errors for people: every `dvp` failure is one line on stderr and a non-zero exit, never a traceback.

Run as a user would (`python -m engine.cli` in a subprocess): a full disk
(a write error injected into the journal, and a real small tmpfs where the
test may mount one), a second replay on a journal another holds, flipped
bytes that SQLite reports as damage (`dvp verify` and `dvp replay
--resume`), an entry body stored as TEXT, and `dvp verify DIRECTORY`. Also
head receipts: `dvp verify --expect-head` tells a journal cut short.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import BANK_A, BANK_B, USD, make_world

from engine.cli import main as dvp
from engine.ledger import Ledger
from engine.records import Move

ROOT = Path(__file__).resolve().parent.parent
TRADES = str(ROOT / "examples" / "gross.jsonl")


def run(*args: str, code: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "engine.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False)


def one_line_failure(result: subprocess.CompletedProcess, *words: str) -> str:
    err = result.stderr.strip()
    assert result.returncode not in (0, None), (result.returncode, result.stdout, err)
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    return err


@pytest.fixture
def replayed(tmp_path) -> str:
    path = str(tmp_path / "trades.db")
    result = run("replay", TRADES, "--db", path, "--no-progress")
    assert result.returncode in (0, 3) and os.path.exists(path), result.stderr  # 3: the file's own bad lines
    return path


# ---------------------------------------------------------------- a full disk

FULL_DISK = textwrap.dedent("""
    import sqlite3, sys
    import engine.journal as journal
    def full(self, rows):
        raise journal.JournalError(f"{self.path}: nothing was written: database or disk is full")
    journal.SqliteJournal.append_many = full
    from engine.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_full_disk_during_a_replay_is_one_line(tmp_path):
    err = one_line_failure(run("replay", TRADES, "--db", str(tmp_path / "full.db"), "--no-progress", code=FULL_DISK),
                           "disk is full")
    assert "full.db" in err


def test_a_full_disk_during_the_demo_is_one_line(tmp_path):
    one_line_failure(run("demo", "--db", str(tmp_path / "full.db"), code=FULL_DISK), "disk is full")


def test_a_real_full_tmpfs_is_one_line(tmp_path):
    """Where the test may mount a 200 KiB tmpfs (root), a replay that fills it fails in one line."""
    where = tmp_path / "small"
    where.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or \
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(where)],
                           capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        big = tmp_path / "big.jsonl"
        lines = [line for line in Path(TRADES).read_text().splitlines()
                 if '"asset"' in line or '"participant"' in line and '"deposit"' not in line]
        lines += ['{"type": "deposit", "participant": "BANK_A", "asset": "UST10Y", "amount": 100000000}',
                  '{"type": "deposit", "participant": "BANK_B", "asset": "USD", "amount": "100000000.00"}']
        lines += [f'{{"type": "dvp", "at": "2026-03-02T09:30:00Z", "id": "X{n}", "seller": "BANK_A", '
                  f'"buyer": "BANK_B", "security": "UST10Y", "quantity": 1, "cash_asset": "USD", "amount": "1.00"}}'
                  for n in range(20_000)]
        big.write_text("\n".join(lines) + "\n")
        result = run("replay", str(big), "--db", str(where / "trades.db"), "--no-progress")
        if result.returncode == 0:
            pytest.skip("the replay fit in the tmpfs")
        one_line_failure(result)
    finally:
        subprocess.run(["umount", str(where)], capture_output=True, check=False)


# ------------------------------------------------------------ a second writer


def test_a_second_replay_on_a_journal_another_process_holds_is_one_line_naming_the_pid(replayed):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from engine.ledger import Ledger
        ledger = Ledger.open({replayed!r})
        print("held", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        one_line_failure(run("replay", TRADES, "--db", replayed, "--resume", "--no-progress"),
                         f"pid {holder.pid}")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


# -------------------------------------------------------------- damaged files


def _flip(path: str, original: bytes, offset: int) -> None:
    damaged = bytearray(original)
    damaged[offset] ^= 0xFF
    with open(path, "wb") as handle:
        handle.write(damaged)


def test_flipped_bytes_anywhere_are_one_line_for_verify_and_resume(replayed, capsys):
    for suffix in ("-wal", "-shm"):
        assert not os.path.exists(replayed + suffix) or os.path.getsize(replayed + suffix) == 0
    with open(replayed, "rb") as handle:
        original = handle.read()
    failures = 0
    for offset in range(0, len(original), max(1, len(original) // 150)):
        _flip(replayed, original, offset)
        for argv in (["verify", replayed], ["replay", TRADES, "--db", replayed, "--resume", "--no-progress"]):
            status = dvp(argv)
            err = capsys.readouterr().err.strip()
            assert status in (0, 1, 3), (offset, argv[0], status, err)  # 3: the replay's own rejected lines
            if status == 1:
                failures += 1
                assert len(err.splitlines()) == 1 and "Traceback" not in err, (offset, argv[0], err)
    assert failures, "no flip was detected at all"
    for offset in (100, len(original) // 2, len(original) - 200):  # and the same as a user runs it
        _flip(replayed, original, offset)
        for argv in (["verify", replayed], ["replay", TRADES, "--db", replayed, "--resume", "--no-progress"]):
            result = run(*argv)
            if result.returncode not in (0, 3):
                one_line_failure(result)


def test_an_entry_body_stored_as_text_is_one_line(replayed):
    conn = sqlite3.connect(replayed)
    with conn:
        conn.execute("UPDATE journal SET body = CAST(hex(body) AS TEXT) WHERE seq = 2")
    conn.close()
    one_line_failure(run("verify", replayed), "entry 2")
    one_line_failure(run("replay", TRADES, "--db", replayed, "--resume", "--no-progress"), "entry 2")


def test_verify_of_a_directory_is_one_line(tmp_path):
    one_line_failure(run("verify", str(tmp_path)), "directory")


# -------------------------------------------------------------- head receipts


def receipt_world(tmp_path, entries: int = 3, amount: int = 1):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=0)
    for n in range(entries):
        assert w.send(BANK_A, [Move(id=f"r{n}", asset=USD, source=BANK_A, target=BANK_B, amount=amount)]) == ["ok"]
    return path, w


def test_the_receipt_is_seq_and_head_hash_and_verify_prints_it(tmp_path, capsys):
    path, w = receipt_world(tmp_path)
    receipt = w.ledger.receipt()
    assert receipt == f"{w.ledger.head_seq}:{w.ledger.head_hash.hex()}"
    w.close()
    assert dvp(["verify", path]) == 0
    assert f"receipt    {receipt}" in capsys.readouterr().out
    for expected in (receipt, receipt.split(":")[1]):
        assert dvp(["verify", path, "--expect-head", expected]) == 0


def _delete_entry(path: str, seq: int) -> None:
    """Remove one entry from a SQLite journal behind the engine's back (what an attacker with the file can do)."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("DELETE FROM journal WHERE seq = ?", (seq,))
    conn.close()


def test_a_journal_cut_short_fails_against_the_receipt_in_one_line(tmp_path):
    path, w = receipt_world(tmp_path)
    receipt = w.ledger.receipt()
    head = w.ledger.head_seq
    w.close()
    _delete_entry(path, head)
    assert run("verify", path).returncode == 0, "a shorter journal is still a valid chain (the limit)"
    one_line_failure(run("verify", path, "--expect-head", receipt), "shorter", f"entry {head}")
    one_line_failure(run("verify", path, "--expect-head", receipt.split(":")[1]), "differs")


def test_a_journal_that_grew_since_the_receipt_still_matches_and_another_history_does_not(tmp_path, capsys):
    path, w = receipt_world(tmp_path)
    receipt = w.ledger.receipt()
    assert w.send(BANK_A, [Move(id="later", asset=USD, source=BANK_A, target=BANK_B, amount=1)]) == ["ok"]
    w.close()
    assert dvp(["verify", path, "--expect-head", receipt]) == 0
    (tmp_path / "other").mkdir()
    other_path, other = receipt_world(tmp_path / "other", 4, amount=2)  # another history of the same length
    other.close()
    seq = int(receipt.split(":")[0])
    assert dvp(["verify", other_path, "--expect-head", receipt]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"entry {seq}" in err and "differs" in err, err


@pytest.mark.parametrize("bad", ["nope", "12:xyz", "x:" + "00" * 32, "00" * 31])
def test_a_malformed_receipt_is_one_line(tmp_path, bad):
    path, w = receipt_world(tmp_path, 1)
    w.close()
    one_line_failure(run("verify", path, "--expect-head", bad), "receipt")


def test_opening_a_journal_cut_short_notes_the_skipped_snapshot(tmp_path):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=0)
    w.ledger.snapshot()
    head = w.ledger.head_seq
    w.close()
    _delete_entry(path, head)
    with Ledger.open(path, protocols=[]) as reopened:
        assert reopened.head_seq == head - 1
        assert [n for n in reopened.recovery_notes if f"snapshot {head} is beyond" in n]
