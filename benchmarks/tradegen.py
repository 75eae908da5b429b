"""Seeded trade-file generator: realistic-looking settlement days for benchmarks and the study.

Takes the shape of a day (`DayParams`: participants, trades, activity skew,
directionality, trade sizes, intraday peaks, a share of intraday repos, a
seed); gives a JSON Lines trade file in the project's trade-file format (docs/formats.md). The same
parameters always give the same bytes.

- Participants have skewed activity (Zipf weights `1 / rank^skew`); the
  busiest tenth are dealers, and a client's purchase from a dealer is
  turned into a dealer's sale with probability `directionality`, so flows
  lean one way.
- Quantities are lognormal (`exp(N(mu, sigma))`), rounded down to lots of
  1,000; prices are 99.50 +/- 0.50 per 100.
- Times follow an intraday profile: Gaussian humps at the `peaks` (hour of
  day, weight; 1.4 hours wide), between 08:00 and the 17:00 cut-off UTC,
  written in time order.
- With `repo_share` > 0, that share of the trades are intraday repos
  (the would-be seller borrows cash from the would-be buyer against the
  security, for 30 minutes to 4 hours, before 16:59).

Funding: with `liquidity` = x in [0, 1], each participant's opening cash is
`LB + x * (UB - LB)` of the day's own bounds (`benchmarks.study.bounds`:
the lower bound is its end-of-day net debit, the upper its largest
cumulative net debit under immediate settlement), and its securities are
what it delivers over the day, so only cash binds. Without it (the older
benchmarks' workload) everyone is funded amply but a few short
participants (`short_fraction`), or with `hard`, the dealers, who get only
a small share of what they deliver.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import random
from collections.abc import Sequence

import msgspec

DAY = datetime.datetime(2026, 3, 2, tzinfo=datetime.timezone.utc)
OPEN_SECONDS = 8 * 3600
CLOSE_SECONDS = 17 * 3600
LOT = 1000
PEAK_WIDTH_HOURS = 1.4
HARD_SHORT_FRACTION = 0.1  # a hard day: a tenth of the participants run short during the day
HARD_FUNDING_PERCENT = 2  # ... funded with this share of what they deliver over the day
REPO_MATURITY = "2031-02-15"  # the securities' maturity when the day has repos (ust_note, 2% haircut)
REPO_RATE = "0.0531"
REPO_PRINCIPAL_PERMILLE = 955  # principal per unit of collateral, per mille of a 100 price: under CV at 99.50


@dataclasses.dataclass(frozen=True)
class DayParams:
    """The shape of a generated day (defaults: the benchmarks' usual day)."""

    trades: int = 100_000
    participants: int = 200
    securities: int = 20
    seed: int = 7
    skew: float = 0.8
    directionality: float = 0.3
    sizes: tuple[float, float] = (11.0, 1.2)  # lognormal mu, sigma of the quantity
    peaks: tuple[tuple[float, float], ...] = ((10.0, 0.55), (14.5, 0.45))  # (hour of day, weight)
    repo_share: float = 0.0
    liquidity: float | None = None  # x in [0, 1]: cash at LB + x (UB - LB); None: the older funding
    short_fraction: float = 0.01
    hard: bool = False
    mode: str | None = None
    netting_cycle: str | None = None

    def check(self) -> None:
        """Raise ValueError naming the first parameter out of range."""
        if self.trades < 1:
            raise ValueError(f"--trades must be at least 1, not {self.trades}")
        if self.participants < 2:
            raise ValueError(f"--participants must be at least 2, not {self.participants}")
        if self.securities < 1:
            raise ValueError(f"--securities must be at least 1, not {self.securities}")
        if not 0 <= self.directionality <= 1:
            raise ValueError(f"--directionality must be between 0 and 1, not {self.directionality}")
        if not 0 <= self.repo_share <= 1:
            raise ValueError(f"--repo-share must be between 0 and 1, not {self.repo_share}")
        if self.skew < 0:
            raise ValueError(f"--skew must not be negative, not {self.skew}")
        if not self.sizes[1] >= 0:
            raise ValueError(f"--sizes: sigma must not be negative, not {self.sizes[1]}")
        if self.liquidity is not None and not 0 <= self.liquidity <= 1:
            raise ValueError(f"--liquidity must be between 0 and 1, not {self.liquidity}")
        if not self.peaks or any(not 0 < w for _h, w in self.peaks):
            raise ValueError("--intraday needs at least one peak, each with a positive weight")
        if any(not OPEN_SECONDS / 3600 <= h < CLOSE_SECONDS / 3600 for h, _w in self.peaks):
            raise ValueError("--intraday: every peak must lie between 08:00 and 17:00")


def _time(seconds: int) -> str:
    return (DAY + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _intraday(rng: random.Random, peaks: Sequence[tuple[float, float]] = DayParams.peaks) -> int:
    """Draw a time of day: a hump around one of the peaks, chosen by weight, within the session."""
    total = sum(w for _h, w in peaks)
    while True:
        r = rng.random()
        hump = peaks[-1][0]
        edge = 0.0
        for hour, weight in peaks[:-1]:
            edge += weight / total
            if r < edge:
                hump = hour
                break
        seconds = int(rng.gauss(hump, PEAK_WIDTH_HOURS) * 3600)
        if OPEN_SECONDS <= seconds < CLOSE_SECONDS:
            return seconds


def _cents(amount: int) -> str:
    return f"{amount // 100}.{amount % 100:02d}"


def generate(path: str, trades: int, participants: int = 200, securities: int = 20, seed: int = 7,
             short_fraction: float = 0.01, mode: str | None = None, netting_cycle: str | None = None,
             hard: bool = False) -> None:
    """Write the benchmarks' usual day with `trades` DvPs (see `generate_day` for every parameter).

    `hard=True` makes a hard day: the dealers, the busiest tenth of the
    participants, are funded with only a share (`HARD_FUNDING_PERCENT`) of
    what they deliver over the day, in each asset, so they run short during
    the day and many trades queue, on long queues per dealer and security,
    and recycle as the dealers receive. Their funding follows the day's own
    flows, so the share of trades that queue is the same at every size
    (100,000 trades or 1,000,000).
    """
    generate_day(path, DayParams(trades=trades, participants=participants, securities=securities, seed=seed,
                                 short_fraction=short_fraction, mode=mode, netting_cycle=netting_cycle, hard=hard))


def generate_day(path: str, params: DayParams) -> None:
    """Write the day `params` describes to `path` (JSON Lines), whole or not at all."""
    params.check()
    rng = random.Random(params.seed)
    enc = msgspec.json.encode
    n = params.participants
    names = [f"P{i:04d}" for i in range(n)]
    weights = [1.0 / (i + 1) ** params.skew for i in range(n)]
    dealers = set(names[: max(1, n // 10)])
    secs = [f"UST{i:02d}" for i in range(params.securities)]
    times = sorted(_intraday(rng, params.peaks) for _ in range(params.trades))
    lines = []
    config = {"type": "config", "cutoff": _time(CLOSE_SECONDS)}
    if params.mode:
        config["mode"] = params.mode
    if params.netting_cycle:
        config["netting_cycle"] = params.netting_cycle
    lines.append(enc(config))
    lines.append(enc({"type": "asset", "id": "USD", "kind": "cash", "decimals": 2}))
    for s in secs:
        asset = {"type": "asset", "id": s, "kind": "security", "decimals": 0, "class": "ust_note", "price": "99.50"}
        if params.repo_share:
            asset["maturity"] = REPO_MATURITY
        lines.append(enc(asset))
    for name in names:
        lines.append(enc({"type": "participant", "id": name}))
    quiet = names[n // 2:]  # the short ones come from the less active half
    short = set(rng.sample(quiet, max(1, int(n * params.short_fraction))))
    if params.hard:  # the dealers, the busiest tenth, run short: most trades touch one of them
        short = set(names[: max(1, int(n * HARD_SHORT_FRACTION))])
    mu, sigma = params.sizes
    rows = []
    delivered: dict[tuple[str, str], int] = {}  # (participant, asset) -> what it delivers over the day
    for k, seconds in enumerate(times):
        seller = rng.choices(names, weights)[0]
        buyer = rng.choices(names, weights)[0]
        while buyer == seller:
            buyer = rng.choices(names, weights)[0]
        if buyer in dealers and seller not in dealers and rng.random() < params.directionality:
            seller, buyer = buyer, seller  # dealers sell more than they buy
        quantity = max(LOT, int(math.exp(rng.gauss(mu, sigma)) // LOT * LOT))
        price_cents = 9950 + rng.randint(-50, 50)
        amount = quantity * price_cents // 100
        security = rng.choice(secs)
        if params.repo_share and rng.random() < params.repo_share:
            end = min(seconds + rng.randint(1800, 4 * 3600), CLOSE_SECONDS - 60)
            if end > seconds:
                principal = quantity * REPO_PRINCIPAL_PERMILLE // 10
                rows.append(enc({"type": "repo", "at": _time(seconds), "id": f"R{k}", "borrower": seller,
                                 "lender": buyer, "collateral": security, "quantity": quantity, "cash_asset": "USD",
                                 "principal": _cents(principal), "rate": REPO_RATE, "end": _time(end)}))
                delivered[(seller, security)] = delivered.get((seller, security), 0) + quantity
                delivered[(buyer, "USD")] = delivered.get((buyer, "USD"), 0) + principal
                continue
        rows.append(enc({"type": "dvp", "at": _time(seconds), "id": f"T{k}", "seller": seller, "buyer": buyer,
                         "security": security, "quantity": quantity, "cash_asset": "USD",
                         "amount": _cents(amount)}))
        if params.hard or params.liquidity is not None:
            delivered[(seller, security)] = delivered.get((seller, security), 0) + quantity
            delivered[(buyer, "USD")] = delivered.get((buyer, "USD"), 0) + amount
    for name in names:
        if params.liquidity is not None:  # securities: what it delivers; cash: set from the bounds below
            for s in secs:
                if delivered.get((name, s)):
                    lines.append(enc({"type": "deposit", "participant": name, "asset": s,
                                      "amount": delivered[(name, s)]}))
            continue
        funded = name not in short
        if params.hard and not funded:
            cents = delivered.get((name, "USD"), 0) * HARD_FUNDING_PERCENT // 100
            lines.append(enc({"type": "deposit", "participant": name, "asset": "USD", "amount": _cents(cents)}))
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
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "wb") as out:
            out.write(b"\n".join(lines) + b"\n")
        if params.liquidity is not None:
            _fund(temporary, params.liquidity)
        os.replace(temporary, path)
    except BaseException:
        for leftover in (temporary, temporary + ".funded"):
            if os.path.exists(leftover):
                os.remove(leftover)
        raise


def _fund(path: str, liquidity: float) -> None:
    """Give each participant opening cash at `liquidity` between the day's own bounds (in place)."""
    from fractions import Fraction

    from .study.bounds import compute_bounds
    from .study.workload import Workload, write_derived

    workload = Workload.read(path)
    bounds = compute_bounds(workload)
    x = Fraction(liquidity).limit_denominator(10**6)
    write_derived(workload, path + ".funded", config=workload.config, cash=bounds.at(x.numerator, x.denominator),
                  securities=workload.deposits_of(workload.securities))
    workload.close()
    os.replace(path + ".funded", path)


# --------------------------------------------------------------------- CLI


def _sizes(text: str) -> tuple[float, float]:
    kind, _, rest = text.partition(":")
    try:
        mu, sigma = (float(v) for v in rest.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected lognormal:MU,SIGMA (e.g. lognormal:11,1.2)") from None
    if kind != "lognormal":
        raise argparse.ArgumentTypeError(f"{text!r}: only lognormal:MU,SIGMA sizes are supported")
    return mu, sigma


def _peaks(text: str) -> tuple[tuple[float, float], ...]:
    peaks = []
    for part in text.split(","):
        hour, _, weight = part.partition(":")
        try:
            peaks.append((float(hour), float(weight) if weight else 1.0))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected HOUR[:WEIGHT],... (e.g. 10:0.55,14.5:0.45)") from None
    return tuple(peaks)


def _liquidity(text: str) -> float | None:
    if text == "ample":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a fraction between 0 and 1, or ample") from None


def add_arguments(parser: argparse.ArgumentParser, liquidity_default: str = "0.5") -> None:
    d = DayParams()
    parser.add_argument("out", metavar="OUT", help="the trade file to write (JSON Lines)")
    parser.add_argument("--participants", type=int, default=d.participants, metavar="N")
    parser.add_argument("--trades", type=int, default=d.trades, metavar="N")
    parser.add_argument("--securities", type=int, default=d.securities, metavar="N")
    parser.add_argument("--skew", type=float, default=d.skew, metavar="A",
                        help="activity skew: weights 1/rank^A (default %(default)s; 0: uniform)")
    parser.add_argument("--directionality", type=float, default=d.directionality, metavar="D",
                        help="chance that a client's purchase from a dealer becomes a dealer's sale "
                             "(default %(default)s)")
    parser.add_argument("--sizes", type=_sizes, default=d.sizes, metavar="lognormal:MU,SIGMA",
                        help="quantity distribution (default lognormal:11,1.2)")
    parser.add_argument("--intraday", type=_peaks, default=d.peaks, metavar="PEAKS",
                        help="intraday peaks HOUR[:WEIGHT],... (default 10:0.55,14.5:0.45)")
    parser.add_argument("--repo-share", type=float, default=d.repo_share, metavar="F",
                        help="share of trades that are intraday repos (default %(default)s)")
    parser.add_argument("--liquidity", type=_liquidity, default=_liquidity(liquidity_default), metavar="X",
                        help="opening cash at LB + X (UB - LB) of the day's bounds, or 'ample' for the older "
                             f"benchmarks' funding (default {liquidity_default})")
    parser.add_argument("--seed", type=int, default=d.seed, metavar="S")
    parser.add_argument("--mode", choices=("gross", "net"))
    parser.add_argument("--netting-cycle", metavar="DURATION")
    parser.add_argument("--hard", action="store_true",
                        help="with --liquidity ample: the dealers run short during the day")


def params_from(args: argparse.Namespace) -> DayParams:
    return DayParams(trades=args.trades, participants=args.participants, securities=args.securities, seed=args.seed,
                     skew=args.skew, directionality=args.directionality, sizes=args.sizes, peaks=args.intraday,
                     repo_share=args.repo_share, liquidity=args.liquidity, hard=args.hard, mode=args.mode,
                     netting_cycle=args.netting_cycle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tradegen", description="generate a seeded trade file")
    add_arguments(parser, liquidity_default="ample")
    args = parser.parse_args(argv)
    try:
        generate_day(args.out, params_from(args))
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
