"""Replay a recorded trade file through the ledger, and report what happened.

The replay is a pipeline of stages, each a module that takes the previous
stage's records and gives its own, with errors as data (`BadLine`: a line
number and a reason) so one bad line never stops the rest:

    read     the file's bytes     -> typed events, or BadLine        (read.py)
    resolve  set-up events        -> the file's names, first batches (setup.py; pure: no ledger)
             timed events         -> engine commands, or BadLine     (resolve.py; pure: no ledger)
    batch    commands             -> encoded batches, then envelopes  (batch.py)
    apply    batches              -> result codes and events          (apply.py; one ledger per chain)
    account  codes and events     -> one TradeOutcome per trade       (account.py)
    report   outcomes and ledgers -> the report's JSON                (report.py)

`drivers.py` runs them, in one process or with a forked parser process;
`cli.py` is `dvp replay`. Keys are derived from the participants' ids and
batches have a fixed size, so replaying a file twice gives the same journal
and the same `head` and `state` hashes; an interrupted durable replay
resumes (`resume=True`) to exactly what an uninterrupted one gives.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from typing import Any

from . import report as report_stage
from .account import Accounts, TradeOutcome
from .apply import ResumeError
from .batch import BATCH_COMMANDS
from .drivers import PIPELINE_BYTES_MIN, Options, Prepared, run_inline, run_pipelined
from .setup import ISSUER, OPERATOR, ORACLE, RESERVED

__all__ = ["BATCH_COMMANDS", "ISSUER", "OPERATOR", "ORACLE", "RESERVED", "Replay", "ResumeError", "TradeOutcome",
           "register", "replay"]


class Replay:
    """A finished replay: its outcomes, its ledgers (until `close`), and its report."""

    def __init__(self, prepared: Prepared, books: dict[str, Any] | None = None):
        self._prepared = prepared
        self._summary: dict[str, Any] | None = None
        self.trade_count: int
        if books is not None and "summary" in books:  # the parser process wrote the report or tables, kept the rows
            self._summary = books["summary"]
            prepared.accounts.rejected = books["rejected"]
            self.trade_count = books["trades"]
        else:
            if books is not None:
                prepared.accounts = books["accounts"]
            self.trade_count = len(prepared.accounts.trades)

    @property
    def path(self) -> str:
        return self._prepared.options.path

    @property
    def mode(self) -> str:
        return self._prepared.setup.mode

    @property
    def db(self) -> str | None:
        return self._prepared.options.db

    @property
    def accounts(self) -> Accounts:
        return self._prepared.accounts

    @property
    def trades(self) -> dict[str, TradeOutcome]:
        return self._prepared.accounts.trades

    @property
    def rejected(self) -> list:
        return self._prepared.accounts.rejected

    @property
    def events_read(self) -> int:
        return self._prepared.plan.lines

    @property
    def ledger(self):
        """The main chain's ledger (open until `close`)."""
        return self._prepared.chains.main.ledger

    @property
    def chains(self):
        return self._prepared.chains

    def summary(self) -> dict[str, Any]:
        """The report's `metrics`."""
        if self._summary is None:
            self._summary = report_stage.summary(self.accounts, self._prepared.inputs())
        return self._summary

    def report(self) -> dict[str, Any]:
        """The whole report as one dict."""
        return report_stage.build(self.accounts, self._prepared.inputs())

    def write_report(self, path: str) -> None:
        report_stage.write(self.accounts, self._prepared.inputs(), path)

    def close(self) -> None:
        self._prepared.chains.close()


def _write_tables(accounts: Accounts, inputs, tables: dict[str, str | None]) -> None:
    if tables.get("trades_csv"):
        report_stage.write_trades_csv(accounts, inputs, tables["trades_csv"])
    if tables.get("participants_csv"):
        report_stage.write_participants_csv(accounts, inputs, tables["participants_csv"])


def _write_then_summarise(report_path: str | None, tables: dict[str, str | None], keep_rows: bool = True):
    """What the parser process does at the end: write the report and tables (if asked), and say what the
    parent needs: the rows themselves only if nothing was written and the caller keeps them (pickling a
    day's rows back costs seconds)."""

    def finish(prepared: Prepared) -> bytes:
        if report_path is None and not any(tables.values()) and keep_rows:
            return pickle.dumps({"accounts": prepared.accounts})
        inputs = prepared.inputs()
        _write_tables(prepared.accounts, inputs, tables)
        if report_path is not None:
            report_stage.write(prepared.accounts, inputs, report_path)
        return pickle.dumps({"summary": report_stage.summary(prepared.accounts, inputs),
                             "rejected": prepared.accounts.rejected, "trades": len(prepared.accounts.trades)})

    return finish


def replay(path: str, *, mode: str | None = None, db: str | None = None, fmt: str | None = None,
           batch_commands: int = BATCH_COMMANDS, progress=None, pipeline: bool | None = None,
           report: str | None = None, resume: bool = False, overwrite: bool = False,
           trades_csv: str | None = None, participants_csv: str | None = None, keep_rows: bool = True) -> Replay:
    """Replay a trade file; return the finished `Replay` (close it to release its journals).

    `db` keeps the main chain's journal there (a SQLite path or a
    `postgresql://` URL; other chains beside it). An existing journal is
    refused unless `resume` (continue it) or `overwrite` (start over).
    With `report`, the JSON report is written there (by the parser process
    when pipelined, which then keeps the per-trade rows to itself: use
    `.summary()`); without it, call `.report()` or `.write_report()`.
    `trades_csv` and `participants_csv` write the tables there (one row per
    trade; one per participant and asset). `keep_rows=False` says the caller
    needs only the summary, so a parser process keeps its rows to itself.
    `progress`, if given, is called
    with (timed events done, of how many).
    """
    if mode not in (None, "gross", "net"):
        raise ValueError(f"mode must be gross or net, not {mode!r}")
    if batch_commands < 1:
        raise ValueError("batch_commands must be positive")
    options = Options(path=path, mode=mode, db=db, fmt=fmt, batch_commands=batch_commands, pipeline=pipeline,
                      report=report, resume=resume, overwrite=overwrite, progress=progress)
    prepared = Prepared(options)
    try:
        if pipeline is None:
            pipeline = os.path.getsize(path) >= PIPELINE_BYTES_MIN and "fork" in multiprocessing.get_all_start_methods()
        if prepared.setup.chains:
            pipeline = False  # cross-chain swaps drive several ledgers from this process
        tables = {"trades_csv": trades_csv, "participants_csv": participants_csv}
        if pipeline:
            books = pickle.loads(run_pipelined(prepared, _write_then_summarise(report, tables, keep_rows)))
            run = Replay(prepared, books)
        else:
            run_inline(prepared)
            run = Replay(prepared)
            _write_tables(prepared.accounts, prepared.inputs(), tables)
            if report is not None:
                run.write_report(report)
    except BaseException:
        prepared.chains.close()
        raise
    return run


def register(subparsers) -> None:
    """Add `dvp replay` to the `dvp` command (entry point `dvp.commands`)."""
    from .cli import register as add

    add(subparsers)
