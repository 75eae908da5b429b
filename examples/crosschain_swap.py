"""A cross-chain DvP: the bond on one ledger, the cash on another, settled by hashed timelocks.

Run: `python crosschain_swap.py` (two durable ledgers in a temporary
directory, each with its own chain id, operator and journal).

1. X-1, the happy path. The buyer (the initiator) holds a 32-byte secret:
   it locks the cash on the cash ledger until T1 = now + 2 * timeout; the
   seller checks that lock and locks the bond on the bond ledger until
   T2 = now + timeout (the bond ledger refuses it unless T1 >= T2 + the
   safety margin); the buyer claims the bond, revealing the secret there;
   the coordinator reads it and claims the cash for the seller.
2. X-2, a seller that never locks: nothing moves on the bond ledger, and
   when ledger time reaches T1 the cash ledger's expiry sweep refunds the
   buyer's lock by itself.

`protocols.swap.SwapCoordinator` keeps nothing of its own: each step
reads the two ledgers, so a coordinator restarted between steps resumes.
"""

from __future__ import annotations

import os
import sys
import tempfile

from engine import Admit, Asset, Ledger, ManualClock, Mint, RegisterAsset, Signer
from engine.identity import derive_key
from protocols import htlc
from protocols.swap import SwapCoordinator, SwapTerms, new_secret

START = 1_772_443_800  # 2026-03-02T09:30:00Z
HOUR = 3_600
PARTIES = ("SELLER", "BUYER")


def make_ledger(path: str, chain: str, asset: Asset, holder: str, amount: int,
                clock: ManualClock) -> tuple[Ledger, dict[str, Signer]]:
    """A ledger of its own chain: its operator, an issuer of `asset`, both parties; `holder` funded."""
    signers = {n: Signer(n, derive_key(f"example/{chain}/{n}"), chain) for n in ("OP", "ISSUER") + PARTIES}
    ledger = Ledger.create(path, chain_id=chain, operator="OP", operator_key=signers["OP"].public_key, clock=clock,
                           protocols=[htlc.HTLC()])
    ledger.submit([signers["OP"].envelope(
        [Admit(id=f"adm-{n}", participant=n, public_key=signers[n].public_key) for n in PARTIES]
        + [Admit(id="adm-iss", participant="ISSUER", roles=("issuer",), public_key=signers["ISSUER"].public_key),
           RegisterAsset(id="reg", asset=asset)])])
    ledger.submit([signers["ISSUER"].envelope([Mint(id="mint", asset=asset.id, target=holder, amount=amount)])])
    return ledger, signers


def dollars(minor: int) -> str:
    return f"{minor // 100:,}.{minor % 100:02d}"  # integers of cents: money is never a float


def holdings(bonds: Ledger, cash: Ledger) -> str:
    return (f"bond ledger: SELLER {bonds.balance('SELLER', 'UST10Y'):,} BUYER {bonds.balance('BUYER', 'UST10Y'):,}"
            f" | cash ledger: SELLER {dollars(cash.balance('SELLER', 'USD'))} "
            f"BUYER {dollars(cash.balance('BUYER', 'USD'))} USD")


def main(directory: str) -> int:
    clock = ManualClock(START)  # one clock for both ledgers here; each ledger keeps its own time
    bond = Asset(id="UST10Y", kind="security", decimals=0, issuer="ISSUER")
    usd = Asset(id="USD", kind="cash", decimals=2, issuer="ISSUER")
    bonds, bond_signers = make_ledger(os.path.join(directory, "bonds.db"), "bond-chain", bond, "SELLER",
                                      2_000_000, clock)
    cash, cash_signers = make_ledger(os.path.join(directory, "cash.db"), "cash-chain", usd, "BUYER",
                                     300_000_000, clock)
    coordinator = SwapCoordinator(bonds, cash, bond_signers, cash_signers)
    print("before:  " + holdings(bonds, cash))

    # 1. The happy path: four steps, two ledgers, either both assets move or neither.
    x1 = SwapTerms(trade="X-1", seller="SELLER", buyer="BUYER", security="UST10Y", quantity=1_000_000,
                   cash_asset="USD", amount=99_500_000, timeout=HOUR)
    secret = new_secret()  # 32 random bytes, known to the buyer alone
    coordinator.initiate(x1, secret)
    lock = cash.protocol_state(htlc.NAME).locks["X-1"]
    print(f"1. X-1: BUYER locks USD 995,000.00 on cash-chain until T1 = +{(lock.expires_at - START) // 60} min")
    coordinator.respond(x1)
    lock = bonds.protocol_state(htlc.NAME).locks["X-1"]
    minutes = (lock.expires_at - START) // 60
    print(f"   SELLER checks it, locks 1,000,000 UST10Y on bond-chain until T2 = +{minutes} min")
    clock.advance(60)
    coordinator.claim_second(x1, secret)
    revealed = bonds.protocol_state(htlc.NAME).locks["X-1"].preimage
    print(f"   BUYER claims the bond, revealing the secret on bond-chain: {revealed == secret}")
    print(f"   the coordinator claims the cash for SELLER: first lock {coordinator.follow(x1)}")
    print("after:   " + holdings(bonds, cash))

    # 2. The seller never answers: the buyer's lock refunds by itself at T1.
    x2 = SwapTerms(trade="X-2", seller="SELLER", buyer="BUYER", security="UST10Y", quantity=500_000,
                   cash_asset="USD", amount=49_750_000, timeout=HOUR)
    coordinator.initiate(x2, new_secret())
    print(f"2. X-2: BUYER locks USD 497,500.00 (the lock is {cash.protocol_state(htlc.NAME).locks['X-2'].status}, "
          f"BUYER's balance {dollars(cash.balance('BUYER', 'USD'))}); SELLER never locks")
    clock.advance(2 * HOUR)
    for ledger in (bonds, cash):
        ledger.advance()  # ledger time reaches T1: the expiry sweep runs
    print(f"   at T1 the expiry sweep has {cash.protocol_state(htlc.NAME).locks['X-2'].status} it; "
          f"follow: {coordinator.follow(x2)}")
    print("after:   " + holdings(bonds, cash))
    bonds.close()
    cash.close()
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(sys.argv[1]))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(main(tmp))
