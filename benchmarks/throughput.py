"""Throughput suite: the engine's modes and its baselines, measured in the same run.

Takes a scale (and optionally `--peer tigerbeetle=HOST:PORT`); gives the
suite's figures and targets:

- the engine suite (`benchmarks.engine`) in its four modes: in memory,
  durable, signed per command (pre-signed, verify pool of 1), signed per
  batch; with its bounds, the bare dict loop and PyNaCl's verify rate,
  and the stage table;
- a straightforward SQLite DvP, one transaction per trade, balances as
  rows (`baselines.sqlite_dvp`), on the same pairs;
- the same pairs as linked transfers against a TigerBeetle server, when
  one is named and the client is installed (`baselines.tigerbeetle_dvp`);
- the engine's submit latency, p50 and p99, per batch size.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from . import baselines as B
from . import engine as E
from . import workloads as W
from .results import Target

MODES = ("memory", "durable", "signed_command_pre", "signed_batch")
JUDGED_SCALE = 0.5  # below this (--scale small) a run is too short to judge the engine's ratios


def sizes(scale: float) -> dict[str, Any]:
    """Workload sizes at `scale` (1 = medium)."""
    latency_sizes = (1, 16, 256, 4096) if scale >= 0.5 else (1, 64, 1024)
    submits = {1: 300, 16: 200, 64: 100, 256: 100, 1024: 20, 4096: 20} if scale >= 0.5 else \
              {1: 40, 64: 20, 1024: 5}
    return {"pairs": max(2_000, int(E.PAIRS_DEFAULT * scale)),
            "signed_pairs": max(512, int(E.SIGNED_PAIRS_DEFAULT * scale)),
            "repeats": 1 if scale < 0.1 else 3,
            "sqlite_pairs": max(200, min(5_000, int(2_000 * scale))),
            "latency_sizes": latency_sizes, "latency_submits": {s: submits[s] for s in latency_sizes},
            "tigerbeetle_pairs": max(4_000, int(E.PAIRS_DEFAULT * scale))}


def run(scale: float, console, *, seed: int = W.SEED, peers: dict[str, str] | None = None,
        progress_columns=None) -> tuple[dict[str, Any], list[Target]]:
    """Run the engine suite, then the baselines; return (figures, targets)."""
    from rich.progress import Progress

    size = sizes(scale)
    started = time.perf_counter()
    engine = E.run(size["pairs"], out=None, signed_pairs=size["signed_pairs"], repeats=size["repeats"], seed=seed,
                   modes=list(MODES), console=console)
    pop = W.population(E.PARTICIPANTS_DEFAULT)
    pairs = W.generate_pairs(pop, max(size["sqlite_pairs"], size["tigerbeetle_pairs"]), seed=seed)
    figures: dict[str, Any] = {"engine": engine}
    with tempfile.TemporaryDirectory(prefix="dvp-throughput-") as tmpdir, \
            Progress(*(progress_columns or ()), console=console) as progress:
        task = progress.add_task("baselines: SQLite DvP, latency", total=3)
        figures["sqlite"] = B.sqlite_dvp(pop, pairs[: size["sqlite_pairs"]], tmpdir)
        progress.advance(task)
        figures["latency"] = B.engine_latency(pop, pairs, size["latency_sizes"], size["latency_submits"], tmpdir)
        progress.advance(task)
        address = (peers or {}).get("tigerbeetle")
        figures["tigerbeetle"] = (B.tigerbeetle_dvp(pop, pairs[: size["tigerbeetle_pairs"]], address) if address else
                                  {"skipped": "no --peer tigerbeetle=HOST:PORT given (no TigerBeetle server runs "
                                              "here: its client is on PyPI, its server is not)"})
        progress.advance(task)
    figures["sizes"] = {k: list(v) if isinstance(v, tuple) else v for k, v in size.items()}
    figures["elapsed_seconds"] = round(time.perf_counter() - started, 2)
    targets = _targets(figures, judged=scale >= JUDGED_SCALE)
    _print(figures, console)
    return figures, targets


def _targets(figures: dict[str, Any], judged: bool = True) -> list[Target]:
    engine = figures["engine"]
    names = {"memory": "in memory / dict bound", "durable": "durable / in memory",
             "signed_command_pre": "signed per command / verify bound", "signed_batch": "signed per batch / durable"}
    targets = [Target(names.get(t["mode"], t["mode"]), t["ratio"], f">= {t['target']}", t["pass"] if judged else None,
                      "" if judged else "a small run is too short to judge: use --scale medium")
               for t in engine["targets"]]
    durable = engine["modes"]["durable"]["pairs_per_s"]
    sqlite = figures["sqlite"]["pairs_per_s"]
    targets.append(Target("durable engine / SQLite DvP (one transaction a trade)", round(durable / sqlite, 1),
                          ">= 1", durable >= sqlite and figures["sqlite"]["conserved"]))
    peer = figures["tigerbeetle"]
    if "skipped" in peer:
        targets.append(Target("durable engine / TigerBeetle (linked transfers)", "-", "report", None,
                              peer["skipped"]))
    else:
        targets.append(Target("durable engine / TigerBeetle (linked transfers)", round(durable / peer["pairs_per_s"], 3),
                              "report", None if not peer["failed_transfers"] else False,
                              f"{peer['failed_transfers']} transfers failed" if peer["failed_transfers"] else ""))
    return targets


def _print(figures: dict[str, Any], console) -> None:
    from rich.table import Table

    engine = figures["engine"]
    durable = engine["modes"]["durable"]["pairs_per_s"]
    table = Table(title="throughput: DvP pairs per second, one run (ratios to the durable engine)")
    table.add_column("system")
    table.add_column("pairs/s", justify="right")
    table.add_column("durable engine / it", justify="right")
    rows = [("bound: bare dict loop", engine["bounds"]["dict_pairs_per_s"]),
            ("bound: PyNaCl verify, 2 signatures a pair", engine["bounds"]["verify_bound_pairs_per_s"])]
    rows += [(f"engine: {m['label']}", m["pairs_per_s"]) for m in engine["modes"].values()]
    rows.append(("SQLite DvP, one transaction a trade", figures["sqlite"]["pairs_per_s"]))
    peer = figures["tigerbeetle"]
    rows.append(("TigerBeetle, linked transfers", peer.get("pairs_per_s")))
    for name, rate in rows:
        table.add_row(name, f"{rate:,.0f}" if rate else "skipped",
                      f"{durable / rate:.3f}" if rate else peer.get("skipped", ""))
    console.print(table)
    latency = Table(title="submit latency per batch size (durable; envelopes built beforehand)")
    latency.add_column("pairs a batch", justify="right")
    for label in ("durable, unsigned", "signed per batch"):
        latency.add_column(f"{label} p50 / p99 ms", justify="right")
    lat = figures["latency"]
    for size in lat["durable"]:
        latency.add_row(size, *(f"{lat[k][size]['p50_ms']:.2f} / {lat[k][size]['p99_ms']:.2f}"
                                for k in ("durable", "signed_batch")))
    sq = figures["sqlite"]["latency_per_trade"]
    latency.add_row("SQLite, 1 trade", f"{sq['p50_ms']:.2f} / {sq['p99_ms']:.2f}", "")
    console.print(latency)
