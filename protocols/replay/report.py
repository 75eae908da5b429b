"""Report: the replay's outcomes and the ledgers' final figures, as the report's JSON.

Takes the `Accounts` of a replay, the file's assets and participants, and
what the ledgers hold at the end (`Chains.info`); gives the report of
`docs/formats.md`: input, rejected lines, one row per trade, margin calls,
balances, escrow (held amounts, by owner: balances plus escrow equal each
asset's supply), net positions in net mode, metrics, and each chain's
head and state hashes. All amounts are decimal strings in the asset's
decimals; times are ISO 8601 UTC.

`write` streams the trades map (a million rows need not be built in
memory) into a temporary file beside the target and renames it into
place, so a report is either whole or absent.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.records import Asset

from ..tradefile import format_minor, format_time
from . import rows
from .account import FAILED, QUEUED, SETTLED, Accounts, TradeOutcome

_enc = msgspec.json.encode


class ReportInputs(msgspec.Struct):
    path: str
    events: int  # lines read (set-up and timed, good and bad)
    mode: str
    assets: dict[str, Asset]
    participants: list[str]
    declared: list[tuple[str, str]]  # accounts declared with a zero deposit
    info: dict[str, Any]  # Chains.info()


def _cash(outcome: TradeOutcome) -> tuple[str, int]:
    """The cash asset and amount of a DvP (its terms: Settle, Obligate or SwapTerms)."""
    terms = outcome.terms
    return terms.cash_asset, terms.amount


def summary(acc: Accounts, inputs: ReportInputs) -> dict[str, Any]:
    """Counts and figures: the report's `metrics`."""
    assets = inputs.assets
    counts = {SETTLED: 0, FAILED: 0, QUEUED: 0}
    reasons: dict[str, int] = {}
    gross: dict[str, int] = {}
    settled_value: dict[str, int] = {}
    delay_sum = delay_max = transfers = 0
    repo_statuses: dict[str, int] = {}
    for outcome in acc.trades.values():
        kind = outcome.kind
        if kind == "repo":
            repo_statuses[outcome.status] = repo_statuses.get(outcome.status, 0) + 1
            continue
        transfers += 1
        status = outcome.status
        counts[status] = counts.get(status, 0) + 1
        if status == FAILED:
            reasons[outcome.reason or "failed"] = reasons.get(outcome.reason or "failed", 0) + 1
        if kind != "dvp":
            continue
        cash, amount = _cash(outcome)
        gross[cash] = gross.get(cash, 0) + amount
        if status == SETTLED:
            settled_value[cash] = settled_value.get(cash, 0) + amount
            delay = outcome.settled_at - outcome.queued_at
            delay_sum += delay
            if delay > delay_max:
                delay_max = delay
    settled = counts[SETTLED]

    def money(values: dict[str, int]) -> dict[str, str]:
        return {a: format_minor(v, assets[a].decimals) for a, v in sorted(values.items())}

    metrics: dict[str, Any] = {
        "settled": settled,
        "failed": counts[FAILED],
        "queued": counts[QUEUED],
        "failed_by_reason": dict(sorted(reasons.items())),
        "gross_value": money(gross),
        "settled_value": money(settled_value),
        "settlement_rate": f"{settled / transfers:.6f}" if transfers else "0",
        "delay_seconds_mean": f"{delay_sum / settled:.3f}" if settled else "0",
        "delay_seconds_max": delay_max,
    }
    if repo_statuses or acc.margin_calls:
        drawn: dict[str, int] = {}
        returned: dict[str, int] = {}
        for call in acc.margin_calls.values():
            if call.status == "met":
                cash = acc.trades[call.repo].terms.cash_asset
                drawn[cash] = drawn.get(cash, 0) + call.amount
        for outcome in acc.trades.values():
            if outcome.repo is not None and outcome.repo.margin_returned:
                cash = outcome.terms.cash_asset
                returned[cash] = returned.get(cash, 0) + outcome.repo.margin_returned
        calls = list(acc.margin_calls.values())
        metrics["repos"] = dict(sorted(repo_statuses.items()))
        metrics["margin_calls"] = {
            "issued": len(calls),
            "met": sum(1 for c in calls if c.status == "met"),
            "defaulted": sum(1 for c in calls if c.status == "defaulted"),
            "withdrawn": sum(1 for c in calls if c.status == "withdrawn"),
            "liquidity_drawn": money(drawn),
            "returned": money(returned),
        }
    metrics["liquidity_used"] = money(acc.liquidity.drawn())  # opening minus lowest balance, summed over members
    if inputs.mode == "net":
        cycles = acc.cycles
        gross_cash = sum(int(x.split("=")[1]) for c in cycles for x in c["gross_cash"].split(",") if x)
        positive = sum(int(c["positive_net_cash"]) for c in cycles)
        moves_gross = sum(int(c["gross_movements"]) for c in cycles)
        moves_net = sum(int(c["net_movements"]) for c in cycles)
        metrics["cycles"] = len(cycles)
        metrics["netting_ratio_value"] = f"{positive / gross_cash:.6f}" if gross_cash else "0"
        metrics["netting_ratio_movements"] = f"{moves_net / moves_gross:.6f}" if moves_gross else "0"
        metrics["movements"] = {"gross": moves_gross, "net": moves_net}
    return metrics


def _money_book(held: dict[str, dict[str, int]], assets: dict[str, Asset]) -> dict[str, dict[str, str]]:
    return {p: {a: format_minor(v, assets[a].decimals) for a, v in sorted(book.items())}
            for p, book in sorted(held.items())}


def head_and_tail(acc: Accounts, inputs: ReportInputs) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report without its trades: what comes before them, and what after."""
    info = inputs.info
    assets = inputs.assets
    held: dict[str, dict[str, int]] = {p: {} for p in inputs.participants}
    for party, asset in inputs.declared:
        held.setdefault(party, {})[asset] = 0
    for party, book in info["balances"].items():
        held.setdefault(party, {}).update(book)
    head = {
        "input": {"path": inputs.path, "events": inputs.events, "rejected": len(acc.rejected)},
        "rejected": [{"line": b.line, "reason": b.reason} for b in sorted(acc.rejected, key=lambda b: b.line)],
    }
    calls = []
    for call in acc.margin_calls.values():
        decimals = assets[acc.trades[call.repo].terms.cash_asset].decimals
        row = {"repo": call.repo, "at": format_time(call.at), "amount": format_minor(call.amount, decimals),
               "status": call.status}
        if call.met_at is not None:
            row["met_at"] = format_time(call.met_at)
        calls.append(row)
    participants = rows.participant_rows(inputs.participants, acc.opening, held, info["escrow"],
                                         acc.liquidity.positions, acc.trades, assets)
    tail: dict[str, Any] = {"margin_calls": calls, "balances": _money_book(held, assets),
                            "escrow": _money_book(info["escrow"], assets),
                            "participants": {p: msgspec.to_builtins(r) for p, r in participants.items()},
                            "supply": {a: format_minor(v, assets[a].decimals) for a, v in sorted(info["supply"].items())
                                       if a in assets}}
    if inputs.mode == "net":
        tail["net_positions"] = _money_book(info["net_positions"], assets)
    tail["metrics"] = summary(acc, inputs)
    tail["ledger"] = {"chains": info["chains"]}
    return head, tail


def build(acc: Accounts, inputs: ReportInputs) -> dict[str, Any]:
    """The whole report as one dict (for small files and tests)."""
    head, tail = head_and_tail(acc, inputs)
    out = dict(head)
    out["trades"] = {t: msgspec.to_builtins(rows.trade_row(o, inputs.assets)) for t, o in acc.trades.items()}
    out.update(tail)
    return out


def write_trades_csv(acc: Accounts, inputs: ReportInputs, path: str) -> None:
    """The trades as a CSV table (`rows.TRADE_COLUMNS`), for pandas and spreadsheets."""
    assets = inputs.assets
    rows.write_csv(path, rows.TRADE_COLUMNS,
                   (rows.trade_cells(t, rows.trade_row(o, assets)) for t, o in acc.trades.items()))


def write_participants_csv(acc: Accounts, inputs: ReportInputs, path: str) -> None:
    """One row per participant and asset (`rows.PARTICIPANT_COLUMNS`)."""
    _head, tail = head_and_tail(acc, inputs)
    table = {p: msgspec.convert(r, rows.ParticipantRow) for p, r in tail["participants"].items()}
    rows.write_csv(path, rows.PARTICIPANT_COLUMNS, rows.participant_cells(table))


def write(acc: Accounts, inputs: ReportInputs, path: str) -> None:
    """Stream the report to `path`, whole or not at all (a temporary file, then a rename)."""
    head, tail = head_and_tail(acc, inputs)
    assets = inputs.assets
    with rows.atomic_file(path) as out:
        out.write(b"{")
        for key, value in head.items():
            out.write(_enc(key) + b":" + _enc(value) + b",\n")
        out.write(b'"trades":{')
        chunk: list[bytes] = []
        separator = b"\n"
        row_of = rows.trade_row
        for trade, outcome in acc.trades.items():
            chunk.append(separator + _enc(trade) + b":" + _enc(row_of(outcome, assets)))
            separator = b",\n"
            if len(chunk) >= 8192:
                out.write(b"".join(chunk))
                chunk = []
        out.write(b"".join(chunk) + b"}")
        for key, value in tail.items():
            out.write(b",\n" + _enc(key) + b":" + _enc(value))
        out.write(b"}\n")
