"""Two banks settle a DvP through `dvp serve`, each from its own client.

Run: `python examples/service_dvp.py [LEDGER.db]` (needs the `service` extra).

1. The operator creates a ledger file (`Ledger.create`): two banks and an
   issuer admitted, USD and a bond registered, both banks funded.
2. `dvp serve` serves it on 127.0.0.1 (a free port).
3. BANK_A (the seller) and BANK_B (the buyer) each run an
   `engine.client.Client` with their own key: each sends its own side of
   trade T-1 (`dvp.Instruct`), the service matches them and settles both
   legs in one step; each reads its balances and the trade.
4. A second DvP travels as one envelope of linked moves that BANK_A signs
   and BANK_B cosigns; sending it again is answered "already applied".

Keys come from `derive_key` (deterministic: demos and tests only).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from engine import Admit, Asset, Ledger, ManualClock, Mint, Move, RegisterAsset, Signer
from engine.client import Client
from engine.identity import derive_key
from protocols import dvp

CHAIN = "main"


def create_ledger(path: str) -> None:
    op, iss, a, b = (Signer(n, derive_key(n), CHAIN) for n in ("OP", "ISSUER", "BANK_A", "BANK_B"))
    ledger = Ledger.create(path, chain_id=CHAIN, operator="OP", operator_key=op.public_key,
                           clock=ManualClock(1_772_443_800))
    ledger.submit([op.envelope([
        Admit(id="adm-a", participant="BANK_A", public_key=a.public_key),
        Admit(id="adm-b", participant="BANK_B", public_key=b.public_key),
        Admit(id="adm-i", participant="ISSUER", roles=("issuer",), public_key=iss.public_key),
        RegisterAsset(id="usd", asset=Asset(id="USD", kind="cash", decimals=2, issuer="ISSUER")),
        RegisterAsset(id="ust", asset=Asset(id="UST10Y", kind="security", decimals=0, issuer="ISSUER")),
    ])])
    ledger.submit([iss.envelope([Mint(id="m1", asset="USD", target="BANK_B", amount=200_000_000),
                                 Mint(id="m2", asset="UST10Y", target="BANK_A", amount=2_000_000)])])
    ledger.close()


def main(path: str) -> int:
    create_ledger(path)
    server = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", "--db", path, "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()  # "dvp serve: listening on http://127.0.0.1:PORT ..."
        url = line.split("listening on ")[1].split()[0]
        seller = Client(url, Signer("BANK_A", derive_key("BANK_A"), CHAIN))
        buyer = Client(url, Signer("BANK_B", derive_key("BANK_B"), CHAIN))
        seller.resume()
        buyer.resume()

        trade = dict(trade="T-1", seller="BANK_A", buyer="BANK_B", security="UST10Y", quantity=1_000_000,
                     cash_asset="USD", amount=99_500_000)
        print("BANK_A delivers:", seller.submit([dvp.Instruct(id="a-1", side="deliver", **trade)]).names)
        done = buyer.submit([dvp.Instruct(id="b-1", side="receive", **trade)])
        print("BANK_B receives:", done.names, "in entry", done.seq)
        print("T-1 for BANK_A:", [r.status for r in seller.trade("T-1")])
        print("BANK_A balances:", seller.balances())
        print("BANK_B balances:", buyer.balances())

        legs = seller.signer.envelope([
            Move(id="d2-sec", asset="UST10Y", source="BANK_A", target="BANK_B", amount=500_000, linked=True),
            Move(id="d2-cash", asset="USD", source="BANK_B", target="BANK_A", amount=49_750_000)])
        both = buyer.signer.cosign(legs)  # the DvP needs both parties' authority: one envelope, two signatures
        print("cosigned DvP:", seller.submit(both).names)
        print("sent again:", "already applied" if buyer.submit(both).already_applied else "applied twice!")
        print("BANK_A balances:", seller.balances())
        seller.close()
        buyer.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(sys.argv[1]))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(main(os.path.join(tmp, "ledger.db")))
