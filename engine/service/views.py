"""What the service knows beside the ledger state, and what each reader may see.

`Recorder` follows the journal entry by entry (on open, from genesis; then
after each commit) and keeps three indexes, none of which the ledger needs:

- `applied`: digest of every envelope the engine authorized -> where it
  was applied (entry seq, first command, command count), so a resubmitted
  envelope is answered "already applied" with its original entry instead
  of being refused as `replayed_sequence`. 16 bytes of SHA-256 and one int
  per envelope (about 150 bytes in CPython): per-batch envelopes make it
  small, one envelope a pair makes it grow like the engine's own id index.
- `records`: per (kind, key), the protocol records commands named
  (`Protocol.record_of`: a DvP trade, a repo) with their parties and the
  outcome the protocol's events gave them (`Protocol.record_outcomes`), so
  a trade that settled and left the book can still be read, and so events,
  which carry only a record's key, can be shown to that record's parties.
  At most `history_records_max` keys; the oldest are forgotten first (their
  events are then shown to privileged readers only).
- `holds`: hold and encumbrance ids -> (owner, beneficiary), for the same
  reason (a `Release` names only the hold).

It also notes `members_seq`, the last entry that changed a member's roles
or status, so an open event stream knows when to check its reader again.

Event refs are keys shared by all pairs of parties that use the same trade
id: an event of one pair's trade is also shown to the parties of another
pair's trade with the same id (events carry the trade id alone). Use
distinct trade ids across pairs where that matters.

Who sees what (`Reader.privileged`: the operator, `compliance`, `auditor`):
a privileged reader sees every command and event; any other member sees
the entry header, the commands it signed or is party to (with their
results) and the events of records it is party to.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import msgspec

from .. import codes as C
from ..protocol import Protocol, QueryAnswer
from ..records import (
    ROLE_AUDITOR,
    ROLE_COMPLIANCE,
    Admit,
    Burn,
    Command,
    Encumber,
    Entry,
    Envelope,
    Freeze,
    Hold,
    Mint,
    Move,
    RegisterAsset,
    Reinstate,
    Release,
    Remove,
    SetRoles,
    Suspend,
    Unencumber,
    Unfreeze,
)
from .wire import CommandView, EntryView, EventView, Record

ENVELOPE_REFUSALS = frozenset(range(C.WRONG_CHAIN, C.ID_CONFLICT))  # 10..19: refused before any command ran
POSITION_BITS = 20
SEQ_SHIFT = 2 * POSITION_BITS
DIGEST_BYTES = 16
PRIVILEGED_ROLES = frozenset({ROLE_COMPLIANCE, ROLE_AUDITOR})
MEMBERSHIP_CHANGES = (Suspend, Reinstate, Remove, SetRoles)

_envelope_encoder = msgspec.msgpack.Encoder()


def envelope_digest(env: Envelope) -> bytes:
    """Name an envelope by its bytes: equal digests, the same signed envelope."""
    return hashlib.sha256(_envelope_encoder.encode(env)).digest()[:DIGEST_BYTES]


class Reader(msgspec.Struct, frozen=True):
    """An authenticated reader: a participant id, and whether it may see everything."""

    id: str
    privileged: bool


def is_privileged(participant: str, roles: Iterable[str], operator: str) -> bool:
    return participant == operator or not PRIVILEGED_ROLES.isdisjoint(roles)


class Stored:
    """One remembered record: parties, last known content, and how it ended (if it did)."""

    __slots__ = ("parties", "default", "outcome", "record", "detail", "seq")

    def __init__(self, parties: tuple[str, ...], default: str, record, seq: int):
        self.parties = parties
        self.default = default  # the status once not live, if no event said otherwise
        self.outcome = ""
        self.record = record
        self.detail: dict[str, str] = {}
        self.seq = seq


def engine_parties(cmd: Command, holds: dict[str, tuple[str, str]]) -> tuple[str, ...]:
    """The participants an engine command concerns (its signers see it anyway)."""
    kind = type(cmd)
    if kind is Move:
        return (cmd.source, cmd.target)
    if kind is Mint:
        return (cmd.target,)
    if kind in (Hold, Encumber):
        return (cmd.owner, cmd.beneficiary)
    if kind is Release:
        return holds.get(cmd.hold, ())
    if kind is Unencumber:
        return holds.get(cmd.encumbrance, ())
    if kind in (Admit, Suspend, Reinstate, Remove, SetRoles, Freeze, Unfreeze):
        return (cmd.participant,)
    if kind is RegisterAsset:
        return (cmd.asset.issuer,)
    if kind is Burn:
        return ()
    return ()


def command_fields(cmd: Command) -> dict:
    """A command as a self-describing mapping: its fields and its type tag."""
    fields = msgspec.structs.asdict(cmd)
    fields["type"] = type(cmd).__struct_config__.tag
    return fields


class Recorder:
    """The service's indexes over the journal (see the module docstring); owned by the writer thread."""

    def __init__(self, protocols: Sequence[Protocol], history_records_max: int):
        self.applied: dict[bytes, int] = {}
        self.records: dict[tuple[str, str], list[Stored]] = {}
        self.holds: dict[str, tuple[str, str]] = {}
        self.members_seq = 0  # the last entry that changed a member's roles or status (open streams re-check theirs)
        self.history_max = history_records_max
        self.by_kind: dict[str, Protocol] = {}
        self.kind_of_protocol: dict[str, str] = {}
        self.recording: dict[type, Protocol] = {}
        for p in protocols:
            for kind in p.query_kinds:
                self.by_kind[kind] = p
                self.kind_of_protocol.setdefault(p.name, kind)
            if p.query_kinds:
                for command_type in p.handlers():
                    self.recording[command_type] = p

    # ------------------------------------------------------------ following

    def observe(self, entry: Entry, commands: Sequence[tuple[Command, ...]]) -> None:
        """Index one committed entry; `commands[i]` are the decoded commands of `entry.envelopes[i]`."""
        seq = entry.seq
        results = entry.results
        applied = self.applied
        offset = 0
        for env, cmds in zip(entry.envelopes, commands):
            n = len(cmds)
            if n and results[offset] not in ENVELOPE_REFUSALS:
                applied[envelope_digest(env)] = seq << SEQ_SHIFT | offset << POSITION_BITS | n
            offset += n
        recording = self.recording
        holds = self.holds
        position = 0
        for cmds in commands:
            for cmd in cmds:
                kind = type(cmd)
                if kind is Move:
                    pass
                elif results[position] != C.OK:
                    pass
                elif kind in MEMBERSHIP_CHANGES:
                    self.members_seq = seq
                elif kind in (Hold, Encumber):
                    holds[cmd.id] = (cmd.owner, cmd.beneficiary)
                    if len(holds) > self.history_max:
                        del holds[next(iter(holds))]
                elif kind in recording:
                    answer = recording[kind].record_of(cmd)
                    if answer is not None:
                        self._remember(answer, seq)
                position += 1
        for event in entry.events:
            kind = self.kind_of_protocol.get(event.protocol)
            stored = self.records.get((kind, event.ref)) if kind else None
            if not stored:
                continue
            outcome = self.by_kind[kind].record_outcomes.get(event.kind)
            for record in stored:
                record.seq = seq
                if outcome:
                    record.outcome = outcome
                    record.detail = dict(event.data)

    def _remember(self, answer: QueryAnswer, seq: int) -> None:
        key = (answer.kind, answer.key)
        stored = self.records.get(key)
        if stored is None:
            stored = self.records[key] = []
            if len(self.records) > self.history_max:
                del self.records[next(iter(self.records))]
        if not answer.parties:  # the command names the record only: it touched every record with this key
            for record in stored:
                record.seq = seq
            return
        for record in stored:
            if record.parties == answer.parties:  # the same record again (or its key reused after it ended)
                record.default = answer.status or record.default
                record.outcome = ""
                record.detail = {}
                if answer.record is not None:
                    record.record = answer.record
                record.seq = seq
                return
        stored.append(Stored(tuple(answer.parties), answer.status, answer.record, seq))

    # -------------------------------------------------------------- answers

    def answer(self, state, kind: str, key: str, reader: Reader) -> list[Record] | None:
        """Live records first, then remembered ones no longer live; None if no protocol serves `kind`."""
        protocol = self.by_kind.get(kind)
        if protocol is None:
            return None
        stored = list(self.records.get((kind, key), ()))
        out: list[Record] = []
        live_parties = set()
        for a in protocol.query(state, kind, key):
            parties = tuple(a.parties)
            live_parties.add(parties)
            seq = next((s.seq for s in stored if s.parties == parties), 0)
            if reader.privileged or reader.id in parties:
                out.append(Record(kind=kind, key=key, status=a.status, parties=list(parties), live=True, seq=seq,
                                  record=a.record))
        for s in stored:
            if s.parties in live_parties or not (reader.privileged or reader.id in s.parties):
                continue
            out.append(Record(kind=kind, key=key, status=s.outcome or s.default, parties=list(s.parties),
                              live=False, seq=s.seq, record=s.record, detail=s.detail))
        return out

    def command_parties(self, cmd: Command) -> tuple[str, ...]:
        protocol = self.recording.get(type(cmd))
        if protocol is None:
            return engine_parties(cmd, self.holds)
        answer = protocol.record_of(cmd)
        if answer is None:
            return ()
        if answer.parties:
            return tuple(answer.parties)
        return tuple(p for s in self.records.get((answer.kind, answer.key), ()) for p in s.parties)

    def event_parties(self, protocol: str, ref: str) -> tuple[str, ...]:
        if protocol == "engine":
            return self.holds.get(ref, ())
        kind = self.kind_of_protocol.get(protocol)
        return tuple(p for s in self.records.get((kind, ref), ()) for p in s.parties) if kind else ()

    def entry_view(self, entry: Entry, digest: bytes, commands: Sequence[tuple[Command, ...]],
                   reader: Reader) -> EntryView:
        """Cut an entry to what `reader` may see (see the module docstring)."""
        views: list[CommandView] = []
        complete = True
        position = 0
        everything = reader.privileged
        me = reader.id
        for env, cmds in zip(entry.envelopes, commands):
            signers = [s.signer for s in env.signatures]
            mine = everything or me in signers
            for cmd in cmds:
                if mine or me in self.command_parties(cmd):
                    result = entry.results[position]
                    views.append(CommandView(position=position, result=result, name=C.name(result),
                                             signers=signers, command=command_fields(cmd)))
                else:
                    complete = False
                position += 1
        events: list[EventView] = []
        for e in entry.events:
            if everything or me in self.event_parties(e.protocol, e.ref):
                events.append(EventView(at=e.at, protocol=e.protocol, kind=e.kind, ref=e.ref, data=dict(e.data),
                                        position=e.position))
            else:
                complete = False
        return EntryView(seq=entry.seq, hash=digest.hex(), prev=entry.prev.hex(), at=entry.at,
                         digest=entry.digest.hex(), commands=views, events=events, complete=complete)


def unpack(packed: int) -> tuple[int, int, int]:
    """(entry seq, first command position, command count) of an `applied` value."""
    mask = (1 << POSITION_BITS) - 1
    return packed >> SEQ_SHIFT, (packed >> POSITION_BITS) & mask, packed & mask
