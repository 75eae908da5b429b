"""Settlement benchmarks: replay throughput, netting, offsetting, gross against net.

Run `python -m benchmarks.settlement [SUITE...] [--scale X] [--out DIR]`
(or `dvp bench SUITE`). Suites:

- `replay`: generate a seeded trade file and replay it in gross mode with a
  durable journal (`dvp replay --db`), in a child process: trades per second
  end to end and the child's peak memory.
- `netting`: multilateral netting of one cycle of N trades, both from scratch
  (positions computed from the trade list) and as the ledger does it
  (closing a cycle whose obligations were accumulated as pair flows).
- `offsetting`: a queue of N gridlocked instructions that only offsetting
  can settle (rings of trades plus unfundable noise), and the time of the
  liquidity pass that clears it.
- `compare`: the same generated day replayed gross and net: throughput,
  liquidity needed, settlement delay and settlement rate, side by side.

Figures are measured in one run and written as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from engine import codes as C
from engine.identity import derive_key, unsigned
from engine.ledger import Ledger, ManualClock
from engine.records import Admit, Asset, Mint, RegisterAsset

from protocols import dvp, netting, prices
from protocols.replay import replay

from .tradegen import generate

T0 = 1_772_443_800


def _console():
    from rich.console import Console

    return Console()


def _ledger(participants: list[str], cash: int, bonds: int) -> Ledger:
    """An in-memory, trusted ledger (signatures off) with funded participants."""
    ledger = Ledger.create(chain_id="bench", operator="OP", operator_key=derive_key("bench/OP").verify_key.encode(),
                           signatures_required=False, clock=ManualClock(T0),
                           protocols=[dvp.DvP(), netting.Netting(), prices.Prices()], snapshot_every=0)
    key = derive_key("bench/key").verify_key.encode()
    setup = [Admit(id=f"a:{p}", participant=p, public_key=key) for p in participants]
    setup += [Admit(id="a:ISS", participant="ISS", roles=("issuer",), public_key=key),
              RegisterAsset(id="r:USD", asset=Asset(id="USD", kind="cash", decimals=2, issuer="ISS")),
              RegisterAsset(id="r:BOND", asset=Asset(id="BOND", kind="security", decimals=0, issuer="ISS"))]
    ledger.submit([unsigned("bench", setup)])
    mints = []
    for p in participants:
        if cash:
            mints.append(Mint(id=f"m:c:{p}", asset="USD", target=p, amount=cash))
        if bonds:
            mints.append(Mint(id=f"m:b:{p}", asset="BOND", target=p, amount=bonds))
    if mints:
        ledger.submit([unsigned("bench", mints)])
    return ledger


# ------------------------------------------------------------------ replay


def suite_replay(scale: float, out: str) -> dict[str, Any]:
    trades = int(1_000_000 * scale)
    workdir = tempfile.mkdtemp(prefix="dvp-bench-")
    path = os.path.join(workdir, "day.jsonl")
    started = time.perf_counter()
    generate(path, trades)
    generated = time.perf_counter() - started
    db = os.path.join(workdir, "day.db")
    report = os.path.join(workdir, "report.json")
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "engine.cli", "replay", path, "--db", db, "--report", report],
                             stdout=subprocess.DEVNULL)
    peak_kib = _watch_memory(child)
    seconds = time.perf_counter() - started
    if child.returncode:
        raise RuntimeError(f"dvp replay exited with {child.returncode}")
    with open(report, "rb") as handle:
        metrics = json.load(handle)["metrics"]
    return {
        "trades": trades,
        "file_bytes": os.path.getsize(path),
        "generate_seconds": round(generated, 2),
        "replay_seconds": round(seconds, 2),
        "trades_per_second": round(trades / seconds),
        "peak_memory_mib": round(peak_kib / 1024, 1),
        "settled": metrics["settled"],
        "failed": metrics["failed"],
        "target_trades_per_second": 50_000,
        "target_peak_memory_mib": 1024,
    }


def _tree_rss_kib(root: int) -> int:
    """Resident memory of a process and all its descendants, in KiB (Linux /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            parents[int(entry)] = int(fields[1])
            rss[int(entry)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except (OSError, IndexError, ValueError):
            continue
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(rss.get(pid, 0) for pid in tree)


def _watch_memory(child: subprocess.Popen, interval: float = 0.1) -> int:
    """Wait for `child`, sampling the whole process tree's memory; return the peak in KiB."""
    peak = 0
    while child.poll() is None:
        peak = max(peak, _tree_rss_kib(child.pid))
        time.sleep(interval)
    own = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest single process, exactly
    return max(peak, own)


# ----------------------------------------------------------------- netting


def net_positions(trades: list[tuple[str, str, str, int, str, int]]) -> dict[tuple[str, str], int]:
    """Multilateral net positions from scratch: (participant, asset) -> received - delivered."""
    pos: dict[tuple[str, str], int] = {}
    get = pos.get
    for seller, buyer, security, quantity, cash, amount in trades:
        k = (seller, security)
        pos[k] = get(k, 0) - quantity
        k = (buyer, security)
        pos[k] = get(k, 0) + quantity
        k = (buyer, cash)
        pos[k] = get(k, 0) - amount
        k = (seller, cash)
        pos[k] = get(k, 0) + amount
    return pos


def suite_netting(scale: float, out: str) -> dict[str, Any]:
    n = int(1_000_000 * scale)
    rng = random.Random(11)
    names = [f"P{i:03d}" for i in range(200)]
    trades = []
    for i in range(n):
        seller, buyer = rng.sample(names, 2)
        trades.append((seller, buyer, "BOND", rng.randint(1, 100), "USD", rng.randint(1, 10**8)))
    started = time.perf_counter()
    pos = net_positions(trades)
    scratch = time.perf_counter() - started
    assert sum(v for (p, a), v in pos.items() if a == "USD") == 0
    ledger = _ledger(names, 10**15, 10**9)
    batch = 65_536
    started = time.perf_counter()
    for start in range(0, n, batch):
        cmds = [netting.Obligate(id=f"o{i}", trade=f"o{i}", seller=s, buyer=b, security=sec, quantity=q,
                                 cash_asset=c, amount=a)
                for i, (s, b, sec, q, c, a) in enumerate(trades[start:start + batch], start)]
        ledger.submit([unsigned("bench", cmds)])
    accumulate = time.perf_counter() - started
    started = time.perf_counter()
    results = ledger.submit([unsigned("bench", [netting.CloseCycle(id="close")])])
    close = time.perf_counter() - started
    assert results == [C.OK]
    event = [e for e in ledger.last_events if e.kind == "cycle_closed"][0]
    return {
        "trades": n,
        "from_scratch_seconds": round(scratch, 3),
        "ledger_accumulate_seconds": round(accumulate, 2),
        "ledger_close_seconds": round(close, 3),
        "net_movements": int(event.data["net_movements"]),
        "gross_movements": int(event.data["gross_movements"]),
        "target_seconds": 2.0,
    }


# -------------------------------------------------------------- offsetting


def suite_offsetting(scale: float, out: str) -> dict[str, Any]:
    """Queue N instructions in rings (each ring nets to zero for everyone) plus
    10% noise trades whose buyers can never pay, then run one liquidity pass."""
    n = int(10_000 * scale)
    rng = random.Random(5)
    names = [f"R{i:03d}" for i in range(100)]
    ledger = _ledger(names, 0, 10**6)
    cmds = []
    count = 0
    ring = 0
    while count < n * 9 // 10:
        members = rng.sample(names, 10)
        amount = rng.randint(1, 10**7)
        for i, seller in enumerate(members):
            buyer = members[(i + 1) % len(members)]
            cmds.append(dvp.Settle(id=f"g{count}", trade=f"g{count}", seller=seller, buyer=buyer, security="BOND",
                                   quantity=1, cash_asset="USD", amount=amount))
            count += 1
        ring += 1
    while count < n:
        seller, buyer = rng.sample(names, 2)
        cmds.append(dvp.Settle(id=f"g{count}", trade=f"g{count}", seller=seller, buyer=buyer, security="BOND",
                               quantity=1, cash_asset="USD", amount=10**12))
        count += 1
    ledger.submit([unsigned("bench", cmds)])
    queued = len(ledger.protocol_state(dvp.NAME).queue)
    started = time.perf_counter()
    ledger.submit([], at=T0 + 1)  # the instant ends: the liquidity pass runs
    seconds = time.perf_counter() - started
    left = len(ledger.protocol_state(dvp.NAME).queue)
    assert all(v >= 0 for book in ledger.state.balances.values() for v in book.values())
    return {
        "queued": queued,
        "settled_by_offsetting": queued - left,
        "left_queued": left,
        "seconds": round(seconds, 3),
        "target_seconds": 1.0,
    }


# ----------------------------------------------------------------- compare


def suite_compare(scale: float, out: str) -> dict[str, Any]:
    trades = int(100_000 * scale)
    workdir = tempfile.mkdtemp(prefix="dvp-compare-")
    path = os.path.join(workdir, "day.jsonl")
    generate(path, trades, short_fraction=0.02, netting_cycle="PT1H")
    rows = {}
    for mode in ("gross", "net"):
        started = time.perf_counter()
        run = replay(path, mode=mode)
        seconds = time.perf_counter() - started
        metrics = run.summary()
        run.close()
        rows[mode] = {
            "trades_per_second": round(trades / seconds),
            "settlement_rate": metrics["settlement_rate"],
            "liquidity_used": metrics["liquidity_used"],
            "delay_seconds_mean": metrics["delay_seconds_mean"],
            "settled": metrics["settled"],
            "failed": metrics["failed"],
        }
        if mode == "net":
            rows[mode]["netting_ratio_value"] = metrics["netting_ratio_value"]
            rows[mode]["netting_ratio_movements"] = metrics["netting_ratio_movements"]
    return {"trades": trades, "gross": rows["gross"], "net": rows["net"]}


SUITES = {"replay": suite_replay, "netting": suite_netting, "offsetting": suite_offsetting, "compare": suite_compare}


def run(names: list[str], scale: float = 1.0, out: str = "bench-out") -> dict[str, Any]:
    os.makedirs(out, exist_ok=True)
    console = _console()
    results: dict[str, Any] = {}
    for name in names:
        with console.status(f"running {name} ..."):
            results[name] = SUITES[name](scale, out)
        console.print(f"[bold]{name}[/]: {json.dumps(results[name])}")
    with open(os.path.join(out, "settlement.json"), "w") as handle:
        json.dump(results, handle, indent=2)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="settlement benchmarks")
    parser.add_argument("suites", nargs="*", default=list(SUITES), choices=list(SUITES))
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args(argv)
    run(args.suites or list(SUITES), args.scale, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
