"""A throwaway PostgreSQL server for tests and benchmarks: initdb and pg_ctl on a temporary directory.

`TemporaryServer.find()` returns a server ready to start, or None when no
PostgreSQL binaries are installed (`initdb` and `pg_ctl` on PATH, or Debian's
/usr/lib/postgresql/*/bin, or the directory in DVP_PG_BINDIR). `start()`
runs initdb and pg_ctl on a new temporary directory, listening on 127.0.0.1
only, on a free port, with trust authentication for the user `dvp` and the
server's default durability (fsync and synchronous_commit on). PostgreSQL
refuses to run as root: under root the server runs as the `postgres` user
(or `dvp-postgres`, created if missing). `url(dbname)` gives a connection
URL; `stop()` stops the server and removes its directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

SUPERUSER = "dvp"
RUN_AS_CANDIDATES = ("postgres", "dvp-postgres")


def find_bindir() -> str | None:
    """The directory holding initdb and pg_ctl, or None."""
    explicit = os.environ.get("DVP_PG_BINDIR")
    candidates = [explicit] if explicit else []
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        candidates.append(os.path.dirname(os.path.realpath(found)))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0, reverse=True)
    for bindir in candidates:
        if bindir and all(os.access(os.path.join(bindir, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _unprivileged_user() -> pwd.struct_passwd:
    for name in RUN_AS_CANDIDATES:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    RUN_AS_CANDIDATES[-1]], check=True, capture_output=True)
    return pwd.getpwnam(RUN_AS_CANDIDATES[-1])


class ServerError(RuntimeError):
    """The temporary server could not be set up or started."""


class TemporaryServer:
    """One PostgreSQL cluster in a temporary directory, on 127.0.0.1 and a free port."""

    def __init__(self, bindir: str):
        self.bindir = bindir
        self.port: int | None = None
        self.dir: str | None = None
        self._as: list[str] = []

    @classmethod
    def find(cls) -> TemporaryServer | None:
        bindir = find_bindir()
        return cls(bindir) if bindir else None

    def _run(self, tool: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        command = [*self._as, os.path.join(self.bindir, tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.dir,
                              env={**os.environ, "LC_ALL": "C"})
        if done.returncode != 0:
            raise ServerError(f"{tool} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-1500:]}")
        return done

    def start(self, settings: dict[str, str] | None = None) -> TemporaryServer:
        self.dir = tempfile.mkdtemp(prefix="dvp-pg-")
        if os.geteuid() == 0:
            user = _unprivileged_user()
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]
        data = os.path.join(self.dir, "data")
        self._run("initdb", "-D", data, "-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync")
        options = {"listen_addresses": "127.0.0.1", "unix_socket_directories": self.dir, "max_connections": "200",
                   **(settings or {})}
        last = None
        for _attempt in range(5):  # another process may take the free port first
            port = _free_port()
            flags = " ".join(f"-c {k}={v}" for k, v in {**options, "port": str(port)}.items())
            try:
                self._run("pg_ctl", "-D", data, "-l", os.path.join(self.dir, "server.log"), "-w", "-t", "60",
                          "-o", flags, "start")
                self.port = port
                return self
            except ServerError as exc:
                last = exc
        self.stop()
        raise ServerError(f"the temporary server did not start: {last}; see {self.dir}/server.log")

    def url(self, dbname: str = "postgres") -> str:
        assert self.port is not None, "the server is not started"
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        if self.dir is None:
            return
        if self.port is not None:
            with contextlib.suppress(ServerError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", os.path.join(self.dir, "data"), "-m", "fast", "-w", "stop", timeout=60)
            self.port = None
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> TemporaryServer:
        return self.start() if self.port is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
