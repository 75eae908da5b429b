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
with where it was applied; the same id with equal content returns OK and
changes nothing, with different content `id_conflict`. A failed command
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
from .identity import certificate_key, certificate_not_after, payload_digest, signing_message, valid_id, verify_signature
from .protocol import Handler, Protocol
from .records import (
    ENGINE_COMMANDS,
    ROLE_AUDITOR,
    ROLE_COMPLIANCE,
    ROLE_ISSUER,
    ROLE_OPERATOR,
    ROLES,
    STATUS_ACTIVE,
    STATUS_REMOVED,
    STATUS_SUSPENDED,
    Admit,
    Burn,
    Command,
    Encumber,
    Envelope,
    Freeze,
    Hold,
    Mint,
    Move,
    Participant,
    Reinstate,
    RegisterAsset,
    Release,
    Remove,
    SetConfig,
    SetRoles,
    Suspend,
    Tick,
    Unencumber,
    Unfreeze,
)
from .state import ENGINE, MISSING, State, Timer

ID_POSITION_BITS = 20
BATCH_COMMANDS_MAX = 1 << ID_POSITION_BITS  # a command's id location is (entry seq, position)
DECIMALS_MAX = 18
AMOUNT_MAX = (1 << 63) - 1  # an asset's whole supply must stay encodable (and so every balance)
TIME_MAX = (1 << 63) - 1  # ledger time is a signed 64-bit integer
PUBLIC_KEY_BYTES = 32


# ------------------------------------------------------------ engine handlers


def _is_operator(state: State, auth: tuple[str, ...] | None) -> bool:
    return auth is None or state.genesis.operator in auth


def _roles_ok(roles: Sequence[str]) -> bool:
    """Known roles, no repeats, never the operator's; the auditor role stands alone (it only reads)."""
    if ROLE_AUDITOR in roles and len(roles) > 1:
        return False
    return all(r in ROLES and r != ROLE_OPERATOR for r in roles) and len(set(roles)) == len(roles)


def _admit(state: State, cmd: Admit, auth) -> int:
    if not _is_operator(state, auth):
        return C.UNAUTHORIZED
    if cmd.participant in state.participants:
        return C.PARTICIPANT_EXISTS
    if not valid_id(cmd.participant) or not _roles_ok(cmd.roles):
        return C.INVALID_FIELD
    if bool(cmd.public_key) == bool(cmd.certificate):
        return C.INVALID_FIELD
    key = cmd.public_key
    if cmd.certificate:
        key = certificate_key(cmd.certificate, state.genesis.operator_key, cmd.participant, state.now)
        if key is None:
            return C.BAD_CERTIFICATE
    elif len(key) != PUBLIC_KEY_BYTES:
        return C.INVALID_FIELD
    valid_until = certificate_not_after(cmd.certificate) if cmd.certificate else 0
    state.put(
        state.participants,
        cmd.participant,
        Participant(id=cmd.participant, public_key=key, roles=list(cmd.roles), certificate=cmd.certificate,
                    valid_until=valid_until),
    )
    return C.OK


def _member_change(state: State, auth, participant: str, want: int | None, status: int) -> int:
    if not _is_operator(state, auth):
        return C.UNAUTHORIZED
    p = state.participants.get(participant)
    if p is None:
        return C.UNKNOWN_PARTICIPANT
    if p.status == STATUS_REMOVED or (want is not None and p.status != want):
        return C.PARTICIPANT_INACTIVE
    if participant == state.genesis.operator:
        return C.INVALID_FIELD
    state.put(state.participants, participant, msgspec.structs.replace(p, status=status))
    return C.OK


def _suspend(state: State, cmd: Suspend, auth) -> int:
    return _member_change(state, auth, cmd.participant, STATUS_ACTIVE, STATUS_SUSPENDED)


def _reinstate(state: State, cmd: Reinstate, auth) -> int:
    return _member_change(state, auth, cmd.participant, STATUS_SUSPENDED, STATUS_ACTIVE)


def _remove(state: State, cmd: Remove, auth) -> int:
    return _member_change(state, auth, cmd.participant, None, STATUS_REMOVED)


def _set_roles(state: State, cmd: SetRoles, auth) -> int:
    if not _is_operator(state, auth):
        return C.UNAUTHORIZED
    p = state.participants.get(cmd.participant)
    if p is None:
        return C.UNKNOWN_PARTICIPANT
    if cmd.participant == state.genesis.operator or not _roles_ok(cmd.roles):
        return C.INVALID_FIELD
    state.put(state.participants, cmd.participant, msgspec.structs.replace(p, roles=list(cmd.roles)))
    return C.OK


def _register_asset(state: State, cmd: RegisterAsset, auth) -> int:
    if not _is_operator(state, auth):
        return C.UNAUTHORIZED
    asset = cmd.asset
    code = state.check_party(asset.issuer)
    if code:
        return code
    if asset.id in state.assets:
        return C.ASSET_EXISTS
    if not valid_id(asset.id) or not 0 <= asset.decimals <= DECIMALS_MAX:
        return C.INVALID_FIELD
    if ROLE_ISSUER not in state.participants[asset.issuer].roles:
        return C.INVALID_FIELD
    state.put(state.assets, asset.id, asset)
    state.put(state.balances, asset.id, {})
    state.put(state.supply, asset.id, 0)
    return C.OK


def _issuer_auth(state: State, asset_id: str, auth) -> int:
    asset = state.assets.get(asset_id)
    if asset is None:
        return C.UNKNOWN_ASSET
    if auth is not None and asset.issuer not in auth:
        return C.UNAUTHORIZED
    issuer = state.participants[asset.issuer]
    if issuer.status != STATUS_ACTIVE or ROLE_ISSUER not in issuer.roles:
        return C.UNAUTHORIZED
    return C.OK


def _mint(state: State, cmd: Mint, auth) -> int:
    code = _issuer_auth(state, cmd.asset, auth) or state.check_party(cmd.target)
    if code:
        return code
    if cmd.amount <= 0 or cmd.amount > AMOUNT_MAX - state.supply[cmd.asset]:
        return C.INVALID_AMOUNT
    if state.frozen and state.is_frozen(cmd.target, cmd.asset):
        return C.ACCOUNT_FROZEN
    state.mint(cmd.asset, cmd.target, cmd.amount)
    return C.OK


def _burn(state: State, cmd: Burn, auth) -> int:
    code = _issuer_auth(state, cmd.asset, auth)
    if code:
        return code
    if cmd.amount <= 0:
        return C.INVALID_AMOUNT
    return state.burn(cmd.asset, state.assets[cmd.asset].issuer, cmd.amount)


def _move(state: State, cmd: Move, auth) -> int:
    """Move an amount between two accounts, with the source's authority."""
    if state.frozen and (state.is_frozen(cmd.source, cmd.asset) or state.is_frozen(cmd.target, cmd.asset)):
        # every lower code first, as `_move_unfrozen` checks them; then the freeze, which outranks the rest
        return state.check_payment(auth, cmd.source, cmd.target, cmd.asset, cmd.amount) or C.ACCOUNT_FROZEN
    code = _move_unfrozen(cmd, auth, state.participants, state.balances, state.encumbered, state.undo)
    if not code:  # note the credit to a watched account, as the hot path in `_run` does
        watched = state.watch.get(cmd.asset)
        if watched and cmd.target in watched:
            state.rose.append((cmd.asset, cmd.target))
    return code


def _move_unfrozen(cmd: Move, auth, parts, balances, encumbered, undo) -> int:
    """Apply a Move when no account is frozen: the hot path, so it takes its
    state in locals and writes balances directly (with undo records).
    Checks in code order: unauthorized, unknown_participant, participant_inactive,
    unknown_asset, invalid_amount, insufficient_funds, same_account."""
    source = cmd.source
    target = cmd.target
    if auth is not None and source not in auth:
        return C.UNAUTHORIZED
    ps = parts.get(source)
    pt = parts.get(target)
    if ps is None or pt is None:
        return C.UNKNOWN_PARTICIPANT
    if ps.status or pt.status:
        return C.PARTICIPANT_INACTIVE
    asset = cmd.asset
    book = balances.get(asset)
    if book is None:
        return C.UNKNOWN_ASSET
    amount = cmd.amount
    if amount <= 0:
        return C.INVALID_AMOUNT
    have = book.get(source, 0)
    enc = encumbered.get(asset)
    if enc:
        have -= enc.get(source, 0)
    if have < amount:
        return C.INSUFFICIENT_FUNDS
    if source == target:
        return C.SAME_ACCOUNT
    old = book.get(target, MISSING)
    undo.append((book, source, book[source]))
    undo.append((book, target, old))
    book[source] -= amount
    book[target] = amount if old is MISSING else old + amount
    return C.OK


def _move_pairs(flat: list, owner: list[int], i: int, n: int, auth, ids: dict, parts, balances, encumbered,
                watch, rose, base: int) -> int:
    """Commit consecutive DvP-shaped pairs from `i` on; return the index of the first command not committed.

    A pair is a linked Move followed, in the same envelope, by an unlinked
    Move: the shape of a delivery-versus-payment. All pairs run under
    `auth`, the authority of the envelope of command `i`, and so never
    past the end of that envelope. This is the batch hot path:
    it commits a pair only when both legs succeed and neither id is known,
    writing balances directly with no undo records; anything else (a known
    id, a refusal, another command, the end of the envelope) stops it with
    the state exactly as before that pair, and the general path takes over
    there, so results and state are the same as the general path gives.
    Accounts must not be frozen (the caller checks that none is). It stops
    after a pair that credits a watched account, so the caller settles the
    rise before the next command runs.
    """
    setdefault = ids.setdefault
    get_part = parts.get
    get_book = balances.get
    envelope = owner[i]  # `auth` is this envelope's authority: stop where the envelope ends
    while i + 1 < n:
        a = flat[i]
        b = flat[i + 1]
        if type(a) is not Move or type(b) is not Move or not a.linked or b.linked or owner[i + 1] != envelope:
            return i
        la = base + i
        ia = a.id
        if setdefault(ia, la) != la:  # known (an idempotent repeat, or a conflict): the general path decides
            return i
        lb = la + 1
        if setdefault(b.id, lb) != lb:  # known, or the pair shares one id: withdraw a's, just added
            del ids[ia]
            return i
        # leg a
        s = a.source
        t = a.target
        ps = get_part(s)
        pt = get_part(t)
        book = get_book(a.asset)
        amount = a.amount
        if (
            ps is None or pt is None or ps.status or pt.status or book is None or amount <= 0 or s == t
            or (auth is not None and s not in auth)
        ):
            del ids[ia], ids[b.id]
            return i
        old_s = book.get(s, 0)
        have = old_s
        if encumbered:
            enc = encumbered.get(a.asset)
            if enc:
                have -= enc.get(s, 0)
        if have < amount:
            del ids[ia], ids[b.id]
            return i
        old_t = book.get(t, MISSING)
        book[s] = old_s - amount
        book[t] = amount if old_t is MISSING else old_t + amount
        # leg b, seeing leg a's effect; in a DvP it runs between the same two parties, already checked
        s2 = b.source
        t2 = b.target
        book2 = get_book(b.asset)
        amount2 = b.amount
        if s2 == t and t2 == s:
            ok = book2 is not None and amount2 > 0 and (auth is None or s2 in auth)
        else:
            ps = get_part(s2)
            pt = get_part(t2)
            ok = (
                ps is not None and pt is not None and not ps.status and not pt.status and book2 is not None
                and amount2 > 0 and s2 != t2 and (auth is None or s2 in auth)
            )
        if ok:
            old_s2 = book2.get(s2, 0)
            have = old_s2
            if encumbered:
                enc = encumbered.get(b.asset)
                if enc:
                    have -= enc.get(s2, 0)
            ok = have >= amount2
        if not ok:  # put leg a back exactly, then let the general path report the refusal
            book[s] = old_s
            if old_t is MISSING:
                del book[t]
            else:
                book[t] = old_t
            del ids[ia], ids[b.id]
            return i
        old = book2.get(t2, MISSING)
        book2[s2] = old_s2 - amount2
        book2[t2] = amount2 if old is MISSING else old + amount2
        i += 2
        if watch:
            watched = watch.get(a.asset)
            if watched and t in watched:
                rose.append((a.asset, t))
            watched = watch.get(b.asset)
            if watched and t2 in watched:
                rose.append((b.asset, t2))
            if rose:
                return i
    return i


def _hold(state: State, cmd: Hold, auth) -> int:
    code = state.check_payment(auth, cmd.owner, cmd.beneficiary, cmd.asset, cmd.amount)
    if code:
        return code
    if (cmd.expires_at and cmd.expires_at <= state.now) or cmd.id in state.holds:
        return C.INVALID_FIELD  # a hold id taken (by a protocol's hold) is checked here, before the freeze
    if state.frozen and state.is_frozen(cmd.owner, cmd.asset):
        return C.ACCOUNT_FROZEN
    return state.hold(cmd.id, cmd.asset, cmd.owner, cmd.beneficiary, cmd.amount, cmd.expires_at)


def _release(state: State, cmd: Release, auth) -> int:
    record = state.holds.get(cmd.hold)
    if record is None:
        return C.UNKNOWN_HOLD
    to_beneficiary = cmd.to == "beneficiary"
    if auth is not None:
        if to_beneficiary and record.owner not in auth:
            return C.UNAUTHORIZED
        expired = record.expires_at and state.now >= record.expires_at
        if not to_beneficiary and record.beneficiary not in auth and not expired:
            return C.HOLD_NOT_RELEASABLE
    target = record.beneficiary if to_beneficiary else record.owner
    code = state.check_party(target)
    if code:
        return code
    if state.frozen and state.is_frozen(target, record.asset):
        return C.ACCOUNT_FROZEN
    return state.release(cmd.hold, to_beneficiary)


def _encumber(state: State, cmd: Encumber, auth) -> int:
    code = state.check_payment(auth, cmd.owner, cmd.beneficiary, cmd.asset, cmd.amount)
    if code:
        return code
    return state.encumber(cmd.id, cmd.asset, cmd.owner, cmd.beneficiary, cmd.amount)


def _unencumber(state: State, cmd: Unencumber, auth) -> int:
    record = state.encumbrances.get(cmd.encumbrance)
    if record is None:
        return C.UNKNOWN_ENCUMBRANCE
    if auth is not None and record.beneficiary not in auth:
        return C.UNAUTHORIZED
    return state.unencumber(cmd.encumbrance)


def _freeze_change(state: State, auth, participant: str, asset: str, on: bool) -> int:
    if not state.has_role(auth, ROLE_COMPLIANCE):
        return C.UNAUTHORIZED
    if participant not in state.participants:
        return C.UNKNOWN_PARTICIPANT
    if asset != "*" and asset not in state.assets:
        return C.UNKNOWN_ASSET
    marks = state.frozen.get(participant)
    if on:
        if marks is None:
            marks = {}
            state.put(state.frozen, participant, marks)
        state.put(marks, asset, True)
        return C.OK
    if not marks or asset not in marks:
        return C.INVALID_FIELD
    state.pop(marks, asset)
    if not marks:
        state.pop(state.frozen, participant)
    return C.OK


def _freeze(state: State, cmd: Freeze, auth) -> int:
    return _freeze_change(state, auth, cmd.participant, cmd.asset, True)


def _unfreeze(state: State, cmd: Unfreeze, auth) -> int:
    return _freeze_change(state, auth, cmd.participant, cmd.asset, False)


def _set_config(state: State, cmd: SetConfig, auth) -> int:
    if not _is_operator(state, auth):
        return C.UNAUTHORIZED
    if not valid_id(cmd.key):
        return C.INVALID_FIELD
    state.put(state.config, cmd.key, cmd.value)
    return C.OK


ENGINE_HANDLERS: dict[type[Command], Handler] = {
    Admit: _admit,
    Suspend: _suspend,
    Reinstate: _reinstate,
    Remove: _remove,
    SetRoles: _set_roles,
    RegisterAsset: _register_asset,
    Mint: _mint,
    Burn: _burn,
    Move: _move,
    Hold: _hold,
    Release: _release,
    Encumber: _encumber,
    Unencumber: _unencumber,
    Freeze: _freeze,
    Unfreeze: _unfreeze,
    SetConfig: _set_config,
}
assert set(ENGINE_HANDLERS) | {Tick} == set(ENGINE_COMMANDS)  # Tick is run by the machine itself
RISE_ROUNDS_MAX = 1 << 16
# Errors that say nothing about the input (a broken invariant, an exhausted machine): they stop the
# ledger instead of refusing a command, since a replay elsewhere might not meet them.
UNRECOVERABLE = (AssertionError, MemoryError, RecursionError)
AUTHORITY_TUPLE_MAX = 4  # more signers than this: a frozenset, so `party in auth` stays O(1)


def _engine_due(state: State, timer: Timer) -> int:
    """Return an expired hold to its owner (the hold's release condition)."""
    if timer.kind == "hold_expiry" and timer.ref in state.holds:
        state.emit(ENGINE, "hold_expired", timer.ref)
        return state.release(timer.ref, False)
    return C.OK


# ----------------------------------------------------------------- machine


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
        self.handlers: dict[type, Handler] = dict(ENGINE_HANDLERS)
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
        idempotency comparison.
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
        results = self._run(state, seq, flat, owner, envelopes, verdicts, digests, lookup)
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

    def _run(self, state: State, seq: int, flat: list[Command], owner: list[int], envelopes, verdicts, digests,
             lookup) -> list[int]:
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
