"""Metrics of one study run, and the invariants every run must keep.

Takes a finished replay of a derived file (its trade outcomes, its cash
tracker, its ledger), the workload, the bounds, the model and the openings
it was given; gives one point of the study (a dict of JSON values) with its
invariants checked. Definitions (benchmarks/README.md has them with their
sources):

- delay indicator (Leinonen & Soramäki 1999):
  sum(v (t_settle - t_submit)) / sum(v (t_cutoff - t_submit)) over DvP
  trades, v the cash value; an unsettled trade counts with
  t_settle = t_cutoff. 0: all settle on arrival; 1: all at the cut-off.
- settlement rate by count and by value; value unsettled at the cut-off.
- liquidity used: per participant, opening minus the lowest balance
  reached; summed over participants.
- netting ratio by value: cash that moved / value of the trades it settled
  (1 for plain gross settlement); by count: movements after netting /
  before (net models; the engine's cycle figures).
- liquidity turnover: settled value / liquidity used.
- exposure (deferred settlement only): value x time between a trade's
  acceptance and its settlement (or unwind), and the peak value open.

Amounts are exact integers (minor units); only ratios are floats.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction
from typing import Any

import msgspec

from protocols.replay import RESERVED
from protocols.tradefile import format_minor

from .bounds import Bounds
from .models import Model
from .workload import Workload

Key = tuple[str, str]


def _ratio(numerator: int, denominator: int) -> float | None:
    return float(Fraction(numerator, denominator)) if denominator else None


class Check:
    """The invariants of one run: each passes, fails (with the first counterexample), or does not apply."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, name: str, ok: bool | None, detail: str = "") -> None:
        self.rows.append({"name": name, "ok": ok, "detail": detail})

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["ok"] is False]


def point_metrics(run, workload: Workload, bounds: Bounds, model: Model, given: dict[Key, int], *, x: float | None,
                  seconds: float, securities_ample: bool) -> dict[str, Any]:
    """One point: every figure of the run, and its invariants."""
    cutoff = workload.cutoff_at
    cash_assets = workload.cash
    outcomes = run.accounts.trades.values()
    value = {a: 0 for a in cash_assets}
    settled_value = {a: 0 for a in cash_assets}
    delay_num = {a: 0 for a in cash_assets}
    delay_den = {a: 0 for a in cash_assets}
    exposure = {a: 0 for a in cash_assets}
    opened: list[tuple[int, int, str]] = []  # (time, +/- value, asset): deferred obligations open and close
    count = settled = delay_sum = delay_max = 0
    all_settled = True
    immediate = True
    for o in outcomes:
        if o.kind != "dvp":
            all_settled = all_settled and o.status in ("settled", "closed")
            continue
        t = o.terms
        v, asset, submit = t.amount, t.cash_asset, o.queued_at
        count += 1
        value[asset] += v
        delay_den[asset] += v * (cutoff - submit)
        if o.status == "settled":
            settled += 1
            settled_value[asset] += v
            done = min(o.settled_at, cutoff)
            delay = o.settled_at - submit
            delay_sum += delay
            delay_max = max(delay_max, delay)
            immediate = immediate and delay == 0
        else:
            all_settled = immediate = False
            done = o.failed_at if o.failed_at is not None else cutoff
            delay_num[asset] += v * (cutoff - submit)
            if not model.gross:
                exposure[asset] += v * (min(done, cutoff) - submit)
                opened += ((submit, v, asset), (min(done, cutoff), -v, asset))
            continue
        delay_num[asset] += v * (done - submit)
        if not model.gross:
            exposure[asset] += v * (done - submit)
            opened += ((submit, v, asset), (done, -v, asset))
    refused = len(run.rejected) - len(bounds.rejected)  # lines refused here but not with ample funds: deliveries
    all_settled = all_settled and refused == 0
    positions = run.accounts.liquidity.positions
    used: dict[Key, int] = {}
    sent = {a: 0 for a in cash_assets}
    for party in workload.participants:
        for asset in cash_assets:
            p = positions.get((party, asset))
            used[(party, asset)] = p.opening - p.lowest if p is not None else 0
            if p is not None:
                sent[asset] += p.sent
    summary = run.summary()
    balances = {p: held for p, held in run.ledger.balances().items() if p not in RESERVED}
    day = max(1, cutoff - workload.first_at)

    def money(values: dict[str, int]) -> dict[str, str]:
        return {a: format_minor(v, workload.decimals(a)) for a, v in values.items()}

    def per_asset(key_values: dict[Key, int]) -> dict[str, int]:
        out = {a: 0 for a in cash_assets}
        for (_p, a), v in key_values.items():
            out[a] += v
        return out

    used_total = per_asset(used)
    point: dict[str, Any] = {
        "model": model.name,
        "x": x,
        "liquidity": money(per_asset(given)),
        "liquidity_used": money(used_total),
        "delay_indicator": _ratio(sum(delay_num.values()), sum(delay_den.values())) or 0.0,
        "settlement_rate_count": _ratio(settled, count),
        "settlement_rate_value": _ratio(sum(settled_value.values()), sum(value.values())),
        "delay_indicator_by_asset": {a: _ratio(delay_num[a], delay_den[a]) or 0.0 for a in cash_assets},
        "delay_seconds_mean": round(delay_sum / settled, 3) if settled else None,
        "delay_seconds_max": delay_max,
        "trades": count,
        "settled": settled,
        "failed": summary.get("failed", 0),
        "queued_at_end": summary.get("queued", 0),
        "failed_by_reason": summary.get("failed_by_reason", {}),
        "value": money(value),
        "settled_value": money(settled_value),
        "unsettled_value": money({a: value[a] - settled_value[a] for a in cash_assets}),
        "netting_ratio_value": {a: _ratio(sent[a], settled_value[a]) for a in cash_assets},
        "netting_ratio_count": float(summary["netting_ratio_movements"]) if not model.gross else None,
        "liquidity_turnover": {a: _ratio(settled_value[a], used_total[a]) for a in cash_assets},
        "exposure_value_seconds": {a: str(exposure[a]) for a in cash_assets},
        "exposure_mean_open": money({a: exposure[a] // day for a in cash_assets}),
        "exposure_peak_open": money(_peak(opened, cash_assets)),
        "rejected_lines": len(run.rejected),
        "refused_for_funds": refused,  # free-of-payment deliveries the ledger refused (short of funds)
        "seconds": round(seconds, 3),
        "trades_per_second": round(count / seconds) if seconds > 0 else None,
        "all_settled": all_settled,
        "balances_digest": hashlib.sha256(msgspec.json.encode(sorted(
            (p, sorted(held.items())) for p, held in balances.items()))).hexdigest(),
    }
    if not model.gross:
        point["cycles"] = summary.get("cycles")
        point["movements"] = summary.get("movements")
        if model.config.get("bilateral") and workload.pure_dvp:
            point["liquidity_used_bilateral_sequential"] = money(per_asset(_bilateral_sequential(
                outcomes, given, cash_assets)))
    point["invariants"] = _invariants(run, workload, bounds, model, given, used, balances, x, all_settled,
                                      immediate, securities_ample, point).rows
    return point


def _peak(opened: list[tuple[int, int, str]], assets: list[str]) -> dict[str, int]:
    """The most value open at once (closings before openings at the same second)."""
    level = {a: 0 for a in assets}
    peak = {a: 0 for a in assets}
    for _t, delta, asset in sorted(opened, key=lambda e: (e[0], e[1])):
        level[asset] += delta
        if level[asset] > peak[asset]:
            peak[asset] = level[asset]
    return peak


def _bilateral_sequential(outcomes, given: dict[Key, int], assets: list[str]) -> dict[Key, int]:
    """What each participant would draw if every cycle's bilateral nets settled one by one, its debits first."""
    cycles: dict[int, dict[tuple[str, str, str], int]] = {}
    for o in outcomes:
        if o.kind == "dvp" and o.status == "settled":
            t = o.terms
            a, b, sign = (t.buyer, t.seller, 1) if t.buyer < t.seller else (t.seller, t.buyer, -1)
            nets = cycles.setdefault(o.settled_at, {})
            nets[(t.cash_asset, a, b)] = nets.get((t.cash_asset, a, b), 0) + sign * t.amount  # > 0: a pays b
    balance = dict(given)
    lowest = dict(given)
    for at in sorted(cycles):
        debits: dict[Key, int] = {}
        credits: dict[Key, int] = {}
        for (asset, a, b), net in cycles[at].items():
            payer, payee = (a, b) if net > 0 else (b, a)
            debits[(payer, asset)] = debits.get((payer, asset), 0) + abs(net)
            credits[(payee, asset)] = credits.get((payee, asset), 0) + abs(net)
        for key, d in debits.items():
            low = balance.get(key, 0) - d
            if low < lowest.get(key, 0):
                lowest[key] = low
        for key in set(debits) | set(credits):
            balance[key] = balance.get(key, 0) - debits.get(key, 0) + credits.get(key, 0)
    return {k: given.get(k, 0) - lowest.get(k, 0) for k in set(given) | set(lowest) if k[1] in assets}


def _invariants(run, workload: Workload, bounds: Bounds, model: Model, given: dict[Key, int], used: dict[Key, int],
                balances: dict[str, dict[str, int]], x: float | None, all_settled: bool, immediate: bool,
                securities_ample: bool, point: dict[str, Any]) -> Check:
    check = Check()
    frontier = x is not None

    def first(bad: list[str]) -> str:
        return f"{len(bad)} cases, e.g. {bad[0]}" if bad else ""

    bad = [f"{p} {a}: used {used[(p, a)]} > given {given.get((p, a), 0)}" for p, a in used
           if used[(p, a)] > given.get((p, a), 0)]
    check.add("usage <= liquidity given", not bad, first(bad))
    if frontier:
        bad = [f"{p} {a}: given {v} > UB {bounds.upper[(p, a)]}" for (p, a), v in given.items()
               if v > bounds.upper[(p, a)]]
        check.add("liquidity given <= UB", not bad, first(bad))
    if all_settled:
        bad = [f"{p} {a}: used {used[(p, a)]} < LB {bounds.lower[(p, a)]}" for p, a in used
               if used[(p, a)] < bounds.lower[(p, a)]]
        check.add("LB <= usage (everything settled)", not bad, first(bad))
    else:
        check.add("LB <= usage (everything settled)", None, "not everything settled")
    if model.name == "dns_cutoff":
        if workload.pure_dvp and all_settled:
            bad = [f"{p} {a}: used {used[(p, a)]} != LB {bounds.lower[(p, a)]}" for p, a in used
                   if used[(p, a)] != bounds.lower[(p, a)]]
            check.add("one DNS cycle at the cut-off draws exactly LB", not bad, first(bad))
        else:
            check.add("one DNS cycle at the cut-off draws exactly LB", None,
                      "repos or cash deliveries settle gross" if not workload.pure_dvp else "a participant unwound")
    if model.gross and frontier and x == 1.0:
        if securities_ample:
            check.add("RTGS given UB settles everything at once", all_settled and immediate,
                      "" if all_settled and immediate else f"{point['settled']} of {point['trades']} settled, "
                                                            f"mean delay {point['delay_seconds_mean']} s")
        else:
            check.add("RTGS given UB settles everything at once", None, "securities as in the file")
    delay = point["delay_indicator"]
    check.add("delay indicator in [0, 1]", 0.0 <= delay <= 1.0, f"{delay}")
    positions = run.accounts.liquidity.positions
    bad = [f"{p} {a}: tracker {pos.balance} != ledger {balances.get(p, {}).get(a, 0)}"
           for (p, a), pos in positions.items() if p not in RESERVED and pos.balance != balances.get(p, {}).get(a, 0)]
    check.add("the cash tracker equals the ledger", not bad, first(bad))
    bad = []
    for asset in workload.cash:
        held = sum(h.get(asset, 0) for h in balances.values())
        opening = sum(v for (_p, a), v in given.items() if a == asset)
        if held != opening:
            bad.append(f"{asset}: balances {held} != openings {opening}")
    check.add("cash is conserved (balances = openings)", not bad, first(bad))
    return check
