"""Seeded workloads shared by the benchmark suites.

Three pieces, each usable on its own:

- `Population`: participants (with deterministic Ed25519 keys), an issuer,
  securities and one cash asset, and per-participant activity weights
  (Zipf-skewed, so a few participants trade most).
- `funded_ledger`: a new ledger (in memory or SQLite) with the population
  admitted, the assets registered and every participant funded; set up
  signed (operator and issuer sign) or unsigned, outside any timed region.
- `generate_pairs`: DvP-like pairs of Moves, a security leg seller->buyer
  with `linked=True` followed by a cash leg buyer->seller, with lognormal
  sizes; plus the client-side envelope builders (`unsigned_batch`,
  `signed_per_command`, `signed_per_batch`) that turn a batch of pairs into
  what a client submits.

Everything is a pure function of the seed, so two runs submit the same bytes.
"""

from __future__ import annotations

import math
import random
from itertools import chain
from operator import attrgetter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from engine.identity import Signer, derive_key, encode_commands, payload_digest, unsigned
from engine.ledger import Ledger, ManualClock
from engine.records import Admit, Asset, Command, Envelope, Mint, Move, RegisterAsset

CHAIN_ID = "bench"
OPERATOR = "OPERATOR"
ISSUER = "ISSUER"
CASH = "USD"
START_TIME = 1_772_443_800  # 2026-03-02T09:30:00Z, the same epoch as the demo
FUNDING = 10**15  # per participant and asset: no generated workload can run a balance dry
SEED = 20260302

Pair = tuple[Move, Move]


@dataclass
class Population:
    """Who trades what: participant ids, their keys, the assets and activity weights."""

    chain_id: str
    participants: list[str]
    securities: list[str]
    cash: str
    weights: list[float]
    keys: dict[str, bytes] = field(repr=False)  # signer id -> 32-byte Ed25519 seed

    def signers(self) -> dict[str, Signer]:
        """Fresh signers (sequence numbers from 0) for a new ledger, operator and issuer included."""
        return {pid: Signer(pid, SigningKey(seed), self.chain_id) for pid, seed in self.keys.items()}

    def public_key(self, pid: str) -> bytes:
        return bytes(SigningKey(self.keys[pid]).verify_key)

    @property
    def assets(self) -> list[str]:
        return [*self.securities, self.cash]


def population(
    participants: int = 100,
    securities: int = 8,
    *,
    skew: float = 1.0,
    chain_id: str = CHAIN_ID,
) -> Population:
    """Return `participants` members P000.. with Zipf(`skew`) activity weights (0: uniform)."""
    if participants < 2:
        raise ValueError("a pair needs at least two participants")
    ids = [f"P{i:03d}" for i in range(participants)]
    weights = [1.0 / (rank + 1) ** skew for rank in range(participants)]
    keys = {pid: bytes(derive_key(f"{chain_id}/{pid}")) for pid in [OPERATOR, ISSUER, *ids]}
    return Population(
        chain_id=chain_id,
        participants=ids,
        securities=[f"SEC{i:02d}" for i in range(securities)],
        cash=CASH,
        weights=weights,
        keys=keys,
    )


def setup_commands(pop: Population, funding: int = FUNDING) -> tuple[list[Command], list[Command]]:
    """Return (operator's commands, issuer's commands) that admit, register and fund everyone."""
    admin: list[Command] = [
        Admit(id="admit-issuer", participant=ISSUER, roles=("issuer",), public_key=pop.public_key(ISSUER))
    ]
    admin += [Admit(id=f"admit-{pid}", participant=pid, public_key=pop.public_key(pid)) for pid in pop.participants]
    for sec in pop.securities:
        admin.append(RegisterAsset(id=f"asset-{sec}", asset=Asset(id=sec, kind="security", decimals=0, issuer=ISSUER)))
    admin.append(RegisterAsset(id=f"asset-{pop.cash}", asset=Asset(id=pop.cash, kind="cash", decimals=2, issuer=ISSUER)))
    mints: list[Command] = [
        Mint(id=f"mint-{asset}-{pid}", asset=asset, target=pid, amount=funding)
        for asset in pop.assets
        for pid in pop.participants
    ]
    return admin, mints


def funded_ledger(
    pop: Population,
    path: str = ":memory:",
    *,
    signed: bool,
    durability: str = "full",
    verify_workers: int = 0,
    funding: int = FUNDING,
    protocols: Sequence = (),
) -> tuple[Ledger, dict[str, Signer]]:
    """Create a ledger at `path` with `pop` admitted and funded; return it and fresh signers.

    `signed=False` creates a ledger that accepts unsigned envelopes
    (`signatures_required=False`) and sets it up unsigned; `signed=True`
    requires signatures and has the operator and the issuer sign the set-up.
    `protocols` defaults to none (the bare engine); pass None to discover them.
    """
    signers = pop.signers()
    op = signers[OPERATOR]
    ledger = Ledger.create(
        path,
        chain_id=pop.chain_id,
        operator=OPERATOR,
        operator_key=op.public_key,
        clock=ManualClock(START_TIME),
        signatures_required=signed,
        protocols=None if protocols is None else list(protocols),
        durability=durability,
        verify_workers=verify_workers,
    )
    admin, mints = setup_commands(pop, funding)
    if signed:
        envelopes = [op.envelope(admin), signers[ISSUER].envelope(mints)]
    else:
        envelopes = [unsigned(pop.chain_id, admin), unsigned(pop.chain_id, mints)]
    for env in envelopes:
        results = ledger.submit([env])
        if any(results):
            ledger.close()
            raise RuntimeError(f"benchmark set-up failed: result codes {sorted(set(results))}")
    return ledger, signers


def generate_pairs(pop: Population, n: int, *, seed: int = SEED, prefix: str = "p") -> list[Pair]:
    """Return `n` DvP-like pairs: (security seller->buyer, linked; cash buyer->seller).

    Sellers and buyers are drawn by activity weight (distinct within a pair),
    quantities and prices are lognormal; ids are `{prefix}{i}s` / `{prefix}{i}c`.
    """
    rng = random.Random(f"{seed}/{prefix}")
    parts = pop.participants
    cum = list(_cumulative(pop.weights))
    secs = pop.securities
    cash = pop.cash
    pairs: list[Pair] = []
    choose = rng.choices
    for i in range(n):
        seller, buyer = choose(parts, cum_weights=cum, k=2)
        while buyer == seller:
            buyer = choose(parts, cum_weights=cum)[0]
        qty = max(1, min(10**7, int(rng.lognormvariate(math.log(10_000), 1.2))))
        price = max(1, int(rng.lognormvariate(math.log(10_000), 0.3)))  # minor units per 100 nominal
        amount = max(1, qty * price // 100)
        sec = secs[rng.randrange(len(secs))]
        pairs.append((
            Move(id=f"{prefix}{i}s", asset=sec, source=seller, target=buyer, amount=qty, linked=True),
            Move(id=f"{prefix}{i}c", asset=cash, source=buyer, target=seller, amount=amount),
        ))
    return pairs


def _cumulative(weights: Sequence[float]) -> Iterator[float]:
    acc = 0.0
    for w in weights:
        acc += w
        yield acc


def chunks(pairs: Sequence[Pair], size: int) -> list[Sequence[Pair]]:
    """Split pairs into batches of `size` pairs (the last may be shorter)."""
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]


def flatten(pairs: Sequence[Pair]) -> list[Move]:
    return list(chain.from_iterable(pairs))


# ------------------------------------------------------------- client side


def unsigned_batch(chain_id: str, pairs: Sequence[Pair]) -> list[Envelope]:
    """One unsigned envelope holding the whole batch (ledgers with signatures_required=False)."""
    return [unsigned(chain_id, flatten(pairs))]


def signed_per_command(signers: dict[str, Signer], pairs: Sequence[Pair]) -> list[Envelope]:
    """One envelope per pair, signed by the seller and cosigned by the buyer: two signatures a pair.

    (A linked chain cannot run past its envelope, so the two legs of a DvP
    travel together, each party's signature covering both.)
    """
    out: list[Envelope] = []
    for sec, cash in pairs:
        envelope = signers[sec.source].envelope((sec, cash))
        out.append(signers[cash.source].cosign(envelope))
    return out


def signed_per_batch(signers: dict[str, Signer], pairs: Sequence[Pair], cosign_each: bool = False) -> list[Envelope]:
    """One envelope for the whole batch, cosigned once by every distinct source in it.

    The payload is encoded and hashed once and every source signs the digest
    (`Signer.signature_of_digest`), as a client collecting cosignatures
    would; `cosign_each=True` instead chains `Signer.cosign`, which hashes
    the whole payload again for every cosigner.
    """
    commands = flatten(pairs)
    sources = list(dict.fromkeys(map(attrgetter("source"), commands)))
    first = signers[sources[0]]
    if cosign_each or not hasattr(first, "signature_of_digest"):
        env = first.envelope(commands)
        for pid in sources[1:]:
            env = signers[pid].cosign(env)
        return [env]
    payload = encode_commands(commands)
    digest = payload_digest(payload)
    sigs = tuple(signers[pid].signature_of_digest(digest) for pid in sources)
    return [Envelope(first.chain_id, payload, sigs)]


def distinct_sources(pairs: Sequence[Pair]) -> int:
    return len({cmd.source for pair in pairs for cmd in pair})
