"""The service's wire records and limits: what requests carry and answers give.

Shared by the server (`engine.service`) and the client (`engine.client`),
so both sides encode and decode the same typed records with msgspec, as
JSON (`application/json`) or msgpack (`application/msgpack`). Bytes
(payloads, signatures) travel as base64 in JSON; hashes and digests as hex.
Amounts are integers in minor units, times integer seconds.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..records import Envelope

JSON = "application/json"
MSGPACK = "application/msgpack"
MIB = 1 << 20

# Request signing (reads and streams): these headers, over `engine.service.auth.request_message`.
HEADER_PARTICIPANT = "x-dvp-participant"
HEADER_TIMESTAMP = "x-dvp-timestamp"
HEADER_NONCE = "x-dvp-nonce"
HEADER_SIGNATURE = "x-dvp-signature"


class Limits(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Every bound the service enforces; exceeding one answers a 4xx naming it."""

    body_bytes_max: int = 16 * MIB  # one request body
    body_seconds_max: float = 60.0  # to receive one request body, once its head arrived
    envelopes_per_request_max: int = 64
    commands_per_envelope_max: int = 32_768
    signatures_per_envelope_max: int = 256  # each a distinct member's; every one is checked before the journal
    commands_per_request_max: int = 65_536
    group_commands_max: int = 131_072  # one journal entry (group commit); at least commands_per_request_max
    group_wait_seconds: float = 0.002  # how long the writer waits for more requests to fill an entry
    queue_requests_max: int = 4_096  # submissions waiting for the writer
    queue_bytes_max: int = 256 * MIB  # request bodies being received or waiting for their answer, all together
    streams_max: int = 64  # open event streams, all readers together
    streams_per_participant_max: int = 4
    reads_per_second: float = 500.0  # signed reads per participant (token bucket, burst of one second)
    commands_per_second: float = 2_000_000.0  # submitted commands per first signer (burst of one second)
    request_age_seconds_max: int = 30  # a signed request's timestamp may differ from the server's clock by this
    nonces_max: int = 200_000  # nonces remembered within the age window
    page_entries_max: int = 100  # entries per GET /v1/entries page
    page_bytes_max: int = 8 * MIB  # stored entry bytes per page (at least one entry is always served)
    history_records_max: int = 1_000_000  # trades and repos remembered after they leave the live state


class SubmitRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `POST /v1/envelopes`: signed envelopes, applied in order."""

    envelopes: list[Envelope]


class Outcome(msgspec.Struct, kw_only=True):
    """What became of one envelope: the entry that holds it and one result code per command."""

    seq: int
    hash: str
    results: list[int]
    names: list[str]
    already_applied: bool = False  # sent before and applied then (in entry `seq`): nothing changed now


class SubmitAnswer(msgspec.Struct, kw_only=True):
    """The answer to `POST /v1/envelopes`: 200 when every command is ok, else 422 `commands_refused`."""

    code: int
    name: str
    detail: str
    outcomes: list[Outcome]


class ErrorBody(msgspec.Struct):
    """Every refusal of the service: the HTTP status, a stable name, and a sentence naming the value at fault."""

    code: int
    name: str
    detail: str


class HoldView(msgspec.Struct, kw_only=True):
    id: str
    asset: str
    owner: str
    beneficiary: str
    amount: int
    expires_at: int = 0


class Account(msgspec.Struct, kw_only=True):
    """A participant's accounts: balances (holds excluded), encumbered amounts, holds, freezes, last sequence number."""

    participant: str
    status: str
    roles: list[str]
    seq: int  # the last envelope sequence number it signed with: sign the next one with seq + 1
    at: int  # ledger time
    head_seq: int
    balances: dict[str, int]
    encumbered: dict[str, int] = {}
    holds: list[HoldView] = []
    frozen: list[str] = []  # assets frozen for it ("*": all)


class Record(msgspec.Struct, kw_only=True):
    """A protocol record (a trade, a repo) as the reader may see it."""

    kind: str
    key: str
    status: str
    parties: list[str]
    live: bool  # True: answered from the ledger state now; False: from the journal's history
    seq: int = 0  # the last entry that changed it (0 if unknown)
    record: Any = None
    detail: dict[str, str] = {}  # the data of the event that ended it (e.g. a failure's reason)


class Records(msgspec.Struct):
    records: list[Record]


class CommandView(msgspec.Struct, kw_only=True):
    position: int  # in the entry (aligned with the entry's results)
    result: int
    name: str
    signers: list[str]
    command: dict[str, Any]  # the command's fields and its "type" tag


class EventView(msgspec.Struct, kw_only=True):
    at: int
    protocol: str
    kind: str
    ref: str
    data: dict[str, str] = {}
    position: int = -1


class EntryView(msgspec.Struct, kw_only=True):
    """A journal entry cut to what the reader may see; the header (seq, hashes, time, digest) is always shown."""

    seq: int
    hash: str
    prev: str
    at: int
    digest: str
    commands: list[CommandView] = []
    events: list[EventView] = []
    complete: bool = True  # False: some commands or events were left out for this reader


class EntriesPage(msgspec.Struct, kw_only=True):
    entries: list[EntryView]
    next_seq: int  # ask for this one next
    head_seq: int


class Health(msgspec.Struct, kw_only=True):
    status: str  # "ok", or "stopped" after a ledger fault (restart the server)
    chain_id: str
    head_seq: int
    head_hash: str
    at: int
    queue_depth: int
    protocols: list[str]
    limits: Limits


def accepts_msgpack(accept: str | None, content_type: str | None = None) -> bool:
    """Tell whether to answer in msgpack: the client asked for it, or wrote its request in it and takes anything."""
    if accept and MSGPACK in accept:
        return True
    return (not accept or accept.strip() == "*/*") and MSGPACK in (content_type or "")
