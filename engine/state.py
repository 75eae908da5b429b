"""Ledger state and the primitive operations protocols are built from.

State is plain dictionaries inside one `State` object. Every mutation goes
through a primitive here (`transfer`, `hold`, `release`, `encumber`, `put`,
`schedule`, ...), and every primitive appends what it overwrote to the undo
log, so a failing command or linked chain is rolled back to exactly the
state before it. Primitives check before they write and return a result
code; they never leave a half-done change behind.

Balances are `balances[asset][participant]`. Held amounts leave the owner's
balance and sit in the hold until released; encumbered amounts stay in the
owner's balance but cannot be moved by the owner. So per asset:
`sum(balances) + sum(holds) == supply`.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Collection
from typing import Any

import msgspec

from . import codes as C
from .records import (
    ALL_ASSETS,
    ROLE_OPERATOR,
    STATUS_ACTIVE,
    Asset,
    Event,
    Genesis,
    Participant,
)

MISSING: Any = object()
ENGINE = "engine"


class HoldRecord(msgspec.Struct, gc=False, frozen=True, array_like=True):
    asset: str
    owner: str
    beneficiary: str
    amount: int
    expires_at: int = 0


class EncumbranceRecord(msgspec.Struct, gc=False, frozen=True, array_like=True):
    asset: str
    owner: str
    beneficiary: str
    amount: int


class Timer(msgspec.Struct, gc=False, frozen=True, array_like=True):
    due_at: int
    protocol: str
    kind: str
    ref: str


class EngineState(msgspec.Struct, kw_only=True):
    """The engine's part of the state, as encoded for digests and snapshots."""

    genesis: Genesis
    now: int
    participants: dict[str, Participant] = {}
    assets: dict[str, Asset] = {}
    supply: dict[str, int] = {}
    balances: dict[str, dict[str, int]] = {}
    encumbered: dict[str, dict[str, int]] = {}
    encumbrances: dict[str, EncumbranceRecord] = {}
    holds: dict[str, HoldRecord] = {}
    frozen: dict[str, dict[str, bool]] = {}
    seqs: dict[str, int] = {}
    config: dict[str, str] = {}
    timers: dict[str, Timer] = {}  # keyed by str(timer number)
    counters: dict[str, int] = {}  # "timer": the last timer number handed out


class Snapshot(msgspec.Struct, kw_only=True):
    """Everything needed to resume: engine state, command ids, protocol states."""

    seq: int
    engine: EngineState
    ids: dict[str, int]
    protocols: dict[str, bytes]


_digest_encoder = msgspec.msgpack.Encoder(order="deterministic")


class State:
    """The live, mutable ledger state plus its undo log and pending events."""

    __slots__ = (
        "engine",
        "genesis",
        "participants",
        "assets",
        "supply",
        "balances",
        "encumbered",
        "encumbrances",
        "holds",
        "frozen",
        "seqs",
        "config",
        "timers",
        "ids",
        "protocols",
        "now",
        "undo",
        "events",
        "heap",
        "watch",
        "rose",
        "runtime",
        "position",
        "single",
        "listeners",
    )

    def __init__(self, engine: EngineState, ids: dict[str, int] | None = None):
        self.engine = engine
        self.genesis = engine.genesis
        self.participants = engine.participants
        self.assets = engine.assets
        self.supply = engine.supply
        self.balances = engine.balances
        self.encumbered = engine.encumbered
        self.encumbrances = engine.encumbrances
        self.holds = engine.holds
        self.frozen = engine.frozen
        self.seqs = engine.seqs
        self.config = engine.config
        self.timers = engine.timers
        self.ids: dict[str, int] = {} if ids is None else ids
        self.protocols: dict[str, Any] = {}
        self.now = engine.now
        self.undo: list[tuple[Any, Any, Any]] = []
        self.events: list[Event] = []
        self.heap = [(t.due_at, int(n)) for n, t in engine.timers.items()]
        heapq.heapify(self.heap)
        # Accounts (asset, participant) some protocol waits on (derived from
        # protocol state, so not in the digest); credits to them are noted in
        # `rose` and handed to the protocols' `on_rise` after each commit.
        self.watch: dict[str, set[str]] = {}  # asset -> participants whose account is watched
        self.rose: list[tuple[str, str]] = []
        # Protocols' derived, rebuildable indexes (never in digests or snapshots).
        self.runtime: dict[str, Any] = {}
        self.position = -1  # batch position of the command being applied
        self.single = False  # the command being applied is alone (in no linked chain)
        self.listeners: list[Callable[[State, str, str], None]] = []  # set by the machine

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> State:
        operator = Participant(id=genesis.operator, public_key=genesis.operator_key, roles=[ROLE_OPERATOR])
        engine = EngineState(genesis=genesis, now=genesis.at, participants={genesis.operator: operator})
        return cls(engine)

    # ------------------------------------------------------------- reading

    def balance(self, participant: str, asset: str) -> int:
        book = self.balances.get(asset)
        return book.get(participant, 0) if book else 0

    def available(self, participant: str, asset: str) -> int:
        """Balance less encumbrances: what the owner may move."""
        enc = self.encumbered.get(asset)
        held = enc.get(participant, 0) if enc else 0
        return self.balance(participant, asset) - held

    def has_role(self, auth: Collection[str] | None, role: str) -> bool:
        """Tell whether one of the authorizing signers holds `role` and is active."""
        if auth is None:
            return True
        parts = self.participants
        for signer in auth:
            p = parts.get(signer)
            if p is not None and p.status == STATUS_ACTIVE and role in p.roles:
                return True
        return False

    def check_party(self, participant: str) -> int:
        """Return OK if `participant` exists and is active, else its code."""
        p = self.participants.get(participant)
        if p is None:
            return C.UNKNOWN_PARTICIPANT
        if p.status != STATUS_ACTIVE:
            return C.PARTICIPANT_INACTIVE
        return C.OK

    def check_parties(self, *participants: str) -> int:
        """Return OK if every participant exists and is active: else `unknown_participant`
        if any is unknown, else `participant_inactive` (the lower code first, whichever party it is)."""
        parts = self.participants
        found = [parts.get(p) for p in participants]
        if None in found:
            return C.UNKNOWN_PARTICIPANT
        if any(p is None or p.status != STATUS_ACTIVE for p in found):
            return C.PARTICIPANT_INACTIVE
        return C.OK

    def check_payment(self, auth: Collection[str] | None, payer: str, payee: str, asset: str, amount: int) -> int:
        """The checks every payment-like command shares, in precedence order (engine.codes):
        the payer's authority, both parties known, both active, the asset known, a
        positive amount. OK or the first refusal's code."""
        if auth is not None and payer not in auth:
            return C.UNAUTHORIZED
        code = self.check_parties(payer, payee)
        if code:
            return code
        if asset not in self.assets:
            return C.UNKNOWN_ASSET
        if amount <= 0:
            return C.INVALID_AMOUNT
        return C.OK

    def is_frozen(self, participant: str, asset: str) -> bool:
        marks = self.frozen.get(participant)
        if not marks:
            return False
        return ALL_ASSETS in marks or asset in marks

    def protocol_state(self, name: str) -> Any:
        return self.protocols[name]

    # ----------------------------------------------------- undo-logged writes

    def put(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        """Set `mapping[key] = value`, remembering the old value for rollback."""
        self.undo.append((mapping, key, mapping.get(key, MISSING)))
        mapping[key] = value

    def pop(self, mapping: dict[Any, Any], key: Any) -> Any:
        """Remove and return `mapping[key]`, remembering it for rollback."""
        value = mapping.pop(key)
        self.undo.append((mapping, key, value))
        return value

    def rollback(self, mark: int, events_mark: int) -> None:
        """Undo every write after `mark` and drop events after `events_mark`."""
        undo = self.undo
        for i in range(len(undo) - 1, mark - 1, -1):
            mapping, key, old = undo[i]
            if old is MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old
        del undo[mark:]
        del self.events[events_mark:]

    def watch_account(self, asset: str, participant: str) -> None:
        """Ask to hear (through `Protocol.on_rise`) of credits to this account."""
        watched = self.watch.get(asset)
        if watched is None:
            watched = self.watch[asset] = set()
        watched.add(participant)

    def attempt(self, fn: Callable[..., int], *args: Any) -> int:
        """Run `fn(*args)` as one atomic step: on a non-OK code, undo what it wrote."""
        mark = len(self.undo)
        events_mark = len(self.events)
        rose_mark = len(self.rose)
        code = fn(*args)
        if code:
            self.rollback(mark, events_mark)
            del self.rose[rose_mark:]
        return code

    def notify(self, topic: str, key: str) -> None:
        """Tell every protocol (`Protocol.on_notice`) that something happened, inside this step.

        For example the price protocol notifies ("price", asset) so the repo
        protocol revalues the repos that hold it, atomically with the price.
        """
        for listener in self.listeners:
            listener(self, topic, key)

    def emit(self, protocol: str, kind: str, ref: str, data: dict[str, str] | None = None) -> None:
        self.events.append(Event(self.now, protocol, kind, ref, data or {}, self.position))

    # ------------------------------------------------------------ primitives

    def transfer(self, asset: str, source: str, target: str, amount: int) -> int:
        """Move `amount` of `asset` from source to target if source has it available.

        Checks balance only: callers check parties, authority and freezes.
        """
        book = self.balances.get(asset)
        if book is None:
            return C.UNKNOWN_ASSET
        have = book.get(source, 0)
        enc = self.encumbered.get(asset)
        if enc:
            have -= enc.get(source, 0)
        if have < amount:
            return C.INSUFFICIENT_FUNDS
        undo = self.undo
        old = book.get(target, MISSING)
        undo.append((book, source, book[source]))
        undo.append((book, target, old))
        book[source] -= amount
        book[target] = amount if old is MISSING else old + amount
        watched = self.watch.get(asset)
        if watched and target in watched:
            self.rose.append((asset, target))
        return C.OK

    def exchange(self, asset_a: str, amount_a: int, asset_b: str, amount_b: int, party_a: str, party_b: str,
                 final: bool = False) -> int:
        """Swap atomically: party_a gives `amount_a` of asset_a to party_b, who gives
        `amount_b` of asset_b back. Both legs are checked before either is written.

        `final=True` promises this is the command's last write and that it
        succeeds if this does: a command in no linked chain then needs no
        undo records for it (nothing could roll it back).
        Returns 0 when done, 1 if party_a lacks asset_a, 2 if party_b lacks asset_b.
        """
        balances = self.balances
        encumbered = self.encumbered
        book_a = balances[asset_a]
        book_b = balances[asset_b]
        have_a = book_a.get(party_a, 0)
        enc = encumbered.get(asset_a)
        if enc:
            have_a -= enc.get(party_a, 0)
        if have_a < amount_a:
            return 1
        have_b = book_b.get(party_b, 0)
        enc = encumbered.get(asset_b)
        if enc:
            have_b -= enc.get(party_b, 0)
        if have_b < amount_b:
            return 2
        got_a = book_a.get(party_b, MISSING)
        got_b = book_b.get(party_a, MISSING)
        if not (final and self.single):
            undo = self.undo
            undo.append((book_a, party_a, book_a[party_a]))
            undo.append((book_a, party_b, got_a))
            undo.append((book_b, party_b, book_b[party_b]))
            undo.append((book_b, party_a, got_b))
        book_a[party_a] -= amount_a
        book_a[party_b] = amount_a if got_a is MISSING else got_a + amount_a
        book_b[party_b] -= amount_b
        book_b[party_a] = amount_b if got_b is MISSING else got_b + amount_b
        watch = self.watch
        if watch:
            watched = watch.get(asset_a)
            if watched and party_b in watched:
                self.rose.append((asset_a, party_b))
            watched = watch.get(asset_b)
            if watched and party_a in watched:
                self.rose.append((asset_b, party_a))
        return 0

    def credit(self, asset: str, target: str, amount: int) -> None:
        book = self.balances[asset]
        self.put(book, target, book.get(target, 0) + amount)
        watched = self.watch.get(asset)
        if watched and target in watched:
            self.rose.append((asset, target))

    def debit(self, asset: str, source: str, amount: int) -> int:
        if self.available(source, asset) < amount:
            return C.INSUFFICIENT_FUNDS
        book = self.balances[asset]
        self.put(book, source, book[source] - amount)
        return C.OK

    def mint(self, asset: str, target: str, amount: int) -> None:
        self.credit(asset, target, amount)
        self.put(self.supply, asset, self.supply.get(asset, 0) + amount)

    def burn(self, asset: str, source: str, amount: int) -> int:
        code = self.debit(asset, source, amount)
        if code == C.OK:
            self.put(self.supply, asset, self.supply[asset] - amount)
        return code

    def hold(self, hold_id: str, asset: str, owner: str, beneficiary: str, amount: int, expires_at: int = 0) -> int:
        """Escrow `amount` of the owner's available `asset` under `hold_id`.

        With `expires_at`, the hold returns to the owner when ledger time
        reaches it, unless released before.
        """
        if hold_id in self.holds:
            return C.INVALID_FIELD
        code = self.debit(asset, owner, amount)
        if code != C.OK:
            return code
        self.put(self.holds, hold_id, HoldRecord(asset, owner, beneficiary, amount, expires_at))
        if expires_at:
            self.schedule(expires_at, ENGINE, "hold_expiry", hold_id)
        return C.OK

    def release(self, hold_id: str, to_beneficiary: bool) -> int:
        """Pay a hold out to its beneficiary or back to its owner, exactly once."""
        record = self.holds.get(hold_id)
        if record is None:
            return C.UNKNOWN_HOLD
        self.pop(self.holds, hold_id)
        self.credit(record.asset, record.beneficiary if to_beneficiary else record.owner, record.amount)
        return C.OK

    def encumber(self, encumbrance_id: str, asset: str, owner: str, beneficiary: str, amount: int) -> int:
        """Pledge `amount` of the owner's available holding to `beneficiary`."""
        if encumbrance_id in self.encumbrances:
            return C.INVALID_FIELD
        if self.available(owner, asset) < amount:
            return C.INSUFFICIENT_FUNDS
        book = self.encumbered.get(asset)
        if book is None:
            book = {}
            self.put(self.encumbered, asset, book)
        self.put(book, owner, book.get(owner, 0) + amount)
        self.put(self.encumbrances, encumbrance_id, EncumbranceRecord(asset, owner, beneficiary, amount))
        return C.OK

    def unencumber(self, encumbrance_id: str) -> int:
        record = self.encumbrances.get(encumbrance_id)
        if record is None:
            return C.UNKNOWN_ENCUMBRANCE
        self.pop(self.encumbrances, encumbrance_id)
        book = self.encumbered[record.asset]
        left = book[record.owner] - record.amount
        if left:
            self.put(book, record.owner, left)
        else:
            self.pop(book, record.owner)
        return C.OK

    def schedule(self, due_at: int, protocol: str, kind: str, ref: str) -> int:
        """Run `protocol`'s due handler for (kind, ref) when time reaches `due_at`."""
        counters = self.engine.counters
        number = counters.get("timer", 0) + 1
        self.put(counters, "timer", number)  # undone with the rest if the step fails
        self.put(self.timers, str(number), Timer(due_at, protocol, kind, ref))
        heapq.heappush(self.heap, (due_at, number))
        return number

    def cancel(self, number: int) -> None:
        key = str(number)
        if key in self.timers:
            self.pop(self.timers, key)

    # ------------------------------------------------------------ digests

    def digest(self, encoders: dict[str, Callable[[Any], bytes]]) -> bytes:
        """Hash all balances and protocol state, in a deterministic order."""
        self.engine.now = self.now
        h = hashlib.sha256(_digest_encoder.encode(self.engine))
        for name in sorted(self.protocols):
            h.update(name.encode())
            h.update(encoders[name](self.protocols[name]))
        return h.digest()

    def snapshot(self, seq: int, encoders: dict[str, Callable[[Any], bytes]]) -> Snapshot:
        self.engine.now = self.now
        return Snapshot(
            seq=seq,
            engine=self.engine,
            ids=self.ids,
            protocols={name: encoders[name](value) for name, value in self.protocols.items()},
        )
