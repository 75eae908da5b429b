"""The state machine: apply one batch of signed envelopes to the state.

`Machine.apply` is the one place a batch changes state. In order:

1. Time: if the batch's ledger time is later than the state's, due work
   (timers) runs first, in (due time, scheduling order).
2. Envelopes: each is checked as a whole (chain, signatures, signer status,
   sequence numbers, expiry). A refused envelope refuses all its commands,
   with the lowest code among its faults (engine.codes gives the order).
3. Commands, in batch order. A command with `linked=True` chains with the
   next; a chain commits as a whole or rolls back as a whole, the failing
   member reporting its own code and the others `linked_event_failed`. A
   chain still open at the end of the batch fails with
   `linked_event_chain_open`.
4. Protocols' `after_batch` hooks (queues, recycling).

Command ids are idempotency keys: a successful command's id is remembered
with where it was applied; the same id from the same first signer with
equal content returns OK and changes nothing, with different content
`id_conflict`; from any other signer `unauthorized` (ids are global, and
only their owner learns what became of them). A failed command
leaves no id behind, so it may be retried.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any, Union

import msgspec

from . import codes as C
from .fastpath import switches
from .handlers import AMOUNT_MAX, ENGINE_HANDLERS, _engine_due, _is_operator, reserving
from .hotpath import _move_pairs, _move_unfrozen
from .identity import payload_digest, signing_message, verify_signature
from .protocol import Handler, Protocol
from .records import ROLE_AUDITOR, STATUS_ACTIVE, Admit, Command, Envelope, Move, Tick
from .state import ENGINE, MISSING, State, Timer

__all__ = ["AMOUNT_MAX", "BATCH_COMMANDS_MAX", "ID_POSITION_BITS", "Machine"]

ID_POSITION_BITS = 20
BATCH_COMMANDS_MAX = 1 << ID_POSITION_BITS  # a command's id location is (entry seq, position)
TIME_MAX = (1 << 63) - 1  # ledger time is a signed 64-bit integer


RISE_ROUNDS_MAX = 1 << 16
# Errors that say nothing about the input (a broken invariant, an exhausted machine): they stop the
# ledger instead of refusing a command, since a replay elsewhere might not meet them.
UNRECOVERABLE = (AssertionError, MemoryError, RecursionError)
AUTHORITY_TUPLE_MAX = 4  # more signers than this: a frozenset, so `party in auth` stays O(1)



# ----------------------------------------------------------------- machine


def command_count(payload: bytes) -> int | None:
    """The number of commands a payload's msgpack array header claims, read without decoding; None if the
    payload does not open with an array header, or claims more commands than it has bytes."""
    if not payload:
        return None
    b = payload[0]
    if 0x90 <= b <= 0x9F:
        n, header = b & 0x0F, 1
    elif b == 0xDC and len(payload) >= 3:
        n, header = int.from_bytes(payload[1:3], "big"), 3
    elif b == 0xDD and len(payload) >= 5:
        n, header = int.from_bytes(payload[1:5], "big"), 5
    else:
        return None
    return n if n <= len(payload) - header else None


def _first_signer(env: Envelope) -> str | None:
    """Who an envelope's command ids belong to: its first signer (None: an unsigned envelope)."""
    sigs = env.signatures
    return sigs[0].signer if sigs else None


def _live(timers: dict[str, Timer], entry: tuple[int, int]) -> bool:
    """Tell whether a heap entry still stands for a scheduled timer.

    A rolled-back step can leave a heap entry whose number is later reused
    by another timer; the due time tells them apart.
    """
    timer = timers.get(str(entry[1]))
    return timer is not None and timer.due_at == entry[0]



class Machine:
    """Hold the command registry and apply batches to a state."""

    def __init__(self, protocols: Sequence[Protocol] = ()):
        self.protocols = {p.name: p for p in protocols}
        if len(self.protocols) != len(protocols):
            raise ValueError("two protocols share a name")
        prefixes: list[str] = []
        for p in protocols:
            for prefix in p.reserved_prefixes:
                if not prefix or any(prefix.startswith(q) or q.startswith(prefix) for q in prefixes):
                    raise ValueError(f"protocol {p.name}: reserved prefix {prefix!r} is empty or overlaps another")
                prefixes.append(prefix)
        self.reserved_prefixes = tuple(prefixes)  # holds and encumbrances only their protocol may touch
        self.handlers: dict[type, Handler] = reserving(ENGINE_HANDLERS, self.reserved_prefixes)
        self.handlers[Tick] = self._tick
        for p in protocols:
            C.register(p.codes)
            for kind, handler in p.handlers().items():
                if kind in self.handlers:
                    raise ValueError(f"command type {kind.__name__} registered twice")
                self.handlers[kind] = handler
        union = Union[tuple(self.handlers)]  # type: ignore[valid-type]
        self.command_decoder = msgspec.msgpack.Decoder(tuple[union, ...])
        self.encoders: dict[str, Callable[[Any], bytes]] = {}
        self.decoders: dict[str, Callable[[bytes], Any]] = {}
        for p in protocols:
            self.encoders[p.name] = msgspec.msgpack.Encoder(order="deterministic").encode
            self.decoders[p.name] = msgspec.msgpack.Decoder(p.state_type).decode
        self.due_handlers: dict[str, Callable[[State, Timer], int]] = {ENGINE: _engine_due}
        for p in protocols:
            self.due_handlers[p.name] = p.on_due
        self.after_batch = [p.after_batch for p in protocols]
        self.on_time = [p.on_time for p in protocols if type(p).on_time is not Protocol.on_time]
        self.on_rise = [p.on_rise for p in protocols if type(p).on_rise is not Protocol.on_rise]
        self.listeners = [p.on_notice for p in protocols if type(p).on_notice is not Protocol.on_notice]

    def new_state_protocols(self, state: State) -> None:
        for name, p in self.protocols.items():
            state.protocols[name] = p.new_state()

    def decode(self, payload: bytes) -> tuple[Command, ...]:
        return self.command_decoder.decode(payload)

    # ----------------------------------------------------------- preparing

    def signature_jobs(self, state: State, envelopes: Sequence[Envelope],
                       digests: dict[int, bytes]) -> list[tuple[bytes, bytes, bytes]]:
        """List (public key, message, signature) for every signature whose signer is known now.

        `digests` caches each envelope's payload digest by its position.
        """
        jobs = []
        parts = state.participants
        for position, env in enumerate(envelopes):
            if not env.signatures:
                continue
            digest = digests.get(position)
            if digest is None:
                digest = digests[position] = payload_digest(env.payload)
            for s in env.signatures:
                p = parts.get(s.signer)
                if p is not None:
                    message = signing_message(env.chain_id, s.signer, s.seq, env.not_after, digest)
                    jobs.append((p.public_key, message, s.sig))
        return jobs

    # ------------------------------------------------------------ screening

    def at_the_door(self, state: State, env: Envelope) -> int:
        """The refusal an envelope gets whatever comes before it in a batch, admissions aside: `wrong_chain`,
        `unsigned` (where signatures are required) or `unknown_signer`, exactly as `_authorize` would give it;
        0 if it must reach the machine. Reads no payload."""
        genesis = state.genesis
        if env.chain_id != genesis.chain_id:
            return C.WRONG_CHAIN
        sigs = env.signatures
        if not sigs:
            return C.UNSIGNED if genesis.signatures_required else 0
        parts = state.participants
        for s in sigs:
            if s.signer not in parts:
                return C.UNKNOWN_SIGNER
        return 0

    def screen(self, state: State, envelopes: Sequence[Envelope],
               commands: Sequence[tuple[Command, ...] | None]) -> list[int] | None:
        """Per envelope, its refusal at the door (`at_the_door`), or 0 to apply it; None if none is refused.

        An unknown signer that an `Admit` elsewhere in the batch names is let through (the machine decides,
        since an admission earlier in the batch counts), if that envelope carries the operator's valid signature. `commands[i]` is None for a payload not decoded.
        A refused envelope changes nothing, so leaving it out of the batch gives the same results and state.
        """
        codes = None
        for position, env in enumerate(envelopes):
            code = self.at_the_door(state, env) if type(env) is Envelope else 0
            if code:
                if codes is None:
                    codes = [0] * len(envelopes)
                codes[position] = code
        if codes is None or C.UNKNOWN_SIGNER not in codes:
            return codes
        admitted = {cmd.participant for position, cmds in enumerate(commands) if cmds is not None and not codes[position]
                    and any(type(cmd) is Admit for cmd in cmds) and self._may_admit(state, envelopes[position])
                    for cmd in cmds if type(cmd) is Admit}
        if admitted:
            for position, env in enumerate(envelopes):
                if codes[position] == C.UNKNOWN_SIGNER and all(
                        s.signer in admitted or s.signer in state.participants for s in env.signatures):
                    codes[position] = 0
        return codes if any(codes) else None

    @staticmethod
    def _may_admit(state: State, env: Envelope) -> bool:
        """Whether an envelope's `Admit` could run: unsigned (trusted, where allowed) or carrying the operator's
        valid signature, checked here, so an envelope anyone can forge (a bad signature) opens the door to none.
        Keys never change once admitted, so this check agrees with `_authorize`'s."""
        if not env.signatures:
            return True
        operator = state.genesis.operator
        p = state.participants.get(operator)
        if p is None:
            return False
        digest = payload_digest(env.payload)
        return any(s.signer == operator and verify_signature(
            p.public_key, signing_message(env.chain_id, s.signer, s.seq, env.not_after, digest), s.sig)
            for s in env.signatures)

    # ------------------------------------------------------------- applying

    def apply(
        self,
        state: State,
        seq: int,
        at: int,
        envelopes: Sequence[Envelope],
        commands: Sequence[tuple[Command, ...]],
        verdicts: dict[tuple[bytes, bytes, bytes], bool] | None,
        lookup: Callable[[int], Command],
        digests: dict[int, bytes] | None = None,
        signer_of: Callable[[int], str | None] | None = None,
    ) -> tuple[list[int], list]:
        """Apply a batch; return one result code per command and the events.

        Each envelope is authorized when its first command is reached (so a
        `Tick` or an admission earlier in the batch counts), and a linked
        chain cannot run past the end of its envelope: every command of a
        chain is covered by the same signatures.

        `commands[i]` are the decoded commands of `envelopes[i]`; `verdicts`
        holds signature checks done before (possibly in parallel), keyed by
        (public key, message, signature); anything not in it is verified
        here. `lookup(location)` returns a previously applied command for an
        idempotency comparison, and `signer_of(location)` the first signer of
        its envelope (None: unsigned): a known id sent under another first
        signer is refused as `unauthorized` (ids are global, their answers
        are the owner's).
        """
        state.undo.clear()
        state.events.clear()
        state.position = -1
        state.listeners = self.listeners
        if at > state.now:
            self.advance_time(state, at)
        flat: list[Command] = []
        owner: list[int] = []  # the envelope of each command
        for position, cmds in enumerate(commands):
            flat.extend(cmds)
            owner.extend([position] * len(cmds))
        results = self._run(state, seq, flat, owner, envelopes, verdicts, digests, lookup, signer_of)
        state.position = len(flat)
        for hook in self.after_batch:
            hook(state)
        state.undo.clear()  # the batch is final: nothing below can roll it back
        return results, list(state.events)

    def advance_time(self, state: State, until: int) -> None:
        """Move ledger time to `until`: close each instant, then fire due timers.

        At every instant time leaves, the protocols' `on_time` hooks run
        first (at that instant); then timers due at the next instant fire,
        in (due time, scheduling order). Each timer is its own atomic step.
        """
        heap = state.heap
        timers = state.timers
        while True:
            for hook in self.on_time:
                hook(state)
                self._settle_rises(state)
            while heap and not _live(timers, heap[0]):
                heapq.heappop(heap)  # cancelled, fired, or left by a rolled-back step: dropped lazily
            if not heap or heap[0][0] > until:
                break
            instant = max(state.now, heap[0][0])
            state.now = instant
            while heap and heap[0][0] <= instant:
                due_at, number = heapq.heappop(heap)
                if not _live(timers, (due_at, number)):
                    continue
                timer = timers.pop(str(number))
                mark = len(state.undo)
                events_mark = len(state.events)
                try:
                    code = self.due_handlers[timer.protocol](state, timer)
                except UNRECOVERABLE:
                    raise
                except Exception:  # noqa: BLE001 - this timer's work is undone; time and the timer stay spent
                    code = C.HANDLER_ERROR
                if code != C.OK:
                    state.rollback(mark, events_mark)
                    state.rose.clear()
                self._settle_rises(state)
        state.now = max(state.now, until)

    def _settle_rises(self, state: State) -> None:
        """Hand credits on watched accounts to the protocols, until none are left."""
        rose = state.rose
        rounds = 0
        while rose:
            rounds += 1
            assert rounds <= RISE_ROUNDS_MAX, "recycling does not converge"
            accounts = list(dict.fromkeys(rose))
            rose.clear()
            for hook in self.on_rise:
                hook(state, accounts)

    def _tick(self, state: State, cmd: Tick, auth, chained: bool = False) -> int:
        """Advance time (the operator); `chained`: the tick is not the first command of its chain."""
        if not _is_operator(state, auth):
            return C.UNAUTHORIZED
        if chained or cmd.linked or cmd.to < state.now or cmd.to > TIME_MAX:
            return C.INVALID_FIELD  # past TIME_MAX no later batch's ledger time is accepted (`Ledger.submit`)
        self.advance_time(state, cmd.to)
        return C.OK

    def _authorize(self, state: State, env: Envelope, verdicts, digest: bytes | None = None) -> Any:
        """Return the envelope's authority (signer ids), or its refusal code as an int.

        None means trusted (an unsigned envelope on a ledger that allows them).
        """
        genesis = state.genesis
        if env.chain_id != genesis.chain_id:
            return C.WRONG_CHAIN
        sigs = env.signatures
        if not sigs:
            return None if not genesis.signatures_required else C.UNSIGNED
        parts = state.participants
        seqs = state.seqs
        fault = 0  # the lowest refusal found so far (0: none): every signature counts, the lowest code wins
        signers = []
        for s in sigs:
            p = parts.get(s.signer)
            if p is None:
                return C.UNKNOWN_SIGNER  # the lowest code a signature can give
            signers.append(s.signer)
            if fault and fault <= C.BAD_SIGNATURE:
                continue  # only an unknown signer could still give a lower code
            if digest is None:
                digest = payload_digest(env.payload)
            message = signing_message(env.chain_id, s.signer, s.seq, env.not_after, digest)
            ok = verdicts.get((p.public_key, message, s.sig)) if verdicts is not None else None
            if ok is None:  # not checked beforehand (no pool, or a key that changed in this batch)
                ok = verify_signature(p.public_key, message, s.sig)
            # this signature's lowest fault: its checks run in code order
            if not ok:
                code = C.BAD_SIGNATURE
            elif p.status != STATUS_ACTIVE:
                code = C.SIGNER_SUSPENDED
            elif s.seq <= (last := seqs.get(s.signer, 0)):
                code = C.REPLAYED_SEQUENCE if s.seq == last else C.STALE_SEQUENCE
            elif p.valid_until and state.now > p.valid_until:
                code = C.CERTIFICATE_EXPIRED
            elif ROLE_AUDITOR in p.roles:
                code = C.SIGNER_READ_ONLY
            else:
                continue
            if not fault or code < fault:
                fault = code
        if len(signers) > 1 and len(set(signers)) != len(signers) and not 0 < fault <= C.REPLAYED_SEQUENCE:
            fault = C.REPLAYED_SEQUENCE  # one signer twice: its sequence number used again
        if env.not_after and state.now > env.not_after and not 0 < fault <= C.EXPIRED:
            fault = C.EXPIRED
        if fault:
            return fault
        authority = tuple(signers) if len(signers) <= AUTHORITY_TUPLE_MAX else frozenset(signers)
        for s in sigs:
            state.seqs[s.signer] = s.seq
        return authority

    def _authorize_at(self, state: State, i: int, owner: list[int], auths: list, envelopes, verdicts, digests) -> Any:
        """Authorize the envelope of command `i` (its first command) and note the authority for all its commands."""
        e = owner[i]
        auth = self._authorize(state, envelopes[e], verdicts, digests.get(e) if digests else None)
        end = bisect_right(owner, e, i)  # owner is ascending: the envelope's commands are owner[i:end]
        auths[i:end] = repeat(auth, end - i)
        return auth

    @staticmethod
    def _id_owner(prior: int, base: int, flat, owner, envelopes, signer_of) -> str | None:
        """The first signer of the envelope that used a known id (None: unsigned)."""
        if prior >= base:
            return _first_signer(envelopes[owner[prior - base]])
        return signer_of(prior) if signer_of is not None else None

    def _run(self, state: State, seq: int, flat: list[Command], owner: list[int], envelopes, verdicts, digests,
             lookup, signer_of=None) -> list[int]:
        """Run commands and linked chains in order; return their result codes."""
        handlers = self.handlers
        ids = state.ids
        undo = state.undo
        events = state.events
        n = len(flat)
        results = [0] * n
        auths: list[Any] = [MISSING] * n
        base = seq << ID_POSITION_BITS
        parts = state.participants
        balances = state.balances
        encumbered = state.encumbered
        frozen = state.frozen
        move = _move_unfrozen
        watch = state.watch
        rose = state.rose
        pairs = switches.move_pairs  # the hot path's switch (engine.fastpath)
        i = 0
        while i < n:
            cmd = flat[i]
            if type(cmd) is Move and cmd.linked and not frozen and pairs:  # DvP-shaped pairs: the batch hot path
                auth = auths[i]
                if auth is MISSING:
                    auth = self._authorize_at(state, i, owner, auths, envelopes, verdicts, digests)
                if type(auth) is not int:
                    j = _move_pairs(flat, owner, i, n, auth, ids, parts, balances, encumbered, watch, rose, base)
                    if j != i:
                        state.position = j - 1  # as the general path leaves them after the pair's last leg
                        state.single = False
                        i = j
                        if rose:
                            self._settle_rises(state)
                        continue
            start = i
            mark = len(undo)
            events_mark = len(events)
            while True:
                cmd = flat[i]
                auth = auths[i]
                if auth is MISSING:  # the first command of its envelope: authorize the envelope now
                    auth = self._authorize_at(state, i, owner, auths, envelopes, verdicts, digests)
                state.position = i
                state.single = i == start and not cmd.linked
                if type(auth) is int:
                    code = auth
                else:
                    cid = cmd.id
                    prior = ids.get(cid, MISSING)
                    if prior is MISSING:
                        kind = type(cmd)
                        try:
                            if kind is Move and not frozen:  # the hot path, without dispatch
                                code = move(cmd, auth, parts, balances, encumbered, undo)
                                if watch and not code:
                                    watched = watch.get(cmd.asset)
                                    if watched and cmd.target in watched:
                                        rose.append((cmd.asset, cmd.target))
                            elif kind is Tick:  # never inside a chain: time cannot roll back
                                code = self._tick(state, cmd, auth, i != start)
                            else:
                                code = handlers[kind](state, cmd, auth)
                        except UNRECOVERABLE:
                            raise  # a broken invariant or an exhausted machine stops the ledger
                        except Exception:  # noqa: BLE001 - a handler's error refuses its command, undone
                            code = C.HANDLER_ERROR
                        if not code:
                            ids[cid] = base + i  # withdrawn below if the chain fails
                    elif auth is not None and self._id_owner(prior, base, flat, owner, envelopes, signer_of) != \
                            _first_signer(envelopes[owner[i]]):
                        code = C.UNAUTHORIZED  # another signer's id: neither its outcome nor its content is told
                    else:
                        earlier = flat[prior - base] if prior >= base else lookup(prior)
                        code = C.OK if earlier == cmd else C.ID_CONFLICT
                linked = cmd.linked
                if code or (linked and (i + 1 == n or owner[i + 1] != owner[i])):
                    i = self._fail_chain(state, flat, owner, auths, results, start, i, code, mark, events_mark, base)
                    break
                i += 1
                if not linked:
                    if len(undo) > mark:
                        del undo[mark:]  # committed: the chain can no longer roll back
                    if rose:
                        self._settle_rises(state)
                    break
        return results

    @staticmethod
    def _fail_chain(state, flat, owner, auths, results, start, at, code, mark, events_mark, base) -> int:
        """Roll back a chain that failed at `at` (or was left open); return the index after it.

        A chain ends at its last linked command or at the end of its envelope.
        """
        state.rollback(mark, events_mark)
        state.rose.clear()
        ids = state.ids
        for m in range(start, at):
            cid = flat[m].id
            if ids.get(cid) == base + m:
                del ids[cid]
        n = len(flat)
        end = at
        while end + 1 < n and flat[end].linked and owner[end + 1] == owner[end]:
            end += 1
        own = auths[start]  # one envelope per chain: a refused envelope reports its own code
        for m in range(start, end + 1):
            results[m] = own if type(own) is int else C.LINKED_EVENT_FAILED
        if code:
            results[at] = code
        else:  # the chain was still open at the end of its envelope
            if ids.get(flat[at].id) == base + at:
                del ids[flat[at].id]
            results[at] = C.LINKED_EVENT_CHAIN_OPEN
        return end + 1

