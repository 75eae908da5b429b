"""Journal backends for the tests: SQLite files and databases on a real PostgreSQL server.

The `backend` fixture (conftest.py) is parametrised over both; a test asks it
for fresh journal locations and for a raw connection to tamper with what is
stored, through one small interface:

- `location(name)`: a new journal location (a path, or a URL naming a
  database that does not exist yet: `Ledger.create` creates it);
- `tamper(location)`: a connection whose `execute(sql, params)` takes SQLite's
  SQL (`?` placeholders, tables `journal` and `snapshots`) on either backend,
  committed when the block ends;
- `settle(location)`: wait until no writer's session holds the journal (a
  killed writer's PostgreSQL session ends a moment after the process).

Without a server the PostgreSQL tests skip with one line saying how to
enable them (`PG_HOWTO`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator

PG_ENV = "DVP_TEST_POSTGRES"
PG_HOWTO = (f"PostgreSQL tests skipped: install PostgreSQL (apt-get install postgresql) and psycopg "
            f"(pip install -e '.[postgres]'), or set {PG_ENV}=postgresql://USER@HOST:PORT/postgres "
            f"(a user who may create databases); {PG_ENV}=off skips them")


class SqliteBackend:
    name = "sqlite"

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self._n = itertools.count()

    def location(self, name: str = "ledger") -> str:
        return str(self.tmp_path / f"{name}-{next(self._n)}.db")

    @contextlib.contextmanager
    def tamper(self, location: str) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(location)
        try:
            with conn:
                yield conn
        finally:
            conn.close()

    def settle(self, location: str, timeout: float = 30) -> None:
        pass  # a POSIX lock dies with its process


class _PgTamper:
    """A psycopg connection that takes SQLite's SQL: `?` placeholders, tables in the search path."""

    def __init__(self, conn):
        self.conn = conn

    def execute(self, query: str, params: tuple = ()):
        return self.conn.execute(query.replace("?", "%s"), params)


class PgServer:
    """A running server (temporary, or the one DVP_TEST_POSTGRES names) that hands out fresh databases."""

    def __init__(self, admin_url: str, temporary=None):
        self.admin_url = admin_url
        self.temporary = temporary
        self.prefix = f"t{uuid.uuid4().hex[:6]}"
        self._n = itertools.count()
        self.created: list[str] = []

    def url(self, dbname: str) -> str:
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{dbname}"

    def new_url(self, name: str = "ledger") -> str:
        dbname = f"{self.prefix}_{next(self._n)}_{name}"[:50]
        self.created.append(dbname)
        return self.url(dbname)

    def create_database(self, url: str) -> None:
        from engine.journal_pg import create_database

        create_database(url)

    def cleanup(self) -> None:
        if self.temporary is not None:
            self.temporary.stop()
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (self.prefix + "%",))
            for (dbname,) in rows.fetchall():
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


class PgBackend:
    name = "postgres"

    def __init__(self, server: PgServer):
        self.server = server

    def location(self, name: str = "ledger") -> str:
        return self.server.new_url(name)

    @contextlib.contextmanager
    def tamper(self, location: str) -> Iterator[_PgTamper]:
        import psycopg

        with psycopg.connect(location, options="-c search_path=dvp") as conn:  # commits when the block ends
            yield _PgTamper(conn)

    def settle(self, location: str, timeout: float = 30) -> None:
        import psycopg

        from engine.journal_pg import LOCK_KEY

        deadline = time.monotonic() + timeout
        with psycopg.connect(location, autocommit=True) as conn:
            while time.monotonic() < deadline:
                held = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                                    "AND objid = %s AND objsubid = 2 AND granted", LOCK_KEY).fetchone()[0]
                if not held:
                    return
                time.sleep(0.02)
        raise TimeoutError(f"{location}: a writer's session still holds the journal after {timeout} s")


def start_server():
    """Return a PgServer, or a string saying why there is none."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return PG_HOWTO
    if os.environ.get(PG_ENV) == "off":
        return PG_HOWTO
    if os.environ.get(PG_ENV):
        return PgServer(os.environ[PG_ENV])
    from benchmarks.pgserver import ServerError, TemporaryServer

    temporary = TemporaryServer.find()
    if temporary is None:
        return PG_HOWTO
    try:
        temporary.start()
    except (ServerError, OSError) as exc:
        return f"{PG_HOWTO} (the temporary server did not start: {exc})"
    return PgServer(temporary.url("postgres"), temporary)
