"""A short end-to-end scenario: genesis, admissions, mints, linked transfers, a forgery.

Run by `dvp demo`. It uses deterministic keys and an injected clock, so it
prints the same hashes every time it runs on a fresh journal.
"""

from __future__ import annotations

import os

from . import codes as C
from .identity import Signer, derive_key, issue_certificate
from .ledger import Ledger, ManualClock
from .records import Admit, Asset, Envelope, Mint, Move, RegisterAsset, Signature

DEMO_START = 1_772_443_800  # 2026-03-02T09:30:00Z
CHAIN = "demo"


def run_demo(db: str = ":memory:") -> tuple[Ledger, list[tuple[str, str, str]]]:
    """Run the scenario on a new ledger at `db`; return it and (step, what, result) rows."""
    if db != ":memory:" and os.path.exists(db):
        raise FileExistsError(f"{db} exists: the demo needs a new journal path")
    clock = ManualClock(DEMO_START)
    op = Signer("OPERATOR", derive_key("demo/OPERATOR"), CHAIN)
    bank_a = Signer("BANK_A", derive_key("demo/BANK_A"), CHAIN)
    bank_b = Signer("BANK_B", derive_key("demo/BANK_B"), CHAIN)
    treasury = Signer("TREASURY", derive_key("demo/TREASURY"), CHAIN)
    cash = Signer("CASHBANK", derive_key("demo/CASHBANK"), CHAIN)
    ledger = Ledger.create(db, chain_id=CHAIN, operator=op.id, operator_key=op.public_key, clock=clock, protocols=[])
    rows: list[tuple[str, str, str]] = []

    def step(what: str, envelope: Envelope) -> list[int]:
        results = ledger.submit([envelope])
        rows.append((str(ledger.head_seq), what, ", ".join(C.name(r) for r in results)))
        return results

    cert = issue_certificate(op.key, op.id, "BANK_B", bank_b.public_key, DEMO_START - 86_400, DEMO_START + 365 * 86_400)
    step(
        "operator admits BANK_A (key), BANK_B (X.509 certificate), two issuers",
        op.envelope([
            Admit(id="admit-a", participant="BANK_A", public_key=bank_a.public_key),
            Admit(id="admit-b", participant="BANK_B", certificate=cert),
            Admit(id="admit-t", participant="TREASURY", roles=("issuer",), public_key=treasury.public_key),
            Admit(id="admit-c", participant="CASHBANK", roles=("issuer",), public_key=cash.public_key),
            RegisterAsset(id="asset-ust", asset=Asset(id="UST10Y", kind="security", decimals=0, issuer="TREASURY",
                                                       asset_class="ust_note", maturity="2036-02-15")),
            RegisterAsset(id="asset-usd", asset=Asset(id="USD", kind="cash", decimals=2, issuer="CASHBANK")),
        ]),
    )
    clock.advance(60)
    step("TREASURY mints 5,000,000 UST10Y to BANK_A",
         treasury.envelope([Mint(id="mint-ust", asset="UST10Y", target="BANK_A", amount=5_000_000)]))
    step("CASHBANK mints USD 10,000,000.00 to BANK_B",
         cash.envelope([Mint(id="mint-usd", asset="USD", target="BANK_B", amount=1_000_000_000)]))
    clock.advance(60)
    dvp = bank_a.envelope([
        Move(id="dvp1-sec", asset="UST10Y", source="BANK_A", target="BANK_B", amount=1_000_000, linked=True),
        Move(id="dvp1-cash", asset="USD", source="BANK_B", target="BANK_A", amount=99_500_000),
    ])
    step("linked DvP: 1,000,000 UST10Y against USD 995,000.00 (both sign)", bank_b.cosign(dvp))
    big = bank_a.envelope([
        Move(id="dvp2-sec", asset="UST10Y", source="BANK_A", target="BANK_B", amount=1_000_000, linked=True),
        Move(id="dvp2-cash", asset="USD", source="BANK_B", target="BANK_A", amount=2_000_000_000),
    ])
    step("linked DvP the buyer cannot pay: neither leg moves", bank_b.cosign(big))
    forged_payload = bank_a.envelope([Move(id="steal", asset="USD", source="BANK_B", target="BANK_A", amount=100)])
    forged = Envelope(CHAIN, forged_payload.payload, (Signature("BANK_B", 99, bytes(64)),))
    step("forgery: a transfer out of BANK_B signed with a fake BANK_B signature", forged)
    step("replay: the first DvP envelope submitted again", bank_b.cosign(dvp))
    return ledger, rows


def print_demo(db: str = ":memory:") -> int:
    from rich.console import Console
    from rich.table import Table

    ledger, rows = run_demo(db)
    console = Console()
    table = Table(title=f"dvp demo: ledger {CHAIN!r} ({db})")
    table.add_column("entry", justify="right")
    table.add_column("what happened")
    table.add_column("result per command")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    balances = Table(title="balances")
    balances.add_column("participant")
    balances.add_column("UST10Y", justify="right")
    balances.add_column("USD", justify="right")
    for participant, held in sorted(ledger.balances().items()):
        usd = held.get("USD", 0)
        balances.add_row(participant, f"{held.get('UST10Y', 0):,}", f"{usd // 100:,}.{usd % 100:02d}")
    console.print(balances)
    console.print(f"head  {ledger.head_hash.hex()}\nstate {ledger.digest().hex()}")
    if db != ":memory:":
        console.print(f"journal kept at {db}: check it with `dvp verify {db}`")
    ledger.close()
    return 0
