"""Embed the engine: DvP trades signed by both parties, on a durable ledger.

Run: `python embed_dvp.py` (the ledger lives in a temporary directory; pass
a path to keep it, then `dvp verify PATH`).

1. The operator creates a ledger journaled in SQLite, with the DvP
   protocol: two banks and an issuer admitted, a bond and USD registered,
   both banks funded by the issuer.
2. T-1: a `dvp.Settle` signed by the seller and cosigned by the buyer (one
   envelope, two signatures) settles both legs in one step.
3. T-2: the buyer cannot pay yet, so the trade queues; when the issuer
   credits the buyer's cash, the queue recycles it and it settles.
4. A forgery: the same kind of instruction signed by the seller alone is
   refused (`unauthorized`: a DvP needs both parties' authority).
5. The ledger is closed and opened again from its journal (the hash chain
   is checked, the state rebuilt), then audited end to end.

Keys come from `derive_key` (deterministic: demos and tests only).
"""

from __future__ import annotations

import os
import sys
import tempfile

from engine import Admit, Asset, Ledger, ManualClock, Mint, RegisterAsset, Signer, codes
from engine.identity import derive_key
from engine.verify import verify_journal
from protocols import dvp

CHAIN = "main"
START = 1_772_443_800  # 2026-03-02T09:30:00Z, in ledger seconds


def usd(minor: int) -> str:
    return f"USD {minor // 100:,}.{minor % 100:02d}"


def main(path: str) -> int:
    clock = ManualClock(START)  # ledger time is injected, never read from the wall
    op, iss, seller, buyer = (Signer(n, derive_key(f"example/{n}"), CHAIN)
                              for n in ("OP", "ISSUER", "BANK_A", "BANK_B"))
    ledger = Ledger.create(path, chain_id=CHAIN, operator="OP", operator_key=op.public_key, clock=clock,
                           protocols=[dvp.DvP()])
    print(f"1. ledger {CHAIN!r} created at {path}")
    ledger.submit([op.envelope([
        Admit(id="adm-a", participant="BANK_A", public_key=seller.public_key),
        Admit(id="adm-b", participant="BANK_B", public_key=buyer.public_key),
        Admit(id="adm-i", participant="ISSUER", roles=("issuer",), public_key=iss.public_key),
        RegisterAsset(id="reg-usd", asset=Asset(id="USD", kind="cash", decimals=2, issuer="ISSUER")),
        RegisterAsset(id="reg-ust", asset=Asset(id="UST10Y", kind="security", decimals=0, issuer="ISSUER")),
    ])])
    ledger.submit([iss.envelope([Mint(id="m-usd", asset="USD", target="BANK_B", amount=100_000_000),
                                 Mint(id="m-ust", asset="UST10Y", target="BANK_A", amount=2_000_000)])])
    print(f"   BANK_A holds 2,000,000 UST10Y; BANK_B holds {usd(ledger.balance('BANK_B', 'USD'))}")

    # 2. One instruction, both signatures: the seller signs the envelope, the buyer cosigns it.
    clock.advance(60)
    t1 = dvp.Settle(id="s-T-1", trade="T-1", seller="BANK_A", buyer="BANK_B", security="UST10Y",
                    quantity=1_000_000, cash_asset="USD", amount=99_500_000)
    results = ledger.submit([buyer.cosign(seller.envelope([t1]))])
    status = ledger.trade("T-1")
    print(f"2. T-1 (1,000,000 UST10Y for {usd(99_500_000)}): {codes.name(results[0])}, trade {status.status}")

    # 3. The buyer is short: the trade queues, then settles when cash arrives.
    clock.advance(60)
    t2 = dvp.Settle(id="s-T-2", trade="T-2", seller="BANK_A", buyer="BANK_B", security="UST10Y",
                    quantity=500_000, cash_asset="USD", amount=49_750_000)
    ledger.submit([buyer.cosign(seller.envelope([t2]))])
    status = ledger.trade("T-2")
    print(f"3. T-2 ({usd(49_750_000)}; BANK_B holds {usd(ledger.balance('BANK_B', 'USD'))}): "
          f"{status.status}, waiting for {status.reason}")
    clock.advance(60)
    ledger.submit([iss.envelope([Mint(id="m-usd-2", asset="USD", target="BANK_B", amount=50_000_000)])])
    status = ledger.trade("T-2")
    print(f"   the issuer credits BANK_B {usd(50_000_000)}: T-2 {status.status} by recycling, "
          f"{status.ended_at - status.instructed_at} s after it was instructed "
          f"(events: {', '.join(e.kind for e in status.events)})")

    # 4. A DvP signed by one party only moves nothing.
    forged = dvp.Settle(id="s-T-3", trade="T-3", seller="BANK_A", buyer="BANK_B", security="UST10Y",
                        quantity=1, cash_asset="USD", amount=1)
    print(f"4. T-3 signed by the seller alone: {codes.name(ledger.submit([seller.envelope([forged])])[0])}")

    print("   BANK_B's cash, change by change:")
    for change in ledger.history("BANK_B", "USD"):
        what = ", ".join(c.type for c in change.commands) or change.cause
        what += "".join(f"; {e.kind} {e.ref}" for e in change.events)  # what the step set off
        print(f"     entry {change.seq}: {usd(change.balance_before)} -> {usd(change.balance_after)} ({what})")

    # 5. Reopen from the journal, then audit it.
    head = ledger.head_hash.hex()
    ledger.close()
    ledger = Ledger.open(path, protocols=[dvp.DvP()])
    assert ledger.head_hash.hex() == head
    print(f"5. reopened at entry {ledger.head_seq}: BANK_A holds {usd(ledger.balance('BANK_A', 'USD'))} and "
          f"{ledger.balance('BANK_A', 'UST10Y'):,} UST10Y")
    ledger.close()
    audit = verify_journal(path, protocols=[dvp.DvP()])
    print(f"   verified: {audit.entries} entries, {audit.signatures} signatures, head {audit.head[:16]}...")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(sys.argv[1]))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(main(os.path.join(tmp, "ledger.db")))
