"""A journal on PostgreSQL through psycopg 3: the same entries, hash chain and snapshots as SQLite.

Takes a `postgresql://user@host:port/dbname` URL (libpq's form; any libpq
parameter may follow `?`); gives a `Journal` (see `engine.journal`). One
database holds one ledger, in the tables `dvp.journal` and `dvp.snapshots`
(seq bigint, hash bytea, body bytea), exactly the columns of the SQLite file.

- Single writer: the writer's session takes the advisory lock
  (`LOCK_KEY`) before it reads or writes anything and keeps it until it
  closes. A second writer is refused with `JournalLocked`, naming the
  holder (the writer sets `application_name` to its pid and host). If the
  writer dies, its session ends and the lock goes with it: the next writer,
  on any host, opens the journal, checks the chain and continues.
- Group commit: one transaction per entry (one batch of envelopes), with
  `synchronous_commit=on` for durability "full"; BEGIN, the inserts and
  COMMIT go out pipelined, in one round trip. `append_many` writes many
  entries in one transaction with COPY.
- Readers (`readonly=True`) take no lock; their session is read-only and
  `reading()` holds one REPEATABLE READ snapshot, so a reader sees a
  committed prefix of the journal and nothing of a transaction in flight.
- `Ledger.create` creates a missing database (the user needs CREATEDB).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterable, Iterator

import psycopg
from psycopg import errors, sql

from .journal import JournalError, JournalLocked, Row, display_location

SCHEMA = "dvp"
LOCK_KEY = (0x64767020, 1)  # ("dvp ", journal writer): pg_try_advisory_lock(int4, int4)
SYNCHRONOUS_COMMIT = {"full": "on", "normal": "off", "off": "off"}
PAGE_ROWS_MIN, PAGE_ROWS_MAX, PAGE_BYTES = 64, 16_384, 8 << 20
CONNECT_TIMEOUT = 10

_DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"CREATE TABLE IF NOT EXISTS {SCHEMA}.journal (seq bigint PRIMARY KEY, hash bytea NOT NULL, body bytea NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {SCHEMA}.snapshots (seq bigint PRIMARY KEY, hash bytea NOT NULL, body bytea NOT NULL)",
    # bodies are msgpack with signatures and hashes: compressing them costs the writer more than it saves
    f"ALTER TABLE {SCHEMA}.journal ALTER COLUMN body SET STORAGE EXTERNAL",
    f"ALTER TABLE {SCHEMA}.snapshots ALTER COLUMN body SET STORAGE EXTERNAL",
)

# Sockets of open connections: a forked child (the signature pool) closes its copies, so that a
# killed writer's session ends with the writer, not with the last of its children.
_live: set[int] = set()
_live_lock = threading.Lock()


def _forget_in_child() -> None:
    for fd in list(_live):
        with contextlib.suppress(OSError):
            os.close(fd)
    _live.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0].strip()


def connect(url: str, *, autocommit: bool = True, **kwargs) -> psycopg.Connection:
    """Connect with the project's defaults (a connect timeout unless the URL sets one)."""
    if "connect_timeout" not in url:
        kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT)
    return psycopg.connect(url, autocommit=autocommit, **kwargs)


def create_database(url: str) -> None:
    """Create the database the URL names, through the server's `postgres` database."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    name = info.get("dbname")
    if not name:
        raise JournalError(f"{display_location(url)}: the URL names no database")
    with connect(url, dbname="postgres") as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except errors.DuplicateDatabase:
            pass  # created meanwhile by someone else: fine


def database_exists(url: str) -> bool | None:
    """Whether the database the URL names exists, asked of the server's `postgres` database (None: unknown)."""
    name = psycopg.conninfo.conninfo_to_dict(url).get("dbname")
    try:
        with connect(url, dbname="postgres") as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
    except psycopg.Error:
        return None


class PgJournal:
    """Store entries in a PostgreSQL database (tables dvp.journal and dvp.snapshots)."""

    def __init__(self, url: str, durability: str = "full", create: bool = False, readonly: bool = False,
                 lock_timeout: float = 0.0):
        self.url = url
        self.path = display_location(url)
        self.readonly = readonly
        self._conn = self._connect(create and not readonly, readonly)
        try:
            if not readonly:
                self._lock(lock_timeout)  # before anything else
                conn = self._conn
                conn.execute(sql.SQL("SET synchronous_commit = {}").format(
                    sql.Literal(SYNCHRONOUS_COMMIT[durability])))
                if create:
                    with conn.transaction():
                        for statement in _DDL:
                            conn.execute(statement)
            self._check_tables()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ connecting

    def _connect(self, create: bool, readonly: bool) -> psycopg.Connection:
        name = f"dvp {'reader' if readonly else 'writer'} pid {os.getpid()} on {socket.gethostname()}"[:63]
        options = {"application_name": name}
        if readonly:
            options["options"] = "-c default_transaction_read_only=on"
        try:
            conn = connect(self.url, **options)
        except psycopg.Error as exc:
            if database_exists(self.url) is not False:
                raise JournalError(f"{self.path}: cannot connect: {_first_line(exc)}") from None
            if not create:
                raise FileNotFoundError(f"{self.path}: no such ledger journal (the database does not exist)") \
                    from None
            try:
                create_database(self.url)
                conn = connect(self.url, **options)
            except psycopg.Error as exc:
                raise JournalError(f"{self.path}: cannot create the database: {_first_line(exc)}") from None
        conn.prepare_threshold = 0
        with _live_lock:
            _live.add(conn.fileno())
        return conn

    def _lock(self, timeout: float) -> None:
        conn = self._conn
        got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEY).fetchone()[0]
        if not got and timeout > 0:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(timeout * 1000)}ms")))
            try:
                conn.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_KEY)
                got = True
            except errors.LockNotAvailable:
                got = False
            finally:
                conn.execute("SET lock_timeout = 0")
        if not got:
            raise JournalLocked(f"{self.path}: another writer holds this journal ({self.holder()}); "
                                "open it read-only, or stop that writer first")

    def holder(self) -> str:
        """Describe the session holding the writer's lock, as far as this user may see it."""
        row = self._conn.execute(
            "SELECT a.application_name, a.client_addr::text, l.pid FROM pg_locks l "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 2 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            LOCK_KEY,
        ).fetchone()
        if row is None:
            return "holder unknown"
        name, addr, backend = row
        who = name.removeprefix("dvp writer ") if name and name.startswith("dvp writer ") else "pid unknown"
        return f"{who}{f' from {addr}' if addr else ''}, server backend {backend}"

    def _check_tables(self) -> None:
        missing = [t for t in ("journal", "snapshots")
                   if self._conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.{t}",)).fetchone()[0] is None]
        if missing:
            raise JournalError(f"{self.path}: not a ledger journal (no table {SCHEMA}.{missing[0]})")

    # --------------------------------------------------------------- writing

    def append(self, seq: int, digest: bytes, body: bytes, snapshot: bytes | None = None) -> None:
        conn = self._conn
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise JournalError(f"{self.path}: append inside another transaction would not commit on its own")
        try:
            with conn.pipeline(), conn.transaction():
                self._insert(seq, digest, body, snapshot)
        except psycopg.Error as exc:
            raise JournalError(f"{self.path}: entry {seq} was not committed: {_first_line(exc)}") from exc

    def _insert(self, seq: int, digest: bytes, body: bytes, snapshot: bytes | None) -> None:
        """Write one entry (and its snapshot) inside the caller's transaction."""
        conn = self._conn
        conn.execute(f"INSERT INTO {SCHEMA}.journal (seq, hash, body) VALUES (%s, %b, %b)", (seq, digest, body))
        if snapshot is not None:
            self._put_snapshot(seq, snapshot)

    def _put_snapshot(self, seq: int, body: bytes) -> None:
        self._conn.execute(
            f"INSERT INTO {SCHEMA}.snapshots (seq, hash, body) VALUES (%s, %b, %b) "
            "ON CONFLICT (seq) DO UPDATE SET hash = EXCLUDED.hash, body = EXCLUDED.body",
            (seq, hashlib.sha256(body).digest(), body),
        )

    def put_snapshot(self, seq: int, body: bytes) -> None:
        try:
            with self._conn.transaction():
                self._put_snapshot(seq, body)
        except psycopg.Error as exc:
            raise JournalError(f"{self.path}: snapshot {seq} was not stored: {_first_line(exc)}") from exc

    def append_many(self, rows: Iterable[Row]) -> None:
        """Copy entries in with COPY, all in one transaction; a snapshot interrupts the COPY for its insert."""
        try:
            self._copy_in(rows)
        except psycopg.Error as exc:
            raise JournalError(f"{self.path}: nothing was written: {_first_line(exc)}") from exc

    def _copy_in(self, rows: Iterable[Row]) -> None:
        conn = self._conn
        with conn.transaction(), conn.cursor() as cur:
            pending: list[tuple[int, bytes]] = []
            it = iter(rows)
            done = False
            while not done:
                done = True
                with cur.copy(f"COPY {SCHEMA}.journal (seq, hash, body) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["int8", "bytea", "bytea"])
                    for seq, digest, body, snapshot in it:
                        copy.write_row((seq, digest, body))
                        if snapshot is not None:
                            pending.append((seq, snapshot))
                            done = False
                            break
                for seq, snapshot in pending:
                    self._put_snapshot(seq, snapshot)
                pending.clear()

    # --------------------------------------------------------------- reading

    def rows(self, start: int = 0) -> Iterator[tuple[int, bytes, bytes]]:
        """Page through the entries by sequence number; each page is one statement.

        Pages grow while entries are small and shrink when they are large, so
        memory stays near PAGE_BYTES whatever the batch size.
        """
        size = PAGE_ROWS_MIN
        seq = start
        query = f"SELECT seq, hash, body FROM {SCHEMA}.journal WHERE seq >= %s AND seq < %s ORDER BY seq"
        tail = f"SELECT max(seq) FROM {SCHEMA}.journal"
        last = self._fetch(tail)[0][0]
        while last is not None and seq <= last:
            page = self._fetch(query, (seq, seq + size))
            volume = 0
            for row in page:
                volume += len(row[2])
                yield row
            seq += size
            if volume < PAGE_BYTES // 4 and size < PAGE_ROWS_MAX:
                size *= 2
            elif volume > PAGE_BYTES and size > PAGE_ROWS_MIN:
                size //= 2
            if seq > last:
                last = self._fetch(tail)[0][0]  # a live writer may have appended meanwhile

    def _fetch(self, query: str, params: tuple = ()) -> list[tuple]:
        try:
            with self._conn.cursor(binary=True) as cur:
                return cur.execute(query, params).fetchall()
        except psycopg.Error as exc:
            raise JournalError(f"{self.path}: cannot read the journal: {_first_line(exc)}") from None

    def body(self, seq: int) -> bytes:
        rows = self._fetch(f"SELECT body FROM {SCHEMA}.journal WHERE seq = %s", (seq,))
        if not rows:
            raise JournalError(f"{self.path}: entry {seq} is missing")
        return rows[0][0]

    def snapshots(self) -> list[int]:
        return [row[0] for row in self._fetch(f"SELECT seq FROM {SCHEMA}.snapshots ORDER BY seq")]

    def snapshot(self, seq: int) -> bytes | None:
        rows = self._fetch(f"SELECT hash, body FROM {SCHEMA}.snapshots WHERE seq = %s", (seq,))
        if not rows:
            return None
        digest, body = rows[0]
        return body if hashlib.sha256(body).digest() == digest else None

    def is_empty(self) -> bool:
        return not self._fetch(f"SELECT 1 FROM {SCHEMA}.journal LIMIT 1")

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """One REPEATABLE READ, READ ONLY transaction: a single snapshot of what was committed."""
        conn = self._conn
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            yield
            return
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("COMMIT")

    def drop(self) -> None:
        """Remove the journal's tables (the writer's lock held): the database is left empty for a new one."""
        if self.readonly:
            raise JournalError(f"{self.path}: a reader cannot remove a journal")
        try:
            with self._conn.transaction():
                self._conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        except psycopg.Error as exc:
            raise JournalError(f"{self.path}: cannot remove the journal: {_first_line(exc)}") from None

    def close(self) -> None:
        conn = getattr(self, "_conn", None)
        if conn is None:
            return
        with _live_lock:
            with contextlib.suppress(Exception):
                _live.discard(conn.fileno())
        conn.close()  # ends the session: the writer's lock goes with it
        self._conn = None
