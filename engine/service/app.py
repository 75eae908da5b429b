"""The HTTP API on Starlette: routes, bounds, signed reads, errors, the event stream.

Takes a started `Writer` and gives an ASGI application (`build_app`):

- `POST /v1/envelopes` decodes and bounds the request here (on the event
  loop), hands it to the writer (group commit) and answers once its entry
  is durable: 200 when every command is ok, 422 `commands_refused` with the
  same body otherwise (one result code per command, the entry's seq and hash).
- `GET /v1/accounts/{p}`, `/v1/trades/{id}`, `/v1/repos/{id}`,
  `/v1/entries?from_seq=&limit=` and `/v1/events?from_seq=` (Server-Sent
  Events, resuming after `Last-Event-ID`) need a signed request
  (`engine.service.auth`) and answer only what the reader may see
  (`engine.service.views`).
- `GET /v1/health` and `GET /metrics` are open: they say nothing about any
  participant.

Every refusal is JSON `{code, name, detail}` with the HTTP status as `code`.
Answers are JSON, or msgpack when the request asks for it (`Accept`) or was
written in it. Journal pages are read on a worker thread through read-only
SQLite connections, so they only ever see committed entries, and never
past the last entry the writer has indexed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import sqlite3
import threading
import time
from collections import Counter

import msgspec
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import codes as C
from ..identity import valid_id, verify_signature
from ..ledger import Ledger, decode_entry
from ..records import STATUS_ACTIVE
from .auth import NonceMemory, RateLimiter, Refused, parse_signed, request_message
from .views import Reader, Recorder, envelope_digest, is_privileged
from .wire import (
    JSON,
    MSGPACK,
    Account,
    EntriesPage,
    ErrorBody,
    Health,
    HoldView,
    Limits,
    Records,
    SubmitAnswer,
    SubmitRequest,
    accepts_msgpack,
)
from .writer import Submission, Writer

log = logging.getLogger("dvp.serve")
STATUS_NAMES = {0: "active", 1: "suspended", 2: "removed"}
STREAM_PING_SECONDS = 15
INT_DIGITS_MAX = 18  # a sequence number in a query or header: always below 2**63
_json_encode = msgspec.json.Encoder().encode
_msgpack_encode = msgspec.msgpack.Encoder().encode
_json_request = msgspec.json.Decoder(SubmitRequest)
_msgpack_request = msgspec.msgpack.Decoder(SubmitRequest)


def _answer(request: Request, obj, status: int = 200) -> Response:
    if accepts_msgpack(request.headers.get("accept"), request.headers.get("content-type")):
        return Response(_msgpack_encode(obj), status, media_type=MSGPACK)
    return Response(_json_encode(obj), status, media_type=JSON)


def _error(status: int, name: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return Response(_json_encode(ErrorBody(status, name, detail)), status, headers=headers, media_type=JSON)


def _int_param(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    return _non_negative(text, f"query parameter {name}")


def _non_negative(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= INT_DIGITS_MAX):
        raise Refused(400, "invalid_parameter", f"{what} {text[:40]!r} is not a non-negative integer of at most "
                                                f"{INT_DIGITS_MAX} digits")
    return int(text)


def account_view(ledger: Ledger, participant: str) -> Account | None:
    """A participant's accounts, read in the writer thread (between groups)."""
    state = ledger.state
    p = state.participants.get(participant)
    if p is None:
        return None
    balances = {asset: book[participant] for asset, book in state.balances.items() if participant in book}
    encumbered = {asset: book[participant] for asset, book in state.encumbered.items() if book.get(participant)}
    holds = [HoldView(id=hid, asset=h.asset, owner=h.owner, beneficiary=h.beneficiary, amount=h.amount,
                      expires_at=h.expires_at)
             for hid, h in state.holds.items() if participant in (h.owner, h.beneficiary)]
    return Account(participant=participant, status=STATUS_NAMES.get(p.status, str(p.status)), roles=list(p.roles),
                   seq=state.seqs.get(participant, 0), at=state.now, head_seq=ledger.head_seq, balances=balances,
                   encumbered=encumbered, holds=holds, frozen=sorted(state.frozen.get(participant, {})))


def _identity(ledger: Ledger, recorder: Recorder, participant: str):
    """A member's key, roles, why it may not read ("" if it may), the last entry that changed any member's
    roles or status, and when its certificate expires (0: never), read between groups; None for a stranger."""
    p = ledger.state.participants.get(participant)
    if p is None:
        return None
    inactive = ""
    if p.status != STATUS_ACTIVE:
        inactive = f"{participant} is {STATUS_NAMES.get(p.status, p.status)}"
    elif p.valid_until and ledger.state.now > p.valid_until:  # as the engine refuses its envelopes
        inactive = (f"the certificate {participant} was admitted with expired at {p.valid_until} "
                    f"(ledger time {ledger.state.now})")
    return p.public_key, tuple(p.roles), inactive, recorder.members_seq, p.valid_until


class Service:
    """The request handlers of one server, around its writer."""

    def __init__(self, writer: Writer, limits: Limits):
        self.writer = writer
        self.limits = limits
        self.metrics = writer.metrics
        self.nonces = NonceMemory(limits.nonces_max, limits.request_age_seconds_max)
        self.read_rate = RateLimiter(limits.reads_per_second, "reads_per_second")
        self.command_rate = RateLimiter(limits.commands_per_second, "commands_per_second")
        self.streams = Counter()
        self.held_bytes = 0  # request bodies received or being received, not answered yet (queue_bytes_max)
        self._local = threading.local()
        self._new_entry: asyncio.Event | None = None

    # -------------------------------------------------------------- plumbing

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self._new_entry = asyncio.Event()
        self.writer.listen(asyncio.get_running_loop(), self._committed)
        yield

    def _committed(self, seq: int) -> None:
        event, self._new_entry = self._new_entry, asyncio.Event()
        event.set()

    async def _body(self, request: Request) -> bytes:
        limit = self.limits.body_bytes_max
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise Refused(413, "body_too_large", f"the body has {length} bytes; body_bytes_max={limit}")
        seconds = self.limits.body_seconds_max
        held = [0]  # bytes this request holds of queue_bytes_max: until it is answered (see `_answering`)
        request.state.held = held
        try:
            return await asyncio.wait_for(self._read_body(request, limit, held), seconds)
        except asyncio.TimeoutError:
            raise Refused(408, "body_too_slow", f"the body did not arrive within body_seconds_max={seconds:g} s",
                          {"connection": "close"}) from None

    async def _read_body(self, request: Request, limit: int, held: list[int]) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, "body_too_large", f"the body exceeds body_bytes_max={limit} bytes")
            if self.held_bytes + len(chunk) > self.limits.queue_bytes_max:
                raise Refused(503, "queue_full", f"request bodies of queue_bytes_max={self.limits.queue_bytes_max} "
                                                 "bytes are being received or waiting for the writer; retry shortly",
                              {"retry-after": "1"})
            self.held_bytes += len(chunk)
            held[0] += len(chunk)
            chunks.append(chunk)
        return b"".join(chunks)

    def release(self, request: Request) -> None:
        """Give back the bytes of queue_bytes_max a request's body held (once it is answered or refused)."""
        held = getattr(request.state, "held", None)
        if held:
            self.held_bytes -= held[0]
            held[0] = 0

    async def authenticate(self, request: Request, body: bytes = b"") -> Reader:
        """Check a signed request: fresh, signed by the named member's key, nonce never seen, within its rate."""
        now = time.time()
        signed = parse_signed(request.headers, int(now), self.limits.request_age_seconds_max)
        identity = await self.writer.read(lambda ledger, recorder: _identity(ledger, recorder, signed.participant))
        if identity is None:
            raise Refused(401, "unknown_participant", f"{signed.participant!r} is not a member of this ledger")
        key, roles, inactive, request.state.members_seq, request.state.valid_until = identity
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        target = raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        message = request_message(self.writer.chain_id, signed.participant, request.method, target,
                                  signed.timestamp, signed.nonce, body)
        if not verify_signature(key, message, signed.signature):
            raise Refused(401, "bad_request_signature", f"the signature does not verify with the key "
                                                        f"{signed.participant} was admitted with")
        if inactive:
            raise Refused(403, "participant_inactive", inactive)
        self.nonces.check(signed.participant, signed.nonce, now)  # a replay spends none of the member's rate
        self.read_rate.take(signed.participant, 1, now)
        self.nonces.remember(signed.participant, signed.nonce, now)  # a read refused for its rate fills nothing
        return Reader(signed.participant, is_privileged(signed.participant, roles, self.writer.operator))

    def _count(self, route: str, status: int) -> None:
        self.metrics.requests.labels(route, str(status)).inc()

    # -------------------------------------------------------------- handlers

    async def health(self, request: Request) -> Response:
        w = self.writer
        self._count("health", 200)
        return _answer(request, Health(status="stopped" if w.fault else "ok", chain_id=w.chain_id,
                                       head_seq=w.published_seq, head_hash=w.published_hash.hex(),
                                       at=w.published_at, queue_depth=w.pending, protocols=w.protocol_names,
                                       limits=self.limits))

    async def metrics_text(self, request: Request) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, media_type=content_type)

    async def submit(self, request: Request) -> Response:
        request.state.route = "envelopes"
        body = await self._body(request)
        decoder = _msgpack_request if MSGPACK in request.headers.get("content-type", "") else _json_request
        try:
            envelopes = decoder.decode(body).envelopes
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Refused(400, "malformed_request", f"the body is not a SubmitRequest: {exc}") from None
        limits = self.limits
        if not envelopes:
            raise Refused(400, "no_envelopes", "the request carries no envelope")
        if len(envelopes) > limits.envelopes_per_request_max:
            raise Refused(413, "too_many_envelopes", f"{len(envelopes)} envelopes; "
                                                     f"envelopes_per_request_max={limits.envelopes_per_request_max}")
        try:  # JSON integers are unbounded; the journal's msgpack takes 64 bits
            digests = [envelope_digest(e) for e in envelopes]
        except OverflowError:
            raise Refused(400, "malformed_request", "the body is not a SubmitRequest: an integer (a signature's seq, "
                                                    "an envelope's not_after) does not fit in 64-bit msgpack") from None
        machine = self.writer.ledger.machine
        decoded = []
        for i, env in enumerate(envelopes):
            if not env.signatures:  # an unsigned envelope is trusted by a ledger that allows them: never over the network
                raise Refused(401, "unsigned_envelope", f"envelopes[{i}] carries no signature; the service takes "
                                                        "signed envelopes only")
            if len(env.signatures) > limits.signatures_per_envelope_max:
                raise Refused(413, "too_many_signatures", f"envelopes[{i}] has {len(env.signatures)} signatures; "
                                                          f"signatures_per_envelope_max="
                                                          f"{limits.signatures_per_envelope_max}")
            for s in env.signatures:  # before any bookkeeping keyed by the name (the rate of the first signer)
                if not valid_id(s.signer):
                    raise Refused(401, "unknown_signer", f"envelopes[{i}]: {s.signer[:64]!r}"
                                                         f"{'...' if len(s.signer) > 64 else ''} is not a member's id")
            if len({s.signer for s in env.signatures}) != len(env.signatures):  # the engine would never apply it
                raise Refused(400, "duplicate_signer", f"envelopes[{i}] carries two signatures of one signer")
            try:
                commands = machine.decode(env.payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise Refused(400, "malformed_envelope", f"envelopes[{i}]: the payload does not decode: {exc}") from None
            if len(commands) > limits.commands_per_envelope_max:
                raise Refused(413, "too_many_commands", f"envelopes[{i}] has {len(commands)} commands; "
                                                        f"commands_per_envelope_max={limits.commands_per_envelope_max}")
            if not commands:
                raise Refused(400, "no_commands", f"envelopes[{i}] carries no command")
            decoded.append(commands)
        total = sum(map(len, decoded))
        if total > min(limits.commands_per_request_max, limits.group_commands_max):
            raise Refused(413, "too_many_commands", f"the request has {total} commands; commands_per_request_max="
                                                    f"{min(limits.commands_per_request_max, limits.group_commands_max)}")
        self.command_rate.take(envelopes[0].signatures[0].signer, total, time.time())
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.writer.submit(Submission(envelopes, decoded, digests, loop, future))
        try:
            outcomes = await future
        finally:
            self.writer.done()
        refused = Counter(C.name(code) for o in outcomes for code in o.results if code != C.OK)
        if not refused:
            answer = SubmitAnswer(code=200, name="ok", detail=f"{total} commands ok", outcomes=outcomes)
        else:
            spelled = ", ".join(f"{name} ({n})" for name, n in refused.most_common())
            answer = SubmitAnswer(code=422, name="commands_refused",
                                  detail=f"{sum(refused.values())} of {total} commands refused: {spelled}",
                                  outcomes=outcomes)
        self._count("envelopes", answer.code)
        return _answer(request, answer, answer.code)

    async def account(self, request: Request) -> Response:
        request.state.route = "accounts"
        participant = request.path_params["participant"]
        reader = await self.authenticate(request, await self._body(request))
        self.release(request)  # a read keeps nothing of its body
        if not reader.privileged and reader.id != participant:
            raise Refused(403, "not_your_account", f"{reader.id} may not read the accounts of {participant}: a member "
                                                   "reads its own (operator, compliance and auditor read all)")
        view = await self.writer.read(lambda ledger, _r: account_view(ledger, participant))
        if view is None:
            raise Refused(404, "unknown_participant", f"{participant!r} is not a member of this ledger")
        self._count("accounts", 200)
        return _answer(request, view)

    async def records(self, request: Request, kind: str) -> Response:
        request.state.route = kind + "s"
        key = request.path_params["key"]
        reader = await self.authenticate(request, await self._body(request))
        self.release(request)  # a read keeps nothing of its body
        found = await self.writer.read(lambda ledger, recorder: recorder.answer(ledger.state, kind, key, reader))
        if found is None:
            raise Refused(404, "unknown_kind", f"no protocol of this ledger answers reads of {kind}s")
        if not found:
            raise Refused(404, "not_found", f"no {kind} {key!r} that {reader.id} may see")
        self._count(kind + "s", 200)
        return _answer(request, Records(found))

    async def trade(self, request: Request) -> Response:
        return await self.records(request, "trade")

    async def repo(self, request: Request) -> Response:
        return await self.records(request, "repo")

    async def entries(self, request: Request) -> Response:
        request.state.route = "entries"
        reader = await self.authenticate(request, await self._body(request))
        self.release(request)  # a read keeps nothing of its body
        start = _int_param(request, "from_seq", 0)
        limit = _int_param(request, "limit", self.limits.page_entries_max)
        if not 1 <= limit <= self.limits.page_entries_max:
            raise Refused(400, "invalid_parameter", f"limit={limit}; it must be 1 to "
                                                    f"page_entries_max={self.limits.page_entries_max}")
        views, next_seq = await run_in_threadpool(self._page, start, limit, reader)
        self._count("entries", 200)
        return _answer(request, EntriesPage(entries=views, next_seq=next_seq, head_seq=self.writer.published_seq))

    def _page(self, start: int, limit: int, reader: Reader, upto: int | None = None):
        """Read committed entries from `start` to `upto` (default: the last published) on a worker thread;
        cut each to the reader."""
        connection = getattr(self._local, "db", None)
        if connection is None:
            uri = pathlib.Path(self.writer.path).resolve().as_uri()  # quotes '#', '?' and '%' in the path
            connection = self._local.db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
        if upto is None:
            upto = self.writer.published_seq
        recorder: Recorder = self.writer.recorder
        decode = self.writer.ledger.machine.decode
        views, size, next_seq = [], 0, start
        rows = connection.execute("SELECT seq, hash, body FROM journal WHERE seq >= ? AND seq <= ? ORDER BY seq "
                                  "LIMIT ?", (start, upto, limit))
        for seq, digest, body in rows:
            if views and size + len(body) > self.limits.page_bytes_max:
                break
            size += len(body)
            entry = decode_entry(body, self.writer.path, seq)
            views.append(recorder.entry_view(entry, digest, [decode(env.payload) for env in entry.envelopes], reader))
            next_seq = seq + 1
        return views, next_seq

    async def events(self, request: Request) -> Response:
        request.state.route = "events"
        reader = await self.authenticate(request, await self._body(request))
        self.release(request)  # a read keeps nothing of its body
        start = _int_param(request, "from_seq", 0)
        last = request.headers.get("last-event-id")
        if last:
            start = max(start, _non_negative(last, "Last-Event-ID") + 1)
        if request.method == "HEAD":  # the headers a stream would have, and no stream: nobody would read it
            self._count("events", 200)
            return Response(status_code=200, media_type="text/event-stream")
        limits = self.limits
        if sum(self.streams.values()) >= limits.streams_max:
            raise Refused(429, "too_many_streams", f"streams_max={limits.streams_max} event streams are open",
                          {"retry-after": "5"})
        if self.streams[reader.id] >= limits.streams_per_participant_max:
            raise Refused(429, "too_many_streams", f"{reader.id} has streams_per_participant_max="
                                                   f"{limits.streams_per_participant_max} event streams open",
                          {"retry-after": "5"})
        self.streams[reader.id] += 1
        self.metrics.streams.inc()
        self._count("events", 200)
        return EventSourceResponse(self._stream(reader, start, request.state.members_seq, request.state.valid_until),
                                   ping=STREAM_PING_SECONDS)

    async def _stream(self, reader: Reader, start: int, checked: int, expires: int):
        """Yield entries from `start`, cut to `reader`; check the reader again after any change of membership
        (`checked`: the last one its authorization saw) or once ledger time passes `expires` (its certificate's
        end), and end the stream once it may no longer read."""
        writer = self.writer
        next_seq = start
        try:
            while True:
                upto = writer.published_seq  # first: the recorder notes a change before it publishes its entry
                if writer.recorder.members_seq != checked or (expires and writer.published_at > expires):
                    identity = await writer.read(lambda ledger, recorder: _identity(ledger, recorder, reader.id))
                    if identity is None or identity[2]:
                        return
                    checked, expires = identity[3], identity[4]
                    reader = Reader(reader.id, is_privileged(reader.id, identity[1], writer.operator))
                if next_seq <= upto:
                    views, next_seq = await run_in_threadpool(self._page, next_seq, self.limits.page_entries_max,
                                                              reader, upto)
                    for view in views:
                        yield ServerSentEvent(data=_json_encode(view).decode(), id=str(view.seq), event="entry")
                    if not views:  # not expected (the entry is committed): do not spin
                        await asyncio.sleep(0.05)
                else:
                    event = self._new_entry
                    if next_seq > self.writer.published_seq:
                        await event.wait()
        finally:
            self.streams[reader.id] -= 1
            if self.streams[reader.id] <= 0:
                del self.streams[reader.id]
            self.metrics.streams.dec()


class _ReleaseBodies:
    """Give back what each request's body held of `queue_bytes_max` once the request is done, however it ended."""

    def __init__(self, app, service: Service):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.service.release(Request(scope))


def build_app(writer: Writer, limits: Limits) -> Starlette:
    """The ASGI application serving `writer`'s ledger."""
    service = Service(writer, limits)

    async def refused(request: Request, exc: Refused) -> Response:
        service._count(getattr(request.state, "route", "other"), exc.status)
        return _error(exc.status, exc.name, exc.detail, exc.headers)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        names = {404: "not_found", 405: "method_not_allowed"}
        service._count("other", exc.status_code)
        return _error(exc.status_code, names.get(exc.status_code, "http_error"),
                      f"{request.method} {request.url.path}: {exc.detail}")

    async def internal(request: Request, exc: Exception) -> Response:
        log.exception("internal error answering %s %s", request.method, request.url.path)
        service._count(getattr(request.state, "route", "other"), 500)
        return _error(500, "internal_error", f"{type(exc).__name__} while answering {request.method} "
                                             f"{request.url.path}; see the server's log")

    routes = [
        Route("/v1/health", service.health, methods=["GET"]),
        Route("/metrics", service.metrics_text, methods=["GET"]),
        Route("/v1/envelopes", service.submit, methods=["POST"]),
        Route("/v1/accounts/{participant:path}", service.account, methods=["GET"]),  # ids may hold '/'
        Route("/v1/trades/{key:path}", service.trade, methods=["GET"]),
        Route("/v1/repos/{key:path}", service.repo, methods=["GET"]),
        Route("/v1/entries", service.entries, methods=["GET"]),
        Route("/v1/events", service.events, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=service.lifespan, middleware=[Middleware(_ReleaseBodies, service=service)],
                    exception_handlers={Refused: refused, HTTPException: http_error, Exception: internal})
    app.state.service = service
    return app
