"""Time to reopen a large SQLite journal, with and without a snapshot.

Builds (once, or reuses) a journal of `--entries` entries, each one batch
holding one unsigned Move between two of 100 accounts, with a snapshot at
the last entry, then times `Ledger.open` twice in fresh processes' manner
(each open from a closed file): `use_snapshots=True` (check the chain, check
the snapshot against the journal, replay the entries after it) and
`use_snapshots=False` (replay every entry from genesis). Prints one line per
measure and writes DIR/reopen.json.

Run: `python -m benchmarks.reopen --entries 1000000 [--db PATH] [--out DIR]`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from engine.identity import derive_key, unsigned
from engine.ledger import Ledger
from engine.records import Admit, Asset, Mint, Move, RegisterAsset

CHAIN = "reopen-bench"
ACCOUNTS = 100
FLUSH = 20_000


class _Buffered:
    """Wrap a journal so appends are written in large transactions (building only, not measured)."""

    def __init__(self, inner):
        self.inner = inner
        self.rows: list = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def append(self, seq, digest, body, snapshot=None):
        self.rows.append((seq, digest, body, snapshot))
        if len(self.rows) >= FLUSH:
            self.flush()

    def flush(self):
        if self.rows:
            self.inner.append_many(self.rows)
            self.rows = []


def build(path: str, entries: int) -> None:
    key = derive_key("benchmarks/reopen/operator")
    ledger = Ledger.create(path, chain_id=CHAIN, operator="OP", operator_key=bytes(key.verify_key),
                           signatures_required=False, protocols=[], durability="off", snapshot_every=0)
    names = [f"P{i:03d}" for i in range(ACCOUNTS)]
    setup = [Admit(id=f"admit-{n}", participant=n, roles=("participant", "issuer"),
                   public_key=bytes(derive_key(f"benchmarks/reopen/{n}").verify_key)) for n in names]
    setup.append(RegisterAsset(id="usd", asset=Asset(id="USD", kind="cash", decimals=2, issuer=names[0])))
    setup += [Mint(id=f"mint-{n}", asset="USD", target=n, amount=10**12) for n in names]
    buffered = ledger.journal = _Buffered(ledger.journal)
    assert set(ledger.submit([unsigned(CHAIN, setup)])) == {0}, "the setup was refused"
    for i in range(entries - ledger.head_seq - 1):
        move = Move(id=f"m{i}", asset="USD", source=names[i % ACCOUNTS], target=names[(i * 7 + 1) % ACCOUNTS],
                    amount=1 + i % 1000)
        ledger.submit([unsigned(CHAIN, [move])])
    buffered.flush()
    assert ledger.state.balance(names[1], "USD") != 10**12, "the moves were refused"
    ledger.journal = buffered.inner
    ledger.snapshot()
    ledger.close()


def timed_open(path: str, use_snapshots: bool) -> tuple[float, int]:
    started = time.perf_counter()
    ledger = Ledger.open(path, protocols=[], use_snapshots=use_snapshots)
    elapsed = time.perf_counter() - started
    head = ledger.head_seq
    assert not ledger.recovery_notes, ledger.recovery_notes
    ledger.close()
    return elapsed, head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reopen", description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--db", default=None, help="the journal to build or reuse (default: DIR/reopen-N.db)")
    parser.add_argument("--out", default="bench-results")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = args.db or os.path.join(args.out, f"reopen-{args.entries}.db")
    if not os.path.exists(path):
        started = time.perf_counter()
        build(path, args.entries)
        print(f"built {path}: {args.entries:,} entries in {time.perf_counter() - started:.1f} s")
    with_snapshot, head = timed_open(path, True)
    print(f"reopen with a snapshot at the head:   {with_snapshot:.2f} s ({head + 1:,} entries)")
    without, _ = timed_open(path, False)
    print(f"reopen replaying from genesis:       {without:.2f} s")
    with open(os.path.join(args.out, "reopen.json"), "w") as f:
        json.dump({"entries": head + 1, "with_snapshot_s": round(with_snapshot, 3),
                   "from_genesis_s": round(without, 3), "file_bytes": os.path.getsize(path)}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
