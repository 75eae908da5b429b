"""Hashed timelock contracts: locks, claims, refunds, the expiry sweep, and a two-ledger swap."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from engine import codes as C
from engine.identity import Signer, derive_key
from engine.ledger import Ledger, ManualClock
from engine.records import Admit, Asset, Mint, RegisterAsset
from protocols import htlc

T0 = 1_772_443_800
HOUR = 3600
SECRET = hashlib.sha256(b"the initiator's secret").digest()  # 32 bytes
HASHLOCK = hashlib.sha256(SECRET).digest()
_ids = itertools.count(1)


def fresh() -> str:
    return f"h{next(_ids)}"


class Chain:
    """One ledger with parties A and B, an issuer, and one asset."""

    def __init__(self, chain_id: str = "cash-chain", asset: str = "USD", funded: str = "A", amount: int = 10_000,
                 path: str = ":memory:"):
        self.clock = ManualClock(T0)
        self.s = {n: Signer(n, derive_key(f"htlc-test/{n}"), chain_id) for n in ("OP", "A", "B", "ISS")}
        self.ledger = Ledger.create(path, chain_id=chain_id, operator="OP", operator_key=self.s["OP"].public_key,
                                    clock=self.clock, protocols=[htlc.HTLC()])
        setup = [Admit(id=fresh(), participant=n, public_key=self.s[n].public_key) for n in ("A", "B")]
        setup += [Admit(id=fresh(), participant="ISS", roles=("issuer",), public_key=self.s["ISS"].public_key),
                  RegisterAsset(id=fresh(), asset=Asset(id=asset, kind="cash", decimals=2, issuer="ISS"))]
        assert self.run("OP", setup) == [C.OK] * len(setup)
        assert self.run("ISS", [Mint(id=fresh(), asset=asset, target=funded, amount=amount)]) == [C.OK]
        self.asset = asset

    def run(self, signer: str, commands) -> list[int]:
        return self.ledger.submit([self.s[signer].envelope(commands)])

    def lock(self, lock_id="L1", sender="A", receiver="B", amount=1_000, expires_at=T0 + 2 * HOUR,
             hashlock=HASHLOCK, **kw) -> int:
        return self.run(sender, [htlc.Lock(id=fresh(), lock=lock_id, sender=sender, receiver=receiver,
                                           asset=self.asset, amount=amount, hashlock=hashlock,
                                           expires_at=expires_at, **kw)])[0]

    def claim(self, preimage, lock_id="L1", by="B") -> int:
        return self.run(by, [htlc.Claim(id=fresh(), lock=lock_id, preimage=preimage)])[0]

    def refund(self, lock_id="L1", by="A") -> int:
        return self.run(by, [htlc.Refund(id=fresh(), lock=lock_id)])[0]

    def at(self, t):
        self.clock.set(t)
        self.ledger.advance()

    def record(self, lock_id="L1"):
        return self.ledger.protocol_state(htlc.NAME).locks[lock_id]

    def bal(self, who):
        return self.ledger.balance(who, self.asset)


def test_a_claim_with_the_preimage_pays_the_receiver_and_records_the_preimage():
    c = Chain()
    assert c.lock() == C.OK
    assert (c.bal("A"), c.bal("B")) == (9_000, 0)
    assert c.claim(SECRET) == C.OK
    assert (c.bal("A"), c.bal("B")) == (9_000, 1_000)
    assert c.record().status == "claimed" and c.record().preimage == SECRET
    assert [(e.kind, e.data) for e in c.ledger.last_events] == [("claimed", {"preimage": SECRET.hex()})]


def test_the_expiry_sweep_refunds_an_open_lock_when_time_reaches_it():
    c = Chain()
    c.lock()
    c.at(T0 + 2 * HOUR - 1)
    assert c.record().status == "open"
    c.at(T0 + 2 * HOUR)
    assert c.record().status == "refunded" and c.bal("A") == 10_000


CLAIMS = [
    ("an empty preimage", b"", htlc.BAD_PREIMAGE),
    ("a preimage of 31 bytes", SECRET[:31], htlc.BAD_PREIMAGE),
    ("a preimage of 33 bytes", SECRET + b"x", htlc.BAD_PREIMAGE),
    ("a preimage of a million bytes", bytes(1_000_000), htlc.BAD_PREIMAGE),
    ("the wrong preimage", bytes(32), htlc.WRONG_PREIMAGE),
]


@pytest.mark.parametrize("preimage,code", [(c[1], c[2]) for c in CLAIMS], ids=[c[0] for c in CLAIMS])
def test_refused_claims_change_nothing(preimage, code):
    c = Chain()
    c.lock()
    assert c.claim(preimage) == code
    assert c.record().status == "open" and c.bal("B") == 0


@pytest.mark.parametrize("when", [T0 + 2 * HOUR, T0 + 3 * HOUR], ids=["at exactly the expiry", "after it"])
def test_a_claim_at_or_after_expiry_is_refused_and_the_lock_refunds(when):
    c = Chain()
    c.lock()
    c.clock.set(when)
    assert c.claim(SECRET) in (htlc.LOCK_EXPIRED, htlc.LOCK_CLOSED)
    assert c.record().status == "refunded" and c.bal("B") == 0 and c.bal("A") == 10_000


def test_refund_before_expiry_is_refused():
    c = Chain()
    c.lock()
    assert c.refund() == htlc.NOT_EXPIRED
    assert c.record().status == "open"


@pytest.mark.parametrize("first,second,code", [
    ("claim", "claim", htlc.LOCK_CLOSED),
    ("claim", "refund", htlc.LOCK_CLOSED),
    ("refund", "claim", htlc.LOCK_CLOSED),
], ids=["a double claim", "a refund after a claim", "a claim after a refund"])
def test_each_lock_ends_in_exactly_one_terminal_state(first, second, code):
    c = Chain()
    c.lock()
    if first == "claim":
        assert c.claim(SECRET) == C.OK
    else:
        c.at(T0 + 2 * HOUR)  # the sweep refunds it
        assert c.record().status == "refunded"
    state = c.record().status
    result = c.claim(SECRET) if second == "claim" else c.refund()
    assert result == code and c.record().status == state
    assert c.bal("A") + c.bal("B") == 10_000


LOCKS = [
    ("an expiry in the past", dict(expires_at=T0 - 1), C.INVALID_FIELD),
    ("a hashlock of 31 bytes", dict(hashlock=HASHLOCK[:31]), htlc.BAD_HASHLOCK),
    ("more than the sender holds", dict(amount=20_000), C.INSUFFICIENT_FUNDS),
    ("T1 too close to T2", dict(counterpart_expires_at=T0 + 2 * HOUR + 59, safety_margin=60), htlc.UNSAFE_TIMEOUT),
]


@pytest.mark.parametrize("terms,code", [(r[1], r[2]) for r in LOCKS], ids=[r[0] for r in LOCKS])
def test_refused_locks_change_nothing(terms, code):
    c = Chain()
    assert c.lock(**terms) == code
    assert c.bal("A") == 10_000 and c.ledger.protocol_state(htlc.NAME).locks == {}


def test_a_third_party_cannot_lock_another_senders_funds_or_redirect_a_claim():
    c = Chain()
    assert c.run("B", [htlc.Lock(id=fresh(), lock="L9", sender="A", receiver="B", asset="USD", amount=1,
                                 hashlock=HASHLOCK, expires_at=T0 + HOUR)]) == [C.UNAUTHORIZED]
    c.lock()
    assert c.claim(SECRET, by="A") == C.OK  # anyone may present the preimage: the funds still go to B
    assert c.bal("B") == 1_000


def test_a_cross_ledger_swap_pays_both_sides_or_refunds_both():
    # Securities on one ledger, cash on another; the buyer (A on the cash chain) holds the secret.
    cash = Chain("cash-chain", "USD", funded="A", amount=10_000)
    bonds = Chain("bond-chain", "BOND", funded="B", amount=5)
    t1 = T0 + 2 * HOUR
    t2 = T0 + HOUR
    assert cash.lock("S1", "A", "B", 1_000, t1) == C.OK  # initiator locks first, expiry T1
    # The seller checks the first lock on the other ledger, then locks with T2, T1 >= T2 + margin.
    first = cash.record("S1")
    assert first.amount == 1_000 and first.receiver == "B" and first.hashlock == HASHLOCK
    assert bonds.lock("S1", "B", "A", 5, t2, counterpart_expires_at=first.expires_at, safety_margin=HOUR) == C.OK
    assert bonds.claim(SECRET, "S1", by="A") == C.OK  # the initiator claims the bonds, revealing the secret
    revealed = bytes.fromhex([e.data["preimage"] for e in bonds.ledger.last_events if e.kind == "claimed"][0])
    assert cash.claim(revealed, "S1", by="B") == C.OK  # the seller claims the cash with it
    assert (bonds.bal("A"), cash.bal("B")) == (5, 1_000)

    # The same swap where the initiator never claims: both sides refund.
    cash2 = Chain("cash-chain", "USD", funded="A", amount=10_000)
    bonds2 = Chain("bond-chain", "BOND", funded="B", amount=5)
    cash2.lock("S2", "A", "B", 1_000, t1)
    bonds2.lock("S2", "B", "A", 5, t2, counterpart_expires_at=t1, safety_margin=HOUR)
    bonds2.at(t2)
    cash2.at(t1)
    assert (bonds2.bal("B"), cash2.bal("A")) == (5, 10_000)
    assert bonds2.record("S2").status == cash2.record("S2").status == "refunded"


def test_nobody_can_extend_a_lock_by_locking_its_id_again():
    c = Chain()
    c.lock()
    for who, receiver in (("A", "B"), ("B", "A")):
        c.run("ISS", [Mint(id=fresh(), asset="USD", target=who, amount=1_000)])
        assert c.run(who, [htlc.Lock(id=fresh(), lock="L1", sender=who, receiver=receiver, asset="USD", amount=1,
                                     hashlock=HASHLOCK, expires_at=T0 + 9 * HOUR)]) == [htlc.LOCK_EXISTS]
    assert c.record().expires_at == T0 + 2 * HOUR
