"""The study's suites for `dvp bench`: the frontier and the model comparison.

Takes a trade file (or, without one, generates the day for the scale), the
run's directory, and the executor's settings; gives the suite's figures,
its targets (one per invariant: PASS when every run kept it) and its
files: `frontier.json`, `frontier.csv` and `frontier.png` (with
matplotlib), or `compare.json`; and prints the suite's tables.

- `frontier`: every model at each liquidity level between LB and UB.
- `compare`: every model at the file's own openings (a generated day is
  funded at x = 0.25, where liquidity is scarce and the models differ).
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..results import RunDir, Target
from ..tradegen import DayParams, generate_day
from . import plots, sweep
from .bounds import compute_bounds
from .models import MODEL_BY_NAME, MODELS
from .workload import StudyError, Workload

BASE_TRADES = 100_000  # trades at scale 1 (medium)
COMPARE_LIQUIDITY = 0.25


def day_params(scale: float, seed: int | None, liquidity: float) -> DayParams:
    """The generated day for a scale: 100,000 trades at scale 1, 200 participants (fewer on small days)."""
    trades = max(200, int(BASE_TRADES * scale))
    return DayParams(trades=trades, participants=max(10, min(200, trades // 50)), seed=7 if seed is None else seed,
                     liquidity=liquidity)


def _workload(file: str | None, run: RunDir, scale: float, seed: int | None, liquidity: float,
              console) -> tuple[Workload, dict[str, Any] | None]:
    params = None
    if file is None:
        params = day_params(scale, seed, liquidity)
        file = run.file(f"day-{params.trades}-seed{params.seed}-x{liquidity:g}.jsonl")
        if not os.path.exists(file):
            with console.status(f"generating a {params.trades:,}-trade day (seed {params.seed})"):
                generate_day(file, params)
    elif not os.path.isfile(file):
        raise StudyError(f"{file}: no such trade file")
    return Workload.read(file), (None if params is None else _params(params))


def _params(params: DayParams) -> dict[str, Any]:
    import dataclasses

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()}


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


def _targets(points: list[dict], cross: list[dict]) -> list[Target]:
    """One target per invariant: PASS when every run that it applies to kept it."""
    names: dict[str, list[dict]] = {}
    for p in points:
        for row in p["invariants"]:
            names.setdefault(row["name"], []).append({**row, "run": f"{p['model']} x={p['x']}"})
    targets = []
    for name, rows in names.items():
        applied = [r for r in rows if r["ok"] is not None]
        failed = [r for r in applied if not r["ok"]]
        note = f"{failed[0]['run']}: {failed[0]['detail']}" if failed else ("" if applied else rows[0]["detail"])
        targets.append(Target(name, f"{len(applied) - len(failed)}/{len(applied)} runs", "all",
                              None if not applied else not failed, note))
    for row in cross:
        targets.append(Target(row["name"], row["detail"], "all", row["ok"]))
    return targets


def frontier(run: RunDir, console, *, file: str | None = None, scale: float = 1.0, seed: int | None = None,
             jobs: int = 1, executor: str | None = None, points: int = sweep.POINTS_DEFAULT,
             securities: str = "ample") -> tuple[dict[str, Any], list[Target]]:
    started = time.perf_counter()
    workload, params = _workload(file, run, scale, seed, 0.5, console)
    try:
        with console.status("bounds: the day under immediate settlement"):
            bounds = compute_bounds(workload)
        specs = sweep.frontier_specs(workload, bounds, points, securities=securities)
        with _progress(console) as progress, sweep.executor(jobs, executor) as pool:
            task = progress.add_task(f"frontier: {len(MODELS)} models x {points} levels", total=len(specs))
            found = sweep.run_all(specs, pool, lambda: progress.advance(task))
        cross = sweep.cross_checks(found)
        described = bounds.describe(workload)
        payload = {
            "workload": {**workload.describe(), "generated": params, "securities": securities},
            "bounds": described,
            "models": {m.name: {"label": m.label, "config": m.config} for m in MODELS},
            "points": found,
            "cross_checks": cross,
            "findings": sweep.findings(found),
            "rejected_lines": bounds.rejected[:20],
            "executor": executor or f"process pool of {jobs}",
        }
        files, note = plots.write_plots(found, described, run.path,
                                        title=f"{os.path.basename(workload.path)}: {workload.trades:,} trades, "
                                              f"{len(workload.participants)} participants")
        payload["files"] = [os.path.basename(f) for f in files]
        payload["elapsed_seconds"] = round(time.perf_counter() - started, 2)
    finally:
        workload.close()
    _print_frontier(console, payload)
    if note:
        console.print(note)
    return payload, _targets(found, cross)


def compare(run: RunDir, console, *, file: str | None = None, scale: float = 1.0, seed: int | None = None,
            jobs: int = 1, executor: str | None = None) -> tuple[dict[str, Any], list[Target]]:
    started = time.perf_counter()
    workload, params = _workload(file, run, scale, seed, COMPARE_LIQUIDITY, console)
    try:
        with console.status("bounds: the day under immediate settlement"):
            bounds = compute_bounds(workload)
        specs = sweep.compare_specs(workload, bounds)
        with _progress(console) as progress, sweep.executor(jobs, executor) as pool:
            task = progress.add_task(f"compare: {len(MODELS)} models", total=len(specs))
            found = sweep.run_all(specs, pool, lambda: progress.advance(task))
        cross = sweep.cross_checks(found)
        described = bounds.describe(workload)
        where = {}
        for asset, b in described.items():
            lower, upper = float(b["lower"]), float(b["upper"])
            given = float(found[0]["liquidity"][asset])
            where[asset] = round((given - lower) / (upper - lower), 4) if upper > lower else None
        payload = {
            "workload": {**workload.describe(), "generated": params, "securities": "file"},
            "bounds": {a: {k: v for k, v in b.items() if k != "participants"} for a, b in described.items()},
            "liquidity_x": where,
            "models": found,
            "cross_checks": cross,
            "rejected_lines": bounds.rejected[:20],
            "elapsed_seconds": round(time.perf_counter() - started, 2),
        }
    finally:
        workload.close()
    _print_compare(console, payload)
    return payload, _targets(found, cross)


# ------------------------------------------------------------------ tables


def _money(text: str) -> str:
    value = float(text)
    for factor, unit in ((1e9, " bn"), (1e6, " m")):
        if abs(value) >= factor:
            return f"{value / factor:,.2f}{unit}"
    return f"{value:,.2f}"


def _print_frontier(console, payload: dict[str, Any]) -> None:
    from rich.table import Table

    points = payload["points"]
    levels = sorted({p["x"] for p in points})
    shown = [x for n, x in enumerate(levels) if n % max(1, len(levels) // 5) == 0 or x == levels[-1]]
    asset = next(iter(payload["bounds"]), "")
    b = payload["bounds"].get(asset, {})
    table = Table(title=f"frontier: delay indicator / settlement rate by value, {asset} LB {_money(b.get('lower', '0'))}"
                        f", UB {_money(b.get('upper', '0'))}")
    table.add_column("model")
    for x in shown:
        table.add_column(f"x={x:.1f}", justify="right")
    for model in MODELS:
        row = {p["x"]: p for p in points if p["model"] == model.name}
        table.add_row(model.label, *(f"{row[x]['delay_indicator']:.3f} / {row[x]['settlement_rate_value']:.3f}"
                                     if x in row else "" for x in shown))
    console.print(table)
    f = payload["findings"]
    if f:
        console.print(finding_sentence(f))


def finding_sentence(f: dict[str, Any]) -> str:
    """The findings on offsetting in one paragraph."""
    lowers = "yes" if f["offsetting_lowers_delay_at_every_level"] else \
        f"no (not lower at x = {', '.join(f'{x:g}' for x in f['levels_where_not_lower']) or '-'})"
    agrees = {True: "yes", False: "no", None: "the question does not arise: no material benefit at any level"}[
        f["agrees_with_bech_soramaki"]]
    return (f"offsetting lowers the delay at every level where the queue waits: {lowers}; largest delay reduction "
            f"{f['largest_delay_reduction']:.6f} ({f['largest_delay_reduction_share']:.2%} of the queue's) at "
            f"x={f['helps_most_at_x']:g}; largest gain in value settled {f['largest_settled_value_gain']:.4%} at "
            f"x={f['settles_most_at_x']:g}; agrees with Bech & Soramäki (most help when liquidity is scarce): {agrees}")


COMPARE_ROWS = (
    ("liquidity given", lambda p: _money(next(iter(p["liquidity"].values())))),
    ("liquidity used", lambda p: _money(next(iter(p["liquidity_used"].values())))),
    ("delay indicator", lambda p: f"{p['delay_indicator']:.4f}"),
    ("mean / max delay, s", lambda p: f"{p['delay_seconds_mean'] or 0:,.0f} / {p['delay_seconds_max']:,}"),
    ("settled, by count", lambda p: f"{p['settlement_rate_count']:.4f}"),
    ("settled, by value", lambda p: f"{p['settlement_rate_value']:.4f}"),
    ("unsettled at the cut-off", lambda p: _money(next(iter(p["unsettled_value"].values())))),
    ("liquidity used, bilateral nets one by one", lambda p: _money(next(iter(
        p["liquidity_used_bilateral_sequential"].values()))) if "liquidity_used_bilateral_sequential" in p else "-"),
    ("netting ratio, value", lambda p: f"{next(iter(p['netting_ratio_value'].values())) or 0:.4f}"),
    ("netting ratio, count", lambda p: "-" if p["netting_ratio_count"] is None else f"{p['netting_ratio_count']:.4f}"),
    ("liquidity turnover", lambda p: f"{next(iter(p['liquidity_turnover'].values())) or 0:.2f}"),
    ("exposure, mean open", lambda p: _money(next(iter(p["exposure_mean_open"].values())))),
    ("exposure, peak open", lambda p: _money(next(iter(p["exposure_peak_open"].values())))),
    ("trades/s (one core)", lambda p: f"{p['trades_per_second']:,}"),
)


def compare_table(payload: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The comparison as (header, rows): one column per model (also for the README)."""
    found = {p["model"]: p for p in payload["models"]}
    header = ["metric"] + [m.name for m in MODELS if m.name in found]
    rows = [[name] + [fn(found[m]) for m in header[1:]] for name, fn in COMPARE_ROWS]
    return header, rows


def _print_compare(console, payload: dict[str, Any]) -> None:
    from rich.table import Table

    header, rows = compare_table(payload)
    where = ", ".join(f"{a} x={x}" for a, x in payload["liquidity_x"].items())
    table = Table(title=f"compare: the same day under each model, at the file's own liquidity ({where})")
    for n, name in enumerate(header):
        table.add_column(name, justify="left" if n == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


__all__ = ["BASE_TRADES", "MODEL_BY_NAME", "compare", "compare_table", "day_params", "frontier"]
