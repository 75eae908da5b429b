"""What the service knows beside the ledger state, and what each reader may see.

`Recorder` follows the journal entry by entry (on open, from genesis; then
after each commit) and keeps three indexes, none of which the ledger needs:

- `applied`: digest of every envelope the engine authorized -> where it
  was applied (entry seq, first command, command count), so a resubmitted
  envelope is answered "already applied" with its original entry instead
  of being refused as `replayed_sequence`; and likewise every envelope
  refused for good (`FINAL_REFUSALS`: expired, a spent sequence number),
  answered with its refusal and no new entry. 16 bytes of SHA-256 and one int
  per envelope (about 150 bytes in CPython): per-batch envelopes make it
  small, one envelope a pair makes it grow like the engine's own id index.
- `records`: per (kind, key), the protocol records commands named
  (`Protocol.record_of`: a DvP trade, a repo) with their parties and the
  outcome the protocol's events gave them (`Protocol.record_outcomes`), so
  a trade that settled and left the book can still be read, and so events,
  which carry only a record's key, can be shown to that record's parties
  (see below).
  At most `history_records_max` keys; the oldest are forgotten first (their
  events are then shown to privileged readers only).
- `holds`: hold and encumbrance ids -> (owner, beneficiary), for the same
  reason (a `Release` names only the hold).

It also notes `members_seq`, the last entry that changed a member's roles
or status, so an open event stream knows when to check its reader again.

Events carry a record's key alone, and several pairs of parties may use
one key (a DvP trade id is unique per pair; a repo id may be used again
once the repo ended). So each event is attributed to one record: the one
the command that caused it names with its parties (an `Instruct`, a
`Settle`, an `OpenRepo`); else the one record with that key open at that
moment (between an event of its own and its ending event; for a command
naming the key alone, such as a `Cancel` without parties, the open one its
signers are party to). An event that could be about several records is
shown to privileged readers only, and a record it may have ended reads
`unknown`: no pair ever sees, or changes, another pair's record.

Who sees what (`Reader.privileged`: the operator, `compliance`, `auditor`):
a privileged reader sees every command and event; any other member sees
the entry header, the commands it signed or is party to (with their
results) and the events of records it is party to.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
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
# Refusals of a whole envelope that no later state can lift (time, sequence numbers and a certificate's end only
# move on): such an envelope is indexed like an applied one, so sending it again writes no new entry.
FINAL_REFUSALS = frozenset({C.REPLAYED_SEQUENCE, C.STALE_SEQUENCE, C.EXPIRED, C.CERTIFICATE_EXPIRED})
POSITION_BITS = 20  # a command's position in a batch: below the engine's BATCH_COMMANDS_MAX (2**20)
COUNT_BITS = POSITION_BITS + 1  # an envelope's command count: up to a whole batch, 2**20
SEQ_SHIFT = POSITION_BITS + COUNT_BITS
DIGEST_BYTES = 16
PRIVILEGED_ROLES = frozenset({ROLE_COMPLIANCE, ROLE_AUDITOR})
MEMBERSHIP_CHANGES = (Suspend, Reinstate, Remove, SetRoles)
EVENT_BITS = 32  # a moment in the journal: entry seq << EVENT_BITS | the index of an event in the entry
SPANS_MAX = 16  # open spans remembered per record (a key its parties reuse again and again)
AMBIGUOUS = "unknown"  # the status of a record whose ending event could have been another record's with its key

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
    """One remembered record: parties, last known content, how it ended (if it did), and when it was open.

    `spans` are the intervals (moments: entry seq and event index, `EVENT_BITS`) during which the
    record was open: from an event of its own that is not an ending one to
    the ending event (`Protocol.record_outcomes`), the end None while open.
    A record that never had such an event (a DvP `Settle` that settled at
    once) was never open.
    """

    __slots__ = ("parties", "default", "outcome", "record", "detail", "seq", "spans")

    def __init__(self, parties: tuple[str, ...], default: str, record, seq: int):
        self.parties = parties
        self.default = default  # the status once not live, if no event said otherwise
        self.outcome = ""
        self.record = record
        self.detail: dict[str, str] = {}
        self.seq = seq
        self.spans: list[list] = []

    def open_at(self, at: int) -> bool:
        for start, end in self.spans:
            if start <= at and (end is None or at <= end):
                return True
        return False

    def is_open(self) -> bool:
        return bool(self.spans) and self.spans[-1][1] is None


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
            if n and (results[offset] not in ENVELOPE_REFUSALS or results[offset] in FINAL_REFUSALS):
                applied[envelope_digest(env)] = pack(seq, offset, n)
            offset += n
        recording = self.recording
        holds = self.holds
        causes: dict[int, tuple[QueryAnswer, frozenset[str]]] = {}  # the record commands, by batch position
        events = entry.events
        before = 0  # events before the command at `position` (events come in batch order)
        position = 0
        for env, cmds in zip(entry.envelopes, commands):
            names = None
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
                        names = names or frozenset(s.signer for s in env.signatures)
                        causes[position] = answer, names
                        if not answer.parties:  # the moment it ran matters (see `_remember`)
                            while before < len(events) and events[before].position < position:
                                before += 1
                        self._remember(answer, seq, seq << EVENT_BITS | before, names)
                position += 1
        kinds, records, candidates_of = self.kind_of_protocol, self.records, self._candidates
        for index, event in enumerate(events):
            kind = kinds.get(event.protocol)
            stored = records.get((kind, event.ref)) if kind else None
            if not stored:
                continue
            at = seq << EVENT_BITS | index
            outcome = self.by_kind[kind].record_outcomes.get(event.kind)
            cause = causes.get(event.position)
            if cause is not None and cause[0].parties and cause[0].key == event.ref and cause[0].kind == kind:
                parties = cause[0].parties  # the common case, as `_candidates` would find it
                record = next((r for r in stored if r.parties == parties), None)
                if record is None:
                    continue
            else:
                candidates = candidates_of(stored, kind, event, at, causes)
                if len(candidates) != 1:  # none, or several it could be about: it changes none
                    for record in candidates if outcome else ():
                        record.outcome = AMBIGUOUS
                        record.detail = {"reason": f"{len(candidates)} records share this key"}
                    continue
                (record,) = candidates
            record.seq = seq
            if outcome:
                record.outcome = outcome
                record.detail = dict(event.data)
                if record.is_open():
                    record.spans[-1][1] = at
                else:
                    record.spans.append([at, at])
            elif not record.is_open():
                record.spans.append([at, None])
                if len(record.spans) > SPANS_MAX:  # its oldest events are then shown to privileged readers only
                    del record.spans[0]

    @staticmethod
    def _candidates(stored: list[Stored], kind: str, event, at: int,
                    causes) -> list[Stored]:
        """The records an event with this key may be about: the one the command that caused it names with its
        parties; else those open at `at`, and of those the ones its signers are party to if the command names
        the key alone (a `Cancel` without parties, a `CloseRepo`), if any. `causes` holds the answer of
        `record_of` and the signers of each successful record command of the entry, by batch position.

        Whatever record an event is about was open at its moment: `observe` opens, extends or closes a span
        there. So a read that finds one record (or none) open then needs no more (`event_parties`).
        """
        names = None
        cause = causes.get(event.position)
        if cause is not None and cause[0].kind == kind and cause[0].key == event.ref:
            answer, names = cause
            if answer.parties:
                return [r for r in stored if r.parties == answer.parties]
        candidates = [r for r in stored if r.open_at(at)]
        if names is not None:
            mine = [r for r in candidates if not names.isdisjoint(r.parties)]
            candidates = mine or candidates  # signed by none of their parties (the operator, say): all stay
        return candidates

    def _remember(self, answer: QueryAnswer, seq: int, at: int, signers: frozenset[str]) -> None:
        key = (answer.kind, answer.key)
        stored = self.records.get(key)
        if stored is None:
            stored = self.records[key] = []
            if len(self.records) > self.history_max:
                del self.records[next(iter(self.records))]
        if not answer.parties:  # the command names the key only: it touched the open record its signers are party to
            mine = [r for r in stored if r.open_at(at) and not signers.isdisjoint(r.parties)]
            if len(mine) == 1:
                mine[0].seq = seq
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

    def command_parties(self, cmd: Command, answer: QueryAnswer | None, at: int,
                        signers: frozenset[str]) -> tuple[str, ...]:
        """Who besides its signers may see a command (`answer`: its `record_of`): its parties; for one naming a
        record's key alone, the parties of the one record open at `at` its signers are party to (none if several)."""
        if type(cmd) not in self.recording:
            return engine_parties(cmd, self.holds)
        if answer is None:
            return ()
        if answer.parties:
            return tuple(answer.parties)
        stored = self.records.get((answer.kind, answer.key), ())
        mine = [r for r in stored if r.open_at(at) and not signers.isdisjoint(r.parties)]
        return mine[0].parties if len(mine) == 1 else ()

    def event_parties(self, event, at: int, causes) -> tuple[str, ...]:
        """Who besides privileged readers may see an event: the parties of the one record it is about."""
        if event.protocol == "engine":
            return self.holds.get(event.ref, ())
        kind = self.kind_of_protocol.get(event.protocol)
        stored = self.records.get((kind, event.ref)) if kind else None
        if not stored:
            return ()
        open_then = [r for r in stored if r.open_at(at)]  # an event's record was open at its moment (`observe`)
        if len(open_then) <= 1:
            return open_then[0].parties if open_then else ()
        candidates = self._candidates(stored, kind, event, at, causes)
        return candidates[0].parties if len(candidates) == 1 else ()

    def entry_view(self, entry: Entry, digest: bytes, commands: Sequence[tuple[Command, ...]],
                   reader: Reader) -> EntryView:
        """Cut an entry to what `reader` may see (see the module docstring)."""
        views: list[CommandView] = []
        complete = True
        position = 0
        everything = reader.privileged
        me = reader.id
        seq = entry.seq
        recording = self.recording
        causes = _Causes(recording, entry, commands)
        happened = entry.events
        before = 0
        for env, cmds in zip(entry.envelopes, commands):
            signers = [s.signer for s in env.signatures]
            frozen = frozenset(signers)
            mine = everything or me in frozen
            for cmd in cmds:
                visible = mine
                if not visible:
                    protocol = recording.get(type(cmd))
                    answer = protocol.record_of(cmd) if protocol is not None else None
                    if answer is not None and not answer.parties:  # the moment it ran matters (`command_parties`)
                        while before < len(happened) and happened[before].position < position:
                            before += 1
                    visible = me in self.command_parties(cmd, answer, seq << EVENT_BITS | before, frozen)
                if visible:
                    result = entry.results[position]
                    views.append(CommandView(position=position, result=result, name=C.name(result),
                                             signers=signers, command=command_fields(cmd)))
                else:
                    complete = False
                position += 1
        events: list[EventView] = []
        for index, e in enumerate(happened):
            if everything or me in self.event_parties(e, seq << EVENT_BITS | index, causes):
                events.append(EventView(at=e.at, protocol=e.protocol, kind=e.kind, ref=e.ref, data=dict(e.data),
                                        position=e.position))
            else:
                complete = False
        return EntryView(seq=entry.seq, hash=digest.hex(), prev=entry.prev.hex(), at=entry.at,
                         digest=entry.digest.hex(), commands=views, events=events, complete=complete)


class _Causes:
    """`record_of` of the successful record command at a batch position, and its envelope's signers, found
    when an event asks (as `Recorder.observe` collects them for every such command)."""

    def __init__(self, recording: dict[type, Protocol], entry: Entry, commands: Sequence[tuple[Command, ...]]):
        self.recording = recording
        self.entry = entry
        self.commands = commands
        self.starts: list[int] = []  # each envelope's first batch position
        total = 0
        for cmds in commands:
            self.starts.append(total)
            total += len(cmds)
        self.found: dict[int, tuple[QueryAnswer, frozenset[str]] | None] = {}

    def get(self, position: int) -> tuple[QueryAnswer, frozenset[str]] | None:
        if position in self.found:
            return self.found[position]
        cause = None
        if 0 <= position < len(self.entry.results) and self.entry.results[position] == C.OK:
            e = bisect_right(self.starts, position) - 1
            cmd = self.commands[e][position - self.starts[e]]
            protocol = self.recording.get(type(cmd))
            answer = protocol.record_of(cmd) if protocol is not None else None
            if answer is not None:
                cause = answer, frozenset(s.signer for s in self.entry.envelopes[e].signatures)
        self.found[position] = cause
        return cause


def unpack(packed: int) -> tuple[int, int, int]:
    """(entry seq, first command position, command count) of an `applied` value."""
    return (packed >> SEQ_SHIFT, (packed >> COUNT_BITS) & ((1 << POSITION_BITS) - 1),
            packed & ((1 << COUNT_BITS) - 1))


def pack(seq: int, first: int, count: int) -> int:
    """An `applied` value: the entry, the envelope's first command position and its command count."""
    return seq << SEQ_SHIFT | first << COUNT_BITS | count
