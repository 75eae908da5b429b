"""Service suite: signed DvP pairs per second through `dvp serve`, against the in-process figure.

One run measures, on one machine:

reference   the engine suite's `signed_batch` mode, in process: durable
            ledger, one envelope per 8,192-pair batch cosigned by every
            distinct source (~100 signatures), `submit_many` (best of
            `repeats`)
peak        `dvp serve` in its own process (durable, `synchronous=FULL`,
            group commit), `clients` client threads in this process, each
            sending its own requests one at a time through
            `engine.client.Client.send` and waiting for the answer;
            a request is one envelope of `pairs_per_request` DvP pairs
            (linked security Move + cash Move) among the client's own
            `group` participants, cosigned once by each of them (at most
            `group` signatures per request, as the reference's batches
            carry about one signature per 80 pairs). Pairs per second =
            pairs acknowledged / wall time from the first send to the last
            answer.
same        the peak phase's very envelopes submitted in process, one
            batch per round of requests (one envelope per client), durable,
            signatures checked inline as the server does (information: the
            service's cost over the engine's on identical input)
half load   the same clients, each pacing its requests so that together
            they offer half the peak rate; latency of each submit (send to
            durable answer): p50, p99

Clients sign before the clock starts (signing is the clients' work, done
on their own machines); encoding the request, HTTP, and everything the
server does are inside the timed region. Each client owns its
participants, so its envelopes' sequence numbers never race another's.
Every answer must be all `ok`; afterwards the journal must hold exactly
the pairs acknowledged.

Run: `python -m benchmarks.service [--clients N] [--pairs-per-request N] [--out DIR]`
or `dvp bench service [--scale N]`. Results go to DIR/service.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from . import workloads as W

CLIENTS_DEFAULT = 50
GROUP_DEFAULT = 4  # participants per client
PAIRS_PER_REQUEST_DEFAULT = 1024
PEAK_REQUESTS_PER_CLIENT = 8
HALF_REQUESTS_PER_CLIENT = 6
REFERENCE_PAIRS = 100_000
REFERENCE_BATCH = 8192
REPEATS_DEFAULT = 3
STARTUP_SECONDS_MAX = 60


@dataclasses.dataclass
class ClientWork:
    """One client's pre-signed requests (peak phase, then half-load phase)."""

    k: int
    peak: list
    half: list
    latencies: list[float] = dataclasses.field(default_factory=list)
    pairs: int = 0
    failures: int = 0
    error: BaseException | None = None


def _client_population(pop: W.Population, k: int, group: int) -> W.Population:
    members = pop.participants[k * group:(k + 1) * group]
    return dataclasses.replace(pop, participants=members, weights=[1.0] * len(members))


def build_work(pop: W.Population, clients: int, group: int, pairs_per_request: int, peak: int, half: int,
               seed: int) -> list[ClientWork]:
    """Pre-sign every client's requests in order (fresh signers: the ledger has seen none of them sign)."""
    signers = pop.signers()
    work = []
    for k in range(clients):
        mine = _client_population(pop, k, group)
        pairs = W.generate_pairs(mine, pairs_per_request * (peak + half), seed=seed, prefix=f"k{k}-")
        batches = [W.signed_per_batch(signers, batch) for batch in W.chunks(pairs, pairs_per_request)]
        work.append(ClientWork(k, batches[:peak], batches[peak:]))
    return work


def start_server(db: str, *extra: str) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "engine.cli", "serve", "--db", db, "--listen", "127.0.0.1:0", *extra]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"dvp serve did not start: {line!r} {proc.stderr.read()}")
    return proc, line.split("listening on ")[1].split()[0]


def _drive(url: str, work: list[ClientWork], phase: str, interval: float | None) -> float:
    """Run every client's requests of `phase` in its own thread; return the wall time."""
    from engine.client import Client

    barrier = threading.Barrier(len(work) + 1)

    def client(w: ClientWork) -> None:
        c = Client(url, retry_seconds=120)
        try:
            barrier.wait()
            start = time.perf_counter()
            for n, envelopes in enumerate(getattr(w, phase)):
                if interval is not None:
                    pause = start + n * interval + (w.k / len(work)) * interval - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                t0 = time.perf_counter()
                done = c.send(envelopes)
                if interval is not None:
                    w.latencies.append(time.perf_counter() - t0)
                w.pairs += len(done.results) // 2
                w.failures += sum(1 for r in done.results if r)
        except BaseException as exc:  # noqa: BLE001 - reported below
            w.error = exc
        finally:
            c.close()

    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in work]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for w in work:
        if w.error is not None:
            raise RuntimeError(f"client {w.k}: {w.error!r}")
    return elapsed


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _metric(url: str, name: str) -> float:
    import httpx

    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def reference(scale: float, repeats: int, tmpdir: str) -> dict[str, Any]:
    from .engine import MODE_BY_KEY, WARMUP_PAIRS, run_mode

    pop = W.population(100)  # the engine suite's population
    pairs = W.generate_pairs(pop, max(REFERENCE_BATCH, int(REFERENCE_PAIRS * scale)))
    warmup = W.generate_pairs(pop, WARMUP_PAIRS, prefix="w")
    runs = [run_mode(MODE_BY_KEY["signed_batch"], pop, W.chunks(pairs, REFERENCE_BATCH), warmup, tmpdir)
            for _ in range(repeats)]
    return {"pairs": len(pairs), "batch_pairs": REFERENCE_BATCH, "runs_pairs_per_s": [round(r.rate, 1) for r in runs],
            "pairs_per_s": round(max(r.rate for r in runs), 1), "failures": sum(r.failures for r in runs)}


def same_envelopes(pop: W.Population, work: list[ClientWork], rounds: int, path: str) -> dict[str, Any]:
    """The peak phase's very envelopes submitted in process: one batch per round (one envelope per client)."""
    ledger, _signers = W.funded_ledger(pop, path, signed=True, protocols=())
    try:
        batches = [[w.peak[n][0] for w in work] for n in range(rounds)]
        pairs = sum(len(ledger.decode(env)) for batch in batches for env in batch) // 2
        started = time.perf_counter()
        failures = 0
        for batch in batches:
            results = ledger.submit(batch)
            failures += len(results) - results.count(0)
        elapsed = time.perf_counter() - started
    finally:
        ledger.close()
    return {"pairs": pairs, "batches": rounds, "pairs_per_s": round(pairs / elapsed, 1), "failures": failures}


def run(out: str | None = "bench-out", *, scale: float = 1.0, clients: int = CLIENTS_DEFAULT,
        group: int = GROUP_DEFAULT, pairs_per_request: int = PAIRS_PER_REQUEST_DEFAULT,
        repeats: int = REPEATS_DEFAULT, seed: int = W.SEED, verify_workers: int = 0, snapshot_every: int | None = None,
        console=None) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    from engine.ledger import Ledger

    console = console or Console()
    peak_n = max(2, round(PEAK_REQUESTS_PER_CLIENT * scale))
    half_n = max(2, round(HALF_REQUESTS_PER_CLIENT * scale))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dvp-bench-service-") as tmpdir:
        with console.status("in-process reference: signed per batch"):
            ref = reference(scale, repeats, tmpdir)
        pop = W.population(clients * group)
        db = os.path.join(tmpdir, "service.db")
        with console.status("funding the ledger and pre-signing the clients' requests"):
            ledger, _signers = W.funded_ledger(pop, db, signed=True, protocols=())
            ledger.close()
            work = build_work(pop, clients, group, pairs_per_request, peak_n, half_n, seed)
            gc.collect()
            gc.freeze()  # the pre-built requests are long-lived: keep the clients' collections short
        extra = ["--verify-workers", str(verify_workers)]
        if snapshot_every is not None:
            extra += ["--snapshot-every", str(snapshot_every)]
        with console.status("in-process reference: the same envelopes, one batch per round of requests"):
            same = same_envelopes(pop, work, peak_n, os.path.join(tmpdir, "same.db"))
        proc, url = start_server(db, *extra)
        try:
            with console.status(f"peak: {clients} clients, {peak_n} requests each"):
                peak_s = _drive(url, work, "peak", None)
            peak_pairs = sum(w.pairs for w in work)
            peak_rate = peak_pairs / peak_s
            entries_peak = _metric(url, "dvp_entries_total")
            commands_peak = _metric(url, "dvp_commands_total")
            interval = clients * pairs_per_request / (peak_rate / 2)
            for w in work:
                w.pairs = 0
            with console.status(f"half load: {peak_rate / 2:,.0f} pairs/s offered"):
                half_s = _drive(url, work, "half", interval)
            half_pairs = sum(w.pairs for w in work)
            latencies = [x for w in work for x in w.latencies]
            entries_half = _metric(url, "dvp_entries_total") - entries_peak
            failures = sum(w.failures for w in work)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        gc.unfreeze()
        check = Ledger.open(db)
        journal_pairs = sum(len(e.results) for e in check.entries(3)) // 2
        check.close()
    expected = peak_pairs + half_pairs
    results = {
        "suite": "service",
        "unit": "pairs/s (a pair = linked security Move + cash Move)",
        "method": "dvp serve in a subprocess (durable, group commit); client threads in the benchmark process "
                  "sending pre-signed requests one at a time; one run",
        "config": {"clients": clients, "participants_per_client": group, "pairs_per_request": pairs_per_request,
                   "peak_requests_per_client": peak_n, "half_requests_per_client": half_n, "scale": scale,
                   "verify_workers": verify_workers, "snapshot_every": snapshot_every, "seed": seed},
        "reference_signed_batch": ref,
        "peak": {"pairs": peak_pairs, "seconds": round(peak_s, 3), "pairs_per_s": round(peak_rate, 1),
                 "entries": entries_peak, "commands_per_entry": round(commands_peak / entries_peak, 1)
                 if entries_peak else 0},
        "ratio_to_reference": round(peak_rate / ref["pairs_per_s"], 4),
        "reference_same_envelopes": same,
        "ratio_to_same_envelopes": round(peak_rate / same["pairs_per_s"], 4),
        "half_load": {"offered_pairs_per_s": round(peak_rate / 2, 1), "pairs": half_pairs,
                      "achieved_pairs_per_s": round(half_pairs / half_s, 1),
                      "latency_ms_p50": round(1000 * _percentile(latencies, 0.50), 2),
                      "latency_ms_p90": round(1000 * _percentile(latencies, 0.90), 2),
                      "latency_ms_p99": round(1000 * _percentile(latencies, 0.99), 2),
                      "latency_ms_max": round(1000 * max(latencies, default=0.0), 2),
                      "entries": entries_half,
                      "submits": len(latencies)},
        "failures": failures,
        "journal_pairs": journal_pairs,
        "journal_matches": journal_pairs == expected,
        "targets": [{"measure": "pairs/s through the service", "value": round(peak_rate), "target": 20_000,
                     "pass": peak_rate >= 20_000},
                    {"measure": "ratio to in-process signed per batch", "value": round(peak_rate / ref["pairs_per_s"], 3),
                     "target": 0.3, "pass": peak_rate / ref["pairs_per_s"] >= 0.3}],
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    table = Table(title="service: signed DvP pairs through dvp serve")
    for col in ("measure", "figure", "target", "result"):
        table.add_column(col)
    table.add_row("in process, signed per batch (best of %d)" % repeats, f"{ref['pairs_per_s']:,.0f} pairs/s", "", "")
    table.add_row("in process, the service's envelopes, one batch a round", f"{same['pairs_per_s']:,.0f} pairs/s",
                  "", "info")
    for t, shown in zip(results["targets"], (f"{peak_rate:,.0f} pairs/s", f"{peak_rate / ref['pairs_per_s']:.3f}")):
        table.add_row(t["measure"], shown, f">= {t['target']:,}", "[green]PASS[/]" if t["pass"] else "[red]FAIL[/]")
    h = results["half_load"]
    table.add_row("latency per submit at half load (p50 / p99 / max)",
                  f"{h['latency_ms_p50']:.1f} / {h['latency_ms_p99']:.1f} / {h['latency_ms_max']:.1f} ms", "report", "")
    table.add_row("ratio to the same envelopes in process", f"{results['ratio_to_same_envelopes']:.3f}", "", "info")
    table.add_row("commands per journal entry (peak)", f"{results['peak']['commands_per_entry']:,.0f}", "", "")
    console.print(table)
    console.print(f"[dim]{clients} clients x {pairs_per_request} pairs a request, {group} participants (signers) per "
                  f"client; failures {failures}; journal holds {journal_pairs:,} pairs "
                  f"({'= acknowledged' if journal_pairs == expected else f'!= acknowledged {expected:,}'}).[/]")
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "service.json"), "w") as handle:
            json.dump(results, handle, indent=2)
            handle.write("\n")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.service", description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=CLIENTS_DEFAULT)
    parser.add_argument("--group", type=int, default=GROUP_DEFAULT, help="participants per client")
    parser.add_argument("--pairs-per-request", type=int, default=PAIRS_PER_REQUEST_DEFAULT)
    parser.add_argument("--repeats", type=int, default=REPEATS_DEFAULT, help="reference runs, best counts")
    parser.add_argument("--verify-workers", type=int, default=0)
    parser.add_argument("--snapshot-every", type=int, default=None, help="passed to dvp serve (default: its own)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", default="bench-out")
    args = parser.parse_args(argv)
    run(args.out, scale=args.scale, clients=args.clients, group=args.group, pairs_per_request=args.pairs_per_request,
        repeats=args.repeats, verify_workers=args.verify_workers, snapshot_every=args.snapshot_every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
