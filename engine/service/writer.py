"""The single writer: one thread owns the `Ledger` and commits requests in groups.

Takes submissions (envelopes already decoded by the request handler) and
reads (functions of the ledger) from a queue, and gives futures back to the
event loop. Group commit: the writer takes the first waiting submission,
then every other one waiting, for up to `group_wait_seconds` more, while
the group stays within `group_commands_max` commands, and submits them all
as one batch: one journal entry, one SQLite transaction, one fsync. Each
request's future is resolved only after `Ledger.submit` returned, that is
after the entry is durable, with the entry's seq and hash and the result
codes of the request's own commands.

Before a group is submitted, the writer refuses the requests carrying
what anyone could forge without a member's key (an envelope for another
chain, a signer who is not a member, a signature that does not verify):
they are answered 400/401 and never reach the journal. The engine reuses
those signature checks instead of verifying again.

An envelope the engine authorized before, or refused for good (its digest
is in `Recorder.applied`), is not submitted again: its answer is the
original entry's, marked `already_applied` if it was applied. The same envelope twice in one group is
applied once. A group the engine refuses whole (`MalformedEnvelope`, nothing
applied: a state past 64 bits, say) is committed again request by request,
so only the request that caused it is answered 400. Reads run between
groups, so they never see a batch half applied. Snapshots (for fast restarts) are the writer's too: every
`snapshot_every` entries, taken when no request waits, so their stall
falls between requests where it can. After a `LedgerFault` the writer
stops: every waiting and later request is refused with 503
`ledger_stopped` (restart the server; opening the ledger rebuilds what was
committed). Any other error in the writer stops the ledger the same way, so
no request is ever left waiting for a writer that died.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .. import codes as C
from ..identity import payload_digest, signing_message, verify_many, verify_signature
from ..ledger import POOL_SIGNATURES_MIN, Ledger, LedgerFault, MalformedEnvelope, decode_entry
from ..protocol import Protocol
from ..records import Command, Entry, Envelope
from .auth import Refused
from .metrics import Metrics
from .views import ENVELOPE_REFUSALS, Recorder, unpack
from .wire import Limits, Outcome

log = logging.getLogger("dvp.serve")
_STOP = object()
SNAPSHOT_ENTRIES_DEFAULT = 1024
SNAPSHOT_FORCED_FACTOR = 4  # with no idle moment, a snapshot is taken anyway after this many times the interval


class Submission:
    """One request's envelopes, their decoded commands and digests, and where to answer."""

    __slots__ = ("envelopes", "decoded", "digests", "commands", "loop", "future")

    def __init__(self, envelopes: Sequence[Envelope], decoded: Sequence[tuple[Command, ...]],
                 digests: Sequence[bytes], loop: asyncio.AbstractEventLoop, future: asyncio.Future):
        self.envelopes = envelopes
        self.decoded = decoded
        self.digests = digests
        self.commands = sum(len(c) for c in decoded)
        self.loop = loop
        self.future = future


class Read:
    __slots__ = ("fn", "loop", "future")

    def __init__(self, fn: Callable[[Ledger, Recorder], Any], loop, future):
        self.fn = fn
        self.loop = loop
        self.future = future


def _resolve(future: asyncio.Future, value: Any, error: BaseException | None) -> None:
    if future.done():  # the request went away (client disconnected); the work is done regardless
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class Writer:
    """Own the ledger in one thread; see the module docstring."""

    def __init__(self, path: str, *, limits: Limits, metrics: Metrics, protocols: Sequence[Protocol] | None = None,
                 clock: Callable[[], int] | None = None, verify_workers: int = 0,
                 snapshot_every: int = SNAPSHOT_ENTRIES_DEFAULT):
        self.path = path
        self.limits = limits
        self.metrics = metrics
        self._protocols = protocols
        self._clock = clock
        self._verify_workers = verify_workers
        self._snapshot_every = snapshot_every
        self._pool: ProcessPoolExecutor | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._carry: Submission | None = None
        self._thread = threading.Thread(target=self._main, name="dvp-writer", daemon=True)
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self.fault: BaseException | None = None
        self.pending = 0  # submissions queued or being committed (the event loop's count)
        self.published_seq = -1  # the last entry the recorder has indexed: readers serve up to it
        self.published_hash = b""
        self.published_at = 0
        self.chain_id = ""
        self.operator = ""
        self.protocol_names: list[str] = []
        self.ledger: Ledger | None = None
        self.recorder: Recorder | None = None
        self._listeners: list[tuple[asyncio.AbstractEventLoop, Callable[[int], None]]] = []
        self._last_entry: Entry | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the ledger and rebuild the indexes in the writer thread; raise what opening raised."""
        self._thread.start()
        self._ready.wait()
        if self._open_error is not None:
            raise self._open_error

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def listen(self, loop: asyncio.AbstractEventLoop, callback: Callable[[int], None]) -> None:
        """Call `callback(seq)` on `loop` after each entry is committed and indexed."""
        self._listeners.append((loop, callback))

    # ----------------------------------------------------------- the loop's side

    def submit(self, job: Submission) -> None:
        if self.fault is not None:
            raise Refused(503, "ledger_stopped", f"the ledger stopped after a failure ({self.fault!r}); "
                                                 "restart the server")
        if self.pending >= self.limits.queue_requests_max:
            raise Refused(503, "queue_full", f"queue_requests_max={self.limits.queue_requests_max} submissions are "
                                             "waiting for the writer; retry shortly", {"retry-after": "1"})
        self.pending += 1
        self.metrics.queue_depth.set(self.pending)
        self._queue.put(job)

    def done(self) -> None:
        """The loop's count of a submission that was answered."""
        self.pending -= 1
        self.metrics.queue_depth.set(self.pending)

    def read(self, fn: Callable[[Ledger, Recorder], Any]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self.fault is not None:
            future.set_exception(Refused(503, "ledger_stopped", "the ledger stopped after a failure; restart"))
            return future
        self._queue.put(Read(fn, loop, future))
        return future

    # ------------------------------------------------------------- the thread

    def _main(self) -> None:
        try:
            self._open()
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            self._serve()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
            self.ledger.close()

    def _open(self) -> None:
        ledger = Ledger.open(self.path, protocols=self._protocols, clock=self._clock,
                             snapshot_every=0)  # the writer takes snapshots and checks signatures itself
        if self._clock is None:  # ledger time: stays where the journal left it, moved only by Tick commands
            ledger.clock = lambda: ledger.state.now
        recorder = Recorder(list(ledger.machine.protocols.values()), self.limits.history_records_max)
        for entry in ledger.entries(1):
            recorder.observe(entry, [ledger.machine.decode(env.payload) for env in entry.envelopes])
        ledger.subscribe(self._committed)
        self.ledger = ledger
        self.recorder = recorder
        self.chain_id = ledger.chain_id
        self.operator = ledger.state.genesis.operator
        self.protocol_names = sorted(ledger.machine.protocols)
        self.published_seq = ledger.head_seq
        self.published_hash = ledger.head_hash
        self.published_at = ledger.state.now
        self._snapshot_seq = max(ledger.journal.snapshots(), default=0)
        self.metrics.head_seq.set(ledger.head_seq)

    def _committed(self, entry: Entry) -> None:
        self._last_entry = entry

    def _serve(self) -> None:
        while True:
            item = self._carry if self._carry is not None else self._queue.get()
            self._carry = None
            if item is _STOP:
                return
            if isinstance(item, Read):
                self._run_read(item)
                continue
            group, reads, stop = self._gather(item)
            try:
                self._commit(group)
            except Exception as exc:  # noqa: BLE001 - a bug here must not leave requests waiting forever
                log.exception("the writer failed on a group of %d requests; the ledger stops", len(group))
                self.fault = exc  # the indexes may be behind the journal: restarting rebuilds them
                error = Refused(503, "ledger_stopped", f"the writer failed ({exc!r}); restart the server")
                for job in group:
                    job.loop.call_soon_threadsafe(_resolve, job.future, None, error)
            for read in reads:
                self._run_read(read)
            if stop:
                return
            self._maybe_snapshot()

    def _maybe_snapshot(self) -> None:
        """Snapshot the state once `snapshot_every` entries have passed, when no request waits (or, at the
        latest, after SNAPSHOT_FORCED_FACTOR times as many): a snapshot stalls the writer for a time that
        grows with the state, so it is taken between requests rather than inside one's commit."""
        every = self._snapshot_every
        behind = self.ledger.head_seq - self._snapshot_seq
        if not every or self.fault is not None or behind < every:
            return
        if behind < SNAPSHOT_FORCED_FACTOR * every and not self._queue.empty():
            return
        started = time.perf_counter()
        try:
            self.ledger.snapshot()
        except Exception as exc:  # noqa: BLE001 - a snapshot only speeds up restarts: note it, keep serving
            log.warning("snapshot at entry %d failed: %r", self.ledger.head_seq, exc)
        else:
            self.metrics.snapshot_seconds.observe(time.perf_counter() - started)
        self._snapshot_seq = self.ledger.head_seq

    def _gather(self, first: Submission) -> tuple[list[Submission], list[Read], bool]:
        """Collect waiting submissions into one group, within the size bound and the wait bound."""
        group = [first]
        reads: list[Read] = []
        total = first.commands
        limit = self.limits.group_commands_max
        deadline = time.monotonic() + self.limits.group_wait_seconds
        while total < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                return group, reads, True
            if isinstance(item, Read):
                reads.append(item)
                continue
            if total + item.commands > limit:
                self._carry = item  # the first of the next group
                break
            group.append(item)
            total += item.commands
        return group, reads, False

    def _run_read(self, read: Read) -> None:
        if self.fault is not None:  # the state in memory may be ahead of the journal: read nothing from it
            error = Refused(503, "ledger_stopped", f"the ledger stopped after a failure ({self.fault!r}); restart")
            read.loop.call_soon_threadsafe(_resolve, read.future, None, error)
            return
        try:
            value, error = read.fn(self.ledger, self.recorder), None
        except Exception as exc:  # noqa: BLE001 - handed to the request, which answers it
            value, error = None, exc
        read.loop.call_soon_threadsafe(_resolve, read.future, value, error)

    def _screen(self, group: list[Submission]) -> tuple[list[Submission], dict]:
        """Refuse the requests carrying what anyone could forge without a member's key (another chain, a
        stranger, a bad signature), so it never reaches the journal; return the others and the verdicts.

        A request's signatures are checked in order and it is refused at the
        first that fails, so a forgery costs one check however many it
        carries; with a pool, each request's first signature is checked here
        and only the requests it passes send the rest to the pool. The engine
        would check the same signatures while applying: it reuses these
        verdicts instead (`Ledger.submit(..., verdicts=)`), so each signature
        is verified once.
        """
        parts = self.ledger.state.participants
        applied = self.recorder.applied
        refused: dict[int, Refused] = {}
        pending: dict[int, list[tuple[tuple[bytes, bytes, bytes], int, str]]] = {}  # per request: (job, i, signer)
        for j, job in enumerate(group):
            mine = pending[j] = []
            for i, (env, digest) in enumerate(zip(job.envelopes, job.digests)):
                if digest in applied:
                    continue  # checked when it was applied (or refused for good)
                if env.chain_id != self.chain_id:
                    refused[j] = Refused(400, "wrong_chain", f"envelopes[{i}] is for chain {env.chain_id[:64]!r}; "
                                                             f"this ledger is {self.chain_id!r}")
                    break
                stranger = next((s.signer for s in env.signatures if s.signer not in parts), None)
                if stranger is not None:
                    refused[j] = Refused(401, "unknown_signer", f"envelopes[{i}]: {stranger[:128]!r} is not a member "
                                                                "of this ledger")
                    break
                payload = payload_digest(env.payload)
                for s in env.signatures:
                    message = signing_message(env.chain_id, s.signer, s.seq, env.not_after, payload)
                    mine.append(((parts[s.signer].public_key, message, s.sig), i, s.signer))
            if j in refused:
                del pending[j]
        verdicts: dict[tuple[bytes, bytes, bytes], bool] = {}
        pooled = self._verify_workers and sum(map(len, pending.values())) >= POOL_SIGNATURES_MIN
        for j, items in pending.items():
            for item, i, signer in (items[:1] if pooled else items):
                good = verdicts[item] = verify_signature(*item)
                self.metrics.signatures_checked.inc()
                if not good:
                    refused[j] = Refused(401, "bad_signature", f"envelopes[{i}]: the signature of {signer} does not "
                                                               "verify with the key it was admitted with")
                    break
        if pooled:
            rest = [item for j, items in pending.items() if j not in refused for item, _i, _s in items[1:]]
            verdicts.update(zip(rest, self._verify(rest)))
            self.metrics.signatures_checked.inc(len(rest))
            for j, items in pending.items():
                bad = next(((i, signer) for item, i, signer in items if j not in refused and not verdicts[item]), None)
                if bad is not None:
                    refused[j] = Refused(401, "bad_signature", f"envelopes[{bad[0]}]: the signature of {bad[1]} does "
                                                               "not verify with the key it was admitted with")
        for j, error in refused.items():
            group[j].loop.call_soon_threadsafe(_resolve, group[j].future, None, error)
        return [job for j, job in enumerate(group) if j not in refused], verdicts

    def _verify(self, jobs: list[tuple[bytes, bytes, bytes]]) -> list[bool]:
        """Verify signatures here, or with `verify_workers`, on the pool (this thread taking a share)."""
        if not self._verify_workers or len(jobs) < POOL_SIGNATURES_MIN:
            return verify_many(jobs)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self._verify_workers, mp_context=multiprocessing.get_context("spawn"))
        size = -(-len(jobs) // (self._verify_workers + 1))
        try:
            futures = [self._pool.submit(verify_many, jobs[k:k + size]) for k in range(size, len(jobs), size)]
            mine = verify_many(jobs[:size])
            return mine + [ok for future in futures for ok in future.result()]
        except BrokenProcessPool as exc:  # a worker died (killed, out of memory): check here, spawn a new pool later
            log.warning("the signature pool broke (%r); checking %d signatures in the writer", exc, len(jobs))
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            return verify_many(jobs)

    def _commit(self, group: list[Submission]) -> None:
        group, verdicts = self._screen(group)
        if not group:
            return
        ledger = self.ledger
        applied = self.recorder.applied
        envelopes: list[Envelope] = []
        decoded: list[tuple[Command, ...]] = []
        offsets: list[int] = []  # each new envelope's first command in the batch
        total = 0
        in_group: dict[bytes, int] = {}
        places: list[list[tuple[str, int]]] = []
        for job in group:
            place = []
            for env, cmds, digest in zip(job.envelopes, job.decoded, job.digests):
                if digest in applied:
                    place.append(("applied", applied[digest]))
                elif digest in in_group:
                    place.append(("again", in_group[digest]))
                else:
                    in_group[digest] = len(envelopes)
                    offsets.append(total)
                    total += len(cmds)
                    envelopes.append(env)
                    decoded.append(cmds)
                    place.append(("new", len(envelopes) - 1))
            places.append(place)
        results: list[int] = []
        seq, digest_hex = ledger.head_seq, ledger.head_hash.hex()
        if envelopes and self.fault is None:
            started = time.perf_counter()
            try:
                results = ledger.submit(envelopes, decoded=decoded, verdicts=verdicts)
            except LedgerFault as exc:
                self.fault = exc
            except MalformedEnvelope as exc:  # the handlers decoded every envelope: not expected, nothing applied
                if len(group) > 1:  # (a state past 64 bits, say): commit each request alone, refusing only its own
                    for job in group:
                        self._commit([job])
                    return
                for job in group:
                    job.loop.call_soon_threadsafe(_resolve, job.future, None, Refused(400, "malformed_envelope", str(exc)))
                return
            else:
                entry = self._last_entry
                self.recorder.observe(entry, decoded)
                seq, digest_hex = entry.seq, ledger.head_hash.hex()
                self.metrics.committed(entry, time.perf_counter() - started, len(results), Counter(results))
                self.published_hash = ledger.head_hash
                self.published_at = ledger.state.now  # after the entry: a Tick inside it moved time past entry.at
                self.published_seq = seq  # last: a reader that sees it finds the entry indexed
                for loop, callback in self._listeners:
                    loop.call_soon_threadsafe(callback, seq)
        earlier: dict[int, tuple[Entry, str]] = {}
        for job, place in zip(group, places):
            if self.fault is not None and any(kind != "applied" for kind, _ in place):
                error = Refused(503, "ledger_stopped", f"the ledger stopped after a failure ({self.fault!r}); "
                                                       "nothing of this request was applied; restart the server")
                job.loop.call_soon_threadsafe(_resolve, job.future, None, error)
                continue
            outcomes, error = [], None
            try:
                for kind, value in place:
                    if kind == "applied":
                        outcomes.append(self._earlier(value, earlier))
                    else:
                        start = offsets[value]
                        codes = results[start:start + len(decoded[value])]
                        again = kind == "again" and bool(codes) and codes[0] not in ENVELOPE_REFUSALS
                        outcomes.append(Outcome(seq=seq, hash=digest_hex, results=codes,
                                                names=[C.name(c) for c in codes], already_applied=again))
            except Exception as exc:  # noqa: BLE001 - reading an earlier entry back failed: say so, keep serving
                outcomes, error = None, exc
            job.loop.call_soon_threadsafe(_resolve, job.future, outcomes, error)

    def _earlier(self, packed: int, cache: dict[int, tuple[Entry, str]]) -> Outcome:
        """The outcome an envelope had when it was first applied (read back from the journal)."""
        seq, first, count = unpack(packed)
        if seq not in cache:
            _seq, digest, body = next(self.ledger.journal.rows(seq))
            cache[seq] = (decode_entry(body, self.path, seq), digest.hex())
        entry, digest_hex = cache[seq]
        codes = list(entry.results[first:first + count])
        return Outcome(seq=seq, hash=digest_hex, results=codes, names=[C.name(c) for c in codes],
                       already_applied=bool(codes) and codes[0] not in ENVELOPE_REFUSALS)  # else: refused for good
