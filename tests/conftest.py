"""Shared fixtures: a small ledger world with an operator, two issuers, a
compliance officer and three banks, and helpers to sign, submit and compare
state.

The world uses deterministic keys (`derive_key`) and a `ManualClock`, so two
worlds built the same way produce the same journal, byte for byte.

`backend` runs a test on each journal backend, SQLite and PostgreSQL (a
real server: see tests/backends.py); without a server the PostgreSQL cases
skip and the run ends with one line saying how to enable them.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from backends import PG_HOWTO, PgBackend, SqliteBackend, start_server
from engine import codes as C
from engine.identity import Signer, derive_key
from engine.ledger import Ledger, ManualClock
from engine.records import Admit, Asset, Command, Envelope, Mint, RegisterAsset

# A shell starts a background job (`&`, nohup, some CI runners) with Ctrl-C ignored, and an ignored signal
# stays ignored in every child: the tests that press Ctrl-C on a `dvp` process would see it do nothing.
# Catching it here (as Python does by default) gives the children the default disposition again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

T0 = 1_772_443_800  # 2026-03-02T09:30:00Z
CHAIN = "test-chain"
OTHER_CHAIN = "other-chain"

OPERATOR = "OPERATOR"
CASHBANK = "CASHBANK"  # issuer of USD
TREASURY = "TREASURY"  # issuer of UST
COMPLIANCE = "COMPLIANCE"
BANK_A = "BANK_A"
BANK_B = "BANK_B"
BANK_C = "BANK_C"
MALLORY = "MALLORY"  # has a key, never admitted
BANKS = (BANK_A, BANK_B, BANK_C)

USD = "USD"
UST = "UST"
USD_ASSET = Asset(id=USD, kind="cash", decimals=2, issuer=CASHBANK)
UST_ASSET = Asset(id=UST, kind="security", decimals=0, issuer=TREASURY, asset_class="ust_note",
                  maturity="2036-02-15")

# Opening balances of the funded world, in minor units.
FUNDING: dict[tuple[str, str], int] = {
    (BANK_A, USD): 100_000_000,  # USD 1,000,000.00
    (BANK_B, USD): 50_000_000,  # USD 500,000.00
    (CASHBANK, USD): 100_000,  # USD 1,000.00, for burns
    (BANK_A, UST): 10_000,
    (BANK_B, UST): 5_000,
    (TREASURY, UST): 100,
}

ADMISSIONS = (
    (CASHBANK, ("issuer",)),
    (TREASURY, ("issuer",)),
    (COMPLIANCE, ("compliance",)),
    (BANK_A, ("participant",)),
    (BANK_B, ("participant",)),
    (BANK_C, ("participant",)),
)

_ids = itertools.count(1)


def new_id(prefix: str = "cmd") -> str:
    """Return a command id never used before in this test session."""
    return f"{prefix}-{next(_ids)}"


def key_for(name: str):
    return derive_key(f"tests/{name}")


def names(results: Sequence[int]) -> list[str]:
    """Spell result codes by name, so a failing assertion reads as words."""
    return [C.name(r) for r in results]


class World:
    """A ledger plus the signers of everyone in it."""

    def __init__(self, ledger: Ledger, clock: ManualClock, path: str, protocols: Sequence[Any]):
        self.ledger = ledger
        self.clock = clock
        self.path = path
        self.protocols = list(protocols)
        self.signers = {
            name: Signer(name, key_for(name), CHAIN)
            for name in (OPERATOR, CASHBANK, TREASURY, COMPLIANCE, BANK_A, BANK_B, BANK_C, MALLORY)
        }

    def __getitem__(self, name: str) -> Signer:
        return self.signers[name]

    def env(self, name: str, commands: Sequence[Command], not_after: int = 0) -> Envelope:
        return self.signers[name].envelope(list(commands), not_after)

    def cosigned(self, signers: Sequence[str], commands: Sequence[Command], not_after: int = 0) -> Envelope:
        """One envelope signed by every named party, in order."""
        envelope = self.env(signers[0], commands, not_after)
        for name in signers[1:]:
            envelope = self.signers[name].cosign(envelope)
        return envelope

    def send(self, name: str, commands: Sequence[Command], **kw) -> list[str]:
        """Sign `commands` as one batch by `name`, submit, return result names."""
        return names(self.ledger.submit([self.env(name, commands)], **kw))

    def submit(self, envelopes: Sequence[Envelope], **kw) -> list[str]:
        return names(self.ledger.submit(list(envelopes), **kw))

    def bal(self, participant: str, asset: str) -> int:
        return self.ledger.balance(participant, asset)

    def reopen(self, **kw) -> Ledger:
        """Close the ledger and open its journal again (SQLite worlds only)."""
        assert self.path != ":memory:"
        self.ledger.close()
        self.ledger = Ledger.open(self.path, clock=self.clock, protocols=self.protocols, **kw)
        return self.ledger

    def close(self) -> None:
        self.ledger.close()


def make_world(
    path: str = ":memory:",
    *,
    protocols: Sequence[Any] = (),
    fund: bool = True,
    signatures_required: bool = True,
    snapshot_every: int | None = None,
    durability: str = "full",
) -> World:
    """Create a ledger, admit everyone, register USD and UST and fund the banks."""
    clock = ManualClock(T0)
    op = Signer(OPERATOR, key_for(OPERATOR), CHAIN)
    kw = {} if snapshot_every is None else {"snapshot_every": snapshot_every}
    ledger = Ledger.create(
        path,
        chain_id=CHAIN,
        operator=OPERATOR,
        operator_key=op.public_key,
        clock=clock,
        protocols=list(protocols),
        signatures_required=signatures_required,
        durability=durability,
        **kw,
    )
    world = World(ledger, clock, path, protocols)
    admit = [
        Admit(id=f"setup-admit-{name}", participant=name, roles=roles, public_key=world[name].public_key)
        for name, roles in ADMISSIONS
    ]
    assets = [RegisterAsset(id="setup-usd", asset=USD_ASSET), RegisterAsset(id="setup-ust", asset=UST_ASSET)]
    assert world.send(OPERATOR, admit + assets) == ["ok"] * (len(admit) + len(assets))
    if fund:
        for issuer, asset in ((CASHBANK, USD), (TREASURY, UST)):
            mints = [
                Mint(id=f"setup-mint-{who}-{a}", asset=a, target=who, amount=amount)
                for (who, a), amount in FUNDING.items()
                if a == asset
            ]
            assert world.send(issuer, mints) == ["ok"] * len(mints)
    return world


@pytest.fixture
def world():
    w = make_world()
    yield w
    w.close()


# ------------------------------------------------------------ comparing state


def observable(ledger: Ledger) -> dict:
    """Everything a command could change, except signer sequence numbers.

    Sequence numbers are consumed by any envelope whose signatures pass, so
    a refused command legitimately moves them; everything else (balances,
    holds, encumbrances, freezes, members, supply, timers, config, command
    ids, protocol state) must stay exactly as it was.
    """
    state = ledger.state
    engine = msgspec.structs.replace(state.engine, seqs={}, now=state.now)
    out = msgspec.to_builtins(engine)
    out["ids"] = dict(state.ids)
    out["protocols"] = {name: msgspec.to_builtins(value) for name, value in state.protocols.items()}
    return out


def digest_with_seqs(ledger: Ledger, seqs: dict[str, int]) -> bytes:
    """The ledger's state digest as it would be with these signer sequence numbers."""
    live = ledger.state.seqs
    saved = dict(live)
    live.clear()
    live.update(seqs)
    try:
        return ledger.digest()
    finally:
        live.clear()
        live.update(saved)


# ------------------------------------------------------------------ backends


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server for the session (temporary, or DVP_TEST_POSTGRES); skips without one."""
    server = start_server()
    if isinstance(server, str):
        if os.environ.get("DVP_REQUIRE_POSTGRES"):  # CI: the PostgreSQL tests must run, not skip
            pytest.fail(server.replace("tests skipped", "tests required (DVP_REQUIRE_POSTGRES)"), pytrace=False)
        pytest.skip(server)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """Each journal backend in turn: fresh locations and raw access for tampering."""
    if request.param == "postgres":
        return PgBackend(request.getfixturevalue("pg_server"))
    return SqliteBackend(tmp_path)


def pytest_terminal_summary(terminalreporter):
    skipped = terminalreporter.stats.get("skipped", [])
    if any(PG_HOWTO in str(getattr(report, "longrepr", "")) for report in skipped):
        terminalreporter.write_line(PG_HOWTO)
