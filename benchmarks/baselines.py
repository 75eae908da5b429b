"""Baselines for the throughput suite: what a pilot team writes first, the ledger people pick instead, latency.

Takes the engine suite's DvP pairs (`workloads.generate_pairs`: a security
Move seller->buyer linked to a cash Move buyer->seller); gives, measured in
the same run as the engine:

- `sqlite_dvp`: a straightforward SQLite DvP, balances as rows
  (`balances(participant, asset, amount CHECK >= 0)`), one transaction
  per trade: BEGIN IMMEDIATE, record the trade id, debit the seller's
  securities and the buyer's cash only if covered, credit the others,
  COMMIT (WAL, synchronous=FULL: the engine's durable setting).
- `tigerbeetle_dvp`: the same pairs as linked transfers (`flags.linked` on
  the security leg, so both commit or neither) against a TigerBeetle
  server at HOST:PORT, with the `tigerbeetle` client; accounts refuse to
  go negative (`debits_must_not_exceed_credits`). Skipped, with the reason,
  when the client is not installed or the server does not answer.
- `engine_latency`: the engine's submit latency per batch size, p50 and
  p99, durable, unsigned and signed per batch (envelopes built before).

Every function returns a dict of JSON values; a skipped baseline has
`skipped` with the reason.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from . import workloads as W

TIGERBEETLE_TIMEOUT_SECONDS = 10
TIGERBEETLE_BATCH_TRANSFERS = 8000  # under the server's 8189 events a request


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank rule."""
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _latencies(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(samples, 50) * 1e3, 3), "p99_ms": round(percentile(samples, 99) * 1e3, 3),
            "mean_ms": round(statistics.fmean(samples) * 1e3, 3), "samples": len(samples)}


# ------------------------------------------------------------------ SQLite


def sqlite_dvp(pop: W.Population, pairs: Sequence[W.Pair], directory: str | None = None) -> dict[str, Any]:
    """DvP pairs per second through one SQLite transaction per trade, balances as rows."""
    handle, path = tempfile.mkstemp(prefix="sqlite-dvp-", suffix=".db", dir=directory)
    os.close(handle)
    os.unlink(path)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE balances (participant TEXT NOT NULL, asset TEXT NOT NULL, "
                    "amount INTEGER NOT NULL CHECK (amount >= 0), PRIMARY KEY (participant, asset)) WITHOUT ROWID")
        con.execute("CREATE TABLE trades (id TEXT PRIMARY KEY, seller TEXT, buyer TEXT, security TEXT, "
                    "quantity INTEGER, cash_asset TEXT, amount INTEGER)")
        con.execute("BEGIN")
        con.executemany("INSERT INTO balances VALUES (?, ?, ?)",
                        [(p, a, W.FUNDING) for p in pop.participants for a in pop.assets])
        con.execute("COMMIT")
        debit = "UPDATE balances SET amount = amount - ? WHERE participant = ? AND asset = ? AND amount >= ?"
        credit = "UPDATE balances SET amount = amount + ? WHERE participant = ? AND asset = ?"
        record = "INSERT INTO trades VALUES (?, ?, ?, ?, ?, ?, ?)"
        failures = 0
        latencies = []
        execute = con.execute
        perf = time.perf_counter
        started = perf()
        for sec, cash in pairs:
            t0 = perf()
            execute("BEGIN IMMEDIATE")
            try:
                execute(record, (sec.id[:-1], sec.source, sec.target, sec.asset, sec.amount, cash.asset, cash.amount))
                ok = (execute(debit, (sec.amount, sec.source, sec.asset, sec.amount)).rowcount == 1
                      and execute(debit, (cash.amount, cash.source, cash.asset, cash.amount)).rowcount == 1)
                if ok:
                    execute(credit, (sec.amount, sec.target, sec.asset))
                    execute(credit, (cash.amount, cash.target, cash.asset))
                    execute("COMMIT")
                else:
                    execute("ROLLBACK")
                    failures += 1
            except sqlite3.Error:
                execute("ROLLBACK")
                failures += 1
            latencies.append(perf() - t0)
        seconds = perf() - started
        total = con.execute("SELECT asset, SUM(amount) FROM balances GROUP BY asset").fetchall()
    finally:
        con.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    expected = W.FUNDING * len(pop.participants)
    return {"pairs": len(pairs), "seconds": round(seconds, 3), "pairs_per_s": round(len(pairs) / seconds, 1),
            "failures": failures, "conserved": all(v == expected for _a, v in total),
            "latency_per_trade": _latencies(latencies),
            "method": "one transaction per trade (BEGIN IMMEDIATE ... COMMIT), balances as rows, WAL, "
                      "synchronous=FULL, covered debits by a conditional UPDATE"}


# -------------------------------------------------------------- TigerBeetle


def tigerbeetle_dvp(pop: W.Population, pairs: Sequence[W.Pair], address: str) -> dict[str, Any]:
    """DvP pairs per second as linked transfers against the TigerBeetle server at `address` (HOST:PORT)."""
    try:
        import tigerbeetle as tb
    except ImportError:
        return {"skipped": "the tigerbeetle client is not installed (pip install 'dvp-settlement[tigerbeetle]')"}
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return {"skipped": f"--peer tigerbeetle={address}: expected HOST:PORT"}
    import logging

    logger = logging.getLogger("tigerbeetle")  # the client logs every refused connection: keep the last one
    heard: list[str] = []
    sink = _LastMessage(heard)
    saved = (logger.handlers[:], logger.propagate)
    logger.handlers[:] = [sink]
    logger.propagate = False
    outcome: dict[str, Any] = {}
    progress: dict[str, bool] = {}
    client = tb.ClientSync(cluster_id=0, replica_addresses=f"{host}:{port}")

    def work() -> None:
        try:
            outcome.update(_tigerbeetle_run(tb, client, pop, pairs, progress))
        except Exception as exc:  # the client's own errors, reported as a skip with their text
            outcome["skipped"] = f"tigerbeetle at {address}: {type(exc).__name__}: {exc}"

    thread = threading.Thread(target=work, daemon=True, name="tigerbeetle-peer")
    try:
        thread.start()
        thread.join(TIGERBEETLE_TIMEOUT_SECONDS)
        if thread.is_alive() and "set_up" not in progress:  # no answer to the account set-up
            client.close()
            thread.join(5)
            last = f" (the client said: {heard[-1]})" if heard else ""
            return {"skipped": f"no answer from a TigerBeetle server at {address} within "
                               f"{TIGERBEETLE_TIMEOUT_SECONDS} s{last}"}
        thread.join()
        client.close()
    finally:
        logger.handlers[:], logger.propagate = saved
    return outcome


class _LastMessage:
    """A logging handler that keeps the messages (for the skip's reason) and prints nothing."""

    level = 0

    def __init__(self, into: list[str]):
        self.into = into

    def handle(self, record) -> None:
        self.into.append(record.getMessage())
        del self.into[:-1]


def _tigerbeetle_run(tb, client, pop: W.Population, pairs: Sequence[W.Pair], progress: dict) -> dict[str, Any]:
    ledgers = {asset: n + 1 for n, asset in enumerate(pop.assets)}
    account = {(p, a): tb.id() for p in pop.participants for a in pop.assets}  # fresh: the server may hold old runs
    issuers = {a: tb.id() for a in pop.assets}
    accounts = [tb.Account(id=i, ledger=ledgers[a], code=1, flags=tb.AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
                for (_p, a), i in account.items()]
    accounts += [tb.Account(id=i, ledger=ledgers[a], code=1) for a, i in issuers.items()]
    created = client.create_accounts(accounts)
    progress["set_up"] = True
    refused = [r for r in created if r.status != tb.CreateAccountStatus.CREATED]
    if refused:
        raise RuntimeError(f"{len(refused)} accounts refused, e.g. {refused[0].status.name}")
    funding = [tb.Transfer(id=tb.id(), debit_account_id=issuers[a], credit_account_id=i, amount=W.FUNDING,
                           ledger=ledgers[a], code=1) for (_p, a), i in account.items()]
    for start in range(0, len(funding), TIGERBEETLE_BATCH_TRANSFERS):
        client.create_transfers(funding[start:start + TIGERBEETLE_BATCH_TRANSFERS])
    transfers = []
    for sec, cash in pairs:
        transfers.append(tb.Transfer(id=tb.id(), debit_account_id=account[(sec.source, sec.asset)],
                                     credit_account_id=account[(sec.target, sec.asset)], amount=sec.amount,
                                     ledger=ledgers[sec.asset], code=1, flags=tb.TransferFlags.LINKED))
        transfers.append(tb.Transfer(id=tb.id(), debit_account_id=account[(cash.source, cash.asset)],
                                     credit_account_id=account[(cash.target, cash.asset)], amount=cash.amount,
                                     ledger=ledgers[cash.asset], code=1))
    failures = 0
    latencies = []
    started = time.perf_counter()
    for start in range(0, len(transfers), TIGERBEETLE_BATCH_TRANSFERS):
        t0 = time.perf_counter()
        results = client.create_transfers(transfers[start:start + TIGERBEETLE_BATCH_TRANSFERS])
        latencies.append(time.perf_counter() - t0)
        failures += sum(1 for r in results if r.status != tb.CreateTransferStatus.CREATED)
    seconds = time.perf_counter() - started
    return {"pairs": len(pairs), "seconds": round(seconds, 3), "pairs_per_s": round(len(pairs) / seconds, 1),
            "failed_transfers": failures, "batch_transfers": TIGERBEETLE_BATCH_TRANSFERS,
            "latency_per_request": _latencies(latencies),
            "method": "security leg flags.linked + cash leg, one request per 8,000 transfers (4,000 pairs); "
                      "accounts debits_must_not_exceed_credits"}


# ------------------------------------------------------------------ latency


def engine_latency(pop: W.Population, pairs: Sequence[W.Pair], sizes: Sequence[int], submits: dict[int, int],
                   directory: str | None = None) -> dict[str, Any]:
    """Submit latency (envelopes built beforehand) per batch size, durable: unsigned and signed per batch."""
    out: dict[str, Any] = {}
    for signed in (False, True):
        label = "signed_batch" if signed else "durable"
        rows = {}
        for size in sizes:
            count = submits[size]
            need = size * count
            sample = [pairs[i % len(pairs)] for i in range(need)] if need > len(pairs) else list(pairs[:need])
            handle, path = tempfile.mkstemp(prefix=f"latency-{label}-{size}-", suffix=".db", dir=directory)
            os.close(handle)
            os.unlink(path)
            ledger, signers = W.funded_ledger(pop, path, signed=signed, durability="full")
            try:
                batches = []
                for n, start in enumerate(range(0, need, size)):
                    chunk = [_renamed(pair, f"L{n}:") for pair in sample[start:start + size]]
                    batches.append(W.signed_per_batch(signers, chunk) if signed else
                                   W.unsigned_batch(pop.chain_id, chunk))
                samples = []
                failures = 0
                for envelopes in batches:
                    t0 = time.perf_counter()
                    results = ledger.submit(envelopes)
                    samples.append(time.perf_counter() - t0)
                    failures += len(results) - results.count(0)
            finally:
                ledger.close()
                for suffix in ("", "-wal", "-shm", ".lock"):
                    if os.path.exists(path + suffix):
                        os.remove(path + suffix)
            rows[str(size)] = {**_latencies(samples), "pairs_per_s": round(need / sum(samples), 1),
                               "failures": failures}
        out[label] = rows
    return out


def _renamed(pair: W.Pair, prefix: str) -> W.Pair:
    """The same pair under fresh command ids (a sample may repeat pairs)."""
    import msgspec

    sec, cash = pair
    return (msgspec.structs.replace(sec, id=prefix + sec.id), msgspec.structs.replace(cash, id=prefix + cash.id))
