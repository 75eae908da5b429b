"""Rows: one trade, or one participant, as the report and the CSV tables show it.

Takes a `TradeOutcome` (or a participant's figures) and the file's assets;
gives a `TradeRow` (a `ParticipantRow`): every field as the report writes
it, amounts as decimal strings in the asset's decimals, times in ISO 8601
UTC, and absent fields left out. The JSON report and `--trades-csv` /
`--participants-csv` are written from the same rows, so they always agree.
"""

from __future__ import annotations

import contextlib
import csv
import os
from typing import Any

import msgspec

from engine.records import Asset, Move

from .. import repo
from ..tradefile import format_minor, format_time
from .account import FAILED, SETTLED, Position, TradeOutcome


class Short(msgspec.Struct, omit_defaults=True):
    party: str
    asset: str
    amount: str


class TradeRow(msgspec.Struct, omit_defaults=True):
    """One trade of the report's `trades` (docs/formats.md: `kind`, `status`, `settled_at`, `reason`, then more)."""

    kind: str
    status: str
    settled_at: str | None = None
    reason: str | None = None
    short: Short | None = None
    queued_at: str | None = None
    failed_at: str | None = None
    seller: str | None = None
    buyer: str | None = None
    security: str | None = None
    quantity: str | None = None
    cash_asset: str | None = None
    amount: str | None = None
    source: str | None = msgspec.field(default=None, name="from")
    target: str | None = msgspec.field(default=None, name="to")
    asset: str | None = None
    borrower: str | None = None
    lender: str | None = None
    collateral: str | None = None
    principal: str | None = None
    rate: str | None = None
    end: str | None = None
    interest: str | None = None
    closed_at: str | None = None
    defaulted_at: str | None = None
    close_out: str | None = None


TRADE_COLUMNS = ("id", "kind", "status", "queued_at", "settled_at", "failed_at", "reason", "short_party",
                 "short_asset", "short_amount", "seller", "buyer", "security", "quantity", "cash_asset", "amount",
                 "from", "to", "asset", "borrower", "lender", "collateral", "principal", "rate", "end", "interest",
                 "closed_at", "defaulted_at", "close_out")


def trade_row(outcome: TradeOutcome, assets: dict[str, Asset]) -> TradeRow:
    """One trade's row."""
    status = outcome.status
    row = TradeRow(kind=outcome.kind, status=status, queued_at=format_time(outcome.queued_at))
    if status == SETTLED:
        row.settled_at = format_time(outcome.settled_at)
    elif status == FAILED:
        row.reason = outcome.reason
        if outcome.failed_at is not None:
            row.failed_at = format_time(outcome.failed_at)
        if outcome.short is not None:
            short = outcome.short
            row.short = Short(short.party, short.asset, format_minor(short.amount, assets[short.asset].decimals))
    terms = outcome.terms
    if outcome.kind == "dvp":
        row.seller, row.buyer, row.security, row.cash_asset = terms.seller, terms.buyer, terms.security, terms.cash_asset
        row.quantity = format_minor(terms.quantity, assets[terms.security].decimals)
        row.amount = format_minor(terms.amount, assets[terms.cash_asset].decimals)
    elif type(terms) is Move:
        row.source, row.target, row.asset = terms.source, terms.target, terms.asset
        row.amount = format_minor(terms.amount, assets[terms.asset].decimals)
    elif type(terms) is repo.OpenRepo:
        decimals = assets[terms.cash_asset].decimals
        row.borrower, row.lender, row.collateral, row.cash_asset = (terms.borrower, terms.lender, terms.collateral,
                                                                   terms.cash_asset)
        row.quantity = format_minor(terms.quantity, assets[terms.collateral].decimals)
        row.principal = format_minor(terms.principal, decimals)
        row.rate = terms.rate
        row.end = format_time(terms.end)
        figures = outcome.repo
        if figures is not None:
            if figures.interest is not None:
                row.interest = format_minor(figures.interest, decimals)
                row.closed_at = format_time(figures.ended_at)
            if status == "defaulted":
                row.reason = outcome.reason
                row.defaulted_at = format_time(figures.ended_at)
                row.close_out = format_minor(figures.close_out, decimals)
    return row


def trade_cells(trade: str, row: TradeRow) -> list[Any]:
    """A row's cells in `TRADE_COLUMNS` order (empty for an absent field)."""
    short = row.short
    values = {"id": trade, "short_party": short.party if short else None, "short_asset": short.asset if short else None,
              "short_amount": short.amount if short else None, "from": row.source, "to": row.target}
    return ["" if (v := values[c] if c in values else getattr(row, c)) is None else v for c in TRADE_COLUMNS]


class ParticipantRow(msgspec.Struct):
    """One participant's day: per asset its balances, per cash asset its liquidity; its trades."""

    balances: dict[str, dict[str, str]]  # asset -> opening, closing, escrow (and for cash: lowest, drawn, sent, received)
    settled: int = 0
    failed: int = 0
    queued: int = 0
    delay_seconds_mean: str = "0"


PARTICIPANT_COLUMNS = ("participant", "asset", "opening", "closing", "escrow", "lowest", "drawn", "sent", "received",
                       "settled", "failed", "queued", "delay_seconds_mean")


def participant_rows(participants: list[str], opening: dict[tuple[str, str], int],
                     closing: dict[str, dict[str, int]], escrow: dict[str, dict[str, int]],
                     positions: dict[tuple[str, str], Position], trades: dict[str, TradeOutcome],
                     assets: dict[str, Asset]) -> dict[str, ParticipantRow]:
    """Every participant's row (the report's `participants`)."""
    counts: dict[str, list[int]] = {p: [0, 0, 0, 0] for p in participants}  # settled, failed, queued, delay sum
    for outcome in trades.values():
        if outcome.kind == "repo":
            continue
        terms = outcome.terms
        parties = (terms.source, terms.target) if type(terms) is Move else (terms.seller, terms.buyer)
        for party in parties:
            c = counts.setdefault(party, [0, 0, 0, 0])
            if outcome.status == SETTLED:
                c[0] += 1
                c[3] += outcome.settled_at - outcome.queued_at
            elif outcome.status == FAILED:
                c[1] += 1
            else:
                c[2] += 1
    rows: dict[str, ParticipantRow] = {}
    for party in sorted(counts):
        held: dict[str, dict[str, str]] = {}
        names = {a for (p, a) in opening if p == party} | set(closing.get(party, {})) | set(escrow.get(party, {}))
        for asset in sorted(names):
            decimals = assets[asset].decimals
            figures = {"opening": format_minor(opening.get((party, asset), 0), decimals),
                       "closing": format_minor(closing.get(party, {}).get(asset, 0), decimals),
                       "escrow": format_minor(escrow.get(party, {}).get(asset, 0), decimals)}
            position = positions.get((party, asset))
            if position is not None:
                figures.update(lowest=format_minor(position.lowest, decimals),
                               drawn=format_minor(position.opening - position.lowest, decimals),
                               sent=format_minor(position.sent, decimals),
                               received=format_minor(position.received, decimals))
            held[asset] = figures
        settled, failed, queued, delay = counts[party]
        rows[party] = ParticipantRow(balances=held, settled=settled, failed=failed, queued=queued,
                                     delay_seconds_mean=f"{delay / settled:.3f}" if settled else "0")
    return rows


def participant_cells(rows: dict[str, ParticipantRow]) -> list[list[Any]]:
    out = []
    for party, row in rows.items():
        for asset, figures in row.balances.items():
            out.append([party, asset, figures["opening"], figures["closing"], figures["escrow"],
                        figures.get("lowest", ""), figures.get("drawn", ""), figures.get("sent", ""),
                        figures.get("received", ""), row.settled, row.failed, row.queued, row.delay_seconds_mean])
    return out


def write_csv(path: str, columns: tuple[str, ...], rows) -> None:
    """A CSV table, whole or not at all."""
    with atomic_file(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for cells in rows:
            writer.writerow(cells)


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb"):
    """Write `path` through a temporary file beside it, renamed into place once whole (removed on failure)."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, mode, **({"newline": "", "encoding": "utf-8"} if "b" not in mode else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    _remove_orphans(path)


def _remove_orphans(path: str) -> None:
    """Remove the temporary files a killed writer of `path` left (their process is gone)."""
    folder, name = os.path.split(os.path.abspath(path))
    prefix = f"{name}.tmp-"
    for other in os.listdir(folder):
        pid = other[len(prefix):]
        if not other.startswith(prefix) or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, other))
        except OSError:
            pass  # alive (another user's process): not ours to remove
