"""Signed requests, nonce memory and rate limits: who is asking, and how often.

A read proves its participant with the Ed25519 key it was admitted with,
over the msgpack encoding of
`(REQUEST_DOMAIN, chain_id, participant, METHOD, path?query, timestamp, nonce, sha256(body))`.
The domain tag differs from the one envelopes are signed under
(`engine.identity.signing_message`), so a request signature can never pass
for an envelope signature nor the other way round, and the chain id binds
it to one ledger. A timestamp further than `request_age_seconds_max` from
the server's clock is stale; a nonce seen within that window is a replay.
The nonce memory is bounded: when it is full of live nonces the service
refuses signed requests (503 `nonce_memory_full`) rather than forget one.

This module reads the wall clock: freshness of requests is the service's
business, never the ledger's (ledger time stays injected).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict

import msgspec

from ..identity import Signer
from .wire import HEADER_NONCE, HEADER_PARTICIPANT, HEADER_SIGNATURE, HEADER_TIMESTAMP

REQUEST_DOMAIN = "dvp-request/1"
NONCE_HEX_MIN = 16
NONCE_HEX_MAX = 128
SIGNATURE_HEX = 128
RATE_BUCKETS_MAX = 100_000  # participants (or signers) tracked by one limiter

_encode = msgspec.msgpack.Encoder().encode
_HEX = frozenset("0123456789abcdef")


class Refused(Exception):
    """A request the service refuses before anything is applied: an HTTP status, a name, a detail."""

    def __init__(self, status: int, name: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.name = name
        self.detail = detail
        self.headers = headers or {}


def request_message(chain_id: str, participant: str, method: str, target: str, timestamp: int, nonce: str,
                    body: bytes) -> bytes:
    """Return the exact bytes a request's signature covers."""
    return _encode((REQUEST_DOMAIN, chain_id, participant, method.upper(), target, timestamp, nonce,
                    hashlib.sha256(body).digest()))


def sign_request(signer: Signer, method: str, target: str, body: bytes = b"", timestamp: int | None = None,
                 nonce: str | None = None) -> dict[str, str]:
    """Return the headers that sign one request (`target` is the path with its query string, as sent)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = os.urandom(16).hex() if nonce is None else nonce
    message = request_message(signer.chain_id, signer.id, method, target, timestamp, nonce, body)
    return {
        HEADER_PARTICIPANT: signer.id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: signer.key.sign(message).signature.hex(),
    }


class SignedRequest(msgspec.Struct, frozen=True):
    participant: str
    timestamp: int
    nonce: str
    signature: bytes


def parse_signed(headers, now: int, age_max: int) -> SignedRequest:
    """Read the signing headers; refuse missing, malformed or stale ones (nothing verified yet)."""
    participant = headers.get(HEADER_PARTICIPANT)
    stamp = headers.get(HEADER_TIMESTAMP)
    nonce = headers.get(HEADER_NONCE)
    signature = headers.get(HEADER_SIGNATURE)
    if not (participant and stamp and nonce and signature):
        raise Refused(401, "unsigned_request", "sign the request: headers X-DVP-Participant, X-DVP-Timestamp, "
                                               "X-DVP-Nonce and X-DVP-Signature are required")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise Refused(401, "bad_request_signature", f"X-DVP-Timestamp {stamp[:40]!r} is not integer seconds")
    timestamp = int(stamp)
    if abs(now - timestamp) > age_max:
        raise Refused(401, "stale_request", f"X-DVP-Timestamp {timestamp} is {now - timestamp} s from the server's "
                                            f"clock ({now}); the limit is request_age_seconds_max={age_max}")
    if not (NONCE_HEX_MIN <= len(nonce) <= NONCE_HEX_MAX and _HEX.issuperset(nonce)):
        raise Refused(401, "bad_request_signature", f"X-DVP-Nonce must be {NONCE_HEX_MIN} to {NONCE_HEX_MAX} "
                                                    "lowercase hex digits")
    if len(signature) != SIGNATURE_HEX or not _HEX.issuperset(signature):
        raise Refused(401, "bad_request_signature", "X-DVP-Signature must be 128 lowercase hex digits")
    return SignedRequest(participant, timestamp, nonce, bytes.fromhex(signature))


class NonceMemory:
    """Remember (participant, nonce) pairs for the age window, at most `capacity` of them.

    Entries are kept in arrival order; arrival times only grow, so expired
    ones are dropped from the front. A full memory of live nonces refuses
    new requests instead of forgetting a nonce that could then be replayed.
    """

    def __init__(self, capacity: int, window_seconds: int):
        self.capacity = capacity
        self.window = window_seconds
        self._seen: OrderedDict[tuple[str, str], int] = OrderedDict()

    def check(self, participant: str, nonce: str, now: float) -> None:
        """Refuse a nonce seen within the window, or any nonce while the memory is full of live ones."""
        seen = self._seen
        horizon = now - 2 * self.window  # a request is fresh within +-window of its timestamp
        while seen:
            first = next(iter(seen.values()))
            if first >= horizon:
                break
            seen.popitem(last=False)
        if (participant, nonce) in seen:
            raise Refused(401, "replayed_request", f"nonce {nonce} was already used by {participant}")
        if len(seen) >= self.capacity:
            raise Refused(503, "nonce_memory_full", f"the service remembers nonces_max={self.capacity} nonces "
                                                    "and all are live; retry shortly", {"retry-after": "1"})

    def remember(self, participant: str, nonce: str, now: float) -> None:
        """Spend a nonce that `check` passed (the caller has not awaited since)."""
        self._seen[(participant, nonce)] = int(now)

    def check_and_remember(self, participant: str, nonce: str, now: float) -> None:
        self.check(participant, nonce, now)
        self.remember(participant, nonce, now)

    def __len__(self) -> int:
        return len(self._seen)


class RateLimiter:
    """A token bucket per key: `rate` tokens a second, holding at most one second's worth."""

    def __init__(self, rate: float, what: str):
        self.rate = rate
        self.what = what
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, tokens: float, now: float) -> None:
        tokens_now, last = self._buckets.pop(key, (self.rate, now))
        tokens_now = min(self.rate, tokens_now + (now - last) * self.rate)
        if tokens > tokens_now and not (tokens > self.rate and tokens_now >= self.rate):
            self._buckets[key] = (tokens_now, now)
            wait = (tokens - tokens_now) / self.rate
            raise Refused(429, "rate_limited", f"{key} exceeds {self.what}={self.rate:g} a second; retry in "
                                               f"{wait:.2f} s", {"retry-after": str(max(1, round(wait)))})
        self._buckets[key] = (tokens_now - tokens, now)
        if len(self._buckets) > RATE_BUCKETS_MAX:
            self._buckets.popitem(last=False)  # the least recently seen key starts afresh
