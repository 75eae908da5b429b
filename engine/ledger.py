"""The embedding API: create or open a ledger, submit batches, read state.

A `Ledger` is the single writer of one journal. `submit` runs a batch
through four stages, each measurable on its own: decode (payloads into
typed commands), verify (signatures, optionally on a process pool), apply
(the state machine), persist (one journal transaction). State becomes visible
only after the batch is durable; if persisting fails the ledger stops
(`LedgerFault`) with its state rebuilt from what was committed (or, if the
journal cannot be read either, every read of the state raises), and
reopening goes on from there. An integer that does not fit 64 bits is
refused before anything runs (`MalformedEnvelope`).

Opening a ledger checks the whole hash chain, loads the newest snapshot
whose digest matches the journal and whose command-id index equals the one
the entries give (re-derived in the same pass), and replays the tail,
comparing every result, event and state digest with what was recorded.
Snapshots left out, or beyond the head, are named in `recovery_notes`.
`receipt()` gives the head as `SEQ:HASH` for a client to keep.

The journal is any `engine.journal.Journal`: a SQLite path, a
`postgresql://` URL or `:memory:`. A writer holds the journal's lock from
open to close; a second writer is refused (`JournalLocked`). A ledger opened
with `readonly=True` takes no lock, reads a consistent committed prefix and
refuses to submit.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Any

import msgspec

from .chain import _count_upto, _ids_agree, check_chain
from .faults import (
    INT64_MAX,
    INT64_MIN,
    LedgerFault,
    MalformedEnvelope,
    Unreadable,
    check_envelopes,
    splice,
)
from .identity import valid_id, verify_many
from .journal import Journal, JournalError, open_journal
from .machine import BATCH_COMMANDS_MAX, ID_POSITION_BITS, Machine, command_count
from .protocol import Protocol, discover, parse_rules_tag, rules_tag
from .records import ZERO_HASH, Command, Entry, Envelope, Genesis
from .state import Snapshot, State

if TYPE_CHECKING:  # the queries (engine.queries, engine.history) build on the ledger, imported when called
    from .history import AccountChange
    from .queries import RepoState, TradeStatus

SNAPSHOT_EVERY_DEFAULT = 256
POOL_SIGNATURES_MIN = 256  # below this a process pool costs more than it saves (measured)

_entry_encoder = msgspec.msgpack.Encoder(order="deterministic")
_entry_decoder = msgspec.msgpack.Decoder(Entry)
_snapshot_encoder = msgspec.msgpack.Encoder(order="deterministic")


class ManualClock:
    """A clock the caller moves: the default, so ledger time is always injected."""

    def __init__(self, now: int = 0):
        self.now = now

    def __call__(self) -> int:
        return self.now

    def set(self, now: int) -> None:
        self.now = now

    def advance(self, seconds: int) -> int:
        self.now += seconds
        return self.now


def entry_hash(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


class Ledger:
    """A permissioned, append-only, multi-asset ledger with a single writer."""

    def __init__(
        self,
        journal: Journal,
        machine: Machine,
        state: State,
        head_seq: int,
        head_hash: bytes,
        clock: Callable[[], int],
        snapshot_every: int,
        verify_workers: int,
    ):
        self.journal = journal
        self.machine = machine
        self.state = state
        self.head_seq = head_seq
        self.head_hash = head_hash
        self.clock = clock
        self.snapshot_every = snapshot_every
        self.verify_workers = verify_workers
        self.recovery_notes: list[str] = []
        self._pool: ProcessPoolExecutor | None = None
        self._subscribers: list[Callable[[Entry], None]] = []
        self._fault: BaseException | None = None
        self._cached: tuple[int, list[Command], list[str | None]] | None = None
        self.last_events: list[Any] = []  # events of the last committed entry
        self.readonly = False

    # ------------------------------------------------------------ creating

    @classmethod
    def create(
        cls,
        path: str = ":memory:",
        *,
        chain_id: str,
        operator: str,
        operator_key: bytes,
        clock: Callable[[], int] | None = None,
        signatures_required: bool = True,
        protocols: Sequence[Protocol] | None = None,
        durability: str = "full",
        snapshot_every: int = SNAPSHOT_EVERY_DEFAULT,
        verify_workers: int = 0,
    ) -> Ledger:
        """Create a ledger: genesis fixes the chain id and the operator's key.

        `path` is a new SQLite path, a `postgresql://` URL (a missing database
        is created if the user may) or `:memory:`; the writer's lock is taken
        before anything is written.
        """
        if not valid_id(chain_id) or not valid_id(operator):
            raise ValueError(f"invalid chain id {chain_id!r} or operator id {operator!r}")
        if len(operator_key) != 32:
            raise ValueError("operator_key must be a 32-byte Ed25519 public key")
        clock = clock or ManualClock(0)
        journal = open_journal(path, durability, create=True)
        if not journal.is_empty():
            journal.close()
            raise FileExistsError(f"{path}: a ledger already exists here; use Ledger.open")
        machine = Machine(discover() if protocols is None else protocols)
        genesis = Genesis(
            chain_id=chain_id,
            operator=operator,
            operator_key=bytes(operator_key),
            at=clock(),
            signatures_required=signatures_required,
            protocols=tuple(rules_tag(p) for _, p in sorted(machine.protocols.items())),
        )
        state = State.from_genesis(genesis)
        machine.new_state_protocols(state)
        entry = Entry(seq=0, prev=ZERO_HASH, at=genesis.at, digest=state.digest(machine.encoders), genesis=genesis)
        body = _entry_encoder.encode(entry)
        digest = entry_hash(body)
        journal.append(0, digest, body)
        return cls(journal, machine, state, 0, digest, clock, snapshot_every, verify_workers)

    @classmethod
    def open(
        cls,
        path: str,
        *,
        clock: Callable[[], int] | None = None,
        protocols: Sequence[Protocol] | None = None,
        durability: str = "full",
        snapshot_every: int = SNAPSHOT_EVERY_DEFAULT,
        verify_workers: int = 0,
        use_snapshots: bool = True,
        readonly: bool = False,
        lock_timeout: float = 0.0,
    ) -> Ledger:
        """Open an existing journal: check the chain, load a snapshot, replay the tail.

        A writer takes the journal's lock first, waiting up to `lock_timeout`
        seconds (JournalLocked if another writer keeps it). `readonly` opens
        without the lock, for auditors and read endpoints: the ledger shows
        the entries committed when it opened and refuses `submit`.
        """
        journal = open_journal(path, durability, readonly=readonly, lock_timeout=lock_timeout)
        try:
            with journal.reading() if readonly else contextlib.nullcontext():
                ledger = cls._recover(journal, protocols, clock, snapshot_every, verify_workers, use_snapshots)
        except BaseException:
            journal.close()
            raise
        ledger.readonly = readonly
        return ledger

    @classmethod
    def _at_genesis(cls, journal: Journal, genesis_hash: bytes, protocols: Sequence[Protocol] | None,
                    clock: Callable[[], int] | None = None, snapshot_every: int = 0,
                    verify_workers: int = 0) -> Ledger:
        """A ledger over `journal` in the state its genesis entry gives (entries to be replayed on it)."""
        where = journal.path
        genesis_entry = decode_entry(journal.body(0), where, 0)
        if genesis_entry.genesis is None:
            raise JournalError(f"{where}: entry 0 is not a genesis entry")
        machine = Machine(select_protocols(genesis_entry.genesis, protocols, where))
        ledger = cls(journal, machine, State.from_genesis(genesis_entry.genesis), 0, genesis_hash,
                     clock or ManualClock(genesis_entry.at), snapshot_every, verify_workers)
        machine.new_state_protocols(ledger.state)
        return ledger

    @classmethod
    def _recover(cls, journal: Journal, protocols: Sequence[Protocol] | None, clock: Callable[[], int] | None,
                 snapshot_every: int, verify_workers: int, use_snapshots: bool,
                 on_entry: Callable[[Entry, int], None] | None = None) -> Ledger:
        """Rebuild a ledger from its journal; `on_entry(entry, head_seq)` after each entry replayed."""
        where = journal.path
        snapshots = journal.snapshots() if use_snapshots else []
        ids_index: dict[str, int] | None = {} if snapshots else None
        if journal.is_empty():
            raise JournalError(f"{where}: the journal is empty")
        ledger = cls._at_genesis(journal, entry_hash(journal.body(0)), protocols, clock, snapshot_every,
                                 verify_workers)
        machine = ledger.machine
        hashes = check_chain(journal, ids_index, max(snapshots, default=0), machine.decode)
        head_seq = len(hashes) - 1
        start = 1
        if use_snapshots:
            for seq in reversed(snapshots):
                if seq < 0:
                    ledger.recovery_notes.append(f"snapshot {seq} names no entry of the journal; ignored")
                    continue
                if seq > head_seq:
                    ledger.recovery_notes.append(
                        f"snapshot {seq} is beyond the journal's head {head_seq}; ignored (entries after "
                        f"{head_seq} may have been removed: compare the head with a receipt, docs/integrity.md)")
                    continue
                state = ledger._load_snapshot(seq)
                recorded = decode_entry(journal.body(seq), where, seq).digest
                if state is None or state.digest(machine.encoders) != recorded:
                    ledger.recovery_notes.append(f"snapshot {seq} does not match the journal; ignored")
                    continue
                # Command ids are not in the state digest: the snapshot's must be those the journal gives.
                assert ids_index is not None
                if not (state.ids == ids_index if seq == max(snapshots) else
                        len(state.ids) == _count_upto(ids_index, seq) and _ids_agree(state.ids, ids_index, seq)):
                    ledger.recovery_notes.append(f"snapshot {seq} does not match the journal (its command ids); "
                                                 "ignored")
                    continue
                ledger.state = state
                ledger.head_seq = seq
                ledger.head_hash = hashes[seq]
                start = seq + 1
                break
        for seq, digest, body in journal.rows(start):
            if seq > head_seq:
                break  # appended after the chain was checked (a reader beside a live writer)
            if digest != hashes[seq]:
                raise JournalError(f"{where}: entry {seq} changed while the journal was read")
            entry = decode_entry(body, where, seq)
            ledger._replay(entry, digest)
            if on_entry is not None:
                on_entry(entry, head_seq)
        if isinstance(ledger.clock, ManualClock) and ledger.clock.now < ledger.state.now:
            ledger.clock.set(ledger.state.now)
        return ledger

    def _load_snapshot(self, seq: int) -> State | None:
        """The state snapshot `seq` holds, or None if it does not load."""
        body = self.journal.snapshot(seq)
        if body is None:
            return None
        try:
            snap = msgspec.msgpack.decode(body, type=Snapshot)
            state = State(snap.engine, snap.ids)
            for name in self.machine.protocols:
                state.protocols[name] = self.machine.decoders[name](snap.protocols[name])
            for protocol in self.machine.protocols.values():
                protocol.loaded(state)
        except (msgspec.DecodeError, msgspec.ValidationError, KeyError, ValueError, TypeError):
            return None  # a snapshot that does not load is ignored: the journal rebuilds the state
        if snap.seq != seq or set(snap.protocols) != set(self.machine.protocols):
            return None
        return state

    def _replay(self, entry: Entry, digest: bytes) -> None:
        """Re-apply a recorded entry and insist on the recorded outcome."""
        where = f"{self.journal.path}: entry {entry.seq}"
        if entry.seq != self.head_seq + 1:
            raise JournalError(f"{where}: expected entry {self.head_seq + 1}")
        try:
            commands = [self._decode(env, i) for i, env in enumerate(entry.envelopes)]
        except MalformedEnvelope as exc:
            raise JournalError(f"{where}: {exc}") from None
        results, events = self.machine.apply(
            self.state, entry.seq, entry.at, entry.envelopes, commands, None, self._lookup,
            signer_of=self._signer_of)
        if tuple(results) != entry.results:
            raise JournalError(f"{where}: replayed results differ from the recorded ones")
        if tuple(events) != entry.events:
            raise JournalError(f"{where}: replayed events differ from the recorded ones")
        if self.state.digest(self.machine.encoders) != entry.digest:
            raise JournalError(f"{where}: replayed state digest differs from the recorded one")
        self.head_seq = entry.seq
        self.head_hash = digest

    # ----------------------------------------------------------- submitting

    def _decode(self, env: Envelope, index: int) -> tuple[Command, ...]:
        if type(env) is not Envelope:
            raise MalformedEnvelope(f"envelope {index}: expected an Envelope, got {type(env).__name__}")
        try:
            return self.machine.decode(env.payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise MalformedEnvelope(f"envelope {index}: payload does not decode: {exc}") from None

    def submit(self, envelopes: Sequence[Envelope], at: int | None = None, *,
               decoded: Sequence[tuple[Command, ...]] | None = None,
               verdicts: dict[tuple[bytes, bytes, bytes], bool] | None = None) -> list[int]:
        """Apply a batch atomically and durably; return one result code per command.

        `at` is the batch's ledger time (default: the injected clock). Time
        never moves backwards: an earlier time is raised to the ledger's.
        Raises MalformedEnvelope (nothing applied) for undecodable input.
        `decoded`, if given, holds each envelope's commands as `decode`
        returned them (a caller that checked the envelopes already, such as
        the service, saves decoding them twice). `verdicts`, if given, holds
        signature checks the caller made, keyed by (public key, message,
        signature) as `Machine.signature_jobs` lists them; any signature not
        in it (a key that changed meanwhile) is checked while applying.
        """
        return self._commit(self._prepare(envelopes, verify=True, decoded=decoded, verdicts=verdicts), at)

    def decode(self, envelope: Envelope, index: int = 0) -> tuple[Command, ...]:
        """Decode one envelope's commands; MalformedEnvelope if it does not decode."""
        return self._decode(envelope, index)

    def submit_many(self, batches: Iterable[Sequence[Envelope]]) -> Iterator[list[int]]:
        """Apply batches in order, yielding each one's results as it commits.

        With `verify_workers`, the signatures of the next batch are checked
        on the process pool while this process applies and persists the
        current one, so verification costs little wall time. Results are
        the same as calling `submit` on each batch in turn.
        """
        it = iter(batches)
        first = next(it, None)
        if first is None:
            return
        current: tuple[Any, ...] | None = self._prepare(first, verify=False)
        while current is not None:
            following = next(it, None)
            refused = None
            try:
                upcoming = self._prepare(following, verify=False) if following is not None else None
            except MalformedEnvelope as exc:  # commit what came before it, then say so
                upcoming, refused = None, exc
            yield self._commit(current, None)
            if refused is not None:
                raise refused
            current = upcoming

    def _prepare(self, envelopes: Sequence[Envelope], verify: bool, decoded: Sequence[Any] | None = None,
                 verdicts: dict[Any, Any] | None = None) -> tuple[Any, ...]:
        """Decode a batch and start (or, with `verify`, do) its signature checks."""
        if self._fault is not None:
            raise LedgerFault(f"ledger stopped after a failure: {self._fault!r}; reopen it")
        if self.readonly:
            raise LedgerFault(f"{self.journal.path}: this ledger was opened read-only; submit through the writer")
        check_envelopes(envelopes)
        if decoded is not None and len(decoded) == len(envelopes):
            commands = list(decoded)
            counts = [len(c) for c in commands]
        else:  # a payload refused at the door (a stranger's, another chain's) is counted, not decoded
            commands, counts = [], []
            cmds: Any
            for i, env in enumerate(envelopes):
                n = command_count(env.payload) if type(env) is Envelope and self.machine.at_the_door(
                    self.state, env) else None
                cmds = self._decode(env, i) if n is None else None
                commands.append(cmds)
                counts.append(len(cmds) if n is None else n)
        total = sum(counts)
        if total > BATCH_COMMANDS_MAX:
            raise MalformedEnvelope(f"batch of {total} commands exceeds {BATCH_COMMANDS_MAX}")
        digests: dict[int, bytes] = {}
        pending: tuple[Any, ...] | None
        if verdicts is not None:
            pending = (list(verdicts.items()), [])
        else:
            pending = self._verify(envelopes, digests, share=verify)
        return envelopes, commands, digests, pending, counts

    def _screen(self, envelopes: Sequence[Envelope], commands: list[Any], digests: dict[int, bytes],
                counts: list[int]) -> tuple[Any, ...]:
        """Leave out the envelopes refused at the door (`Machine.screen`, against the state now): they change
        nothing and are not journalled. Returns what to apply and, per envelope refused, (position, code)."""
        codes = self.machine.screen(self.state, envelopes, commands)
        if codes is None:
            if None in commands:  # counted in `_prepare`, but an earlier batch admitted the signer since
                commands = [self._decode(env, i) if c is None else c for i, (env, c) in
                            enumerate(zip(envelopes, commands))]
            return envelopes, commands, digests, ()
        keep = [i for i, code in enumerate(codes) if not code]
        kept_commands = [self._decode(envelopes[i], i) if commands[i] is None else commands[i] for i in keep]
        kept_digests = {new: digests[old] for new, old in enumerate(keep) if old in digests}
        refused = [(i, code, counts[i]) for i, code in enumerate(codes) if code]
        return [envelopes[i] for i in keep], kept_commands, kept_digests, refused

    def _commit(self, prepared: tuple[Any, ...], at: int | None) -> list[int]:
        envelopes, commands, digests, pending, counts = prepared
        envelopes, commands, digests, refused = self._screen(envelopes, commands, digests, counts)
        verdicts = None
        if pending is not None:
            verdicts = dict(pending[0])
            for chunk, future in pending[1]:
                verdicts.update(zip(chunk, future.result()))
        now = self.clock() if at is None else at
        if type(now) is not int or not INT64_MIN <= now <= INT64_MAX:
            raise ValueError(f"ledger time {now!r} is not an integer of 64 bits; nothing applied")
        now = max(now, self.state.now)
        seq = self.head_seq + 1
        appending = False
        collecting = gc.isenabled()
        gc.disable()  # the batch creates no reference cycles; collections would only cost time
        try:
            results, events = self.machine.apply(self.state, seq, now, envelopes, commands, verdicts, self._lookup,
                                                 digests, self._signer_of)
            digest = self.state.digest(self.machine.encoders)
            entry = Entry(
                seq=seq,
                prev=self.head_hash,
                at=now,
                envelopes=tuple(envelopes),
                results=tuple(results),
                events=tuple(events),
                digest=digest,
            )
            body = _entry_encoder.encode(entry)
            h = entry_hash(body)
            snapshot = None
            if self.snapshot_every and seq % self.snapshot_every == 0:
                snapshot = _snapshot_encoder.encode(self.state.snapshot(seq, self.machine.encoders))
            appending = True
            self.journal.append(seq, h, body, snapshot)
        except BaseException as exc:
            rebuilt = self._restore()
            if not appending and isinstance(exc, OverflowError) and rebuilt:
                raise MalformedEnvelope(f"batch {seq} refused: a value it gives does not fit in 64 bits "
                                        f"({exc}); nothing applied") from None
            self._fault = exc
            raise LedgerFault(f"batch {seq} failed and the ledger stopped: {exc!r}; reopen it") from exc
        finally:
            if collecting:
                gc.enable()
        self.head_seq = seq
        self.head_hash = h
        self.last_events = events
        for fn in list(self._subscribers):
            fn(entry)
        if refused:  # put the refused envelopes' codes back in place, one per command
            results = splice(results, [len(c) for c in commands], refused, len(envelopes) + len(refused))
        return results

    def _restore(self) -> bool:
        """After a failed batch, put back the state of the last committed entry, rebuilt from the journal.

        The batch wrote into the live state before its commit failed; what
        the journal holds is the truth. If the journal cannot be read either,
        every read of the state raises LedgerFault from here on. Returns
        whether the state was rebuilt.
        """
        self._cached = None
        self.last_events = []
        try:
            fresh = Ledger._recover(self.journal, list(self.machine.protocols.values()), self.clock, 0, 0, True)
        except BaseException as exc:  # noqa: BLE001 - no state is better than a state the journal does not hold
            self.state = Unreadable(  # type: ignore[assignment]  # a State whose every read raises
                f"{self.journal.path}: the ledger stopped and its state could not be rebuilt "
                                     f"from the journal ({exc!r}); reopen it")
            return False
        self.state = fresh.state
        self.head_seq = fresh.head_seq
        self.head_hash = fresh.head_hash
        return True

    def advance(self, to: int | None = None) -> list[Any]:
        """Move ledger time forward (running due work) with an empty entry; return its events."""
        if to is not None and isinstance(self.clock, ManualClock) and to > self.clock.now:
            self.clock.set(to)
        self.submit((), at=to)
        return list(self.last_events)

    def _verify(self, envelopes: Sequence[Envelope], digests: dict[int, bytes], share: bool) -> tuple[Any, ...] | None:
        """Start checking a batch's signatures on the pool.

        Returns (verdicts done here, [(jobs, future), ...]) or None (checked
        inline while applying). With `share`, this process checks a share
        itself (a lone batch); without it, everything goes to the pool, to
        overlap with applying the previous batch.
        """
        if not self.verify_workers:
            return None
        jobs = self.machine.signature_jobs(self.state, envelopes, digests)
        if len(jobs) < (POOL_SIGNATURES_MIN if share else 1):
            return None
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
            self._pool = ProcessPoolExecutor(self.verify_workers, mp_context=context)
        shares = self.verify_workers + (1 if share else 0)
        size = -(-len(jobs) // shares)
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        mine = chunks.pop(0) if share else []
        futures = [(chunk, self._pool.submit(verify_many, chunk)) for chunk in chunks]
        return list(zip(mine, verify_many(mine))), futures

    def _lookup(self, location: int) -> Command:
        return self._located(location)[0]

    def _signer_of(self, location: int) -> str | None:
        """The first signer of the envelope of a previously applied command (None: unsigned)."""
        return self._located(location)[1]

    def _located(self, location: int) -> tuple[Command, str | None]:
        seq = location >> ID_POSITION_BITS
        position = location & ((1 << ID_POSITION_BITS) - 1)
        if self._cached is None or self._cached[0] != seq:
            entry = _entry_decoder.decode(self.journal.body(seq))
            flat: list[Command] = []
            signers: list[str | None] = []
            for env in entry.envelopes:
                cmds = self.machine.decode(env.payload)
                flat.extend(cmds)
                signers.extend([env.signatures[0].signer if env.signatures else None] * len(cmds))
            self._cached = (seq, flat, signers)
        return self._cached[1][position], self._cached[2][position]

    # -------------------------------------------------------------- reading

    @property
    def chain_id(self) -> str:
        return self.state.genesis.chain_id

    @property
    def now(self) -> int:
        return self.state.now

    def balance(self, participant: str, asset: str) -> int:
        return self.state.balance(participant, asset)

    def balances(self) -> dict[str, dict[str, int]]:
        """Return a copy of all balances as {participant: {asset: amount}}."""
        out: dict[str, dict[str, int]] = {}
        for asset, book in self.state.balances.items():
            for participant, amount in book.items():
                out.setdefault(participant, {})[asset] = amount
        return out

    def last_seq(self, signer: str) -> int:
        return self.state.seqs.get(signer, 0)

    def digest(self) -> bytes:
        return self.state.digest(self.machine.encoders)

    def receipt(self) -> str:
        """A head receipt, `SEQ:HASH` of the last committed entry, for a client to keep.

        A journal cut short (its last entries deleted) is still a valid
        chain; only a receipt kept elsewhere shows it: `dvp verify DB
        --expect-head SEQ:HASH` fails unless the journal holds that entry.
        """
        return f"{self.head_seq}:{self.head_hash.hex()}"

    def protocol_state(self, name: str) -> Any:
        return self.state.protocols[name]

    def entry(self, seq: int) -> Entry:
        return _entry_decoder.decode(self.journal.body(seq))

    def entries(self, start: int = 0) -> Iterator[Entry]:
        for _seq, _digest, body in self.journal.rows(start):
            yield _entry_decoder.decode(body)

    def commands(self, entry: Entry) -> list[Command]:
        """Decode an entry's commands in batch order (aligned with `entry.results`)."""
        flat: list[Command] = []
        for env in entry.envelopes:
            flat.extend(self.machine.decode(env.payload))
        return flat

    def trade(self, trade_id: str, seller: str | None = None, buyer: str | None = None) -> TradeStatus | None:
        """A DvP trade's terms, status and story, from the state and the journal (`engine.queries.trade`)."""
        from .queries import trade
        return trade(self, trade_id, seller, buyer)

    def repo(self, repo_id: str) -> RepoState | None:
        """A repo's terms, exposure, collateral value, open call and margin (`engine.queries.repo`)."""
        from .queries import repo
        return repo(self, repo_id)

    def history(self, participant: str, asset: str, since_seq: int = 0,
                until_seq: int | None = None) -> list[AccountChange]:
        """Each change of an account after entry `since_seq`, with its entry, commands, events (`engine.history`)."""
        from .history import history
        return history(self, participant, asset, since_seq, until_seq)

    def subscribe(self, fn: Callable[[Entry], None]) -> Callable[[], None]:
        """Call `fn(entry)` after each committed entry; returns an unsubscribe function."""
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn)

    def snapshot(self) -> None:
        """Write a snapshot of the current state at the head entry (fast restart)."""
        if self.readonly:
            raise LedgerFault(f"{self.journal.path}: this ledger was opened read-only; snapshot through the writer")
        body = _snapshot_encoder.encode(self.state.snapshot(self.head_seq, self.machine.encoders))
        self.journal.put_snapshot(self.head_seq, body)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.journal.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_entry(body: bytes, where: str, seq: int) -> Entry:
    """Decode a stored entry; a body that does not decode is a corrupt journal."""
    try:
        return _entry_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise JournalError(f"{where}: entry {seq} does not decode: {exc}") from None


def select_protocols(genesis: Genesis, protocols: Sequence[Protocol] | None, where: str) -> list[Protocol]:
    """Return the protocols a journal was created with, found by name, refusing other versions of their rules."""
    available = {p.name: p for p in (discover() if protocols is None else protocols)}
    wanted = [parse_rules_tag(tag) for tag in genesis.protocols]
    missing = [name for name, _ in wanted if name not in available]
    if missing:
        raise JournalError(f"{where}: the journal needs protocols that are not installed: {', '.join(missing)}")
    other = [f"{name} (journal: version {version}, installed: version {available[name].version})"
             for name, version in wanted if available[name].version != version]
    if other:
        raise JournalError(f"{where}: the journal was written under other rules of {', '.join(other)}; "
                           "open it with the release that wrote it")
    return [available[name] for name, _ in wanted]
