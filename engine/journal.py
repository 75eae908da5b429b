"""Journals: where entries are stored, in SQLite (the default), PostgreSQL or memory.

A journal stores, per entry, its sequence number, its SHA-256 hash and its
encoded body (which carries the previous entry's hash), and, beside the
entries, snapshots of the state. `Journal` is the interface every backend
implements; `open_journal` picks the backend from the location:

- `:memory:`: `MemoryJournal`, a list (tests, benchmarks, throwaway ledgers);
- `postgresql://...` (or `postgres://...`): `PgJournal` in `engine.journal_pg`
  (the optional extra `postgres`);
- anything else: a path to a `SqliteJournal` file.

One `append` is one transaction holding the entry and, when due, a
snapshot: a batch is durable as a whole or not at all (group commit). SQLite
runs in WAL mode with `synchronous=FULL`, so an acknowledged batch survives
a crash of the process or the machine.

Single writer: a journal opened for writing is locked from open to close,
before anything is read (SQLite: a POSIX lock on `PATH.lock`, which holds the
writer's pid; PostgreSQL: a session-level advisory lock). A second writer is
refused at open with `JournalLocked`. Readers (`readonly=True`) take no lock
and see only committed entries; `reading()` holds one consistent view.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import ContextManager, Protocol, runtime_checkable

DURABILITY = {"full": "FULL", "normal": "NORMAL", "off": "OFF"}
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
LOCK_SUFFIX = ".lock"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshots (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, body BLOB NOT NULL)",
)

# One row to append: (seq, entry hash, entry body, snapshot body or None).
Row = tuple[int, bytes, bytes, "bytes | None"]


class JournalError(Exception):
    """The journal cannot be trusted or reached: corrupt, reordered, missing entries, or not a journal."""


class JournalLocked(JournalError):
    """Another writer holds the journal; only one writer may have it open."""


@runtime_checkable
class Journal(Protocol):
    """What a ledger needs of its storage. Every backend gives the same answers for the same entries."""

    path: str  # the location, as shown in messages (a URL without its password)

    def append(self, seq: int, digest: bytes, body: bytes, snapshot: bytes | None = None) -> None:
        """Store entry `seq` (and a snapshot taken at it) in one transaction: all of it or nothing."""

    def append_many(self, rows: Iterable[Row]) -> None:
        """Store consecutive entries in one transaction: all of them or none (bulk copy)."""

    def rows(self, start: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        """Yield (seq, hash, body) from `start` on, in sequence order."""

    def body(self, seq: int) -> bytes:
        """Return entry `seq`'s body; raise JournalError if it is missing."""

    def snapshots(self) -> list[int]:
        """Return the entries at which snapshots are stored, in order."""

    def snapshot(self, seq: int) -> bytes | None:
        """Return a snapshot's body, or None if it does not match its checksum."""

    def put_snapshot(self, seq: int, body: bytes) -> None:
        """Store a snapshot taken at entry `seq` (its own transaction)."""

    def is_empty(self) -> bool:
        """Tell whether the journal holds no entry."""

    def reading(self) -> ContextManager[None]:
        """Hold one consistent view of the committed journal for the duration (readers)."""

    def close(self) -> None:
        """Release the journal (and the writer's lock)."""


def is_postgres(location: str) -> bool:
    return location.startswith(POSTGRES_SCHEMES)


def open_journal(location: str, durability: str = "full", *, create: bool = False, readonly: bool = False,
                 lock_timeout: float = 0.0) -> Journal:
    """Open (or, with `create`, create) the journal at `location` with the backend its form names.

    A writer (`readonly=False`) waits up to `lock_timeout` seconds for the
    writer's lock, then raises JournalLocked. A reader takes no lock.
    """
    if durability not in DURABILITY:
        raise ValueError(f"durability must be one of {sorted(DURABILITY)}, not {durability!r}")
    if location == ":memory:":
        return MemoryJournal()
    if is_postgres(location):
        try:
            from .journal_pg import PgJournal
        except ImportError as exc:
            raise JournalError(f"{display_location(location)}: a PostgreSQL journal needs psycopg 3: "
                               f"pip install 'dvp-settlement[postgres]' ({exc})") from None
        return PgJournal(location, durability, create=create, readonly=readonly, lock_timeout=lock_timeout)
    return SqliteJournal(location, durability, create=create, readonly=readonly, lock_timeout=lock_timeout)


def journal_exists(location: str) -> bool:
    """Tell whether a journal with entries is at `location` (never for `:memory:`)."""
    if location == ":memory:":
        return False
    if not is_postgres(location):
        return os.path.exists(location)
    try:
        journal = open_journal(location, readonly=True)
    except (FileNotFoundError, JournalError):
        return False
    try:
        return not journal.is_empty()
    finally:
        journal.close()


def remove_journal(location: str) -> None:
    """Delete the journal at `location` (to start over), refusing while a writer holds it."""
    if location == ":memory:":
        return
    if is_postgres(location):
        try:
            journal = open_journal(location)
        except FileNotFoundError:
            return
        except JournalError as exc:
            if "not a ledger journal" in str(exc):
                return
            raise
        try:
            journal.drop()  # type: ignore[attr-defined]
        finally:
            journal.close()
        return
    if os.path.exists(location) and not _is_sqlite_journal(location):
        raise JournalError(f"{location}: not a ledger journal: not removed")
    lock = FileLock(location)
    try:
        for suffix in ("-wal", "-shm", ""):  # the log first: a kill part way leaves no log for a new file
            with contextlib.suppress(FileNotFoundError):
                os.remove(location + suffix)
    finally:
        lock.release()


def _is_sqlite_journal(path: str) -> bool:
    """Tell whether `path` is a SQLite file holding a journal table (or an empty file a kill left)."""
    if not os.path.isfile(path):
        return False  # a FIFO would block the read below for a writer that never comes
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    if not head:
        return True  # a journal killed before its first write
    if head != b"SQLite format 3\x00":
        return False
    try:
        db = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True)
        try:
            return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'journal'").fetchone() \
                is not None
        finally:
            db.close()
    except sqlite3.Error:
        return False


# Names a sibling SQLite journal may not take: they would collide with SQLite's own files or the lock.
_SQLITE_RESERVED = ("wal", "shm", "journal")


def chain_location(location: str, chain: str) -> str:
    """Return the journal location of the ledger of `chain` beside the ledger at `location`.

    Each chain is its own ledger with its own journal and writer:
    - SQLite: the file `PATH-<chain>` beside `PATH`;
    - PostgreSQL: the database `<dbname>-<chain>` on the same server (same
      user, host, port and parameters), which `Ledger.create` creates if the
      user may. Place chains on other hosts by giving each its own URL.
    - `:memory:` stays `:memory:` (a new in-memory journal).
    Raises ValueError for a chain name that cannot name a journal there.
    """
    from .identity import valid_id

    if not valid_id(chain):
        raise ValueError(f"chain {chain!r} is not a valid chain id")
    if location == ":memory:":
        return location
    if is_postgres(location):
        return _pg_chain_location(location, chain)
    if "/" in chain or chain in _SQLITE_RESERVED or chain.endswith(LOCK_SUFFIX):
        raise ValueError(f"chain {chain!r} cannot name a SQLite journal beside {location} "
                         f"(no '/', not {', '.join(_SQLITE_RESERVED)}, no '{LOCK_SUFFIX}' ending)")
    return f"{location}-{chain}"


PG_NAME_MAX = 63  # PostgreSQL truncates longer identifiers: refuse them instead


def _pg_chain_location(url: str, chain: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    named = [value for key, value in query if key == "dbname"]
    dbname = named[-1] if named else urllib.parse.unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ValueError(f"{display_location(url)}: name the database in the URL to place sibling chains")
    sibling = f"{dbname}-{chain}"
    if len(sibling.encode()) > PG_NAME_MAX:
        raise ValueError(f"chain {chain!r}: database name {sibling!r} exceeds PostgreSQL's {PG_NAME_MAX} bytes")
    if named:
        query = [(key, sibling if key == "dbname" else value) for key, value in query]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(sibling, safe="")))


def display_location(location: str) -> str:
    """The location as messages show it: a URL loses its password."""
    if not is_postgres(location):
        return location
    parts = urllib.parse.urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.rsplit("@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc[0].split(":", 1)[0] + ":***@" + netloc[1]))


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

    def append_many(self, rows: Iterable[Row]) -> None:
        rows = list(rows)
        assert [r[0] for r in rows] == list(range(len(self._rows), len(self._rows) + len(rows))), \
            "journal sequence out of order"
        for seq, digest, body, snapshot in rows:
            self.append(seq, digest, body, snapshot)

    def rows(self, start: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        for seq in range(start, len(self._rows)):
            digest, body = self._rows[seq]
            yield seq, digest, body

    def body(self, seq: int) -> bytes:
        if not 0 <= seq < len(self._rows):
            raise JournalError(f"{self.path}: entry {seq} is missing")
        return self._rows[seq][1]

    def snapshots(self) -> list[int]:
        return sorted(self._snapshots)

    def snapshot(self, seq: int) -> bytes | None:
        return self._snapshots.get(seq)

    def put_snapshot(self, seq: int, body: bytes) -> None:
        self._snapshots[seq] = body

    def is_empty(self) -> bool:
        return not self._rows

    def reading(self) -> ContextManager[None]:
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


# ------------------------------------------------------------- the writer's lock on a file

_held_lock = threading.Lock()
_held: dict[tuple[int, int], str] = {}  # (st_dev, st_ino) of lock files this process holds -> journal


def lock_path(journal_path: str) -> str:
    """The writer's lock file of a SQLite journal: `PATH.lock` beside the file a symlink points to."""
    return os.path.realpath(journal_path) + LOCK_SUFFIX


class FileLock:
    """An exclusive POSIX lock on `PATH.lock`, holding the writer's pid.

    POSIX (fcntl) locks go with the process: a killed writer's lock is gone
    at once, and a forked child (the signature pool) does not inherit it.
    Because such a lock is per process, and closing any descriptor of the
    file drops it, a second writer in the same process is refused from a
    table of held locks before the file is even opened.
    """

    def __init__(self, journal_path: str, timeout: float = 0.0):
        self.path = lock_path(journal_path)
        deadline = time.monotonic() + timeout
        while True:
            self._fd, self._key = self._try()
            if self._fd is not None:
                break
            if time.monotonic() >= deadline:
                raise JournalLocked(f"{journal_path}: another writer holds this journal ({self._holder()}); "
                                    "open it read-only, or stop that writer first")
            time.sleep(0.05)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(self._fd)

    def _try(self) -> tuple[int | None, tuple[int, int]]:
        with _held_lock:
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(self.path)
                if (st.st_dev, st.st_ino) in _held:
                    self._other = f"pid {os.getpid()}, this process"
                    return None, (st.st_dev, st.st_ino)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise JournalError(f"{self.path}: cannot take the writer's lock: {exc.strerror}") from None
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)  # this process holds no lock on the file: closing drops nothing
                self._other = f"pid {holder}" if holder.isdigit() else "pid unknown"
                return None, key
            _held[key] = self.path
            return fd, key

    def _holder(self) -> str:
        return self._other

    def release(self) -> None:
        if self._fd is None:
            return
        with _held_lock:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # drops the lock
            _held.pop(self._key, None)
            self._fd = None


def writer_pid(journal_path: str) -> int | None:
    """The pid of the process holding a SQLite journal's writer lock, or None if no writer holds it."""
    path = lock_path(journal_path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    with _held_lock:
        if (st.st_dev, st.st_ino) in _held:
            return os.getpid()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else -1
        return None
    finally:
        os.close(fd)  # releases the shared lock just taken


# ----------------------------------------------------------------------------- SQLite


class SqliteJournal:
    """Store entries in one SQLite file in WAL mode."""

    def __init__(self, path: str, durability: str = "full", create: bool = False, readonly: bool = False,
                 lock_timeout: float = 0.0):
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {sorted(DURABILITY)}, not {durability!r}")
        if os.path.isdir(path):
            raise JournalError(f"{path}: not a ledger journal (it is a directory)")
        if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
            raise JournalError(f"{path}: not a ledger journal (not a regular file: a FIFO, socket or device)")
        if os.path.exists(path) and os.stat(path).st_nlink > 1:  # SQLite's -wal, -shm and our lock follow the name
            raise JournalError(f"{path}: the journal file has another hard link ({os.stat(path).st_nlink} names): "
                               "through each name SQLite keeps its own log, so they would be two journals; "
                               "remove the other names (a symlink is fine)")
        if (readonly or not create) and not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such ledger journal")
        self.path = path
        self._lock = None if readonly else FileLock(path, lock_timeout)  # before anything else
        try:
            self._db = self._connect_readonly(path) if readonly else self._connect(path, durability)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise

    @staticmethod
    def _connect(path: str, durability: str) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise JournalError(f"{path}: cannot open it: {exc}") from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={DURABILITY[durability]}")
            for statement in _SCHEMA:
                db.execute(statement)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise JournalError(f"{path}: not a ledger journal ({exc})") from exc
        return db

    @staticmethod
    def _connect_readonly(path: str) -> sqlite3.Connection:
        """Open read-only (`mode=ro`); where SQLite cannot make its -shm file, as `immutable`.

        A WAL journal read with `mode=ro` needs its -shm file, or a directory
        where it can create one. On a read-only mount with no -wal file
        left (the writer closed cleanly) the database file is all there is,
        and `immutable=1` reads it without any.
        """
        uri = "file:" + urllib.parse.quote(os.path.abspath(path))
        tried = []
        for mode in ("mode=ro", "immutable=1"):
            if mode == "immutable=1" and os.path.exists(path + "-wal") and os.path.getsize(path + "-wal") > 0:
                break  # entries may be in the -wal file: immutable would hide them
            db = None
            try:
                db = sqlite3.connect(f"{uri}?{mode}", uri=True, isolation_level=None, check_same_thread=False)
                db.execute("SELECT seq, hash, body FROM journal LIMIT 1")
                db.execute("SELECT seq, hash, body FROM snapshots LIMIT 1")
                return db
            except sqlite3.OperationalError as exc:
                if db is not None:
                    db.close()
                if "no such table" in str(exc):
                    raise JournalError(f"{path}: not a ledger journal ({exc})") from None
                tried.append(f"{mode}: {exc}")
            except sqlite3.DatabaseError as exc:
                if db is not None:
                    db.close()
                raise JournalError(f"{path}: not a ledger journal ({exc})") from None
        raise JournalError(f"{path}: cannot open it read-only ({'; '.join(tried)})"
                           + (": its -wal file holds entries and SQLite cannot create the -shm file beside it"
                              if os.path.exists(path + "-wal") else ""))

    def append(self, seq: int, digest: bytes, body: bytes, snapshot: bytes | None = None) -> None:
        self.append_many(((seq, digest, body, snapshot),))

    def append_many(self, rows: Iterable[Row]) -> None:
        db = self._db
        committing = False
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                for seq, digest, body, snapshot in rows:
                    self._insert(seq, digest, body, snapshot)
                committing = True
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                    committing = False  # still open, so rolled back: nothing was written
                raise
        except sqlite3.Error as exc:
            if committing:  # COMMIT itself failed: the entries may have reached the disk
                raise JournalError(f"{self.path}: the commit failed and may or may not have reached the disk "
                                   f"({exc}); reopen to see") from exc
            raise JournalError(f"{self.path}: nothing was written: {exc}") from exc

    def _insert(self, seq: int, digest: bytes, body: bytes, snapshot: bytes | None) -> None:
        """Write one entry (and its snapshot) inside the caller's transaction."""
        self._db.execute("INSERT INTO journal (seq, hash, body) VALUES (?, ?, ?)", (seq, digest, body))
        if snapshot is not None:
            self._put_snapshot(seq, snapshot)

    def _put_snapshot(self, seq: int, body: bytes) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO snapshots (seq, hash, body) VALUES (?, ?, ?)",
            (seq, hashlib.sha256(body).digest(), body),
        )

    def put_snapshot(self, seq: int, body: bytes) -> None:
        try:
            self._put_snapshot(seq, body)
        except sqlite3.Error as exc:
            raise JournalError(f"{self.path}: snapshot {seq} was not stored: {exc}") from exc

    def rows(self, start: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        try:
            yield from self._db.execute("SELECT seq, hash, body FROM journal WHERE seq >= ? ORDER BY seq", (start,))
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: the database is damaged: {exc}") from None

    def body(self, seq: int) -> bytes:
        row = self._read("SELECT body FROM journal WHERE seq = ?", (seq,))
        if row is None:
            raise JournalError(f"{self.path}: entry {seq} is missing")
        return row[0]

    def _read(self, sql: str, params: tuple = ()) -> tuple | None:
        try:
            return self._db.execute(sql, params).fetchone()
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: the database is damaged: {exc}") from None

    def snapshots(self) -> list[int]:
        try:
            return [row[0] for row in self._db.execute("SELECT seq FROM snapshots ORDER BY seq")]
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{self.path}: the database is damaged: {exc}") from None

    def snapshot(self, seq: int) -> bytes | None:
        row = self._read("SELECT hash, body FROM snapshots WHERE seq = ?", (seq,))
        if row is None:
            return None
        digest, body = row
        if not isinstance(body, bytes) or hashlib.sha256(body).digest() != digest:
            return None
        return body

    def is_empty(self) -> bool:
        return self._read("SELECT 1 FROM journal LIMIT 1") is None

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """One read transaction: what a writer commits meanwhile stays out of view."""
        db = self._db
        if db.in_transaction:
            yield
            return
        db.execute("BEGIN")
        try:
            self._read("SELECT 1 FROM journal LIMIT 1")  # the view starts here
            yield
        finally:
            if db.in_transaction:
                db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
