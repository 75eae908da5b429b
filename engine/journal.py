"""Journals: where entries are stored, in SQLite (the default) or in memory.

A journal stores, per entry, its sequence number, its SHA-256 hash and its
encoded body (which carries the previous entry's hash). One `append` is one
SQLite transaction holding the entry and, when due, a snapshot: a batch is
durable as a whole or not at all (group commit). WAL mode with
`synchronous=FULL` makes an acknowledged batch survive a crash of the
process or the machine.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator

DURABILITY = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshots (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, body BLOB NOT NULL)",
)


class JournalError(Exception):
    """The journal cannot be trusted: corrupt, reordered, or missing entries."""


class MemoryJournal:
    """Keep entries in a list: for tests, benchmarks and throwaway ledgers."""

    path = ":memory:"

    def __init__(self) -> None:
        self._rows: list[tuple[bytes, bytes]] = []
        self._snapshots: dict[int, bytes] = {}

    def append(self, seq: int, digest: bytes, body: bytes, snapshot: bytes | None = None) -> None:
        assert seq == len(self._rows), "journal sequence out of order"
        self._rows.append((digest, body))
        if snapshot is not None:
            self._snapshots[seq] = snapshot

    def rows(self, start: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        for seq in range(start, len(self._rows)):
            digest, body = self._rows[seq]
            yield seq, digest, body

    def body(self, seq: int) -> bytes:
        return self._rows[seq][1]

    def snapshots(self) -> list[int]:
        return sorted(self._snapshots)

    def snapshot(self, seq: int) -> bytes | None:
        return self._snapshots[seq]

    def put_snapshot(self, seq: int, body: bytes) -> None:
        self._snapshots[seq] = body

    def is_empty(self) -> bool:
        return not self._rows

    def close(self) -> None:
        pass


class SqliteJournal:
    """Store entries in one SQLite file in WAL mode."""

    def __init__(self, path: str, durability: str = "full", create: bool = False, readonly: bool = False):
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {sorted(DURABILITY)}, not {durability!r}")
        if not create and not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such ledger journal")
        self.path = path
        if readonly:
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            if readonly:
                self._db.execute("SELECT seq, hash, body FROM journal LIMIT 1")
                self._db.execute("SELECT seq, hash, body FROM snapshots LIMIT 1")
            else:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(f"PRAGMA synchronous={DURABILITY[durability]}")
                for statement in _SCHEMA:
                    self._db.execute(statement)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise JournalError(f"{path}: not a ledger journal ({exc})") from exc

    def append(self, seq: int, digest: bytes, body: bytes, snapshot: bytes | None = None) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("INSERT INTO journal (seq, hash, body) VALUES (?, ?, ?)", (seq, digest, body))
            if snapshot is not None:
                self._put_snapshot(seq, snapshot)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _put_snapshot(self, seq: int, body: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO snapshots (seq, hash, body) VALUES (?, ?, ?)",
            (seq, hashlib.sha256(body).digest(), body),
        )

    def put_snapshot(self, seq: int, body: bytes) -> None:
        """Store a snapshot taken at entry `seq` (its own transaction)."""
        self._put_snapshot(seq, body)

    def rows(self, start: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        cursor = self._db.execute("SELECT seq, hash, body FROM journal WHERE seq >= ? ORDER BY seq", (start,))
        yield from cursor

    def body(self, seq: int) -> bytes:
        row = self._db.execute("SELECT body FROM journal WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise JournalError(f"{self.path}: entry {seq} is missing")
        return row[0]

    def snapshots(self) -> list[int]:
        return [row[0] for row in self._db.execute("SELECT seq FROM snapshots ORDER BY seq")]

    def snapshot(self, seq: int) -> bytes | None:
        """Return a snapshot's body, or None if it does not match its checksum."""
        digest, body = self._db.execute("SELECT hash, body FROM snapshots WHERE seq = ?", (seq,)).fetchone()
        return body if hashlib.sha256(body).digest() == digest else None

    def is_empty(self) -> bool:
        return self._db.execute("SELECT 1 FROM journal LIMIT 1").fetchone() is None

    def close(self) -> None:
        self._db.close()
