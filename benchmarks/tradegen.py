"""Seeded trade-file generator: realistic-looking settlement days for benchmarks.

Participants have skewed activity (Zipf weights), flows lean in one
direction (dealers sell to clients more than they buy), sizes are lognormal
and rounded to lots, and trade times follow an intraday profile (busy
morning and afternoon, quiet lunch) between 08:00 and 17:00 UTC, in order.
Every participant is funded so most trades settle on arrival; a few are
short, so the queue, recycling and the cut-off have work to do.
"""

from __future__ import annotations

import argparse
import datetime
import math
import random

import msgspec

DAY = datetime.datetime(2026, 3, 2, tzinfo=datetime.timezone.utc)
OPEN_SECONDS = 8 * 3600
CLOSE_SECONDS = 17 * 3600
LOT = 1000
HARD_SHORT_FRACTION = 0.1  # a hard day: a tenth of the participants run short during the day
HARD_FUNDING_PERCENT = 2  # ... funded with this share of what they deliver over the day


def _time(seconds: int) -> str:
    return (DAY + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _intraday(rng: random.Random) -> int:
    """Draw a time of day: two humps (morning, afternoon) over the session."""
    while True:
        hump = 10.0 if rng.random() < 0.55 else 14.5
        hours = rng.gauss(hump, 1.4)
        seconds = int(hours * 3600)
        if OPEN_SECONDS <= seconds < CLOSE_SECONDS:
            return seconds


def generate(path: str, trades: int, participants: int = 200, securities: int = 20, seed: int = 7,
             short_fraction: float = 0.01, mode: str | None = None, netting_cycle: str | None = None,
             hard: bool = False) -> None:
    """Write a JSON Lines trade file with `trades` DvPs.

    `hard=True` makes a hard day: the dealers, the busiest tenth of the
    participants, are funded with only a share (`HARD_FUNDING_PERCENT`) of
    what they deliver over the day, in each asset, so they run short during
    the day and many trades queue, on long queues per dealer and security,
    and recycle as the dealers receive. Their funding follows the day's own
    flows, so the share of trades that queue is the same at every size
    (100,000 trades or 1,000,000).
    """
    rng = random.Random(seed)
    enc = msgspec.json.encode
    names = [f"P{i:04d}" for i in range(participants)]
    weights = [1.0 / (i + 1) ** 0.8 for i in range(participants)]
    dealers = set(names[: max(1, participants // 10)])
    secs = [f"UST{i:02d}" for i in range(securities)]
    times = sorted(_intraday(rng) for _ in range(trades))
    lines = []
    config = {"type": "config", "cutoff": _time(CLOSE_SECONDS)}
    if mode:
        config["mode"] = mode
    if netting_cycle:
        config["netting_cycle"] = netting_cycle
    lines.append(enc(config))
    lines.append(enc({"type": "asset", "id": "USD", "kind": "cash", "decimals": 2}))
    for s in secs:
        lines.append(enc({"type": "asset", "id": s, "kind": "security", "decimals": 0, "class": "ust_note",
                          "price": "99.50"}))
    for name in names:
        lines.append(enc({"type": "participant", "id": name}))
    quiet = names[participants // 2:]  # the short ones come from the less active half
    short = set(rng.sample(quiet, max(1, int(participants * short_fraction))))
    if hard:  # the dealers, the busiest tenth, run short: most trades touch one of them
        short = set(names[: max(1, int(participants * HARD_SHORT_FRACTION))])
    rows = []
    delivered: dict[tuple[str, str], int] = {}  # (participant, asset) -> what it delivers over the day
    for n, seconds in enumerate(times):
        seller = rng.choices(names, weights)[0]
        buyer = rng.choices(names, weights)[0]
        while buyer == seller:
            buyer = rng.choices(names, weights)[0]
        if buyer in dealers and seller not in dealers and rng.random() < 0.3:
            seller, buyer = buyer, seller  # dealers sell more than they buy
        quantity = max(LOT, int(math.exp(rng.gauss(11.0, 1.2)) // LOT * LOT))
        price_cents = 9950 + rng.randint(-50, 50)
        amount = quantity * price_cents // 100
        security = rng.choice(secs)
        rows.append(enc({"type": "dvp", "at": _time(seconds), "id": f"T{n}", "seller": seller, "buyer": buyer,
                         "security": security, "quantity": quantity, "cash_asset": "USD",
                         "amount": f"{amount // 100}.{amount % 100:02d}"}))
        if hard:
            delivered[(seller, security)] = delivered.get((seller, security), 0) + quantity
            delivered[(buyer, "USD")] = delivered.get((buyer, "USD"), 0) + amount
    for name in names:
        funded = name not in short
        if hard and not funded:
            cents = delivered.get((name, "USD"), 0) * HARD_FUNDING_PERCENT // 100
            lines.append(enc({"type": "deposit", "participant": name, "asset": "USD",
                              "amount": f"{cents // 100}.{cents % 100:02d}"}))
            for s in secs:
                quantity = delivered.get((name, s), 0) * HARD_FUNDING_PERCENT // 100
                lines.append(enc({"type": "deposit", "participant": name, "asset": s, "amount": quantity}))
            continue
        cash = 10**12 if funded else 10**6
        lines.append(enc({"type": "deposit", "participant": name, "asset": "USD", "amount": f"{cash}.00"}))
        for s in secs:
            lines.append(enc({"type": "deposit", "participant": name, "asset": s,
                              "amount": 10**10 if funded else 10**3}))
    lines.extend(rows)
    with open(path, "wb") as out:
        out.write(b"\n".join(lines) + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="generate a seeded trade file")
    parser.add_argument("path")
    parser.add_argument("--trades", type=int, default=100_000)
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mode", choices=("gross", "net"))
    parser.add_argument("--netting-cycle")
    parser.add_argument("--hard", action="store_true", help="a tenth of the participants run short during the day")
    args = parser.parse_args()
    generate(args.path, args.trades, args.participants, seed=args.seed, mode=args.mode,
             netting_cycle=args.netting_cycle, hard=args.hard)


if __name__ == "__main__":
    main()
