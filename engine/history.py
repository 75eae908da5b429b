"""Account history: each change of one account, with the entry, commands and events that made it.

Takes a `Ledger` (the writer, or one opened read-only), a participant, an
asset and a range of entries; gives one `AccountChange` per step of the
ledger that changed the account's balance or its encumbered amount.

The journal stores batches, their results, their events and the state
digest after each batch, not the balance change of each command. So the
history is derived, by running the journal again on a private copy of the
state, with the journal's own machinery:

1. The base: the newest snapshot at or before `since_seq` whose digest
   matches its entry (else genesis), loaded as a fresh `State`.
2. Entries from there to `since_seq` are re-applied without recording;
   entries after it, up to `until_seq`, are re-applied while the account is
   sampled every time the state machine moves to another command (the
   machine sets `state.position` before each command: -1 for due work
   before the batch, the batch length for the protocols' after-batch hooks).
   Each re-applied entry must give the results and events it recorded,
   or `JournalError` is raised.
3. A change is attributed to a step: the due work before the batch
   (timers, cut-offs, expiries, a liquidity pass when time moved on); one
   command or one linked chain (so a chain that failed and rolled back
   shows no change); or the after-batch hooks. A step's change includes
   what its command set off: queued trades that a credit recycled, margin
   calls met when a price moved, the due work a `Tick` ran.

The batch hot path for DvP-shaped move pairs settles runs of pairs
without visiting each command, so it is switched off (with
`engine.fastpath.general_paths`) while history replays; results are the
same either way (the differential tests check it). The switch is global to
the process: a writer thread committing at the same time runs its general
path meanwhile (slower, never different). One history replay runs at a
time in a process.

Cost: the re-application of every entry from the base snapshot to
`until_seq` (what reopening a ledger from that snapshot costs, plus one
account read per command), whatever the range asked for; memory of one
extra copy of the state. Snapshots (`snapshot_every`, `Ledger.snapshot`)
bound it: a history since entry S replays from the newest snapshot at or
before S. It reads; it never writes the journal or the ledger's state.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

import msgspec

from . import codes as C
from .fastpath import general_paths
from .journal import JournalError
from .ledger import Ledger, decode_entry
from .records import Command, Entry, Event, Tick
from .state import State

Cause = Literal["due", "command", "after_batch"]
_SAMPLER = "engine.history"
_POSITION = State.__dict__["position"]  # the slot the machine writes before each command
_replaying = threading.Lock()


class CommandRef(msgspec.Struct, frozen=True, kw_only=True):
    """One command of the journal: where it is, what it was, what came of it."""

    seq: int  # the entry
    position: int  # its place in the entry's batch (as in `Entry.results`)
    at: int  # ledger time when it ran (the entry's time, moved on by earlier `Tick`s of the batch)
    id: str
    type: str  # the command's type tag ("move", "dvp_settle", ...)
    result: int
    result_name: str
    signers: tuple[str, ...]  # who signed its envelope
    command: Any  # the decoded `Command`


class RecordEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the journal, with the entry it is in."""

    seq: int
    at: int
    protocol: str
    kind: str
    ref: str
    data: dict[str, str]
    position: int  # the command that caused it (-1: due work before the batch)


class AccountChange(msgspec.Struct, frozen=True, kw_only=True):
    """One step that changed an account: amounts in the asset's minor units.

    `balance_*` is what `Ledger.balance` gives (held amounts have left it;
    encumbered amounts are in it); `encumbered_*` the part of it pledged.
    `commands` are the step's command or linked chain (empty for due work
    and after-batch hooks); `events` what the step emitted.
    """

    seq: int
    at: int
    participant: str
    asset: str
    cause: Cause
    balance_before: int
    balance_after: int
    delta: int
    encumbered_before: int
    encumbered_after: int
    commands: tuple[CommandRef, ...]
    events: tuple[RecordEvent, ...]


class Decoded(msgspec.Struct, frozen=True, kw_only=True):
    """An entry's commands in batch order (aligned with `entry.results`), who signed each, and when each ran."""

    entry: Entry
    commands: list[Command]
    signers: list[tuple[str, ...]]
    sizes: list[int]  # commands per envelope
    times: list[int]


def decode_commands(ledger: Ledger, entry: Entry) -> Decoded:
    """Decode an entry's envelopes: each command with its envelope's signers and its ledger time.

    A command's time is the entry's, moved on by each accepted `Tick` before it in the batch.
    """
    commands: list[Command] = []
    signers: list[tuple[str, ...]] = []
    sizes = []
    for env in entry.envelopes:
        cmds = ledger.machine.decode(env.payload)
        commands.extend(cmds)
        signers.extend([tuple(s.signer for s in env.signatures)] * len(cmds))
        sizes.append(len(cmds))
    now = entry.at
    times = []
    for cmd, result in zip(commands, entry.results):
        times.append(now)
        if type(cmd) is Tick and result == C.OK and cmd.to > now:
            now = cmd.to
    return Decoded(entry=entry, commands=commands, signers=signers, sizes=sizes, times=times)


def command_ref(decoded: Decoded, i: int) -> CommandRef:
    """Describe command `i` of a decoded entry."""
    cmd = decoded.commands[i]
    result = decoded.entry.results[i]
    return CommandRef(seq=decoded.entry.seq, position=i, at=decoded.times[i], id=cmd.id,
                      type=str(type(cmd).__struct_config__.tag), result=result, result_name=C.name(result),
                      signers=decoded.signers[i], command=cmd)


def event_record(entry: Entry, event: Event) -> RecordEvent:
    return RecordEvent(seq=entry.seq, at=event.at, protocol=event.protocol, kind=event.kind, ref=event.ref,
                       data=dict(event.data), position=event.position)


# ------------------------------------------------------------------ sampling


class _Sampled(State):
    """A state whose `position` writes are observed: the machine sets it before each command."""

    __slots__ = ()

    @property
    def position(self) -> int:
        return _POSITION.__get__(self, State)  # type: ignore[no-any-return]

    @position.setter
    def position(self, value: int) -> None:
        sampler = self.runtime.get(_SAMPLER)
        if sampler is not None:
            sampler.moved(self, value)
        _POSITION.__set__(self, value)


class _Sampler:
    """Follow one account across the steps of one entry; collect (step, before, after) for steps that changed it."""

    def __init__(self, participant: str, asset: str, group: list[int]):
        self.participant = participant
        self.asset = asset
        self.group = group  # position -> the first position of its linked chain
        self.step: int | None = None
        self.before = (0, 0)
        self.changes: list[tuple[int, tuple[int, int], tuple[int, int]]] = []

    def read(self, state: State) -> tuple[int, int]:
        book = state.balances.get(self.asset)
        pledged = state.encumbered.get(self.asset)
        return (book.get(self.participant, 0) if book else 0, pledged.get(self.participant, 0) if pledged else 0)

    def step_of(self, position: int) -> int:
        return self.group[position] if 0 <= position < len(self.group) else position

    def moved(self, state: State, position: int) -> None:
        step = self.step_of(position)
        if step == self.step:
            return
        self.close(state)
        self.step = step
        self.before = self.read(state)

    def close(self, state: State) -> None:
        if self.step is None:
            return
        after = self.read(state)
        if after != self.before:
            self.changes.append((self.step, self.before, after))
        self.step = None


def chain_starts(decoded: Decoded) -> list[int]:
    """For each position, the first position of its linked chain (a chain ends with its envelope)."""
    owner: list[int] = []
    for e, size in enumerate(decoded.sizes):
        owner.extend([e] * size)
    commands = decoded.commands
    group: list[int] = []
    start = 0
    for i in range(len(commands)):
        if i == 0 or not (commands[i - 1].linked and owner[i - 1] == owner[i]):
            start = i
        group.append(start)
    return group


# ------------------------------------------------------------------ replaying


def _base(ledger: Ledger, since_seq: int) -> tuple[State, int]:
    """The state after the newest usable snapshot at or before `since_seq` (or genesis), and its entry."""
    journal = ledger.journal
    for seq in reversed(journal.snapshots()):
        if seq > since_seq:
            continue
        state = ledger._load_snapshot(seq)
        if state is not None and state.digest(ledger.machine.encoders) == decode_entry(
                journal.body(seq), journal.path, seq).digest:
            return state, seq
    genesis = decode_entry(journal.body(0), journal.path, 0).genesis
    if genesis is None:
        raise JournalError(f"{journal.path}: entry 0 is not a genesis entry")
    state = State.from_genesis(genesis)
    ledger.machine.new_state_protocols(state)
    return state, 0


def history(ledger: Ledger, participant: str, asset: str, since_seq: int = 0,
            until_seq: int | None = None) -> list[AccountChange]:
    """Every change of `participant`'s `asset` account made by entries after `since_seq`, up to `until_seq`.

    In journal order; pass the last change's `seq` as `since_seq` to go on
    from there. Raises ValueError for an unknown participant or asset or a
    range outside the journal; JournalError if the journal does not replay
    to what it recorded. See the module docstring for how it is derived and
    what it costs.
    """
    head = ledger.head_seq
    until = head if until_seq is None else until_seq
    if not 0 <= since_seq <= head or not since_seq <= until <= head:
        raise ValueError(f"entries {since_seq}..{until} are outside the journal (0..{head})")
    if participant not in ledger.state.participants:
        raise ValueError(f"unknown participant {participant!r}")
    if asset not in ledger.state.assets:
        raise ValueError(f"unknown asset {asset!r}")
    journal = ledger.journal
    machine = ledger.machine
    out: list[AccountChange] = []
    with _replaying, general_paths("engine.move_pairs"), journal.reading():
        state, base = _base(ledger, since_seq)
        state.__class__ = _Sampled
        for seq, _digest, body in journal.rows(base + 1):
            if seq > until:
                break
            entry = decode_entry(body, journal.path, seq)
            decoded = decode_commands(ledger, entry)
            per_envelope = []
            offset = 0
            for size in decoded.sizes:
                per_envelope.append(tuple(decoded.commands[offset:offset + size]))
                offset += size
            sampler = None
            if seq > since_seq:
                sampler = _Sampler(participant, asset, chain_starts(decoded))
                sampler.before = sampler.read(state)
                state.runtime[_SAMPLER] = sampler
            try:
                results, events = machine.apply(state, entry.seq, entry.at, entry.envelopes, per_envelope, None,
                                                ledger._lookup, signer_of=ledger._signer_of)
            finally:
                state.runtime.pop(_SAMPLER, None)
            if tuple(results) != entry.results or tuple(events) != entry.events:
                raise JournalError(f"{journal.path}: entry {seq} replays to other results or events than it "
                                   "recorded")
            if sampler is not None:
                sampler.close(state)
                out.extend(_changes(decoded, sampler))
    return out


def _changes(decoded: Decoded, sampler: _Sampler) -> list[AccountChange]:
    """Turn a sampler's (step, before, after) into `AccountChange`s with their commands and events."""
    entry = decoded.entry
    n = len(decoded.commands)
    out = []
    for step, (bal0, enc0), (bal1, enc1) in sampler.changes:
        refs: tuple[CommandRef, ...] = ()
        if step < 0:
            cause: Cause = "due"
            positions = range(-1, 0)
            at = entry.at
        elif step >= n:
            cause, positions = "after_batch", range(n, n + 1)
            at = entry.events[-1].at if entry.events else (decoded.times[-1] if n else entry.at)
        else:
            end = step
            while end + 1 < n and sampler.group[end + 1] == step:
                end += 1
            cause, positions, at = "command", range(step, end + 1), decoded.times[step]
            refs = tuple(command_ref(decoded, i) for i in positions)
        events = tuple(event_record(entry, e) for e in entry.events if e.position in positions)
        out.append(AccountChange(seq=entry.seq, at=at, participant=sampler.participant, asset=sampler.asset,
                                 cause=cause, balance_before=bal0, balance_after=bal1, delta=bal1 - bal0,
                                 encumbered_before=enc0, encumbered_after=enc1, commands=refs, events=events))
    return out
