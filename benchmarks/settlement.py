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
from engine.records import Admit, Asset, Mint, Move, RegisterAsset

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


def _replay_child(path: str, db: str, report: str) -> tuple[float, int]:
    """Run `dvp replay FILE --db DB --report R` in a child process: (seconds, peak memory of its tree in KiB)."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "engine.cli", "replay", path, "--db", db, "--report", report,
                              "--no-progress"], stdout=subprocess.DEVNULL)
    peak_kib = _watch_memory(child)
    seconds = time.perf_counter() - started
    if child.returncode not in (0, 3):
        raise RuntimeError(f"dvp replay exited with {child.returncode}")
    return seconds, peak_kib


def replay_floor(path: str) -> float:
    """The least any replay of the file must do: msgspec's decode of every line into its typed
    event, and a dict loop applying each DvP's four balance changes. Seconds."""
    from protocols.replay.read import _json_decoder
    from protocols.tradefile import DvpEvent

    started = time.perf_counter()
    balances: dict[str, dict[str, int]] = {}
    decode = _json_decoder.decode
    with open(path, "rb") as handle:
        for raw in handle:
            ev = decode(raw)
            if type(ev) is DvpEvent:
                security = balances.get(ev.security)
                if security is None:
                    security = balances[ev.security] = {}
                cash = balances.get(ev.cash_asset)
                if cash is None:
                    cash = balances[ev.cash_asset] = {}
                quantity = ev.quantity
                amount = int(ev.amount.replace(".", ""))  # cents: the generator writes two decimals
                security[ev.seller] = security.get(ev.seller, 0) - quantity
                security[ev.buyer] = security.get(ev.buyer, 0) + quantity
                cash[ev.buyer] = cash.get(ev.buyer, 0) - amount
                cash[ev.seller] = cash.get(ev.seller, 0) + amount
    return time.perf_counter() - started


def suite_replay_hard(scale: float, out: str) -> dict[str, Any]:
    """A hard gross day (the dealers, a tenth of the participants, run short: long queues), replayed
    durably at n and 10 n trades: the time ratio (linear: at most 12), throughput against the floor
    measured in the same run, peak memory, and `dvp verify` of the larger journal."""
    large = int(1_000_000 * scale)
    small = max(1_000, large // 10)
    workdir = tempfile.mkdtemp(prefix="dvp-bench-hard-")
    figures: dict[str, Any] = {"trades_small": small, "trades_large": large}
    for label, n in (("small", small), ("large", large)):
        path = os.path.join(workdir, f"hard-{n}.jsonl")
        generate(path, n, hard=True)
        db = os.path.join(workdir, f"hard-{n}.db")
        report = os.path.join(workdir, f"hard-{n}.json")
        seconds, peak = _replay_child(path, db, report)
        with open(report, "rb") as handle:
            metrics = json.load(handle)["metrics"]
        figures[f"{label}_seconds"] = round(seconds, 2)
        figures[f"{label}_trades_per_second"] = round(n / seconds)
        figures[f"{label}_peak_memory_mib"] = round(peak / 1024, 1)
        figures[f"{label}_settled"] = metrics["settled"]
        figures[f"{label}_failed"] = metrics["failed"]
        figures[f"{label}_delay_seconds_mean"] = metrics["delay_seconds_mean"]
        if label == "large":
            floor = min(replay_floor(path) for _ in range(3))
            figures["floor_seconds"] = round(floor, 2)
            figures["floor_trades_per_second"] = round(n / floor)
            figures["ratio_to_floor"] = round(floor / seconds, 3)
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "engine.cli", "verify", db], capture_output=True,
                                  text=True)
            figures["verify_seconds"] = round(time.perf_counter() - started, 2)
            figures["verify_ok"] = done.returncode == 0
    figures["time_ratio_large_to_small"] = round(figures["large_seconds"] / figures["small_seconds"], 2)
    figures.update(target_time_ratio_max=12, target_ratio_to_floor=0.30, target_peak_memory_mib=1024,
                   target_verify_seconds=60)
    return figures


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


# -------------------------------------------------------------------- repo


def _repo_ledger(borrowers: int, cash_each: int) -> Ledger:
    from protocols import collateral, repo

    ledger = Ledger.create(chain_id="bench", operator="OP", operator_key=derive_key("bench/OP").verify_key.encode(),
                           signatures_required=False, clock=ManualClock(T0), snapshot_every=0,
                           protocols=[collateral.Collateral(), dvp.DvP(), prices.Prices(), repo.Repos()])
    key = derive_key("bench/key").verify_key.encode()
    names = [f"B{i:03d}" for i in range(borrowers)]
    setup = [Admit(id=f"a:{p}", participant=p, public_key=key) for p in names + ["LENDER"]]
    setup += [Admit(id="a:ISS", participant="ISS", roles=("issuer",), public_key=key),
              Admit(id="a:ORC", participant="ORC", roles=("oracle",), public_key=key),
              RegisterAsset(id="r:USD", asset=Asset(id="USD", kind="cash", decimals=2, issuer="ISS")),
              RegisterAsset(id="r:NOTE", asset=Asset(id="NOTE", kind="security", decimals=0, issuer="ISS",
                                                     asset_class="ust_note", maturity="2030-02-15"))]
    ledger.submit([unsigned("bench", setup)])
    mints = [Mint(id="m:L", asset="USD", target="LENDER", amount=10**17)]
    mints += [Mint(id=f"m:n:{p}", asset="NOTE", target=p, amount=10**12) for p in names]
    mints += [Mint(id=f"m:c:{p}", asset="USD", target=p, amount=cash_each) for p in names if cash_each]
    ledger.submit([unsigned("bench", mints + [prices.SetPrice(id="p0", asset="NOTE", price="99.00")])])
    return ledger


def _open_repos(ledger: Ledger, n: int, borrowers: int) -> float:
    from protocols import repo

    started = time.perf_counter()
    for start in range(0, n, 16_384):
        cmds = [repo.OpenRepo(id=f"o{i}", repo=f"R{i:06d}", borrower=f"B{i % borrowers:03d}", lender="LENDER",
                              collateral="NOTE", quantity=1_000_000, cash_asset="USD", principal=97_000_000,
                              rate="0.0531", end=T0 + 8 * 3600)
                for i in range(start, min(n, start + 16_384))]
        results = ledger.submit([unsigned("bench", cmds)])
        assert not any(results), set(results)
    return time.perf_counter() - started


def suite_revaluation(scale: float, out: str) -> dict[str, Any]:
    """One price tick revalues N open repos (no call results: the price rises a little)."""
    n = int(100_000 * scale)
    ledger = _repo_ledger(100, 0)
    opening = _open_repos(ledger, n, 100)
    started = time.perf_counter()
    ledger.submit([unsigned("bench", [prices.SetPrice(id="tick", asset="NOTE", price="99.01")])], at=T0 + 60)
    seconds = time.perf_counter() - started
    return {"open_repos": n, "open_seconds": round(opening, 2), "repos_opened_per_second": round(n / opening),
            "revaluation_seconds": round(seconds, 3), "target_seconds": 1.0,
            "events": len(ledger.last_events)}


def suite_margin_storm(scale: float, out: str) -> dict[str, Any]:
    """A 3-point price shock on N repos: calls met from cash where the borrower has it, the rest default."""
    n = int(10_000 * scale)
    borrowers = 100
    ledger = _repo_ledger(borrowers, 0)
    _open_repos(ledger, n, borrowers)
    # the borrowers have spent the principal they borrowed: the calls find no cash at first
    spend = [Move(id=f"spend{b}", asset="USD", source=f"B{b:03d}", target="LENDER",
                  amount=ledger.balance(f"B{b:03d}", "USD")) for b in range(borrowers)]
    ledger.submit([unsigned("bench", spend)])
    # then half the borrowers get enough cash for their calls (cash arrives after the calls)
    started = time.perf_counter()
    ledger.submit([unsigned("bench", [prices.SetPrice(id="shock", asset="NOTE", price="96.00")])], at=T0 + 60)
    tick = time.perf_counter() - started
    calls = sum(1 for e in ledger.last_events if e.kind == "margin_call")
    per_repo = max((int(e.data["amount"]) for e in ledger.last_events if e.kind == "margin_call"), default=0)
    repos_each = n // borrowers
    mints = [Mint(id=f"cash{b}", asset="USD", target=f"B{b:03d}", amount=per_repo * repos_each)
             for b in range(0, borrowers, 2)]
    started = time.perf_counter()
    ledger.submit([unsigned("bench", mints)], at=T0 + 120)
    met = sum(1 for e in ledger.last_events if e.kind == "margin_met")
    drawn = sum(int(e.data["amount"]) for e in ledger.last_events if e.kind == "margin_met")
    paying = time.perf_counter() - started
    started = time.perf_counter()
    ledger.submit([], at=T0 + 60 + 1800)
    defaults = sum(1 for e in ledger.last_events if e.kind == "repo_defaulted")
    deadline = time.perf_counter() - started
    assert all(v >= 0 for book in ledger.state.balances.values() for v in book.values())
    return {"repos": n, "calls": calls, "met_when_cash_arrived": met, "defaults_at_deadline": defaults,
            "tick_seconds": round(tick, 3), "payments_seconds": round(paying, 3),
            "deadline_seconds": round(deadline, 3), "call_amount_each_usd": f"{per_repo / 100:.2f}",
            "end_to_end_seconds": round(tick + paying + deadline, 3),
            "liquidity_drawn_usd": f"{drawn // 100}.{drawn % 100:02d}"}


def _repo_file(path: str, repos: int, seed: int = 3) -> None:
    import msgspec

    rng = random.Random(seed)
    enc = msgspec.json.encode
    names = [f"D{i:02d}" for i in range(40)]
    lines = [enc({"type": "config", "grace": "PT30M", "cutoff": "2026-03-02T18:00:00Z"}),
             enc({"type": "asset", "id": "USD", "kind": "cash", "decimals": 2})]
    for k in range(5):
        lines.append(enc({"type": "asset", "id": f"N{k}", "kind": "security", "decimals": 0, "class": "ust_note",
                          "maturity": f"203{k}-02-15", "price": "99.00"}))
    for p in names + ["MMF"]:
        lines.append(enc({"type": "participant", "id": p}))
    lines.append(enc({"type": "deposit", "participant": "MMF", "asset": "USD", "amount": "100000000000.00"}))
    for p in names:
        lines.append(enc({"type": "deposit", "participant": p, "asset": "USD", "amount": "50000000.00"}))
        for k in range(5):
            lines.append(enc({"type": "deposit", "participant": p, "asset": f"N{k}", "amount": 10**10}))
    events = []
    for i in range(repos):
        start = 8 * 3600 + rng.randint(0, 8 * 3600)
        end = start + rng.randint(600, 2 * 3600)
        events.append((start, enc({
            "type": "repo", "at": _stamp(start), "id": f"R{i}", "borrower": rng.choice(names), "lender": "MMF",
            "collateral": f"N{rng.randint(0, 4)}", "quantity": 1_000_000, "cash_asset": "USD",
            "principal": "950000.00", "rate": "0.0531", "end": _stamp(min(end, 17 * 3600))})))
    for tick in range(8 * 3600, 17 * 3600, 900):
        events.append((tick, enc({"type": "price", "at": _stamp(tick), "asset": f"N{rng.randint(0, 4)}",
                                  "price": f"{rng.choice([97, 98, 99, 100])}.{rng.randint(0, 99):02d}"})))
    events.sort(key=lambda e: e[0])
    lines += [e[1] for e in events]
    with open(path, "wb") as handle:
        handle.write(b"\n".join(lines) + b"\n")


def _stamp(seconds: int) -> str:
    return f"2026-03-02T{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}Z"


def suite_repo_replay(scale: float, out: str) -> dict[str, Any]:
    repos = int(20_000 * scale)
    path = os.path.join(tempfile.mkdtemp(prefix="dvp-repo-"), "repos.jsonl")
    _repo_file(path, repos)
    started = time.perf_counter()
    run = replay(path, db=path + ".db")
    seconds = time.perf_counter() - started
    metrics = run.summary()
    run.close()
    return {"repos": repos, "seconds": round(seconds, 2), "repos_per_second": round(repos / seconds),
            "statuses": metrics.get("repos"), "margin_calls": metrics.get("margin_calls")}


# ------------------------------------------------------------------- swaps


def _htlc_ledger(path: str, chain: str, asset: str, holders: list[str], amount: int):
    from engine.identity import Signer
    from protocols import htlc

    signers = {p: Signer(p, derive_key(f"bench/{chain}/{p}"), chain) for p in holders + ["OP", "ISS"]}
    ledger = Ledger.create(path, chain_id=chain, operator="OP", operator_key=signers["OP"].public_key,
                           clock=ManualClock(T0), protocols=[htlc.HTLC()], snapshot_every=0)
    setup = [Admit(id=f"a:{p}", participant=p, public_key=signers[p].public_key) for p in holders]
    setup += [Admit(id="a:ISS", participant="ISS", roles=("issuer",), public_key=signers["ISS"].public_key),
              RegisterAsset(id="r", asset=Asset(id=asset, kind="cash" if asset == "USD" else "security",
                                                decimals=0, issuer="ISS"))]
    ledger.submit([signers["OP"].envelope(setup)])
    ledger.submit([signers["ISS"].envelope([Mint(id=f"m:{p}", asset=asset, target=p, amount=amount)
                                            for p in holders])])
    return ledger, signers


def _signed_by_all(signers, commands, parties):
    from engine.identity import encode_commands, payload_digest
    from engine.records import Envelope

    payload = encode_commands(commands)
    digest = payload_digest(payload)
    return Envelope(signers[parties[0]].chain_id, payload,
                    tuple(signers[p].signature_of_digest(digest) for p in sorted(set(parties))))


def suite_swaps(scale: float, out: str) -> dict[str, Any]:
    """Cross-ledger DvP swaps between two durable in-process ledgers, end to end, in batches:
    all first locks, all second locks (each checked against the first), all reveals, all follows."""
    import hashlib

    from protocols import htlc

    n = int(20_000 * scale)
    batch = 4_096
    workdir = tempfile.mkdtemp(prefix="dvp-swaps-")
    buyers = [f"BUY{i:02d}" for i in range(50)]
    sellers = [f"SEL{i:02d}" for i in range(50)]
    cash, cash_signers = _htlc_ledger(os.path.join(workdir, "cash.db"), "cash-chain", "USD", buyers + sellers, 10**12)
    bonds, bond_signers = _htlc_ledger(os.path.join(workdir, "bonds.db"), "bond-chain", "BOND", buyers + sellers,
                                       10**9)
    timeout = 3600
    started = time.perf_counter()
    for start in range(0, n, batch):
        ids = range(start, min(n, start + batch))
        deals = [(f"X{i}", buyers[i % 50], sellers[(i * 7) % 50], hashlib.sha256(b"s%d" % i).digest()) for i in ids]
        locks = [htlc.Lock(id=f"1:{t}", lock=t, sender=b, receiver=s, asset="USD", amount=1_000,
                           hashlock=hashlib.sha256(secret).digest(), expires_at=T0 + 2 * timeout)
                 for t, b, s, secret in deals]
        assert not any(cash.submit([_signed_by_all(cash_signers, locks, [b for _, b, _, _ in deals])]))
        book = cash.protocol_state(htlc.NAME).locks
        answers = []
        for t, b, s, _secret in deals:
            first = book[t]
            assert (first.receiver, first.amount, first.status) == (s, 1_000, "open")  # the follower's check
            answers.append(htlc.Lock(id=f"2:{t}", lock=t, sender=s, receiver=b, asset="BOND", amount=1,
                                     hashlock=first.hashlock, expires_at=T0 + timeout,
                                     counterpart_expires_at=first.expires_at, safety_margin=timeout))
        assert not any(bonds.submit([_signed_by_all(bond_signers, answers, [s for _, _, s, _ in deals])]))
        reveals = [htlc.Claim(id=f"3:{t}", lock=t, preimage=secret) for t, _b, _s, secret in deals]
        assert not any(bonds.submit([_signed_by_all(bond_signers, reveals, [b for _, b, _, _ in deals])]))
        revealed = bonds.protocol_state(htlc.NAME).locks
        follows = [htlc.Claim(id=f"4:{t}", lock=t, preimage=revealed[t].preimage) for t, _b, _s, _x in deals]
        assert not any(cash.submit([_signed_by_all(cash_signers, follows, [s for _, _, s, _ in deals])]))
    seconds = time.perf_counter() - started
    # The expiry sweep: N more locks nobody claims, refunded when time passes their expiry.
    sweep_n = int(10_000 * scale)
    for start in range(0, sweep_n, batch):
        ids = range(start, min(sweep_n, start + batch))
        locks = [htlc.Lock(id=f"e:{i}", lock=f"E{i}", sender=buyers[i % 50], receiver=sellers[i % 50],
                           asset="USD", amount=1, hashlock=bytes(32), expires_at=T0 + 60) for i in ids]
        cash.submit([_signed_by_all(cash_signers, locks, [buyers[i % 50] for i in ids])])
    started = time.perf_counter()
    cash.submit([], at=T0 + 60)
    sweep = time.perf_counter() - started
    refunded = sum(1 for e in cash.last_events if e.kind == "refunded")
    cash.close()
    bonds.close()
    return {"swaps": n, "seconds": round(seconds, 2), "swaps_per_second": round(n / seconds),
            "target_swaps_per_second": 5_000, "expired_locks_refunded": refunded,
            "sweep_seconds": round(sweep, 3)}


SUITES = {"replay": suite_replay, "replay_hard": suite_replay_hard, "netting": suite_netting, "offsetting": suite_offsetting, "compare": suite_compare,
          "revaluation": suite_revaluation, "margin_storm": suite_margin_storm, "repo_replay": suite_repo_replay,
          "swaps": suite_swaps}


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
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"of: {', '.join(SUITES)} (default: all)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args(argv)
    unknown = [name for name in args.suites if name not in SUITES]
    if unknown:
        parser.error(f"unknown suite {', '.join(unknown)} (choose from {', '.join(SUITES)})")
    run(args.suites or list(SUITES), args.scale, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
