"""Drivers: run the stages over a whole file, in one process or two.

Takes a trade file and the replay's options; gives a finished `Replay`.
Every driver runs the same stages: `read` plans the file, `resolve` turns
its set-up and then its timed events (in `at` order) into steps, `batch`
encodes them, `apply` signs and applies them, `account` keeps every
trade's outcome, and `report` writes what happened.

- One process (`run_inline`): the stages in a loop.
- Two processes (`run_pipelined`, for files of a few MB or more where
  `fork` is available): a forked parser process reads, resolves, batches
  and accounts, and writes the report; this process signs, applies and
  journals. The two cores work at once; the commands, hence the journal
  and hashes, are those of one process.

A file whose timed events are not in `at` order (or whose set-up events
come after timed ones) is read in `at` order from the byte offsets its
plan kept; one already in order streams.
"""

from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import queue
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from engine.records import Event

from ..tradefile import BadLine, parse_time
from .account import Accounts
from .apply import Chains, apply_setup
from .batch import BATCH_COMMANDS, Batcher
from .read import LINE_BYTES_MAX, SETUP_TYPES, TradeFile, _json_decoder, duplicate_key
from .report import ReportInputs
from .resolve import Resolver
from .setup import Catalog
from .steps import Batch, ChainTime, Instruction, Swap

PIPELINE_BYTES_MIN = 2_000_000  # below this a parser process costs more than it saves
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode
_decode_events = msgspec.msgpack.Decoder(list[Event]).decode


class Options(msgspec.Struct, kw_only=True):
    path: str
    mode: str | None = None
    db: str | None = None
    fmt: str | None = None
    batch_commands: int = BATCH_COMMANDS
    pipeline: bool | None = None
    report: str | None = None  # written by the parser process when pipelined
    resume: bool = False
    overwrite: bool = False
    progress: Callable[[int, int], None] | None = None  # called with (timed events done, of how many)


class Prepared:
    """A file planned, its set-up resolved and applied: what the timed pass starts from."""

    def __init__(self, options: Options):
        self.options = options
        self.file = TradeFile(options.path, options.fmt)
        self.plan = self.file.plan()
        catalog = Catalog(options.mode)
        setup_events = []
        bad: list[BadLine] = []
        for line, _offset, payload in self.plan.setup:
            try:
                setup_events.append((line, self.file.decode(payload)))
            except ValueError as exc:
                bad.append(BadLine(line, f"{_raw_label(payload)}: {exc}"))
        setup, refused = catalog.setup(setup_events)
        self.resolver = Resolver(catalog)
        self.setup = setup
        self.accounts = Accounts(setup.mode, {a.id for a in catalog.assets.values() if a.kind == "cash"})
        self.accounts.rejected.extend(self.plan.errors + bad + refused)
        self.chains = Chains.open(options.db, sorted(setup.chains), self.plan.first_at, resume=options.resume,
                                  overwrite=options.overwrite)
        try:
            for batch, results, events in apply_setup(self.chains, setup.main, setup.chains, options.batch_commands):
                self.accounts.record(batch.instructions, results, events)
        except BaseException:
            self.chains.close()
            raise
        self.done = 0  # timed events resolved
        self.final_info: dict[str, Any] | None = None  # the ledgers' figures, when they are in another process

    def inputs(self) -> ReportInputs:
        info = self.final_info if self.final_info is not None else self.chains.info()
        return ReportInputs(path=self.options.path, events=self.plan.lines, mode=self.setup.mode,
                            assets=self.resolver.assets, participants=sorted(self.resolver.participants),
                            declared=self.setup.declared, info=info)

    # ---------------------------------------------------------- the timed pass

    def timed_events(self) -> Iterator[tuple[int, Any, int] | BadLine]:
        """(line, event, at) in `at` order, or the BadLine a line gives."""
        file, plan = self.file, self.plan
        if plan.in_order:
            if plan.stream_line < 0:
                return
            fast = file.fmt == "jsonl"
            for number, _offset, payload in file.lines(plan.stream_offset, plan.stream_line - 1):
                try:
                    if fast and len(payload) <= LINE_BYTES_MAX:
                        ev = _json_decoder.decode(payload)
                    else:
                        ev = file.decode(payload)  # the general path: its checks, and the same reasons
                except (ValueError, msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                    yield self._bad(number, payload)
                    continue
                if fast and duplicate_key(payload, ev) is not None:
                    yield self._bad(number, payload)
                    continue
                if ev.__struct_config__.tag in SETUP_TYPES:
                    continue  # cannot be: the plan found the file in order
                try:
                    yield number, ev, parse_time(ev.at)
                except ValueError as exc:
                    yield BadLine(number, f"{ev.__struct_config__.tag}: {exc}")
            return
        order = sorted(range(len(plan.times)), key=lambda i: (plan.times[i], plan.numbers[i]))
        payloads = file.read_at(plan.offsets[i] for i in order)
        for i, payload in zip(order, payloads):
            number = plan.numbers[i]
            try:
                ev = file.decode(payload) if type(payload) is not BadLine else None
            except ValueError as exc:
                yield BadLine(number, f"{_raw_label(payload)}: {exc}")
                continue
            if ev is None:
                yield BadLine(number, payload.reason)
                continue
            yield number, ev, plan.times[i]

    def _bad(self, number: int, payload: Any) -> BadLine:
        """The reason a line does not decode: the plan's, if it had one, so both passes agree."""
        verdict = self.file.classify(number, payload)
        if type(verdict) is BadLine:
            return verdict
        try:
            self.file.decode(payload)
        except ValueError as exc:
            return BadLine(number, f"{_raw_label(payload)}: {exc}")
        return BadLine(number, "unreadable line")

    def steps(self) -> Iterator[Any]:
        """Every timed step in order, then the end of the file: Instructions, Swaps, ChainTimes, BadLines."""
        resolver = self.resolver
        progress = self.options.progress
        last_at = self.plan.first_at
        for item in self.timed_events():
            self.done += 1
            if progress is not None and not self.done & 0x3FFF:
                progress(self.done, self.plan.timed)
            if type(item) is BadLine:
                yield item
                continue
            line, ev, at = item
            if at > last_at:
                last_at = at
            if resolver.pending_cutoff is not None and at > resolver.pending_cutoff:
                yield from resolver.before(at)
            step = resolver.timed(line, ev, at)
            if type(step) is list:
                yield from step
            else:
                yield step
        yield from resolver.finish(last_at)
        if progress is not None:
            progress(self.done, self.plan.timed)


def run_steps(prepared: Prepared, deliver: Callable[[Batch | None], None],
              swap: Callable[[Swap], None] | None, advance: Callable[[int], None] | None) -> None:
    """The timed pass's loop: batch the instructions, hand full batches to `deliver`, and run a swap
    (`swap`) or bring every chain's time (`advance`) once the batch before it is delivered."""
    accounts = prepared.accounts
    batcher = Batcher(size=prepared.options.batch_commands, now=prepared.plan.first_at)
    add = batcher.add
    for step in prepared.steps():
        kind = type(step)
        if kind is Instruction:
            batch = add(step)
            if batch is not None:
                deliver(batch)
        elif kind is BadLine:
            accounts.reject(step)
        elif kind is Swap:
            if swap is None:
                raise RuntimeError("a cross-chain trade cannot be replayed in the parser process")
            batcher.tick(step.at)
            deliver(batcher.flush())
            swap(step)
        elif kind is ChainTime:  # every chain's time reaches each cut-off and the end of the file
            batcher.tick(step.at)
            deliver(batcher.flush())
            if advance is not None:
                advance(step.at)
    deliver(batcher.flush())


def run_inline(prepared: Prepared) -> None:
    """Run the timed pass in this process."""
    chains, accounts = prepared.chains, prepared.accounts

    def deliver(batch: Batch | None) -> None:
        if batch is not None:
            results, events = chains.submit(batch)
            accounts.record(batch.instructions, results, events)

    run_steps(prepared, deliver, lambda step: accounts.swap(step, chains.swap(step)), chains.advance)
    chains.finish()


# ------------------------------------------------------------- two processes


def _pump(connection, into: queue.Queue) -> None:
    """Move messages from a pipe into a queue (a reader thread, so neither side blocks the other)."""
    try:
        while True:
            into.put(_decode(connection.recv_bytes()))
    except (EOFError, OSError):
        into.put(("eof",))  # the other process has gone: wake whoever waits


def _die_with_parent() -> None:
    """Ask the kernel to kill this (forked) process when its parent dies (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_pipelined(prepared: Prepared, write_report: Callable[[Prepared], Any]) -> Any:
    """Run the timed pass with a forked parser; return what the parser sent back at the end."""
    batches_in, batches_out = multiprocessing.Pipe(duplex=False)
    results_in, results_out = multiprocessing.Pipe(duplex=False)
    context = multiprocessing.get_context("fork")
    parser = context.Process(target=_parser_main, args=(prepared, write_report, batches_out, results_in,
                                                        (batches_in, results_out)), daemon=True)
    parser.start()
    batches_out.close()
    results_in.close()
    chains = prepared.chains
    finished = False
    try:
        while True:
            try:
                message = _decode(batches_in.recv_bytes())
            except EOFError:
                raise RuntimeError("the trade-file parser process ended unexpectedly") from None
            tag = message[0]
            if tag == "batch":
                _tag, chain, payload, signers, done = message
                results, events = chains.submit(Batch(chain, payload, signers, []))
                try:
                    results_out.send_bytes(_encode(("results", results, _encode(events))))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the parser has stopped: its last message says why
                if prepared.options.progress is not None:
                    prepared.options.progress(done, prepared.plan.timed)
            elif tag == "done":
                chains.finish()
                results_out.send_bytes(_encode(("final", chains.info())))
            elif tag == "finished":
                finished = True
                return message[1]
            else:
                raise RuntimeError(f"the trade-file parser failed:\n{message[1]}")
    finally:
        batches_in.close()
        results_out.close()
        if not finished:
            parser.kill()  # this side failed or was interrupted: do not wait for a parser that waits for us
        parser.join()


def _parser_main(prepared: Prepared, write_report, sender, results, parents_ends) -> None:
    """The parser process: resolve and batch the timed pass; keep the books; write the report."""
    for end in parents_ends:  # hold no end of the parent's: its death must reach this process as EOF
        end.close()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    try:
        accounts = prepared.accounts
        inbox: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(results, inbox), daemon=True).start()
        inflight: collections.deque = collections.deque()

        def take(block: bool) -> None:
            while inflight and (block or not inbox.empty()):
                message = inbox.get()
                if message[0] != "results":
                    raise RuntimeError(f"the ledger process stopped (expected batch results, got {message[0]!r})")
                accounts.record(inflight.popleft(), list(message[1]), _decode_events(message[2]))

        def deliver(batch: Batch | None) -> None:
            if batch is None:
                return
            inflight.append(batch.instructions)
            sender.send_bytes(_encode(("batch", batch.chain, batch.payload, batch.signers, prepared.done)))
            take(block=False)

        prepared.options.progress = None  # the parent shows progress
        run_steps(prepared, deliver, None, None)
        sender.send_bytes(_encode(("done",)))
        take(block=True)
        final = inbox.get()
        if final[0] != "final":
            raise RuntimeError(f"the ledger process stopped (expected its final figures, got {final[0]!r})")
        prepared.final_info = final[1]  # the ledgers are the parent's
        sender.send_bytes(_encode(("finished", write_report(prepared))))
    except BaseException:
        try:
            sender.send_bytes(_encode(("error", traceback.format_exc())))
        except OSError:
            pass
    finally:
        sender.close()
        os._exit(0)  # never run the parent's finalizers (its journal connections) here


def _raw_label(payload: Any) -> str:
    """Name an undecodable line's event as well as possible ('dvp T18')."""
    if isinstance(payload, list):
        return "line"
    try:
        obj = msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return "line"
    if not isinstance(obj, dict):
        return "line"
    ref = obj.get("id") or obj.get("repo")
    kind = obj.get("type", "event")
    kind = kind if isinstance(kind, str) else "event"
    return f"{kind:.40} {ref:.140}" if isinstance(ref, str) else kind[:40]
