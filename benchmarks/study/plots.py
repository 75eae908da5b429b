"""Plots of the frontier: the delay indicator and the settlement rate against liquidity, per model.

Takes the frontier's points and bounds; gives `frontier.csv` (always) and,
with matplotlib (the optional extra `plots`), `frontier.png`: two panels,
the liquidity-delay trade-off (delay indicator against the total opening
cash, LB and UB marked) and the settlement rate by value against it.
Without matplotlib it says, in one line, how to get the PNG.
"""

from __future__ import annotations

import csv
import os
from typing import Any

from .models import MODEL_BY_NAME, MODELS

COLUMNS = ("model", "x", "liquidity", "liquidity_used", "delay_indicator", "settlement_rate_count",
           "settlement_rate_value", "delay_seconds_mean", "trades_per_second")
MARKERS = ("o", "s", "^", "D", "v", "x")
HOW_TO_GET_PLOTS = "no matplotlib: wrote the frontier as CSV; for PNG plots: pip install 'dvp-settlement[plots]'"


def _first(money: dict[str, str]) -> str:
    return next(iter(money.values()), "0")


def write_csv(points: list[dict[str, Any]], path: str) -> str:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for p in points:
            writer.writerow([p["model"], p["x"], _first(p["liquidity"]), _first(p["liquidity_used"]),
                             p["delay_indicator"], p["settlement_rate_count"], p["settlement_rate_value"],
                             p["delay_seconds_mean"], p["trades_per_second"]])
    return path


def write_plots(points: list[dict[str, Any]], bounds: dict[str, Any], directory: str,
                title: str = "") -> tuple[list[str], str | None]:
    """Write frontier.csv and, if matplotlib is there, frontier.png; return (paths, a note or None)."""
    paths = [write_csv(points, os.path.join(directory, "frontier.csv"))]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return paths, HOW_TO_GET_PLOTS
    asset = next(iter(bounds), "")
    scale, unit = _scale(float(bounds[asset]["upper"]) if asset else 1.0)
    figure, (delay, rate) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for n, model in enumerate(MODELS):
        rows = sorted((p for p in points if p["model"] == model.name), key=lambda p: p["x"])
        if not rows:
            continue
        xs = [float(_first(p["liquidity"])) / scale for p in rows]
        # models that coincide stay visible: each its own marker, the later ones drawn thinner on top
        style = dict(marker=MARKERS[n % len(MARKERS)], markersize=6 - 0.6 * n, linewidth=2.6 - 0.35 * n,
                     label=MODEL_BY_NAME[model.name].label, linestyle="-" if model.gross else "--")
        delay.plot(xs, [p["delay_indicator"] for p in rows], **style)
        rate.plot(xs, [p["settlement_rate_value"] for p in rows], **style)
    for axis, label in ((delay, "delay indicator"), (rate, "settlement rate (by value)")):
        if asset:
            for bound, name in (("lower", "LB"), ("upper", "UB")):
                at = float(bounds[asset][bound]) / scale
                axis.axvline(at, color="grey", linewidth=0.8, linestyle=":")
                axis.annotate(name, (at, 1.02), xycoords=("data", "axes fraction"), ha="center", fontsize=8)
        axis.set_xlabel(f"opening cash liquidity, all participants ({unit}{asset})")
        axis.set_ylabel(label)
        axis.set_ylim(-0.02, 1.02)
        axis.grid(True, linewidth=0.4, alpha=0.6)
    delay.set_title("liquidity-delay trade-off")
    rate.set_title("settlement rate")
    rate.legend(loc="lower right", fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    path = os.path.join(directory, "frontier.png")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return paths + [path], None


def _scale(largest: float) -> tuple[float, str]:
    for factor, unit in ((1e9, "bn "), (1e6, "m "), (1e3, "k ")):
        if largest >= factor:
            return factor, unit
    return 1.0, ""
