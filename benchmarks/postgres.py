"""PostgreSQL suite: the same journal on a database server, against SQLite, in one run.

Three measures, each on both backends of the same machine:

  signed_batch  durable signed-per-batch DvP pairs per second: the engine
                suite's `signed_batch` mode (one envelope per batch cosigned
                by every distinct source, submit_many, verify_workers=1)
                on a PostgreSQL journal (synchronous_commit=on) and on a
                SQLite one (WAL, synchronous=FULL); rounds interleaved, best
                of `repeats`; the ratio PostgreSQL / SQLite (target >= 0.5)
  replay        durable replay of one generated trade file
                (`dvp replay FILE --db LOCATION`, in a child process):
                trades per second and the ratio
  open_verify   a journal of N entries, each one DvP pair signed by both
                parties, built once in memory and bulk-loaded into each
                backend (`append_many`: COPY on PostgreSQL, one transaction
                each); then the seconds to open it (`Ledger.open`: the
                whole hash chain, the newest snapshot, the tail) and to
                verify it (`verify_journal`: every entry replayed, every
                signature checked again)

The server: DVP_BENCH_POSTGRES=postgresql://USER@HOST:PORT/postgres (a user
who may create databases), else a temporary server on this machine
(`benchmarks.pgserver`, default durability: fsync and synchronous_commit on).

Run: `python -m benchmarks.postgres [--scale N] [--out DIR] [--skip MEASURE]`
or `dvp bench postgres [--scale N]`. At scale 1: 65,536 signed pairs, 100,000
replayed trades, a 100,000-entry journal; `--scale 10` gives the 1,000,000
figures. Results go to DIR/postgres.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from . import engine as E
from . import workloads as W

PAIRS = 65_536
BATCH = 8192
REPEATS = 3
TRADES = 100_000
ENTRIES = 100_000
TARGET_RATIO = 0.5


class Databases:
    """Hands out new databases on one server and drops them when done."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self.prefix = f"bench_{uuid.uuid4().hex[:6]}"
        self.n = 0

    def new(self, name: str) -> str:
        self.n += 1
        base = self.admin_url.rpartition("/")[0]
        return f"{base}/{self.prefix}_{self.n}_{name}"

    def drop(self, url: str) -> None:
        import psycopg

        name = url.rpartition("/")[2]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def settings(self) -> dict[str, str]:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            rows = conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                                (["server_version", "fsync", "synchronous_commit", "wal_sync_method",
                                  "shared_buffers", "full_page_writes", "wal_level"],)).fetchall()
        return dict(rows)


@contextlib.contextmanager
def server() -> Iterator[Databases]:
    url = os.environ.get("DVP_BENCH_POSTGRES")
    if url:
        yield Databases(url)
        return
    from .pgserver import TemporaryServer

    temporary = TemporaryServer.find()
    if temporary is None:
        raise RuntimeError("no PostgreSQL server: install Debian's postgresql package, or set "
                           "DVP_BENCH_POSTGRES=postgresql://USER@HOST:PORT/postgres")
    with temporary:
        yield Databases(temporary.url())


# ------------------------------------------------------------ signed_batch


def signed_batch(dbs: Databases, pairs: int, batch: int, repeats: int, tmpdir: str, console) -> dict[str, Any]:
    mode = E.MODE_BY_KEY["signed_batch"]
    pop = W.population(E.PARTICIPANTS_DEFAULT)
    workload = W.generate_pairs(pop, pairs, seed=W.SEED)
    warmup = W.generate_pairs(pop, min(E.WARMUP_PAIRS, batch), seed=W.SEED, prefix="w")
    batches = W.chunks(workload, batch)
    runs: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    failures = 0
    for n in range(repeats):
        for backend in ("sqlite", "postgres"):
            with console.status(f"signed_batch: round {n + 1}/{repeats} on {backend}"):
                location = dbs.new("signed") if backend == "postgres" else None
                try:
                    result = E.run_mode(mode, pop, batches, warmup, tmpdir, location=location)
                finally:
                    if location is not None:
                        dbs.drop(location)
            runs[backend].append(result.rate)
            failures += result.failures
    best = {k: max(v) for k, v in runs.items()}
    ratio = best["postgres"] / best["sqlite"]
    return {
        "pairs": pairs, "batch_pairs": batch, "repeats": repeats, "failures": failures,
        "signatures_per_batch": round(sum(W.distinct_sources(b) for b in batches) / len(batches), 1),
        "sqlite_pairs_per_s": round(best["sqlite"], 1), "postgres_pairs_per_s": round(best["postgres"], 1),
        "runs_pairs_per_s": {k: [round(r, 1) for r in v] for k, v in runs.items()},
        "ratio": round(ratio, 4), "target": TARGET_RATIO, "pass": ratio >= TARGET_RATIO and not failures,
    }


# ------------------------------------------------------------------ replay


def replay(dbs: Databases, trades: int, tmpdir: str, console) -> dict[str, Any]:
    from .tradegen import generate

    path = os.path.join(tmpdir, "day.jsonl")
    with console.status(f"replay: generating {trades:,} trades"):
        generate(path, trades)
    out: dict[str, Any] = {"trades": trades}
    for backend in ("sqlite", "postgres"):
        location = dbs.new("replay") if backend == "postgres" else os.path.join(tmpdir, "replay.db")
        report = os.path.join(tmpdir, f"replay-{backend}.json")
        with console.status(f"replay: {trades:,} trades onto {backend}"):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", path, "--db", location,
                                   "--report", report], capture_output=True, text=True)
            seconds = time.perf_counter() - started
        if done.returncode:
            out[backend] = {"error": (done.stderr.strip().splitlines() or ["exit " + str(done.returncode)])[-1]}
        else:
            with open(report, "rb") as handle:
                metrics = json.load(handle)["metrics"]
            out[backend] = {"seconds": round(seconds, 2), "trades_per_s": round(trades / seconds),
                            "settled": metrics.get("settled"), "failed": metrics.get("failed")}
        if backend == "postgres":
            dbs.drop(location)
    if all("trades_per_s" in out[b] for b in ("sqlite", "postgres")):
        out["ratio"] = round(out["postgres"]["trades_per_s"] / out["sqlite"]["trades_per_s"], 4)
    return out


# ------------------------------------------------------------- open_verify


def build_journal(entries: int, console) -> tuple[list, dict[int, bytes], int, float]:
    """Rows of a journal of `entries` signed DvP entries (after the two set-up entries), built in memory."""
    pop = W.population(E.PARTICIPANTS_DEFAULT)
    snapshot_every = max(256, entries // 16)
    ledger, signers = W.funded_ledger(pop, ":memory:", signed=True)
    ledger.snapshot_every = snapshot_every
    pairs = W.generate_pairs(pop, entries, seed=W.SEED, prefix="j")
    started = time.perf_counter()
    with console.status(f"open_verify: building {entries:,} signed entries in memory"):
        for pair in pairs:
            results = ledger.submit(W.signed_per_command(signers, [pair]))
            if any(results):
                raise RuntimeError(f"open_verify: a pair failed: {results}")
    built = time.perf_counter() - started
    journal = ledger.journal
    rows = list(journal.rows())
    snapshots = {seq: journal.snapshot(seq) for seq in journal.snapshots()}
    ledger.close()
    return rows, snapshots, snapshot_every, built


def open_verify(dbs: Databases, entries: int, tmpdir: str, console) -> dict[str, Any]:
    from engine.journal import open_journal
    from engine.ledger import Ledger
    from engine.verify import verify_journal

    rows, snapshots, snapshot_every, built = build_journal(entries, console)
    out: dict[str, Any] = {"entries": len(rows), "snapshot_every": snapshot_every, "snapshots": len(snapshots),
                           "journal_bytes": sum(len(body) for _, _, body in rows),
                           "build_in_memory_s": round(built, 2)}
    for backend in ("sqlite", "postgres"):
        location = dbs.new("journal") if backend == "postgres" else os.path.join(tmpdir, "journal.db")
        result: dict[str, Any] = {}
        with console.status(f"open_verify: bulk-loading {len(rows):,} entries into {backend}"):
            started = time.perf_counter()
            journal = open_journal(location, create=True)
            journal.append_many((seq, digest, body, snapshots.get(seq)) for seq, digest, body in rows)
            journal.close()
            result["bulk_load_s"] = round(time.perf_counter() - started, 2)
        with console.status(f"open_verify: opening {backend}"):
            started = time.perf_counter()
            with Ledger.open(location, protocols=[]) as ledger:
                result["open_s"] = round(time.perf_counter() - started, 2)
                head = ledger.head_hash.hex()
        with console.status(f"open_verify: verifying {backend}"):
            started = time.perf_counter()
            report = verify_journal(location, protocols=[])
            result["verify_s"] = round(time.perf_counter() - started, 2)
        assert report.head == head and report.entries == len(rows), "verify and open disagree"
        result["head"] = head
        out[backend] = result
        if backend == "postgres":
            dbs.drop(location)
        else:
            for suffix in ("", "-wal", "-shm", ".lock"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(location + suffix)
    out["same_head"] = out["sqlite"]["head"] == out["postgres"]["head"]
    for key in ("bulk_load_s", "open_s", "verify_s"):
        out[f"{key}_ratio"] = round(out["postgres"][key] / out["sqlite"][key], 4) if out["sqlite"][key] else None
    return out


# -------------------------------------------------------------------- suite

MEASURES = ("signed_batch", "replay", "open_verify")


def run(scale: float = 1.0, out: str | None = "bench-out", console=None, skip: Sequence[str] = (),
        repeats: int = REPEATS) -> dict[str, Any]:
    if console is None:
        from rich.console import Console

        console = Console()
    started = time.perf_counter()
    results: dict[str, Any] = {"suite": "postgres", "scale": scale}
    try:
        import psycopg  # noqa: F401
    except ImportError:
        console.print("postgres suite skipped: it needs psycopg (pip install 'dvp-settlement[postgres]')")
        return {"suite": "postgres", "skipped": "psycopg is not installed"}
    from .pgserver import find_bindir

    if not os.environ.get("DVP_BENCH_POSTGRES") and find_bindir() is None:
        console.print("postgres suite skipped: no PostgreSQL server (install Debian's postgresql package, or set "
                      "DVP_BENCH_POSTGRES=postgresql://USER@HOST:PORT/postgres)")
        return {"suite": "postgres", "skipped": "no PostgreSQL server"}
    with tempfile.TemporaryDirectory(prefix="dvp-bench-pg-") as tmpdir, server() as dbs:
        results["server"] = dbs.settings()
        if "signed_batch" not in skip:
            results["signed_batch"] = signed_batch(dbs, max(BATCH, int(PAIRS * scale)), BATCH, repeats, tmpdir,
                                                   console)
        if "replay" not in skip:
            results["replay"] = replay(dbs, max(1000, int(TRADES * scale)), tmpdir, console)
        if "open_verify" not in skip:
            results["open_verify"] = open_verify(dbs, max(1000, int(ENTRIES * scale)), tmpdir, console)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    _print(results, console)
    if out:
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, "postgres.json")
        with open(path, "w") as handle:
            json.dump(results, handle, indent=2)
            handle.write("\n")
        console.print(f"results written to {path}")
    return results


def _print(results: dict[str, Any], console) -> None:
    from rich.table import Table

    table = Table(title=f"postgres: the journal on PostgreSQL against SQLite (scale {results['scale']:g})")
    for column in ("measure", "SQLite", "PostgreSQL", "PostgreSQL / SQLite", "target"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    sb = results.get("signed_batch")
    if sb:
        verdict = "[green]PASS[/]" if sb["pass"] else "[red]FAIL[/]"
        table.add_row(f"signed/batch DvP pairs/s ({sb['pairs']:,} pairs)", f"{sb['sqlite_pairs_per_s']:,.0f}",
                      f"{sb['postgres_pairs_per_s']:,.0f}", f"{sb['ratio']:.3f}", f">={sb['target']} {verdict}")
    rp = results.get("replay")
    if rp:
        cells = [f"{rp[b]['trades_per_s']:,}" if "trades_per_s" in rp[b] else f"error: {rp[b]['error'][:40]}"
                 for b in ("sqlite", "postgres")]
        table.add_row(f"durable replay trades/s ({rp['trades']:,} trades)", *cells,
                      f"{rp['ratio']:.3f}" if "ratio" in rp else "", "report")
    ov = results.get("open_verify")
    if ov:
        for key, label in (("bulk_load_s", "bulk load (append_many), s"), ("open_s", "open, s"),
                           ("verify_s", "verify, s")):
            ratio = ov.get(f"{key}_ratio")
            table.add_row(f"{label} ({ov['entries']:,} entries)", f"{ov['sqlite'][key]:.2f}",
                          f"{ov['postgres'][key]:.2f}", f"{ratio:.3f}" if ratio else "", "report")
    console.print(table)
    server = results.get("server", {})
    console.print(f"[dim]PostgreSQL {server.get('server_version')} (fsync {server.get('fsync')}, "
                  f"synchronous_commit {server.get('synchronous_commit')}); SQLite WAL synchronous=FULL; "
                  f"same machine; elapsed {results['elapsed_s']} s[/]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres", description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the workload sizes (10: 1,000,000)")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="signed_batch rounds, best counts")
    parser.add_argument("--skip", action="append", default=[], choices=MEASURES, help="leave out a measure")
    parser.add_argument("--out", default="bench-out", help="results directory (default %(default)s)")
    args = parser.parse_args(argv)
    run(args.scale, args.out, skip=args.skip, repeats=args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
