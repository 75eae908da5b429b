"""Workload: a trade file read once for the study, and the derived files each run replays.

Takes a recorded or generated trade file (JSON Lines or CSV, the format of
docs/formats.md) of one settlement day; gives a `Workload`: its configuration, its
set-up (assets, participants), its own deposits, its timed events (kept
in file order in a JSON Lines file of their own, so every derived file
copies them as they are), its cut-off, and per participant the most it
could pay or deliver over the day (`ample_cash`, `ample_securities`).

`write_derived` writes the file one study run replays: the workload's
timed events under another configuration (a settlement model) and other
opening balances (a point of the frontier). The replay itself is
untouched: every model runs the real engine and protocols on a real file.

What the study refuses, with the line and the reason (`StudyError`): a file
with more than one cut-off, a trade after the cut-off, a cross-chain
trade, a file without trades.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from array import array
from fractions import Fraction
from typing import Any

import msgspec

from engine.machine import AMOUNT_MAX
from protocols.replay.read import TradeFile
from protocols.tradefile import BadLine, format_minor, format_time, parse_time, to_minor

_enc = msgspec.json.encode
MODEL_FIELDS = ("mode", "netting_cycle", "bilateral", "queue", "offsetting")  # a model sets these
SECONDS_PER_DAY = 86_400


class StudyError(Exception):
    """The study cannot run on this input: one line saying why."""


class Workload:
    """A trade file of one settlement day, read once; `close` removes its temporary copy of the timed events."""

    def __init__(self, path: str):
        self.path = path
        self.config: dict[str, Any] = {}  # the file's config fields (last value of each wins), as written
        self.setup: list[bytes] = []  # asset and participant events, JSON
        self.assets: dict[str, tuple[str, int]] = {}  # id -> (kind, decimals)
        self.participants: list[str] = []
        self.deposits: dict[tuple[str, str], int] = {}  # (participant, asset) -> the file's opening, minor units
        self.counts: dict[str, int] = {}  # timed events by type
        self.unreadable = 0  # lines that do not decode (every replay of the file rejects them too)
        self.first_at = 0
        self.last_at = 0
        self.cutoff_at = 0
        self.cutoff_in_file = False  # a timed cutoff event: the derived config then sets none
        self.ample_cash: dict[tuple[str, str], int] = {}  # the most each could pay over the day
        self.ample_securities: dict[tuple[str, str], int] = {}  # the most each could deliver
        self.cash_deliveries = 0  # free-of-payment deliveries of cash
        self._last_trade = (0, 0)  # (time, line) of the latest trade
        self._dir = tempfile.mkdtemp(prefix="dvp-study-")
        self.timed_path = os.path.join(self._dir, "timed.jsonl")
        self.timed_lines = array("q")  # the source line of each timed event, in the order they are kept

    # ------------------------------------------------------------ reading

    @classmethod
    def read(cls, path: str) -> Workload:
        workload = cls(path)
        try:
            workload._read()
        except BaseException:
            workload.close()
            raise
        return workload

    def _read(self) -> None:
        source = TradeFile(self.path)
        cutoffs: set[int] = set()
        late: list[tuple[int, Any]] = []  # timed events naming an asset defined further down
        repo_borrowers: dict[str, str] = {}
        jsonl = source.fmt == "jsonl"
        with open(self.timed_path, "wb") as timed:
            for number, _offset, payload in source.lines():
                if type(payload) is BadLine:
                    self.unreadable += 1
                    continue
                try:
                    ev = source.decode(payload)
                except ValueError:
                    self.unreadable += 1
                    continue
                tag = ev.__struct_config__.tag
                if tag == "config":
                    for field, value in msgspec.structs.asdict(ev).items():
                        if value is not None:
                            self.config[field] = value
                    continue
                if tag in ("asset", "participant"):
                    self.setup.append(_enc(ev))
                    if tag == "asset":
                        if ev.chain != "main":
                            raise StudyError(f"{self.path}: line {number}: asset {ev.id} is on chain {ev.chain!r}; "
                                             "the study runs one ledger (no cross-chain trades)")
                        self.assets.setdefault(ev.id, (ev.kind, ev.decimals))
                    elif ev.id not in self.participants:
                        self.participants.append(ev.id)
                    continue
                if tag == "deposit":
                    late.append((number, ev))
                    continue
                try:
                    at = parse_time(ev.at)
                except ValueError:
                    self.unreadable += 1
                    continue
                timed.write((payload if jsonl else _enc(ev)) + b"\n")
                self.timed_lines.append(number)
                self.counts[tag] = self.counts.get(tag, 0) + 1
                self.first_at = at if not self.first_at else min(self.first_at, at)
                self.last_at = max(self.last_at, at)
                if tag == "cutoff":
                    cutoffs.add(at)
                    self.cutoff_in_file = True
                    continue
                if not self._need(number, ev, at, repo_borrowers):
                    late.append((number, ev))
        for number, ev in late:
            if ev.__struct_config__.tag == "deposit":
                self._deposit(ev)
            else:
                self._need(number, ev, parse_time(ev.at), repo_borrowers)
        if "cutoff" in self.config:
            cutoffs.add(parse_time(self.config["cutoff"], "cutoff"))
        if len(cutoffs) > 1:
            times = ", ".join(format_time(t) for t in sorted(cutoffs))
            raise StudyError(f"{self.path}: the study takes one settlement day; this file has cut-offs at {times}")
        if not self.counts.get("dvp"):
            raise StudyError(f"{self.path}: no dvp trades to study")
        self.cutoff_at = cutoffs.pop() if cutoffs else self.last_at
        at, line = self._last_trade
        if at > self.cutoff_at:
            raise StudyError(f"{self.path}: line {line}: a trade at {format_time(at)}, after the cut-off "
                             f"({format_time(self.cutoff_at)}); the study takes one settlement day")
        for asset in self.cash:
            total = sum(v for (_p, a), v in self.ample_cash.items() if a == asset)
            if total > AMOUNT_MAX:
                raise StudyError(f"{self.path}: the day's gross payments in {asset} pass what the ledger can hold")

    def _deposit(self, ev: Any) -> None:
        info = self.assets.get(ev.asset)
        if info is None or ev.participant not in self.participants:
            return  # the replay rejects it, with its line
        try:
            amount = to_minor(ev.amount, info[1], "amount", positive=False)
        except ValueError:
            return
        key = (ev.participant, ev.asset)
        self.deposits[key] = self.deposits.get(key, 0) + amount

    def _need(self, number: int, ev: Any, at: int, repo_borrowers: dict[str, str]) -> bool:
        """Add what a timed event could make its parties pay or deliver; False if it names an asset not yet seen."""
        tag = ev.__struct_config__.tag
        if tag in ("price", "cutoff"):
            return True
        if at >= self._last_trade[0]:
            self._last_trade = (at, number)
        names = {"dvp": (ev, "security", "cash_asset"), "repo": (ev, "collateral", "cash_asset"),
                 "deliver": (ev, "asset", None), "substitute": (ev, "collateral", None)}.get(tag)
        if names is None:
            return True
        assets = [getattr(ev, f) for f in names[1:] if f]
        if any(a not in self.assets for a in assets):
            return False
        try:
            if tag == "dvp":
                if self.assets[ev.security][0] != "security" or self.assets[ev.cash_asset][0] != "cash":
                    return True
                self._add(self.ample_securities, ev.seller, ev.security, self._minor(ev.quantity, ev.security))
                self._add(self.ample_cash, ev.buyer, ev.cash_asset, self._minor(ev.amount, ev.cash_asset))
            elif tag == "deliver":
                book = self.ample_cash if self.assets[ev.asset][0] == "cash" else self.ample_securities
                self.cash_deliveries += book is self.ample_cash
                self._add(book, ev.source, ev.asset, self._minor(ev.amount, ev.asset))
            elif tag == "repo":
                principal = self._minor(ev.principal, ev.cash_asset)
                seconds = max(0, parse_time(ev.end, "end") - at)
                rate = Fraction(str(ev.rate))
                interest = -(-principal * rate * seconds // (360 * SECONDS_PER_DAY)) + 1  # ACT/360 or less, rounded up
                repo_borrowers.setdefault(ev.id, ev.borrower)
                self._add(self.ample_cash, ev.lender, ev.cash_asset, principal)
                self._add(self.ample_cash, ev.borrower, ev.cash_asset, 2 * (principal + interest))  # margin, close
                self._add(self.ample_securities, ev.borrower, ev.collateral, self._minor(ev.quantity, ev.collateral))
            elif tag == "substitute" and ev.repo in repo_borrowers:
                self._add(self.ample_securities, repo_borrowers[ev.repo], ev.collateral,
                          self._minor(ev.quantity, ev.collateral))
        except (ValueError, ZeroDivisionError):
            return True  # the replay rejects the line, with its reason
        return True

    def _minor(self, value: Any, asset: str) -> int:
        return to_minor(value, self.assets[asset][1], "amount")

    @staticmethod
    def _add(book: dict[tuple[str, str], int], party: str, asset: str, amount: int) -> None:
        key = (party, asset)
        book[key] = book.get(key, 0) + amount

    # ------------------------------------------------------------ figures

    @property
    def cash(self) -> list[str]:
        return sorted(a for a, (kind, _d) in self.assets.items() if kind == "cash")

    @property
    def securities(self) -> list[str]:
        return sorted(a for a, (kind, _d) in self.assets.items() if kind == "security")

    @property
    def trades(self) -> int:
        return self.counts.get("dvp", 0)

    @property
    def pure_dvp(self) -> bool:
        """Only DvPs move cash (no repos, no free-of-payment cash deliveries): netting can net every cash flow."""
        return not self.counts.get("repo") and not self.cash_deliveries

    def decimals(self, asset: str) -> int:
        return self.assets[asset][1]

    def deposits_of(self, assets: list[str]) -> dict[tuple[str, str], int]:
        """The file's own deposits in `assets`."""
        wanted = set(assets)
        return {k: v for k, v in self.deposits.items() if k[1] in wanted}

    def ample(self) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
        """Openings under which nothing can be short: cash, securities."""
        return dict(self.ample_cash), dict(self.ample_securities)

    def describe(self) -> dict[str, Any]:
        """The workload's parameters, for the results."""
        return {"path": os.path.abspath(self.path), "bytes": os.path.getsize(self.path),
                "participants": len(self.participants), "cash_assets": self.cash, "securities": len(self.securities),
                "events": dict(sorted(self.counts.items())), "unreadable_lines": self.unreadable,
                "first_at": format_time(self.first_at) if self.first_at else None,
                "cutoff": format_time(self.cutoff_at), "config": self.config}

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def model_config(workload: Workload, overrides: dict[str, Any]) -> dict[str, Any]:
    """The workload's config with a model's settings in place of the file's own."""
    config = {k: v for k, v in workload.config.items() if k not in MODEL_FIELDS and k != "cutoff"}
    if not workload.cutoff_in_file:
        config["cutoff"] = format_time(workload.cutoff_at)
    config.update(overrides)
    return config


def write_derived(workload: Workload, path: str, *, config: dict[str, Any], cash: dict[tuple[str, str], int],
                  securities: dict[tuple[str, str], int]) -> int:
    """Write a trade file: `config`, the workload's set-up, these openings, then its timed events.

    Every participant gets a deposit line in every cash asset (a zero one
    declares the account); securities only where the opening is positive.
    Return the number of lines before the timed events (`source_line` maps
    a derived line back to the workload's file).
    """
    lines = [_enc({"type": "config", **config}), *workload.setup]
    for party in sorted(workload.participants):
        for asset in workload.cash:
            amount = cash.get((party, asset), 0)
            lines.append(_enc({"type": "deposit", "participant": party, "asset": asset,
                               "amount": format_minor(amount, workload.decimals(asset))}))
        for asset in workload.securities:
            amount = securities.get((party, asset), 0)
            if amount > 0:
                decimals = workload.decimals(asset)
                lines.append(_enc({"type": "deposit", "participant": party, "asset": asset,
                                   "amount": amount if not decimals else format_minor(amount, decimals)}))
    with open(path, "wb") as out:
        out.write(b"\n".join(lines) + b"\n")
        with open(workload.timed_path, "rb") as timed:
            shutil.copyfileobj(timed, out, 1 << 20)
    return len(lines)


def source_line(workload: Workload, head: int, line: int) -> int:
    """The workload file's line for line `line` of a derived file with `head` lines before its timed events."""
    k = line - head - 1
    return workload.timed_lines[k] if 0 <= k < len(workload.timed_lines) else 0
