"""Hashed timelock contracts: lock, claim with the preimage, or refund after expiry.

`Lock` (signed by the sender) moves `amount` into escrow for the receiver,
locked by a 32-byte SHA-256 `hashlock` until ledger time `expires_at`.

- `Claim` with a preimage of exactly 32 bytes whose SHA-256 is the hashlock,
  strictly before `expires_at`, pays the receiver and records the preimage
  on the ledger (in the lock's record and the `claimed` event), where the
  other side of a swap can read it. Anyone may present the preimage: the
  funds can only go to the receiver.
- `Refund` at or after `expires_at` returns the amount to the sender; the
  expiry sweep does the same by itself when ledger time reaches it.
- The receiver must be payable when claimed, as for the engine's `Release`:
  a claim to a receiver that is frozen on the asset gives `account_frozen`,
  to one suspended or removed `participant_inactive` (the lock stays open).
  A `Refund` command follows the same rule for the sender; the expiry sweep
  returns the amount to the sender whatever its status, as the engine's
  own hold expiry does.
- The escrow hold `htlc:<lock>` belongs to this protocol: the engine's
  `Release` (or a `Hold` taking such a name) is refused as `unauthorized`.
- Each lock ends in exactly one of `claimed` or `refunded`; its record stays
  in the state for audit.

For a cross-chain swap the second lock names the first lock's expiry
(`counterpart_expires_at`) and is refused unless
`counterpart_expires_at >= expires_at + safety_margin`, so the first party
cannot claim late and leave the second without time to claim in turn.
"""

from __future__ import annotations

import hashlib

import msgspec

from engine import codes as C
from engine.handlers import release_checked
from engine.protocol import Authority, Handler, Protocol
from engine.records import Command
from engine.state import State, Timer

NAME = "htlc"
HASH_BYTES = 32
PREIMAGE_BYTES = 32

LOCK_EXISTS = 600
UNKNOWN_LOCK = 601
BAD_HASHLOCK = 602
BAD_PREIMAGE = 603
WRONG_PREIMAGE = 604
LOCK_EXPIRED = 605
NOT_EXPIRED = 606
LOCK_CLOSED = 607
UNSAFE_TIMEOUT = 608
CODES = {
    LOCK_EXISTS: "lock_exists",
    UNKNOWN_LOCK: "unknown_lock",
    BAD_HASHLOCK: "bad_hashlock",
    BAD_PREIMAGE: "bad_preimage",
    WRONG_PREIMAGE: "wrong_preimage",
    LOCK_EXPIRED: "lock_expired",
    NOT_EXPIRED: "not_expired",
    LOCK_CLOSED: "lock_closed",
    UNSAFE_TIMEOUT: "unsafe_timeout",
}

OPEN, CLAIMED, REFUNDED = "open", "claimed", "refunded"


class Lock(Command, tag="htlc_lock", frozen=True):
    lock: str
    sender: str
    receiver: str
    asset: str
    amount: int
    hashlock: bytes
    expires_at: int
    counterpart_expires_at: int = 0  # the first lock's expiry, for the second lock of a swap
    safety_margin: int = 0


class Claim(Command, tag="htlc_claim", frozen=True):
    lock: str
    preimage: bytes


class Refund(Command, tag="htlc_refund", frozen=True):
    lock: str


class LockRecord(msgspec.Struct, frozen=True, array_like=True, gc=False):
    sender: str
    receiver: str
    asset: str
    amount: int
    hashlock: bytes
    expires_at: int
    status: str = OPEN
    preimage: bytes = b""
    closed_at: int = 0


class LockBook(msgspec.Struct):
    locks: dict[str, LockRecord] = {}


def _book(state: State) -> LockBook:
    book: LockBook = state.protocols[NAME]
    return book


def _hold_id(lock_id: str) -> str:
    return f"htlc:{lock_id}"


def lock(state: State, cmd: Lock, auth: Authority) -> int:
    code = state.check_payment(auth, cmd.sender, cmd.receiver, cmd.asset, cmd.amount)
    if code:
        return code
    if len(cmd.hashlock) != HASH_BYTES:
        return BAD_HASHLOCK
    if cmd.expires_at <= state.now:
        return C.INVALID_FIELD
    if cmd.counterpart_expires_at and cmd.counterpart_expires_at < cmd.expires_at + cmd.safety_margin:
        return UNSAFE_TIMEOUT
    if cmd.safety_margin < 0 or not cmd.lock:
        return C.INVALID_FIELD
    book = _book(state)
    if cmd.lock in book.locks:
        return LOCK_EXISTS
    if _hold_id(cmd.lock) in state.holds:
        return C.INVALID_FIELD  # an engine hold took the escrow's name: refused before the freeze, as a Hold is
    if state.frozen and (state.is_frozen(cmd.sender, cmd.asset) or state.is_frozen(cmd.receiver, cmd.asset)):
        return C.ACCOUNT_FROZEN
    code = state.hold(_hold_id(cmd.lock), cmd.asset, cmd.sender, cmd.receiver, cmd.amount)
    if code:
        return code
    state.put(book.locks, cmd.lock, LockRecord(cmd.sender, cmd.receiver, cmd.asset, cmd.amount, cmd.hashlock,
                                               cmd.expires_at))
    state.schedule(cmd.expires_at, NAME, "expiry", cmd.lock)
    state.emit(NAME, "locked", cmd.lock, {"expires_at": str(cmd.expires_at), "amount": str(cmd.amount)})
    return C.OK


def claim(state: State, cmd: Claim, auth: Authority) -> int:
    book = _book(state)
    record = book.locks.get(cmd.lock)
    if record is None:
        return UNKNOWN_LOCK
    if record.status != OPEN:
        return LOCK_CLOSED
    if state.now >= record.expires_at:
        return LOCK_EXPIRED
    if len(cmd.preimage) != PREIMAGE_BYTES:
        return BAD_PREIMAGE
    if hashlib.sha256(cmd.preimage).digest() != record.hashlock:
        return WRONG_PREIMAGE
    code = release_checked(state, _hold_id(cmd.lock), to_beneficiary=True)  # never to a frozen or inactive party
    if code:
        return code
    state.put(book.locks, cmd.lock, msgspec.structs.replace(record, status=CLAIMED, preimage=cmd.preimage,
                                                           closed_at=state.now))
    state.emit(NAME, "claimed", cmd.lock, {"preimage": cmd.preimage.hex()})
    return C.OK


def _refund(state: State, lock_id: str, checked: bool = True) -> int:
    """Return a lock's amount to its sender: `checked` as a Release is (the Refund command), else as the
    engine's hold expiry does (the sweep)."""
    book = _book(state)
    record = book.locks[lock_id]
    if checked:
        code = release_checked(state, _hold_id(lock_id), to_beneficiary=False)
    else:
        code = state.release(_hold_id(lock_id), to_beneficiary=False)
    if code:
        return code
    state.put(book.locks, lock_id, msgspec.structs.replace(record, status=REFUNDED, closed_at=state.now))
    state.emit(NAME, "refunded", lock_id)
    return C.OK


def refund(state: State, cmd: Refund, auth: Authority) -> int:
    record = _book(state).locks.get(cmd.lock)
    if record is None:
        return UNKNOWN_LOCK
    if record.status != OPEN:
        return LOCK_CLOSED
    if state.now < record.expires_at:
        return NOT_EXPIRED
    return _refund(state, cmd.lock)


class HTLC(Protocol):
    name = NAME
    version = 2  # 2: claims and Refund commands pay only an active, unfrozen party
    state_type = LockBook
    reserved_prefixes = ("htlc:",)
    codes = CODES

    def handlers(self) -> dict[type[Command], Handler]:
        return {Lock: lock, Claim: claim, Refund: refund}

    def on_due(self, state: State, timer: Timer) -> int:
        """The expiry sweep: refund a lock still open when its time comes."""
        record = _book(state).locks.get(timer.ref)
        if record is not None and record.status == OPEN:
            return _refund(state, timer.ref, checked=False)
        return C.OK
