"""Which code wins when a command has several faults, as `engine.codes` and the README state.

Each case is a ladder: one batch (an envelope, a command, a linked chain)
with several faults, listed in the order their codes take precedence. The
batch runs with every fault, then again with the first fault taken away,
and so on, each time on a fresh world: each run must report the code of the
first fault still present and change nothing. With no fault left the batch
succeeds, so every fault was real and nothing else refused it. The table
covers every engine command and every command of the dvp, netting, prices,
collateral, repo, htlc and scheduled protocols
(`test_the_ladders_cover_every_command`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence

import pytest

from conftest import (
    BANK_A,
    BANK_B,
    BANK_C,
    CASHBANK,
    CHAIN,
    COMPLIANCE,
    MALLORY,
    OPERATOR,
    OTHER_CHAIN,
    T0,
    TREASURY,
    USD,
    UST,
    World,
    digest_with_seqs,
    key_for,
    make_world,
    new_id,
    observable,
)
from engine import codes as C
from engine.identity import Signer, issue_certificate, unsigned
import engine.machine as M
from engine.machine import AMOUNT_MAX
from engine.records import (
    ENGINE_COMMANDS,
    Admit,
    Asset,
    Burn,
    Command,
    Encumber,
    Envelope,
    Freeze,
    Hold,
    Mint,
    Move,
    RegisterAsset,
    Reinstate,
    Release,
    Remove,
    SetConfig,
    SetRoles,
    Signature,
    Suspend,
    Tick,
    Unencumber,
    Unfreeze,
)
from protocols import collateral, dvp, htlc, netting, prices, repo, scheduled

NOBODY = "NOBODY"  # never admitted
NEWBANK = "NEWBANK"  # admitted by certificate where a case needs one
EUR = "EUR"  # never registered
UST2 = Asset(id="UST2", kind="security", decimals=0, issuer=TREASURY, asset_class="ust_note", maturity="2036-02-15")
ART = Asset(id="ART", kind="security", decimals=0, issuer=TREASURY, asset_class="art")  # a class no schedule lists
YEAR = 365 * 86_400
SECRET = hashlib.sha256(b"precedence secret").digest()
HASHLOCK = hashlib.sha256(SECRET).digest()
ENVELOPE_NAMES = {C.name(code) for code in range(C.WRONG_CHAIN, C.ID_CONFLICT)}  # refused before any command


def protocols() -> list:
    return [collateral.Collateral(), dvp.DvP(), prices.Prices(), repo.Repos(), netting.Netting(), htlc.HTLC(),
            scheduled.ScheduledPayments()]


# ------------------------------------------------------------------ faults


class On:
    """The faults switched on for one run of a ladder."""

    def __init__(self, faults: Sequence[str]):
        self.faults = frozenset(faults)

    def __call__(self, fault: str) -> bool:
        return fault in self.faults

    def pick(self, *choices: tuple[str, object], default: object):
        """The value of the first listed fault that is on (a field several faults set), else `default`."""
        return next((value for fault, value in choices if fault in self.faults), default)


@dataclasses.dataclass
class Ladder:
    """A batch with several faults, and the results while each is the first one left.

    `steps` lists (fault, results) in precedence order; a bare code name
    stands for a fault named by the code it gives to a one-command batch.
    `build(world, on)` runs any set-up and returns the envelopes to submit;
    the state is captured after set-up. `done` is what the batch gives with
    no fault left (None: it cannot be shown, see the case).
    """

    id: str
    build: Callable[[World, On], list[Envelope]]
    steps: list
    done: list[str] | None = dataclasses.field(default_factory=lambda: ["ok"])
    trusted: bool = False  # a ledger that accepts unsigned envelopes: parties need not sign

    def ladder(self) -> list[tuple[str, list[str]]]:
        out = []
        for step in self.steps:
            fault, results = (step, step) if isinstance(step, str) else step
            out.append((fault, [results] if isinstance(results, str) else list(results)))
        return out


def ok(w: World, who: str | Sequence[str], *commands: Command) -> None:
    """Run set-up commands that must succeed."""
    signers = [who] if isinstance(who, str) else list(who)
    assert w.submit([w.cosigned(signers, commands)]) == ["ok"] * len(commands)


def suspend(w: World, who: str) -> None:
    ok(w, OPERATOR, Suspend(id=new_id(), participant=who))


def freeze(w: World, who: str, asset: str = "*") -> None:
    ok(w, COMPLIANCE, Freeze(id=new_id(), participant=who, asset=asset))


def move(source=BANK_A, target=BANK_B, amount=100, asset=USD, **kw) -> Move:
    return Move(id=kw.pop("id", None) or new_id(), asset=asset, source=source, target=target, amount=amount, **kw)


def send(w: World, signers: Sequence[str], commands: Sequence[Command], not_after: int = 0) -> list[Envelope]:
    """One envelope signed by `signers` (none: unsigned, for a trusted ledger)."""
    if not signers:
        return [unsigned(CHAIN, list(commands))]
    return [w.cosigned(list(signers), commands, not_after)]


def admit_by_certificate(w: World, not_after: int) -> None:
    """Admit NEWBANK by a certificate valid until `not_after`; give the world its signer."""
    w.signers[NEWBANK] = Signer(NEWBANK, key_for(NEWBANK), CHAIN)
    cert = issue_certificate(key_for(OPERATOR), OPERATOR, NEWBANK, w[NEWBANK].public_key, T0 - 86_400, not_after)
    ok(w, OPERATOR, Admit(id=new_id(), participant=NEWBANK, certificate=cert))


def certificate_for(participant: str) -> bytes:
    return issue_certificate(key_for(OPERATOR), OPERATOR, participant, bytes(key_for(participant).verify_key),
                             T0 - 86_400, T0 + YEAR)


def queue_trade(w: World, trade: str, seller: str = BANK_A, buyer: str = BANK_B) -> None:
    """A DvP that waits in the queue: the seller holds far less than it delivers."""
    ok(w, (seller, buyer), dvp.Settle(id=new_id(), trade=trade, seller=seller, buyer=buyer, security=UST,
                                      quantity=20_000, cash_asset=USD, amount=1_000))


def lock(lock_id: str, sender: str = BANK_A, receiver: str = BANK_B, **kw) -> htlc.Lock:
    fields = {"asset": USD, "amount": 1_000, "hashlock": HASHLOCK, "expires_at": T0 + 7_200}
    fields.update(kw)
    return htlc.Lock(id=new_id(), lock=lock_id, sender=sender, receiver=receiver, **fields)


def repo_desk(w: World) -> None:
    """Prices (COMPLIANCE is also the oracle), two more securities, and repo R1: BANK_A borrows from BANK_B.

    UST is priced 100000 per 100 (1,000.00 USD a unit, haircut 3%): 1,000
    units are worth 100,000,000 cents and count 97,000,000.
    """
    ok(w, OPERATOR, SetRoles(id=new_id(), participant=COMPLIANCE, roles=("compliance", "oracle")),
       RegisterAsset(id=new_id(), asset=UST2), RegisterAsset(id=new_id(), asset=ART))
    ok(w, COMPLIANCE, prices.SetPrice(id=new_id(), asset=UST, price="100000"))
    ok(w, (BANK_A, BANK_B), open_repo("R1"))


def open_repo(repo_id: str, **kw) -> repo.OpenRepo:
    fields = {"borrower": BANK_A, "lender": BANK_B, "collateral": UST, "quantity": 1_000, "cash_asset": USD,
              "principal": 1_000_000, "rate": "0.05", "end": T0 + 3_600}
    fields.update(kw)
    return repo.OpenRepo(id=new_id(), repo=repo_id, **fields)


def drain(w: World, who: str, asset: str = USD) -> None:
    ok(w, who, move(who, BANK_C, w.bal(who, asset), asset))


# ---------------------------------------------------------- envelopes, ids, chains


def _every_envelope_fault(w: World, on: On) -> list[Envelope]:
    """A move cosigned by seven signers, the later codes on the earlier signatures."""
    admit_by_certificate(w, T0 + (50 if on("certificate_expired") else YEAR))
    if on("signer_read_only"):
        ok(w, OPERATOR, SetRoles(id=new_id(), participant=BANK_C, roles=("auditor",)))
    if on("signer_suspended"):
        suspend(w, COMPLIANCE)
    if on("stale_sequence"):
        w[CASHBANK].seq = w.ledger.state.seqs[CASHBANK] - 2  # the next number is below the last accepted
    if on("replayed_sequence"):
        w[TREASURY].seq = w.ledger.state.seqs[TREASURY] - 1  # the next number is the last accepted
    w.ledger.advance(T0 + 100)
    env = w.env(BANK_A, [move()], not_after=T0 + (60 if on("expired") else 1_000))
    for name in (BANK_C, NEWBANK, CASHBANK, TREASURY, COMPLIANCE):
        env = w[name].cosign(env)
    if on("bad_signature"):
        env = Envelope(CHAIN, env.payload, env.signatures + (Signature(OPERATOR, 1_000, bytes(64)),), env.not_after)
    else:
        env = w[OPERATOR].cosign(env)
    if on("unknown_signer"):
        env = w[MALLORY].cosign(env)
    return [Envelope(OTHER_CHAIN if on("wrong_chain") else CHAIN, env.payload, env.signatures, env.not_after)]


def _unsigned_elsewhere(w: World, on: On) -> list[Envelope]:
    env = unsigned(CHAIN, [move()]) if on("unsigned") else w.env(BANK_A, [move()])
    return [Envelope(OTHER_CHAIN if on("wrong_chain") else CHAIN, env.payload, env.signatures, env.not_after)]


def _one_signer_twice(w: World, on: On) -> list[Envelope]:
    admit_by_certificate(w, T0 + (50 if on("certificate_expired") else YEAR))
    w.ledger.advance(T0 + 100)
    env = w[NEWBANK].cosign(w.env(BANK_A, [move()], not_after=T0 + (60 if on("expired") else 1_000)))
    return [w[NEWBANK].cosign(env) if on("signer_twice") else env]


def _known_id(w: World, on: On) -> list[Envelope]:
    ok(w, BANK_A, move(id="known", amount=100))
    cmd = move(source=BANK_C if on("unauthorized") else BANK_A,
               id="known" if on("foreign_id") or on("id_conflict") else new_id(),
               amount=0 if on("invalid_amount") else 5)
    env = w.env(BANK_B if on("foreign_id") else BANK_A, [cmd])  # a known id under another signer: not its own
    if on("bad_signature"):
        env = Envelope(CHAIN, env.payload, (Signature(env.signatures[0].signer, 1_000, bytes(64)),))
    return [env]


def _repeated(w: World, on: On) -> list[Envelope]:
    ok(w, BANK_A, move(id="known", amount=100))
    if on("account_frozen"):
        freeze(w, BANK_A)
    cmd = move(id="known" if on("foreign_repeat") or on("repeat") else new_id(), amount=100)
    return send(w, [BANK_B if on("foreign_repeat") else BANK_A], [cmd])


def _chain_left_open(w: World, on: On) -> list[Envelope]:
    first = move(source=BANK_C if on("unauthorized") else BANK_A, amount=5, linked=True)
    second = move(amount=0 if on("invalid_amount") else 5, linked=on("chain_open"))
    return send(w, [BANK_A], [first, second])


def _signed_pair(w: World, on: On) -> list[Envelope]:
    legs = [move(BANK_A, BANK_B, 20_000 if on("insufficient_funds") else 10, UST, linked=True),
            move(BANK_B, BANK_B if on("same_account") else BANK_A, 1_000)]
    env = w.cosigned([BANK_A, BANK_B], legs)
    if on("bad_signature"):
        env = Envelope(CHAIN, env.payload, (env.signatures[0], Signature(BANK_B, 1_000, bytes(64))))
    return [env]


def _pair_payment_faults(w: World, on: On) -> list[Envelope]:
    """A DvP-shaped pair (the batch hot path): every fault is on the payment leg."""
    if on("participant_inactive"):
        suspend(w, BANK_C)
    target = on.pick(("unknown_participant", NOBODY), ("participant_inactive", BANK_C), ("same_account", BANK_B),
                     default=BANK_A)
    amount = on.pick(("invalid_amount", 0), ("insufficient_funds", 50_000_001), default=1_000)
    legs = [move(BANK_A, BANK_B, 10, UST, linked=True),
            move(BANK_B, target, amount, EUR if on("unknown_asset") else USD)]
    return send(w, [BANK_A] if on("unauthorized") else [BANK_A, BANK_B], legs)


def _pair_from_suspended_to_unknown(w: World, on: On) -> list[Envelope]:
    if on("participant_inactive"):
        suspend(w, BANK_A)
    buyer = NOBODY if on("unknown_participant") else BANK_B
    return send(w, [], [move(BANK_A, buyer, 10, UST, linked=True), move(buyer, BANK_A, 1_000)])


def _chain_with_known_id(w: World, on: On) -> list[Envelope]:
    ok(w, BANK_A, move(id="known", amount=100))
    first = move(amount=100_000_001 if on("insufficient_funds") else 5, linked=True)
    return send(w, [BANK_A], [first, move(id="known" if on("id_conflict") else new_id(), amount=7)])


ENVELOPES = [
    Ladder("every envelope fault at once, the lowest code on the last signature: the lowest code wins",
           _every_envelope_fault,
           ["wrong_chain", "unknown_signer", "bad_signature", "signer_suspended", "replayed_sequence",
            "stale_sequence", "expired", "certificate_expired", "signer_read_only"]),
    Ladder("an unsigned envelope for another chain is wrong_chain, then unsigned", _unsigned_elsewhere,
           ["wrong_chain", "unsigned"]),
    Ladder("one signer twice, on an expired envelope, with an expired certificate: replayed_sequence first",
           _one_signer_twice, [("signer_twice", "replayed_sequence"), "expired", "certificate_expired"]),
    Ladder("a known id of another signer's, with other content, in an envelope with a bad signature: the envelope "
           "first, then the foreign id", _known_id,
           ["bad_signature", ("foreign_id", "unauthorized"), "id_conflict", "unauthorized", "invalid_amount"]),
    Ladder("a command sent again unchanged by another bank, by its own signer, from a frozen account: the foreign "
           "id unauthorized, the repeat ok, changing nothing", _repeated,
           [("foreign_repeat", "unauthorized"), ("repeat", "ok"), "account_frozen"]),
]

CHAINS = [
    Ladder("a chain left open whose first member is unauthorized and second of zero: members' own codes first",
           _chain_left_open,
           [("unauthorized", ["unauthorized", "linked_event_failed"]),
            ("invalid_amount", ["linked_event_failed", "invalid_amount"]),
            ("chain_open", ["linked_event_failed", "linked_event_chain_open"])], done=["ok", "ok"]),
    Ladder("a DvP pair with a bad signature, a short delivery and a payment to the payer itself",
           _signed_pair,
           [("bad_signature", ["bad_signature", "bad_signature"]),
            ("insufficient_funds", ["insufficient_funds", "linked_event_failed"]),
            ("same_account", ["linked_event_failed", "same_account"])], done=["ok", "ok"]),
    Ladder("a DvP pair whose payment is unsigned, to an unknown member, in an unknown asset, of zero, short, to itself",
           _pair_payment_faults,
           [(fault, ["linked_event_failed", fault]) for fault in (
               "unauthorized", "unknown_participant", "participant_inactive", "unknown_asset", "invalid_amount",
               "insufficient_funds", "same_account")], done=["ok", "ok"]),
    Ladder("on a trusted ledger, a DvP pair from a suspended seller to an unknown buyer: unknown_participant first",
           _pair_from_suspended_to_unknown,
           [("unknown_participant", ["unknown_participant", "linked_event_failed"]),
            ("participant_inactive", ["participant_inactive", "linked_event_failed"])],
           done=["ok", "ok"], trusted=True),
    Ladder("a chain whose first member is short and whose second reuses a known id with other content",
           _chain_with_known_id,
           [("insufficient_funds", ["insufficient_funds", "linked_event_failed"]),
            ("id_conflict", ["linked_event_failed", "id_conflict"])], done=["ok", "ok"]),
]


# ------------------------------------------------------------ engine commands


def _admit(w: World, on: On) -> list[Envelope]:
    cmd = Admit(id=new_id(), participant=BANK_C if on("participant_exists") else NEWBANK,
                roles=("operator",) if on("invalid_field") else ("participant",),
                certificate=b"not a certificate" if on("bad_certificate") else certificate_for(NEWBANK))
    return send(w, [BANK_A if on("unauthorized") else OPERATOR], [cmd])


def _member_change(kind: type, setup: Callable[[World], None] | None = None):
    def build(w: World, on: On) -> list[Envelope]:
        if setup is not None:
            setup(w)
        if on("participant_inactive"):
            suspend(w, BANK_C)
        if on("removed"):
            ok(w, OPERATOR, Remove(id=new_id(), participant=BANK_B))
        who = on.pick(("unknown_participant", NOBODY), ("removed", BANK_B), ("the_operator", OPERATOR),
                      default=BANK_C)
        return send(w, [BANK_A if on("unauthorized") else OPERATOR], [kind(id=new_id(), participant=who)])

    return build


def _set_roles(w: World, on: On) -> list[Envelope]:
    cmd = SetRoles(id=new_id(), participant=NOBODY if on("unknown_participant") else BANK_C,
                   roles=("operator",) if on("invalid_field") else ("participant", "oracle"))
    return send(w, [BANK_A if on("unauthorized") else OPERATOR], [cmd])


def _register_asset(w: World, on: On) -> list[Envelope]:
    if on("participant_inactive"):
        suspend(w, CASHBANK)
    issuer = on.pick(("unknown_participant", NOBODY), ("participant_inactive", CASHBANK),
                     ("issuer_without_role", BANK_A), default=CASHBANK)
    asset = Asset(id=USD if on("asset_exists") else EUR, kind="cash", decimals=19 if on("bad_decimals") else 2,
                  issuer=issuer)
    return send(w, [BANK_A if on("unauthorized") else OPERATOR], [RegisterAsset(id=new_id(), asset=asset)])


def _mint(w: World, on: On) -> list[Envelope]:
    if on("participant_inactive"):
        suspend(w, BANK_C)
    if on("account_frozen"):
        freeze(w, BANK_C, USD)
    cmd = Mint(id=new_id(), asset=EUR if on("unknown_asset") else USD,
               target=NOBODY if on("unknown_participant") else BANK_C, amount=0 if on("invalid_amount") else 5)
    return send(w, [BANK_A if on("unauthorized") else CASHBANK], [cmd])


def _burn(w: World, on: On) -> list[Envelope]:
    amount = on.pick(("invalid_amount", 0), ("insufficient_funds", 100_001), default=1)
    cmd = Burn(id=new_id(), asset=EUR if on("unknown_asset") else USD, amount=amount)
    return send(w, [BANK_A if on("unauthorized") else CASHBANK], [cmd])


def _move(trusted: bool = False):
    """A move from BANK_A; on a trusted ledger the source can be suspended without signing."""

    def build(w: World, on: On) -> list[Envelope]:
        if on("participant_inactive"):
            suspend(w, BANK_A if trusted else BANK_C)
        if on("account_frozen"):
            freeze(w, BANK_A)
        target = on.pick(("unknown_participant", NOBODY), ("participant_inactive", BANK_A if trusted else BANK_C),
                         ("same_account", BANK_A), default=BANK_B)
        if trusted:
            target = NOBODY if on("unknown_participant") else BANK_B
        amount = on.pick(("invalid_amount", 0), ("insufficient_funds", 100_000_001), default=100)
        cmd = move(BANK_A, target, amount, EUR if on("unknown_asset") else USD)
        return send(w, [] if trusted else [BANK_B if on("unauthorized") else BANK_A], [cmd])

    return build


def _hold(w: World, on: On) -> list[Envelope]:
    ok(w, BANK_A, lock("L7"))  # its escrow is the engine hold "htlc:L7"; any other taken name is a known id
    if on("participant_inactive"):
        suspend(w, BANK_C)
    if on("account_frozen"):
        freeze(w, BANK_A, USD)
    cmd = Hold(id="htlc:L7" if on("protocol_name") else new_id(), asset=EUR if on("unknown_asset") else USD,
               owner=BANK_A,
               beneficiary=on.pick(("unknown_participant", NOBODY), ("participant_inactive", BANK_C), default=BANK_B),
               amount=on.pick(("invalid_amount", 0), ("insufficient_funds", 100_000_001), default=1_000),
               expires_at=T0 if on("expiry_passed") else 0)
    return send(w, [BANK_B if on("unauthorized") else BANK_A], [cmd])


def _release(to: str):
    """A hold of BANK_A's for BANK_C, released to `to` by its owner (to the beneficiary) or beneficiary."""

    def build(w: World, on: On) -> list[Envelope]:
        ok(w, BANK_A, Hold(id="H1", asset=USD, owner=BANK_A, beneficiary=BANK_C, amount=1_000))
        paid = BANK_C if to == "beneficiary" else BANK_A
        if on("participant_inactive"):
            suspend(w, paid)
        if on("account_frozen"):
            freeze(w, paid, USD)
        allowed = BANK_A if to == "beneficiary" else BANK_C
        signer = BANK_B if on("unauthorized") or on("hold_not_releasable") else allowed
        return send(w, [signer], [Release(id=new_id(), hold="nope" if on("unknown_hold") else "H1", to=to)])

    return build


def _encumber(w: World, on: On) -> list[Envelope]:
    repo_desk(w)  # its repo R1 pledges under the name "repo:R1"
    if on("participant_inactive"):
        suspend(w, BANK_C)
    cmd = Encumber(id="repo:R1" if on("protocol_name") else new_id(), asset=EUR if on("unknown_asset") else UST,
                   owner=BANK_A,
                   beneficiary=on.pick(("unknown_participant", NOBODY), ("participant_inactive", BANK_C),
                                       default=BANK_B),
                   amount=on.pick(("invalid_amount", 0), ("insufficient_funds", 10_001), default=10))
    return send(w, [BANK_B if on("unauthorized") else BANK_A], [cmd])


def _unencumber(w: World, on: On) -> list[Envelope]:
    ok(w, BANK_A, Encumber(id="E1", asset=UST, owner=BANK_A, beneficiary=BANK_B, amount=10))
    cmd = Unencumber(id=new_id(), encumbrance="nope" if on("unknown_encumbrance") else "E1")
    return send(w, [BANK_A if on("unauthorized") else BANK_B], [cmd])  # only the beneficiary lifts it


def _freeze_change(kind: type):
    def build(w: World, on: On) -> list[Envelope]:
        if kind is Unfreeze and not on("not_frozen"):
            freeze(w, BANK_C, USD)
        cmd = kind(id=new_id(), participant=NOBODY if on("unknown_participant") else BANK_C,
                   asset=EUR if on("unknown_asset") else USD)
        return send(w, [BANK_A if on("unauthorized") else COMPLIANCE], [cmd])

    return build


def _set_config(w: World, on: On) -> list[Envelope]:
    cmd = SetConfig(id=new_id(), key="a key" if on("invalid_field") else "k", value="v")
    return send(w, [BANK_A if on("unauthorized") else OPERATOR], [cmd])


def _tick(w: World, on: On) -> list[Envelope]:
    tick = Tick(id=new_id(), to=T0 - 1 if on("backwards") else T0 + 60)
    commands = [move(amount=1, linked=True), tick] if on("chained") else [tick]
    return send(w, [BANK_A] if on("unauthorized") else [BANK_A, OPERATOR], commands)


ENGINE = [
    Ladder("a bank admitting an existing member as operator with a bad certificate", _admit,
           ["unauthorized", "participant_exists", "invalid_field", "bad_certificate"]),
    Ladder("a bank suspending an unknown, or an already suspended, member", _member_change(Suspend),
           ["unauthorized", "unknown_participant", "participant_inactive"]),
    Ladder("a bank reinstating the operator, who is not suspended: participant_inactive before invalid_field",
           _member_change(Reinstate, lambda w: suspend(w, BANK_C)),
           ["unauthorized", "unknown_participant", ("the_operator", "participant_inactive")]),
    Ladder("a bank removing an unknown member, a removed one, the operator", _member_change(Remove),
           ["unauthorized", "unknown_participant", ("removed", "participant_inactive"),
            ("the_operator", "invalid_field")]),
    Ladder("a bank granting the operator role to an unknown member", _set_roles,
           ["unauthorized", "unknown_participant", "invalid_field"]),
    Ladder("a bank registering an existing asset id with 19 decimals for an unknown, suspended or roleless issuer",
           _register_asset,
           ["unauthorized", "unknown_participant", "participant_inactive", "asset_exists",
            ("bad_decimals", "invalid_field"), ("issuer_without_role", "invalid_field")]),
    Ladder("a bank minting zero of an unknown asset to an unknown, suspended, frozen member: the asset first",
           _mint, ["unknown_asset", "unauthorized", "unknown_participant", "participant_inactive", "invalid_amount",
                   "account_frozen"]),
    Ladder("a bank burning zero, or more than the issuer holds, of an unknown asset", _burn,
           ["unknown_asset", "unauthorized", "invalid_amount", "insufficient_funds"]),
    Ladder("an unauthorized move of zero of an unknown asset to an unknown member from a frozen account, short, to "
           "itself", _move(),
           ["unauthorized", "unknown_participant", "participant_inactive", "unknown_asset", "invalid_amount",
            "account_frozen", "insufficient_funds", "same_account"]),
    Ladder("on a trusted ledger, a move from a suspended, frozen source to an unknown target", _move(trusted=True),
           ["unknown_participant", "participant_inactive", "account_frozen"], trusted=True),
    Ladder("a hold under a protocol's reserved name, for another, unknown or suspended beneficiary, of zero of an "
           "unknown asset, expired, frozen, short", _hold,
           [("protocol_name", "unauthorized"), "unauthorized", "unknown_participant", "participant_inactive", "unknown_asset", "invalid_amount",
            ("expiry_passed", "invalid_field"), "account_frozen",
            "insufficient_funds"]),
    Ladder("an unknown hold paid out by a stranger to a suspended, frozen beneficiary", _release("beneficiary"),
           ["unknown_hold", "unauthorized", "participant_inactive", "account_frozen"]),
    Ladder("an unknown hold returned early by a stranger to a suspended, frozen owner: hold_not_releasable before "
           "the owner's state", _release("owner"),
           ["unknown_hold", "hold_not_releasable", "participant_inactive", "account_frozen"]),
    Ladder("a pledge under a protocol's reserved name, for another, to an unknown or suspended beneficiary, of zero "
           "of an unknown asset, short", _encumber,
           [("protocol_name", "unauthorized"), "unauthorized", "unknown_participant", "participant_inactive", "unknown_asset", "invalid_amount",
            "insufficient_funds"]),
    Ladder("an owner lifting an unknown encumbrance", _unencumber, ["unknown_encumbrance", "unauthorized"]),
    Ladder("a bank freezing an unknown member in an unknown asset", _freeze_change(Freeze),
           ["unauthorized", "unknown_participant", "unknown_asset"]),
    Ladder("a bank unfreezing an unknown member in an unknown asset, not frozen", _freeze_change(Unfreeze),
           ["unauthorized", "unknown_participant", "unknown_asset", ("not_frozen", "invalid_field")]),
    Ladder("a bank setting a key with a space", _set_config, ["unauthorized", "invalid_field"]),
    Ladder("a bank's tick backwards inside a chain: unauthorized before the chain rule", _tick,
           [("unauthorized", ["linked_event_failed", "unauthorized"]),
            ("chained", ["linked_event_failed", "invalid_field"]), ("backwards", "invalid_field")]),
]


# ------------------------------------------------------------------ protocols


def _settle(w: World, on: On) -> list[Envelope]:
    queue_trade(w, "T1")
    cmd = dvp.Settle(id=new_id(), trade=on.pick(("invalid_field", ""), ("trade_exists", "T1"), default="T2"),
                     seller=BANK_A, buyer=BANK_A if on("same_party") else BANK_B,
                     security=on.pick(("unknown_asset", EUR), ("wrong_asset_kind", USD), default=UST),
                     quantity=0 if on("invalid_amount") else 10, cash_asset=USD, amount=1_000)
    return send(w, [BANK_B] if on("unauthorized") else [BANK_A, BANK_B], [cmd])


def _instruct(w: World, on: On) -> list[Envelope]:
    fields = {"side": "deliver", "seller": BANK_A, "security": UST, "quantity": 10}
    ok(w, BANK_A, dvp.Instruct(id=new_id(), trade="T1", buyer=BANK_B, cash_asset=USD, amount=1_000, **fields))
    cmd = dvp.Instruct(id=new_id(), trade=on.pick(("invalid_field", ""), ("trade_exists", "T1"), default="T2"),
                       buyer=on.pick(("unknown_participant", NOBODY), ("same_party", BANK_A), default=BANK_B),
                       cash_asset=on.pick(("unknown_asset", EUR), ("wrong_asset_kind", UST), default=USD),
                       amount=0 if on("invalid_amount") else 1_000, **fields)
    return send(w, [BANK_C if on("unauthorized") else BANK_A], [cmd])


def _cancel_named(w: World, on: On) -> list[Envelope]:
    queue_trade(w, "T1")
    cmd = dvp.Cancel(id=new_id(), trade="T9" if on("unknown_trade") else "T1",
                     seller=NOBODY if on("non_member_named") else BANK_A, buyer=BANK_B)
    return send(w, [BANK_C if on("unauthorized") else BANK_A], [cmd])


def _cancel_unnamed(w: World, on: On) -> list[Envelope]:
    queue_trade(w, "T1")
    queue_trade(w, "T1", seller=BANK_B, buyer=BANK_A)  # the same id, the other way round
    parties = {} if on("ambiguous") else {"seller": BANK_A, "buyer": BANK_B}
    return send(w, [BANK_C if on("unauthorized") else BANK_A], [dvp.Cancel(id=new_id(), trade="T1", **parties)])


def _cutoff(w: World, on: On) -> list[Envelope]:
    w.ledger.advance(T0 + 100)
    return send(w, [BANK_A if on("unauthorized") else OPERATOR], [dvp.Cutoff(id=new_id())],
                not_after=T0 + 60 if on("expired") else 0)


def _schedule_cutoff(w: World, on: On) -> list[Envelope]:
    cmd = dvp.ScheduleCutoff(id=new_id(), at=T0 if on("invalid_field") else T0 + 3_600)
    return send(w, [BANK_A if on("unauthorized") else OPERATOR], [cmd])


def _obligate(trusted: bool):
    def build(w: World, on: On) -> list[Envelope]:
        if on("over_the_cycle_bound"):  # the cycle already owes nearly the engine's bound in USD
            ok(w, (BANK_A, BANK_B), netting.Obligate(id=new_id(), trade="N0", seller=BANK_A, buyer=BANK_B,
                                                     security=UST, quantity=1, cash_asset=USD,
                                                     amount=AMOUNT_MAX - 10))
        if on("participant_inactive"):
            suspend(w, BANK_A)
        cmd = netting.Obligate(id=new_id(), trade="" if on("invalid_field") else "N1", seller=BANK_A,
                               buyer=on.pick(("unknown_participant", NOBODY), ("same_party", BANK_A), default=BANK_B),
                               security=on.pick(("unknown_asset", EUR), ("wrong_asset_kind", USD), default=UST),
                               quantity=0 if on("invalid_amount") else 10, cash_asset=USD,
                               amount=11 if on("over_the_cycle_bound") else 1_000)
        if trusted:
            return send(w, [], [cmd])
        return send(w, [BANK_A] if on("unauthorized") else [BANK_A, BANK_B], [cmd])

    return build


def _close_cycle(w: World, on: On) -> list[Envelope]:
    ok(w, BANK_A, move(amount=1))  # BANK_A's last accepted sequence number is 1
    if on("stale_sequence"):
        w[BANK_A].seq = -1  # signs with 0
    return send(w, [BANK_A if on("unauthorized") else OPERATOR], [netting.CloseCycle(id=new_id())])


def _configure_cycles(w: World, on: On) -> list[Envelope]:
    cmd = netting.ConfigureCycles(id=new_id(), period=-1 if on("invalid_field") else 3_600)
    return send(w, [BANK_A if on("unauthorized") else OPERATOR], [cmd])


def _set_price(w: World, on: On) -> list[Envelope]:
    ok(w, OPERATOR, SetRoles(id=new_id(), participant=COMPLIANCE, roles=("compliance", "oracle")))
    cmd = prices.SetPrice(id=new_id(), asset=EUR if on("unknown_asset") else UST,
                          price="-1" if on("bad_price") else "100.5")
    return send(w, [BANK_A if on("unauthorized") else COMPLIANCE], [cmd])


def _set_haircuts(w: World, on: On) -> list[Envelope]:
    cmd = collateral.SetHaircuts(id=new_id(), haircuts={"ust_note": "1.5" if on("bad_haircut") else "0.02"})
    return send(w, [BANK_A if on("unauthorized") else OPERATOR], [cmd])


def _lock(w: World, on: On) -> list[Envelope]:
    ok(w, BANK_A, lock("L1"))  # an engine Hold cannot take an escrow name ("htlc:..."): test_security
    if on("participant_inactive"):
        suspend(w, BANK_C)
    if on("account_frozen"):
        freeze(w, BANK_A, USD)
    expires_at = T0 if on("expiry_passed") else T0 + 7_200
    unsafe = {"counterpart_expires_at": expires_at + 1, "safety_margin": 10} if on("unsafe_timeout") else {}
    cmd = lock(on.pick(("empty_lock_id", ""), ("lock_exists", "L1"), default="L8"),
               receiver=on.pick(("unknown_participant", NOBODY), ("participant_inactive", BANK_C), default=BANK_B),
               asset=EUR if on("unknown_asset") else USD,
               amount=on.pick(("invalid_amount", 0), ("insufficient_funds", 100_000_001), default=1_000),
               hashlock=HASHLOCK[:31] if on("bad_hashlock") else HASHLOCK, expires_at=expires_at, **unsafe)
    return send(w, [BANK_B if on("unauthorized") else BANK_A], [cmd])


def _htlc_close(kind: type):
    def build(w: World, on: On) -> list[Envelope]:
        ok(w, BANK_A, lock("LC"), lock("LO"))
        ok(w, BANK_B, htlc.Claim(id=new_id(), lock="LC", preimage=SECRET))
        lock_id = on.pick(("unknown_lock", "nope"), ("lock_closed", "LC"), default="LO")
        if kind is htlc.Refund:
            return send(w, [BANK_A], [htlc.Refund(id=new_id(), lock=lock_id)])
        preimage = on.pick(("bad_preimage", SECRET[:31]), ("wrong_preimage", bytes(32)), default=SECRET)
        return send(w, [BANK_C], [htlc.Claim(id=new_id(), lock=lock_id, preimage=preimage)])  # anyone may claim

    return build


def _open_repo(trusted: bool):
    def build(w: World, on: On) -> list[Envelope]:
        repo_desk(w)
        if on("participant_inactive"):
            suspend(w, BANK_A)
        if on("account_frozen"):
            freeze(w, BANK_A)
        cmd = open_repo(
            on.pick(("repo_exists", "R1"), default="R7"),
            lender=on.pick(("unknown_participant", NOBODY), ("same_party", BANK_A), default=BANK_B),
            collateral=on.pick(("unknown_asset", EUR), ("cash_as_collateral", USD), ("ineligible_collateral", ART.id),
                               ("no_price", UST2.id), default=UST),
            quantity=on.pick(("invalid_amount", 0), ("insufficient_securities", 20_000), default=1_000),
            principal=on.pick(("insufficient_collateral", 3_000_000_000), ("insufficient_cash", 60_000_000),
                              default=1_000_000),
            end=T0 if on("end_passed") else T0 + 3_600, haircut="1.5" if on("bad_haircut") else "")
        return send(w, [] if trusted else [BANK_B] if on("unauthorized") else [BANK_A, BANK_B], [cmd])

    return build


def _close_repo(trusted: bool):
    def build(w: World, on: On) -> list[Envelope]:
        repo_desk(w)
        if on("borrower_short"):
            drain(w, BANK_A)
        if on("participant_inactive"):
            suspend(w, BANK_B)
        if on("account_frozen"):
            freeze(w, BANK_B)
        cmd = repo.CloseRepo(id=new_id(), repo="nope" if on("unknown_repo") else "R1")
        return send(w, [] if trusted else [BANK_A] if on("unauthorized") else [BANK_A, BANK_B], [cmd])

    return build


def _substitute(w: World, on: On) -> list[Envelope]:
    repo_desk(w)
    if on("repo_closing"):  # R2's closing leg came due with the borrower short of cash: it waits
        ok(w, (BANK_A, BANK_B), open_repo("R2", end=T0 + 60))
        drain(w, BANK_A)
        w.ledger.advance(T0 + 60)
        assert w.ledger.protocol_state(repo.NAME).repos["R2"].closing
    if on("participant_inactive"):
        suspend(w, BANK_B)
    if on("account_frozen"):
        freeze(w, BANK_B)
    cmd = repo.Substitute(
        id=new_id(), repo=on.pick(("unknown_repo", "nope"), ("repo_closing", "R2"), default="R1"),
        collateral=on.pick(("unknown_asset", EUR), ("cash_as_collateral", USD), ("ineligible_collateral", ART.id),
                           ("no_price", UST2.id), default=UST),
        quantity=on.pick(("invalid_amount", 0), ("too_small", 500), ("insufficient_securities", 20_000),
                         default=1_100))
    return send(w, [BANK_C if on("unauthorized") else BANK_A], [cmd])


def _revalue(w: World, on: On) -> list[Envelope]:
    repo_desk(w)
    cmd = repo.Revalue(id=new_id(), repo="nope" if on("unknown_repo") else "R1")
    return send(w, [BANK_C if on("unauthorized") else BANK_A], [cmd])


def _schedule_payment(w: World, on: On) -> list[Envelope]:
    if on("participant_inactive"):
        suspend(w, BANK_C)
    if on("account_frozen"):
        freeze(w, BANK_A, USD)
    cmd = scheduled.SchedulePayment(
        id=new_id(), asset=EUR if on("unknown_asset") else USD, payer=BANK_A,
        payee=on.pick(("unknown_participant", NOBODY), ("participant_inactive", BANK_C), default=BANK_B),
        amount=on.pick(("invalid_amount", 0), ("insufficient_funds", 100_000_001), default=1_000),
        pay_at=T0 if on("pay_at_not_future") else T0 + 60)
    return send(w, [BANK_B if on("unauthorized") else BANK_A], [cmd])


def _cancel_payment(w: World, on: On) -> list[Envelope]:
    ok(w, BANK_A, scheduled.SchedulePayment(id="P1", asset=USD, payer=BANK_A, payee=BANK_B, amount=1_000,
                                            pay_at=T0 + 60))
    cmd = scheduled.CancelPayment(id=new_id(), payment="nope" if on("unknown_payment") else "P1")
    return send(w, [BANK_B if on("unauthorized") else BANK_A], [cmd])


PROTOCOLS = [
    Ladder("a settle signed by the buyer alone, with itself, of zero of cash as the security, no id, an id in use",
           _settle, ["unauthorized", "same_party", "unknown_asset", "wrong_asset_kind", "invalid_amount",
                     "invalid_field", "trade_exists"]),
    Ladder("a stranger's delivery instruction to an unknown buyer, or itself, of zero in a security as cash, no id, "
           "an id in use", _instruct,
           ["unauthorized", "unknown_participant", "same_party", "unknown_asset", "wrong_asset_kind",
            "invalid_amount", "invalid_field", "trade_exists"]),
    Ladder("a stranger cancelling an unknown trade named with a seller who is no member", _cancel_named,
           [("non_member_named", "invalid_field"), "unknown_trade", "unauthorized"]),
    Ladder("a stranger cancelling by id alone a trade id two pairs use: unauthorized before ambiguous",
           _cancel_unnamed, ["unauthorized", ("ambiguous", "invalid_field")]),
    Ladder("a bank's cut-off in an expired envelope", _cutoff, ["expired", "unauthorized"]),
    Ladder("a bank scheduling the cut-off now", _schedule_cutoff, ["unauthorized", "invalid_field"]),
    Ladder("on a trusted ledger, an obligation from a suspended seller to an unknown buyer, or itself, of cash as "
           "the security, over the cycle's bound, no id", _obligate(trusted=True),
           ["unknown_participant", "participant_inactive", "same_party", "unknown_asset", "wrong_asset_kind",
            ("over_the_cycle_bound", "invalid_amount"), "invalid_field"], trusted=True),
    Ladder("an obligation signed by the seller alone, of zero, with no id", _obligate(trusted=False),
           ["unauthorized", "invalid_amount", "invalid_field"]),
    Ladder("a bank closing the cycle with a stale sequence number", _close_cycle,
           ["stale_sequence", "unauthorized"]),
    Ladder("a bank configuring a negative cycle period", _configure_cycles, ["unauthorized", "invalid_field"]),
    Ladder("a bank pricing an unknown asset at a negative price", _set_price,
           ["unauthorized", "unknown_asset", "bad_price"]),
    Ladder("a bank setting a haircut of 150%", _set_haircuts, ["unauthorized", "bad_haircut"]),
    Ladder("a lock signed by its receiver, to an unknown or suspended one, of zero of an unknown asset, a short "
           "hashlock, expired, unsafe, no id, an id in use, frozen, short", _lock,
           ["unauthorized", "unknown_participant", "participant_inactive", "unknown_asset", "invalid_amount",
            "bad_hashlock", ("expiry_passed", "invalid_field"), "unsafe_timeout", ("empty_lock_id", "invalid_field"),
            "lock_exists", "account_frozen", "insufficient_funds"]),
    Ladder("a claim on an unknown or claimed lock with a short or wrong preimage", _htlc_close(htlc.Claim),
           ["unknown_lock", "lock_closed", "bad_preimage", "wrong_preimage"]),
    # A refund can only come after expiry, and the expiry sweep refunds at that instant before any command runs.
    Ladder("a refund of an unknown or claimed lock before expiry", _htlc_close(htlc.Refund),
           ["unknown_lock", "lock_closed", "not_expired"], done=None),
    Ladder("a repo signed by the lender alone, with itself, on an unknown asset, cash, zero, ended, a bad haircut, "
           "an id in use, frozen, ineligible, unpriced, undercollateralised, short of each leg",
           _open_repo(trusted=False),
           ["unauthorized", ("same_party", "bad_terms"), "unknown_asset", ("cash_as_collateral", "bad_terms"),
            "invalid_amount", ("end_passed", "bad_terms"), "bad_haircut", "repo_exists",
            "account_frozen", "ineligible_collateral", "no_price",
            "insufficient_collateral", "insufficient_securities", "insufficient_cash"]),
    Ladder("on a trusted ledger, a repo from a suspended borrower to an unknown lender, or itself",
           _open_repo(trusted=True),
           ["unknown_participant", "participant_inactive", ("same_party", "bad_terms")], trusted=True),
    Ladder("the borrower alone closing an unknown repo, the lender frozen, the borrower short", _close_repo(False),
           ["unknown_repo", "unauthorized", "account_frozen", ("borrower_short", "insufficient_cash")]),
    Ladder("on a trusted ledger, closing a repo whose lender is suspended and frozen, the borrower short",
           _close_repo(True),
           ["unknown_repo", "participant_inactive", "account_frozen", ("borrower_short", "insufficient_cash")],
           trusted=True),
    Ladder("a stranger substituting into an unknown or closing repo, lender suspended, unknown asset, cash, zero, "
           "frozen, ineligible, unpriced, too small, short", _substitute,
           ["unknown_repo", "unauthorized", "repo_closing", "participant_inactive", "unknown_asset",
            ("cash_as_collateral", "bad_terms"), "invalid_amount", "account_frozen", "ineligible_collateral",
            "no_price", ("too_small", "substitute_too_small"), "insufficient_securities"]),
    Ladder("a stranger revaluing an unknown repo", _revalue, ["unknown_repo", "unauthorized"]),
    Ladder("a payment scheduled by its payee, to an unknown or suspended one, of zero of an unknown asset, now, "
           "frozen, short", _schedule_payment,
           ["unauthorized", "unknown_participant", "participant_inactive", "unknown_asset", "invalid_amount",
            "pay_at_not_future", "account_frozen", "insufficient_funds"]),
    Ladder("the payee cancelling an unknown scheduled payment", _cancel_payment, ["unknown_payment", "unauthorized"]),
]

LADDERS = ENVELOPES + CHAINS + ENGINE + PROTOCOLS


# ------------------------------------------------------------------- tests


def _run(ladder: Ladder, faults: Sequence[str]) -> tuple[list[str], World, dict, dict, bytes]:
    """Build the batch with `faults` on a fresh world, submit it; return results and the state before."""
    w = make_world(protocols=protocols(), signatures_required=not ladder.trusted)
    envelopes = ladder.build(w, On(faults))
    before = observable(w.ledger)
    seqs = dict(w.ledger.state.seqs)
    digest = w.ledger.digest()
    return w.submit(envelopes), w, before, seqs, digest


@pytest.mark.parametrize("ladder", LADDERS, ids=[ladder.id for ladder in LADDERS])
def test_the_first_fault_in_precedence_wins_and_changes_nothing(ladder: Ladder):
    steps = ladder.ladder()
    faults = [fault for fault, _ in steps]
    for k, (fault, expect) in enumerate(steps):
        results, w, before, seqs, digest = _run(ladder, faults[k:])
        try:
            assert results == expect, f"with {faults[k:]}"
            assert observable(w.ledger) == before, f"with {faults[k:]}: the state changed"
            assert digest_with_seqs(w.ledger, seqs) == digest
            if all(name in ENVELOPE_NAMES for name in results):
                assert w.ledger.state.seqs == seqs, "a refused envelope must not consume sequence numbers"
        finally:
            w.close()
    if ladder.done is not None:
        results, w, *_ = _run(ladder, ())
        w.close()
        assert results == ladder.done, "with no fault left"


@pytest.mark.parametrize("ladder", CHAINS, ids=[ladder.id for ladder in CHAINS])
def test_chains_give_the_same_codes_without_the_batch_hot_path(ladder: Ladder, monkeypatch):
    """`Machine._run` commits DvP-shaped pairs through `_move_pairs`; switched off, the general path decides alone."""
    monkeypatch.setattr(M, "_move_pairs", lambda flat, owner, i, *rest: i)
    test_the_first_fault_in_precedence_wins_and_changes_nothing(ladder)


def _protocol_commands() -> set[type]:
    kinds: set[type] = set()
    for p in protocols():
        kinds |= set(p.handlers())
    return kinds


def test_the_ladders_cover_every_command():
    """Every engine command and every command of the protocols appears in some ladder."""
    seen: set[type] = set()
    for ladder in LADDERS:
        for faults in ([fault for fault, _ in ladder.ladder()], ()):
            w = make_world(protocols=protocols(), signatures_required=not ladder.trusted)
            seen |= {type(cmd) for env in ladder.build(w, On(faults)) for cmd in w.ledger.decode(env)}
            w.close()
    assert set(ENGINE_COMMANDS) - seen == set()
    assert _protocol_commands() - seen == set()
