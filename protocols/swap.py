"""Cross-ledger DvP: a swap coordinator over two ledgers' hashed timelocks.

The security lives on one ledger, the cash on another (each its own chain,
operator and journal). The initiator (the buyer by default, or the seller)
holds a 32-byte secret:

1. The initiator locks its asset on its ledger with expiry `T1 = now + 2 * timeout`.
2. The follower checks that lock on the other ledger (amount, asset,
   receiver, hashlock, time left) and locks its own asset with
   `T2 = now + timeout`; its ledger refuses the lock unless
   `T1 >= T2 + safety_margin` (the margin defaults to the timeout).
3. The initiator claims the follower's lock before `T2`, revealing the
   secret on the follower's ledger.
4. The coordinator reads the revealed preimage there and claims the
   initiator's lock for the follower before `T1`.

Either both assets move or, if a deadline passes, both locks refund. The
coordinator keeps nothing of its own: `follow` reads both ledgers' lock
records (their journals' state), so a coordinator restarted between steps
3 and 4 resumes and still claims in time. In live use the secret comes from
a cryptographic source (`new_secret`); a replay derives it from the file's
participant keys and the trade id, so replays stay exact.

Command ids are global and the coordinator's predictable (`swap:<trade>:<step>`):
if another member used the follower's claim id first (refused `unauthorized`),
`follow` claims again under an id naming the ledger's head hash, which no one
could have used in advance, so a squatted id cannot leave the follower unpaid.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Literal

import msgspec

from engine import codes as C
from engine.identity import Signer
from engine.ledger import Ledger
from engine.records import Command

from . import htlc

SECRET_BYTES = 32


class SwapTerms(msgspec.Struct, frozen=True, kw_only=True):
    trade: str
    seller: str
    buyer: str
    security: str
    quantity: int
    cash_asset: str
    amount: int
    timeout: int
    initiator: Literal["buyer", "seller"] = "buyer"


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def derived_secret(initiator_key_seed: bytes, trade: str) -> bytes:
    """A replay's secret: deterministic from the initiator's key and the trade id."""
    return hashlib.sha256(b"dvp-swap-secret/1:" + initiator_key_seed + trade.encode()).digest()


class SwapError(RuntimeError):
    """A step of the swap protocol was refused or is no longer possible."""


# ------------------------------------------------------------ the commands


def legs(t: SwapTerms) -> tuple[tuple[str, str, str, int, str], tuple[str, str, str, int, str]]:
    """(first leg, second leg), each (sender, receiver, asset, amount, which), by who initiates.

    `which` is "cash" or "securities": the ledger the leg's asset lives on.
    """
    cash_leg = (t.buyer, t.seller, t.cash_asset, t.amount, "cash")
    security_leg = (t.seller, t.buyer, t.security, t.quantity, "securities")
    return (cash_leg, security_leg) if t.initiator == "buyer" else (security_leg, cash_leg)


def first_lock(t: SwapTerms, hashlock: bytes, now: int) -> htlc.Lock:
    """Step 1: the initiator's lock, expiring at T1 = now + 2 * timeout."""
    (sender, receiver, asset, amount, _), _ = legs(t)
    return htlc.Lock(id=f"swap:{t.trade}:1", lock=t.trade, sender=sender, receiver=receiver, asset=asset,
                     amount=amount, hashlock=hashlock, expires_at=now + 2 * t.timeout)


def second_lock(t: SwapTerms, hashlock: bytes, first_expires_at: int, now: int,
                safety_margin: int | None = None) -> htlc.Lock:
    """Step 2: the follower's lock, expiring at T2 = now + timeout, refused unless T1 >= T2 + margin."""
    _, (sender, receiver, asset, amount, _) = legs(t)
    margin = t.timeout if safety_margin is None else safety_margin
    return htlc.Lock(id=f"swap:{t.trade}:2", lock=t.trade, sender=sender, receiver=receiver, asset=asset,
                     amount=amount, hashlock=hashlock, expires_at=now + t.timeout,
                     counterpart_expires_at=first_expires_at, safety_margin=margin)


def reveal(t: SwapTerms, secret: bytes) -> htlc.Claim:
    """Step 3: the initiator claims the follower's lock, revealing the secret on that ledger."""
    return htlc.Claim(id=f"swap:{t.trade}:3", lock=t.trade, preimage=secret)


def follow_claim(t: SwapTerms, preimage: bytes) -> htlc.Claim:
    """Step 4: the follower claims the initiator's lock with the revealed secret."""
    return htlc.Claim(id=f"swap:{t.trade}:4", lock=t.trade, preimage=preimage)


class SwapCoordinator:
    """Drive swaps between a securities ledger and a cash ledger.

    `signers_*` map participant ids to their `Signer` on each ledger; every
    command is signed by the party it belongs to.
    """

    def __init__(self, securities: Ledger, cash: Ledger, signers_securities: dict[str, Signer],
                 signers_cash: dict[str, Signer]):
        self.securities = securities
        self.cash = cash
        self.signers = {id(securities): signers_securities, id(cash): signers_cash}

    # ------------------------------------------------------------ the legs

    def _legs(self, t: SwapTerms) -> tuple[tuple[Ledger, str, str, str, int], tuple[Ledger, str, str, str, int]]:
        """(first ledger, first lock), (second ledger, second lock) by who initiates."""
        cash_leg = (self.cash, t.buyer, t.seller, t.cash_asset, t.amount)
        security_leg = (self.securities, t.seller, t.buyer, t.security, t.quantity)
        return (cash_leg, security_leg) if t.initiator == "buyer" else (security_leg, cash_leg)

    def _submit(self, ledger: Ledger, signer: str, command: Command) -> int:
        return ledger.submit([self.signers[id(ledger)][signer].envelope([command])])[0]

    @staticmethod
    def _lock(ledger: Ledger, lock_id: str) -> htlc.LockRecord | None:
        found: htlc.LockRecord | None = ledger.protocol_state(htlc.NAME).locks.get(lock_id)
        return found

    # ------------------------------------------------------------ the steps

    def initiate(self, t: SwapTerms, secret: bytes) -> None:
        """Step 1: the initiator locks on its ledger with T1 = now + 2 * timeout."""
        (ledger, sender, _receiver, _asset, _amount), _ = self._legs(t)
        code = self._submit(ledger, sender, first_lock(t, hashlib.sha256(secret).digest(), ledger.now))
        if code:
            raise SwapError(f"{t.trade}: the first lock was refused: {C.name(code)}")

    def respond(self, t: SwapTerms, safety_margin: int | None = None) -> None:
        """Step 2: the follower checks the first lock, then locks with T2 = now + timeout."""
        (first_ledger, sender, receiver, asset, amount), second = self._legs(t)
        first = self._lock(first_ledger, t.trade)
        if first is None or first.status != htlc.OPEN:
            raise SwapError(f"{t.trade}: no open first lock to answer")
        if (first.asset, first.amount, first.receiver, first.sender) != (asset, amount, receiver, sender):
            raise SwapError(f"{t.trade}: the first lock does not match the trade")
        ledger, f_sender, _f_receiver, _f_asset, _f_amount = second
        code = self._submit(ledger, f_sender, second_lock(t, first.hashlock, first.expires_at, ledger.now,
                                                          safety_margin))
        if code:
            raise SwapError(f"{t.trade}: the second lock was refused: {C.name(code)}")

    def claim_second(self, t: SwapTerms, secret: bytes) -> int:
        """Step 3: the initiator claims the follower's lock, revealing the secret there."""
        _, (ledger, _sender, receiver, _asset, _amount) = self._legs(t)
        return self._submit(ledger, receiver, reveal(t, secret))

    def follow(self, t: SwapTerms) -> str:
        """Step 4, resumable: if the secret is revealed, claim the first lock for the follower.

        Reads only the two ledgers' lock records. Returns the first lock's
        status after the step ("claimed", "refunded" or "open").
        """
        (first_ledger, _sender, receiver, _asset, _amount), (second_ledger, *_rest) = self._legs(t)
        first = self._lock(first_ledger, t.trade)
        second = self._lock(second_ledger, t.trade)
        if first is None:
            return "none"
        if first.status == htlc.OPEN and second is not None and second.status == htlc.CLAIMED:
            claim = follow_claim(t, second.preimage)
            if self._submit(first_ledger, receiver, claim) in (C.UNAUTHORIZED, C.ID_CONFLICT):
                # ids are global and this one predictable: a member used it first. Claim under an id naming
                # the ledger's head hash, which no one could have used before that head existed.
                again = msgspec.structs.replace(claim, id=f"{claim.id}:{first_ledger.head_hash.hex()[:32]}")
                self._submit(first_ledger, receiver, again)
            first = self._lock(first_ledger, t.trade)
        return first.status if first is not None else "none"
