"""A client of `dvp serve`, on httpx, with the library's verbs.

`Client(url, signer)` signs what it sends with `signer` (an
`engine.Signer`): envelopes of commands, and every read (the request
signature of `engine.service.auth`). It returns the service's typed
records (`engine.service.wire`):

    from engine import Move, Signer, derive_key
    from engine.client import Client

    bank_a = Client("http://127.0.0.1:8740", Signer("BANK_A", derive_key("BANK_A"), "main"))
    bank_a.resume()                                  # continue the signer's sequence numbers
    done = bank_a.submit([Move(id="pay-1", asset="USD", source="BANK_A", target="BANK_B", amount=100)])
    assert done.results == [0]                        # one code per command (engine.codes)
    print(bank_a.balances())                          # {"USD": 99_999_900, ...}: minor units
    for entry in bank_a.subscribe(from_seq=0):        # reconnects and resumes by itself
        ...

`submit` takes a list of commands (signed here as one envelope) or an
`Envelope` (sent as it is, such as one cosigned by both parties of a DvP),
or a list of envelopes. Engine refusals are result codes in the answer,
never exceptions; the service's own refusals (a limit, a bad request)
raise `ServiceError(code, name, detail)`.

Retries: a request that fails for want of a connection (refused, reset,
timed out) or is refused as momentarily busy (503 `queue_full`, 429) is
sent again, with the same envelope bytes, for up to `retry_seconds`. The
service recognises an envelope it applied before and answers "already
applied" with the original entry, so a retry never applies twice. Reads are
signed afresh for each attempt. A TLS handshake refused is not retried.
"""

from __future__ import annotations

import ssl
import time
from urllib.parse import quote
from collections.abc import Iterator, Sequence

import httpx
import msgspec

from .identity import Signer
from .records import Command, Envelope
from .service.auth import sign_request
from .service.wire import MSGPACK, Account, EntriesPage, EntryView, ErrorBody, Health, Outcome, Record, Records, \
    SubmitAnswer, SubmitRequest

RETRY_SECONDS_DEFAULT = 30.0
TIMEOUT_SECONDS_DEFAULT = 60.0
BACKOFF_SECONDS_MIN = 0.05
BACKOFF_SECONDS_MAX = 1.0
STREAM_READ_TIMEOUT_SECONDS = 60.0  # the server pings every 15 s: silence this long means a dead connection
RETRIED_REFUSALS = frozenset({"queue_full", "nonce_memory_full", "rate_limited", "too_many_streams"})

_encode = msgspec.msgpack.Encoder().encode


class ServiceError(Exception):
    """The service refused a request before applying anything (HTTP status, stable name, detail)."""

    def __init__(self, code: int, name: str, detail: str):
        super().__init__(f"{code} {name}: {detail}")
        self.code = code
        self.name = name
        self.detail = detail


class Submitted(msgspec.Struct, kw_only=True):
    """What became of a submission: every command's code in order, and where each envelope was applied."""

    results: list[int]
    names: list[str]
    outcomes: list[Outcome]
    code: int  # 200: every command ok; 422: some refused (see results)
    name: str

    @property
    def seq(self) -> int:
        """The entry holding the (last) envelope."""
        return self.outcomes[-1].seq

    @property
    def hash(self) -> str:
        return self.outcomes[-1].hash

    @property
    def already_applied(self) -> bool:
        return all(o.already_applied for o in self.outcomes)


def tls_context(ca: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A client TLS context trusting `ca` (PEM), presenting `cert`/`key` for mutual TLS."""
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    return context


def _segment(text: str) -> str:
    """An id as one path segment: every character but unreserved ones percent-encoded ('/', '?', '#', '%', ...)."""
    return quote(text, safe="")


def _tls_refused(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ssl.SSLError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class Client:
    """Talk to one `dvp serve` as one participant; see the module docstring."""

    def __init__(self, url: str, signer: Signer | None = None, *, tls: ssl.SSLContext | None = None,
                 timeout: float = TIMEOUT_SECONDS_DEFAULT, retry_seconds: float = RETRY_SECONDS_DEFAULT):
        self.url = url.rstrip("/")
        self.signer = signer
        self.retry_seconds = retry_seconds
        self._http = httpx.Client(base_url=self.url, verify=tls if tls is not None else True, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --------------------------------------------------------------- sending

    def _request(self, method: str, target: str, body: bytes = b"", signed: bool = True,
                 headers: dict[str, str] | None = None) -> httpx.Response:
        """Send one request, retrying connection failures and busy refusals for `retry_seconds`."""
        deadline = time.monotonic() + self.retry_seconds
        backoff = BACKOFF_SECONDS_MIN
        while True:
            sending = {"accept": MSGPACK, **(headers or {})}
            if body:
                sending["content-type"] = MSGPACK
            if signed:
                if self.signer is None:
                    raise ValueError("this read needs a signer: Client(url, signer)")
                sending.update(sign_request(self.signer, method, target, body))
            wait = None
            try:
                response = self._http.request(method, target, content=body or None, headers=sending)
            except httpx.TransportError as exc:
                if _tls_refused(exc) or time.monotonic() >= deadline:
                    raise
                wait = backoff
            else:
                if response.status_code in (429, 503) and time.monotonic() < deadline:
                    error = self._error_body(response)
                    if error.name in RETRIED_REFUSALS:
                        hint = response.headers.get("retry-after", "")
                        wait = min(float(hint), BACKOFF_SECONDS_MAX) if hint.isdigit() else backoff
                if wait is None:
                    return response
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, BACKOFF_SECONDS_MAX)

    @staticmethod
    def _error_body(response: httpx.Response) -> ErrorBody:
        try:
            return msgspec.json.decode(response.content, type=ErrorBody)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return ErrorBody(response.status_code, "http_error", response.text[:200])

    def _decode(self, response: httpx.Response, kind: type):
        if response.status_code != 200:
            error = self._error_body(response)
            raise ServiceError(error.code, error.name, error.detail)
        return msgspec.msgpack.decode(response.content, type=kind)

    # ----------------------------------------------------------------- verbs

    def submit(self, commands_or_envelope: Sequence[Command] | Envelope | Sequence[Envelope],
               not_after: int = 0) -> Submitted:
        """Apply commands (signed here as one envelope) or envelopes (sent as they are); return every code."""
        item = commands_or_envelope
        if isinstance(item, Envelope):
            envelopes = [item]
        elif item and all(isinstance(x, Envelope) for x in item):
            envelopes = list(item)  # type: ignore[arg-type]
        else:
            if self.signer is None:
                raise ValueError("signing commands needs a signer: Client(url, signer)")
            envelopes = [self.signer.envelope(list(item), not_after)]  # type: ignore[arg-type]
        return self.send(envelopes)

    def send(self, envelopes: Sequence[Envelope]) -> Submitted:
        """Post signed envelopes as one request (retried with the same bytes); return every code."""
        body = _encode(SubmitRequest(list(envelopes)))
        response = self._request("POST", "/v1/envelopes", body, signed=False)
        if response.status_code not in (200, 422) or response.headers.get("content-type") != MSGPACK:
            error = self._error_body(response)
            raise ServiceError(error.code, error.name, error.detail)
        answer = msgspec.msgpack.decode(response.content, type=SubmitAnswer)
        results = [code for o in answer.outcomes for code in o.results]
        names = [name for o in answer.outcomes for name in o.names]
        return Submitted(results=results, names=names, outcomes=answer.outcomes, code=answer.code, name=answer.name)

    def account(self, participant: str | None = None) -> Account:
        """A participant's accounts (default: the signer's own)."""
        who = participant or self._me()
        return self._decode(self._request("GET", f"/v1/accounts/{_segment(who)}"), Account)

    def balances(self, participant: str | None = None) -> dict[str, int]:
        """{asset: minor units} of a participant (default: the signer's own), holds excluded."""
        return self.account(participant).balances

    def resume(self) -> int:
        """Set the signer's sequence number to the last one the ledger accepted from it; return it."""
        seq = self.account().seq
        self.signer.seq = max(self.signer.seq, seq)
        return self.signer.seq

    def trade(self, trade_id: str) -> list[Record]:
        """The trades with this id that the signer may see (live, or remembered after they left the book)."""
        return self._decode(self._request("GET", f"/v1/trades/{_segment(trade_id)}"), Records).records

    def repo(self, repo_id: str) -> list[Record]:
        """A repo with its exposure, collateral value, open call and cash margin (or how it ended)."""
        return self._decode(self._request("GET", f"/v1/repos/{_segment(repo_id)}"), Records).records

    def entries(self, from_seq: int = 0, limit: int = 100) -> EntriesPage:
        """One page of committed entries from `from_seq`, cut to what the signer may see."""
        return self._decode(self._request("GET", f"/v1/entries?from_seq={from_seq}&limit={limit}"), EntriesPage)

    def health(self) -> Health:
        return self._decode(self._request("GET", "/v1/health", signed=False), Health)

    def subscribe(self, from_seq: int = 0) -> Iterator[EntryView]:
        """Yield every entry from `from_seq` on, once and in order, as it commits; reconnect and resume on failure.

        A connection that fails is opened again (for up to `retry_seconds`
        without success) from the entry after the last one yielded.
        """
        from httpx_sse import SSEError, connect_sse

        next_seq = from_seq
        failing_since: float | None = None
        while True:
            target = f"/v1/events?from_seq={next_seq}"
            headers = {"accept": "text/event-stream", **sign_request(self._signer(), "GET", target)}
            if next_seq > 0:
                headers["last-event-id"] = str(next_seq - 1)
            timeout = httpx.Timeout(self._http.timeout.connect, read=STREAM_READ_TIMEOUT_SECONDS)
            try:
                with connect_sse(self._http, "GET", target, headers=headers, timeout=timeout) as source:
                    if source.response.status_code != 200:
                        source.response.read()
                        error = self._error_body(source.response)
                        if error.name not in RETRIED_REFUSALS:
                            raise ServiceError(error.code, error.name, error.detail)
                        raise httpx.ReadError(error.detail)
                    for sse in source.iter_sse():
                        failing_since = None
                        if sse.event != "entry":
                            continue
                        view = msgspec.json.decode(sse.data, type=EntryView)
                        if view.seq < next_seq:
                            continue
                        next_seq = view.seq + 1
                        yield view
            except (httpx.TransportError, SSEError) as exc:
                if _tls_refused(exc):
                    raise
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self.retry_seconds:
                    raise
                time.sleep(BACKOFF_SECONDS_MIN * 4)

    def _signer(self) -> Signer:
        if self.signer is None:
            raise ValueError("this read needs a signer: Client(url, signer)")
        return self.signer

    def _me(self) -> str:
        return self._signer().id
