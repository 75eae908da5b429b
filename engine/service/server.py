"""`dvp serve`: open a ledger, start its writer, and serve the API with uvicorn.

Takes a journal made by `Ledger.create` and an address; gives a running
server until SIGINT or SIGTERM (uvicorn's graceful shutdown: open requests
finish, then the writer commits what it holds and closes the ledger).
Connections are guarded (`guarded_protocol`): request heads are bounded in
size and in time, and one client address may hold only so many. Mutual TLS through uvicorn's ssl options: `--tls-cert`/`--tls-key` serve
HTTPS, and `--client-ca` requires every client to present a certificate
signed by that CA, refused in the TLS handshake otherwise.

The listening socket is bound here (SO_REUSEADDR, so a restarted server can
take the same port at once) and the actual address printed as one line,
`dvp serve: listening on URL ...`, so `--listen 127.0.0.1:0` picks a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter

from .wire import Limits

log = logging.getLogger("dvp.serve")

LISTEN_DEFAULT = "127.0.0.1:8740"
CONNECTIONS_MAX = 2048  # uvicorn answers 503 past this many concurrent connections
CONNECTIONS_PER_PEER_MAX_DEFAULT = 256  # one client address holding more gets its extra connections closed
REQUEST_HEAD_SECONDS_MAX = 10  # a connection must send a whole request head this soon after opening or an answer
KEEP_ALIVE_SECONDS = REQUEST_HEAD_SECONDS_MAX


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, such as {LISTEN_DEFAULT}")
    return host.strip("[]"), int(port)


def guarded_protocol(connections_per_peer_max: int, head_seconds: float = REQUEST_HEAD_SECONDS_MAX) -> type:
    """uvicorn's h11 protocol (request heads bounded to h11's 16 KiB, where httptools buffers any size), which
    also closes a connection that has not sent a whole request head within `head_seconds` of opening or of
    its last answer (slow or silent clients), and the connections a client address opens past
    `connections_per_peer_max` (0: no bound), so one client cannot hold every connection the server takes."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    peers: Counter = Counter()
    warned: set[str] = set()

    class GuardedH11Protocol(H11Protocol):
        _peer: str | None = None
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._peer = self.client[0] if self.client else ""
            peers[self._peer] += 1
            if connections_per_peer_max and peers[self._peer] > connections_per_peer_max:
                if self._peer not in warned:  # once while the address stays at its bound: no log flood
                    warned.add(self._peer)
                    log.warning("closing connections from %s past connections_per_peer_max=%d",
                                self._peer, connections_per_peer_max)
                self.transport.close()
                return
            self._arm()

        def connection_lost(self, exc) -> None:
            if self._peer is not None:
                peers[self._peer] -= 1
                if peers[self._peer] < connections_per_peer_max:
                    warned.discard(self._peer)
                if peers[self._peer] <= 0:
                    del peers[self._peer]
                self._peer = None
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(head_seconds, self._head_overdue)

        def _head_overdue(self) -> None:
            answering = self.cycle is not None and not self.cycle.response_complete
            if not answering and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def serve(db: str, listen: str = LISTEN_DEFAULT, *, tls_cert: str | None = None, tls_key: str | None = None,
          client_ca: str | None = None, protocols: list[str] | None = None, clock: str = "wall",
          limits: Limits | None = None, verify_workers: int = 0, snapshot_every: int | None = None,
          connections_per_peer_max: int = CONNECTIONS_PER_PEER_MAX_DEFAULT, log_level: str = "warning") -> int:
    """Serve the ledger at `db` until stopped; return the exit status."""
    import uvicorn

    from ..protocol import discover
    from .app import build_app
    from .metrics import Metrics
    from .writer import Writer

    from ..machine import BATCH_COMMANDS_MAX

    limits = limits or Limits()
    if not 1 <= limits.group_commands_max <= BATCH_COMMANDS_MAX:
        raise ValueError(f"--group-commands-max {limits.group_commands_max}: must be 1 to {BATCH_COMMANDS_MAX} "
                         "(the engine's batch bound)")
    if limits.group_wait_seconds < 0 or limits.body_bytes_max < 1 or limits.streams_max < 1:
        raise ValueError("--group-wait-ms must be >= 0, --body-bytes-max and --streams-max >= 1")
    if limits.reads_per_second <= 0 or limits.commands_per_second <= 0:
        raise ValueError("--reads-per-second and --commands-per-second must be positive")
    if connections_per_peer_max < 0:
        raise ValueError("--connections-per-peer-max must be >= 0 (0: no bound)")
    host, port = parse_listen(listen)
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    if client_ca and not tls_cert:
        raise ValueError("--client-ca needs --tls-cert and --tls-key (mutual TLS runs over TLS)")
    installed = discover()
    chosen = installed
    if protocols is not None:
        names = {p.name for p in installed}
        unknown = [n for n in protocols if n not in names]
        if unknown:
            raise ValueError(f"--protocols: not installed: {', '.join(unknown)} (installed: {', '.join(sorted(names))})")
        chosen = [p for p in installed if p.name in protocols]
    wall = (lambda: int(time.time())) if clock == "wall" else None
    from .writer import SNAPSHOT_ENTRIES_DEFAULT

    writer = Writer(db, limits=limits, metrics=Metrics(), protocols=chosen, clock=wall, verify_workers=verify_workers,
                    snapshot_every=SNAPSHOT_ENTRIES_DEFAULT if snapshot_every is None else snapshot_every)
    writer.start()
    try:
        app = build_app(writer, limits)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        config = uvicorn.Config(
            app, http=guarded_protocol(connections_per_peer_max), log_level=log_level, access_log=False,
            limit_concurrency=CONNECTIONS_MAX,
            timeout_keep_alive=KEEP_ALIVE_SECONDS, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
            ssl_ca_certs=client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE,
        )
        for path in (tls_cert, tls_key, client_ca):
            if path:
                with open(path, "rb"):  # name the missing file, not just uvicorn's errno
                    pass
        try:
            config.load()  # builds the TLS context: a bad certificate or key fails here, before "listening"
        except ssl.SSLError as exc:
            raise ValueError(f"--tls-cert {tls_cert} / --tls-key {tls_key}"
                             + (f" / --client-ca {client_ca}" if client_ca else "") + f" do not load: {exc}") from None
        server = uvicorn.Server(config)
        bound_port = sock.getsockname()[1]
        scheme = "https" if tls_cert else "http"
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        print(f"dvp serve: listening on {scheme}://{shown}:{bound_port} (chain {writer.chain_id}, "
              f"head {writer.published_seq}{', mutual TLS' if client_ca else ''})", flush=True)
        stopping = threading.current_thread() is threading.main_thread()
        if stopping:  # uvicorn shuts down gracefully, then raises the signal again: end here, cleanly
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, _stop)
        try:
            server.run(sockets=[sock])
        except SystemExit:
            pass
    finally:
        writer.stop()
    return 0


def _stop(signum: int, frame) -> None:
    raise SystemExit(0)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add `dvp serve` to the `dvp` command."""
    defaults = Limits()
    p = sub.add_parser("serve", help="serve a ledger over HTTP: signed commands, signed reads, an event stream",
                       description="Serve one ledger (made by Ledger.create) over HTTP; see docs/service.md.")
    p.add_argument("--db", required=True, help="the SQLite journal to serve")
    p.add_argument("--listen", default=LISTEN_DEFAULT, metavar="HOST:PORT", help="default %(default)s (port 0: any)")
    p.add_argument("--tls-cert", help="PEM certificate: serve HTTPS")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--client-ca", help="PEM CA: require client certificates signed by it (mutual TLS)")
    p.add_argument("--protocols", help="comma-separated installed protocols to load (default: all installed)")
    p.add_argument("--clock", choices=("wall", "ledger"), default="wall",
                   help="batch time: the wall clock (default), or the ledger's own time (moved by Tick commands)")
    p.add_argument("--verify-workers", type=int, default=0,
                   help="signature-checking processes (spawned; used for groups of 256 signatures or more; "
                        "default 0: inline)")
    p.add_argument("--snapshot-every", type=int, default=None, metavar="N",
                   help="snapshot the state every N entries, when no request waits (at the latest after 4N; "
                        "0: never; default 1024): a snapshot stalls the writer for a time that grows with the state")
    p.add_argument("--group-wait-ms", type=float, default=defaults.group_wait_seconds * 1000,
                   help="how long the writer waits to fill an entry (default %(default)s)")
    p.add_argument("--group-commands-max", type=int, default=defaults.group_commands_max,
                   help="commands per journal entry (default %(default)s)")
    p.add_argument("--body-bytes-max", type=int, default=defaults.body_bytes_max,
                   help="refuse a request body larger than this (default %(default)s)")
    p.add_argument("--reads-per-second", type=float, default=defaults.reads_per_second,
                   help="signed reads per participant (default %(default)s)")
    p.add_argument("--commands-per-second", type=float, default=defaults.commands_per_second,
                   help="submitted commands per first signer (default %(default)s)")
    p.add_argument("--streams-max", type=int, default=defaults.streams_max,
                   help="at most this many event streams open at once (default %(default)s)")
    p.add_argument("--connections-per-peer-max", type=int, default=CONNECTIONS_PER_PEER_MAX_DEFAULT, metavar="N",
                   help="connections one client address may hold (default %(default)s; 0: no bound, as behind a "
                        "proxy that bounds them itself)")
    p.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"),
                   help="the server's log level on stderr (default %(default)s)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        print(f"dvp serve: the service needs the 'service' extra: pip install 'dvp-settlement[service]' ({exc})",
              file=sys.stderr)
        return 2
    from ..journal import JournalError

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    limits = Limits(group_wait_seconds=args.group_wait_ms / 1000, group_commands_max=args.group_commands_max,
                    body_bytes_max=args.body_bytes_max, reads_per_second=args.reads_per_second,
                    commands_per_second=args.commands_per_second, streams_max=args.streams_max)
    protocols = [n.strip() for n in args.protocols.split(",") if n.strip()] if args.protocols else None
    try:
        return serve(args.db, args.listen, tls_cert=args.tls_cert, tls_key=args.tls_key, client_ca=args.client_ca,
                     protocols=protocols, clock=args.clock, limits=limits, verify_workers=args.verify_workers,
                     snapshot_every=args.snapshot_every, connections_per_peer_max=args.connections_per_peer_max,
                     log_level=args.log_level)
    except (ValueError, OSError, JournalError, ssl.SSLError) as exc:
        if args.debug:
            raise
        print(f"dvp serve: {exc}", file=sys.stderr)
        return 1
