"""A small settlement world for the protocol tests: banks, USD and two bonds.

Commands are signed by the parties they need (DvP by both), so the tests
exercise authorization as well; `World.run` submits one batch.
"""

from __future__ import annotations

import itertools

from engine import codes as C
from engine.identity import Signer, derive_key
from engine.ledger import Ledger, ManualClock
from engine.records import Admit, Asset, Command, Mint, RegisterAsset, SetConfig
from protocols import dvp, netting, prices

T0 = 1_772_443_800  # 2026-03-02T09:30:00Z
CHAIN = "dvp-test"
BANKS = ("A", "B", "C", "D")
_ids = itertools.count(1)


def fresh(prefix: str = "c") -> str:
    return f"{prefix}{next(_ids)}"


class World:
    def __init__(self, cash: dict[str, int] | None = None, bonds: dict[str, int] | None = None, path: str = ":memory:"):
        self.clock = ManualClock(T0)
        self.signers = {n: Signer(n, derive_key(f"dvp-world/{n}"), CHAIN) for n in BANKS + ("OP", "ISS", "ORC", "CMP")}
        self.ledger = Ledger.create(path, chain_id=CHAIN, operator="OP", operator_key=self.signers["OP"].public_key,
                                    clock=self.clock, protocols=[dvp.DvP(), netting.Netting(), prices.Prices()])
        admits = [Admit(id=fresh(), participant=n, public_key=self.signers[n].public_key) for n in BANKS]
        admits += [Admit(id=fresh(), participant="ISS", roles=("issuer",), public_key=self.signers["ISS"].public_key),
                   Admit(id=fresh(), participant="ORC", roles=("oracle",), public_key=self.signers["ORC"].public_key),
                   Admit(id=fresh(), participant="CMP", roles=("compliance",),
                         public_key=self.signers["CMP"].public_key),
                   RegisterAsset(id=fresh(), asset=Asset(id="USD", kind="cash", decimals=2, issuer="ISS")),
                   RegisterAsset(id=fresh(), asset=Asset(id="BOND", kind="security", decimals=0, issuer="ISS")),
                   RegisterAsset(id=fresh(), asset=Asset(id="BILL", kind="security", decimals=0, issuer="ISS"))]
        assert self.run("OP", admits) == [C.OK] * len(admits)
        mints = [Mint(id=fresh(), asset="USD", target=n, amount=v) for n, v in (cash or {}).items() if v]
        mints += [Mint(id=fresh(), asset="BOND", target=n, amount=v) for n, v in (bonds or {}).items() if v]
        if mints:
            assert self.run("ISS", mints) == [C.OK] * len(mints)

    def run(self, signers: str | tuple[str, ...], commands: list[Command]) -> list[int]:
        """Submit `commands` as one envelope signed by `signers`."""
        if isinstance(signers, str):
            signers = (signers,)
        envelope = self.signers[signers[0]].envelope(commands)
        for name in signers[1:]:
            envelope = self.signers[name].cosign(envelope)
        return self.ledger.submit([envelope])

    def settle(self, trade: str, seller: str, buyer: str, quantity: int, amount: int, security: str = "BOND",
               **extra) -> int:
        cmd = dvp.Settle(id=fresh(), trade=trade, seller=seller, buyer=buyer, security=security, quantity=quantity,
                         cash_asset="USD", amount=amount, **extra)
        return self.run((seller, buyer), [cmd])[0]

    def mint(self, who: str, amount: int, asset: str = "USD") -> None:
        assert self.run("ISS", [Mint(id=fresh(), asset=asset, target=who, amount=amount)]) == [C.OK]

    def config(self, key: str, value: str) -> None:
        assert self.run("OP", [SetConfig(id=fresh(), key=key, value=value)]) == [C.OK]

    def advance(self, seconds: int) -> list:
        self.clock.advance(seconds)
        return self.ledger.advance()

    def events(self) -> list:
        return self.ledger.last_events

    def bal(self, who: str, asset: str = "USD") -> int:
        return self.ledger.balance(who, asset)

    def reopen(self, snapshot: bool = True) -> None:
        """Close the ledger (after a snapshot, if asked) and open its journal again (SQLite worlds)."""
        if snapshot:
            self.ledger.snapshot()
        path = self.ledger.journal.path
        self.ledger.close()
        self.ledger = Ledger.open(path, clock=self.clock, protocols=[dvp.DvP(), netting.Netting(), prices.Prices()])
        assert self.ledger.recovery_notes == []

    def queue(self) -> dict:
        """The queued trades by trade id (the book keys them by seller, buyer and id)."""
        return {t.trade: t for t in self.ledger.protocol_state(dvp.NAME).queue.values()}

    def all_balances_non_negative(self) -> bool:
        return all(v >= 0 for held in self.ledger.balances().values() for v in held.values())
