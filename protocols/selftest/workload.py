"""The crash harness's workload: a seeded settlement day, recorded as the batches it submits.

`trade_lines(seed)` writes a day as trade-file lines (docs/formats.md): DvPs that
queue and recycle (gross mode) or settle in netting cycles (net mode), repos
with price shocks that call margin, and cross-chain DvPs that run as hashed
timelock swaps against a side chain of tokenized deposits. `record(seed)`
replays that file once in memory and records every batch each chain's ledger
received, with the ledger time it was applied at and its result codes, and the
final state of every chain: that is the clean run the crash runs are compared
with. A `Workload` is plain data (msgpack), so a killed child can reload it.
"""

from __future__ import annotations

import os
import random
import tempfile
from contextlib import contextmanager
from typing import Any

import msgspec

from engine.ledger import Ledger
from engine.records import Envelope
from engine.state import State

T0_DAY = "2026-03-02"


class ChainSpec(msgspec.Struct, array_like=True):
    chain: str
    operator: str
    operator_key: bytes
    first_at: int
    protocols: str  # "main" or "side" (protocols.replay.apply's sets)


class Step(msgspec.Struct, array_like=True):
    chain: int  # index into Workload.chains
    at: int
    envelopes: list[Envelope]
    results: list[int]


class Final(msgspec.Struct, array_like=True):
    digest: bytes
    balances: dict[str, dict[str, int]]
    head_seq: int


class Workload(msgspec.Struct):
    seed: int
    mode: str
    chains: list[ChainSpec]
    steps: list[Step]
    finals: list[Final]

    def encode(self) -> bytes:
        return msgspec.msgpack.encode(self)

    @staticmethod
    def decode(data: bytes) -> Workload:
        return msgspec.msgpack.decode(data, type=Workload)

    @property
    def commands(self) -> int:
        return sum(len(s.results) for s in self.steps)


def _t(minute: int) -> str:
    return f"{T0_DAY}T{9 + minute // 60:02d}:{minute % 60:02d}:00Z"


def trade_lines(seed: int, trades: int = 40) -> tuple[str, list[str]]:
    """A seeded day as trade-file lines: (mode, lines)."""
    rng = random.Random(seed)
    mode = "net" if seed % 2 else "gross"
    banks = [f"BANK_{c}" for c in "ABCDE"]
    j = msgspec.json.encode
    lines = [j({"type": "config", "mode": mode, **({"netting_cycle": "PT1H"} if mode == "net" else {}),
                "mta": "0.00", "grace": "PT30M", "haircuts": {"ust_note": "0.02"}}).decode(),
             j({"type": "asset", "id": "USD", "kind": "cash", "decimals": 2}).decode(),
             j({"type": "asset", "id": "UST5Y", "kind": "security", "decimals": 0, "class": "ust_note",
                "maturity": "2031-02-28", "price": "99.00"}).decode(),
             j({"type": "asset", "id": "USDT", "kind": "cash", "decimals": 2, "chain": "deposits"}).decode()]
    for b in banks:
        lines.append(j({"type": "participant", "id": b}).decode())
        lines.append(j({"type": "deposit", "participant": b, "asset": "UST5Y",
                        "amount": rng.randrange(1, 6) * 1_000_000}).decode())
        lines.append(j({"type": "deposit", "participant": b, "asset": "USD",
                        "amount": f"{rng.randrange(1, 30) * 100_000}.00"}).decode())
        lines.append(j({"type": "deposit", "participant": b, "asset": "USDT",
                        "amount": f"{rng.randrange(0, 20) * 100_000}.00"}).decode())
    timed: list[tuple[int, dict[str, Any]]] = []
    for n in range(trades):
        minute = rng.randrange(0, 420)
        seller, buyer = rng.sample(banks, 2)
        quantity = rng.randrange(1, 20) * 50_000
        price = rng.randrange(97, 102)
        kind = rng.random()
        if kind < 0.55:
            cash = "USD"
            line = {"type": "dvp", "at": _t(minute), "id": f"T{n}", "seller": seller, "buyer": buyer,
                    "security": "UST5Y", "quantity": quantity, "cash_asset": cash,
                    "amount": f"{quantity * price // 100}.00"}
        elif kind < 0.8:
            line = {"type": "dvp", "at": _t(minute), "id": f"X{n}", "seller": seller, "buyer": buyer,
                    "security": "UST5Y", "quantity": quantity, "cash_asset": "USDT",
                    "amount": f"{quantity * price // 100}.00", "timeout": "PT30M"}
        else:
            minute = min(minute, 300)
            line = {"type": "repo", "at": _t(minute), "id": f"R{n}", "borrower": seller, "lender": buyer,
                    "collateral": "UST5Y", "quantity": quantity, "cash_asset": "USD",
                    "principal": f"{quantity * 95 // 100}.00", "rate": "0.05",
                    "end": _t(minute + rng.randrange(30, 120))}
        timed.append((minute, line))
    for minute in sorted(rng.sample(range(30, 420), 3)):  # price shocks
        timed.append((minute, {"type": "price", "at": _t(minute), "asset": "UST5Y",
                               "price": f"{rng.randrange(94, 103)}.00"}))
    for minute in sorted(rng.sample(range(420), 4)):  # cash arrives: queued trades recycle
        a, b = rng.sample(banks, 2)
        timed.append((minute, {"type": "deliver", "at": _t(minute), "id": f"F{minute}", "from": a, "to": b,
                               "asset": "USD", "amount": "50000.00"}))
    timed.sort(key=lambda x: x[0])
    lines += [j(line).decode() for _, line in timed]
    lines.append(j({"type": "cutoff", "at": _t(480)}).decode())
    return mode, lines


@contextmanager
def _recording(chains: list[ChainSpec], steps: list[Step], ledgers: list[Ledger]):
    create, submit = Ledger.create, Ledger.submit

    def recording_create(path=":memory:", **kw):
        ledger = create(path, **kw)
        names = {type(p).__name__ for p in (kw.get("protocols") or [])}
        chains.append(ChainSpec(kw["chain_id"], kw["operator"], bytes(kw["operator_key"]),
                                kw["clock"]() if kw.get("clock") else 0, "main" if "DvP" in names else "side"))
        ledgers.append(ledger)
        return ledger

    def recording_submit(self, envelopes, at=None, **kw):
        when = max(self.clock() if at is None else at, self.state.now)  # the entry's time, as _commit takes it
        results = submit(self, envelopes, at, **kw)
        steps.append(Step(ledgers.index(self), when, list(envelopes), list(results)))
        return results

    Ledger.create = staticmethod(recording_create)  # type: ignore[method-assign]
    Ledger.submit = recording_submit  # type: ignore[method-assign]
    try:
        yield
    finally:
        Ledger.create = create  # type: ignore[method-assign]
        Ledger.submit = submit  # type: ignore[method-assign]


def record(seed: int, trades: int = 40, batch_commands: int = 6) -> Workload:
    """Replay the seeded day once in memory; return its batches and each chain's final state."""
    from ..replay import replay

    mode, lines = trade_lines(seed, trades)
    chains: list[ChainSpec] = []
    steps: list[Step] = []
    ledgers: list[Ledger] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "day.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        with _recording(chains, steps, ledgers):
            done = replay(path, pipeline=False, batch_commands=batch_commands)
        try:
            finals = [Final(ledger.digest(), ledger.balances(), ledger.head_seq) for ledger in ledgers]
            for i, ledger in enumerate(ledgers):
                problem = conservation(ledger.state)
                if problem:
                    raise AssertionError(f"clean run, chain {chains[i].chain}: {problem}")
        finally:
            done.close()
    return Workload(seed, mode, chains, steps, finals)


def conservation(state: State) -> str | None:
    """None if every asset's supply equals its balances plus its holds; else what differs."""
    held: dict[str, int] = {}
    for hold in state.holds.values():
        held[hold.asset] = held.get(hold.asset, 0) + hold.amount
    for asset in set(state.supply) | set(state.balances) | set(held):
        supply = state.supply.get(asset, 0)
        total = sum(state.balances.get(asset, {}).values()) + held.get(asset, 0)
        if supply != total:
            return f"asset {asset}: supply {supply} but balances plus holds {total}"
    return None
