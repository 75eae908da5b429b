"""Atomic delivery versus payment, gross (BIS model 1).

A DvP moves `quantity` of a security from seller to buyer and `amount` of a
cash asset from buyer to seller in one atomic step, or neither.

Instructions arrive either jointly signed by both parties (`Settle`) or one
side at a time (`Instruct`), each signed by its own party; two one-sided
instructions match when trade id, security, quantity, cash asset, amount,
counterparties and intended settlement time (`settle_at`) are all equal.

A matched trade settles at once if both parties have the assets available
and neither is frozen or inactive. Otherwise it joins the settlement queue
(FIFO by arrival), waiting on the leg that blocked it, and is recycled
whenever that balance rises (right after the command that raised it
commits): the trades the account now covers are retried in arrival order,
each checking first the leg it waits on. A trade blocked by a frozen or
suspended party waits on no account: the engine's notice that the freeze
or suspension lifted (`unfrozen`, `reinstated`) retries it at once, in
arrival order (it settles, or waits on the leg it still lacks). The liquidity-saving
pass — bilateral offsetting (per pair of parties), then multilateral —
settles a set of trades together although none could alone. It runs when
ledger time leaves an instant, if trades queued since its last run and at
least `dvp.offset_interval` seconds (default 300) passed since then, as an
RTGS runs its optimisation periodically; and always at the cut-off.

The offsetting algorithm (`offsetting`) is the classic iterative removal
of RTGS liquidity-saving mechanisms (Bech & Soramäki 2001).

Two settings (operator `SetConfig`) give the simpler RTGS models for
studies; by default both are on, and a journal that never sets them
replays as before:

- `dvp.queue` = `false`: no settlement queue. A trade that cannot settle
  when it is due fails at once: its `Settle` (or matching `Instruct`)
  returns OK and a `failed` event follows, with the reason and, when a
  party was short of funds, who lacked what and by how much, as at the
  cut-off. (Partial settlement does not apply then.)
- `dvp.offsetting` = `false`: no liquidity-saving pass, neither
  periodically nor at the cut-off; queued trades settle only by
  recycling.

At the cut-off every queued trade fails with `insufficient_securities`,
`insufficient_cash`, `party_frozen` or `party_inactive`, and every
unmatched instruction fails as `unmatched`. A party may cancel its
instruction while it waits. Optional partial settlement (config
`dvp.partial_settlement` = `true`) settles the part the parties can cover
and leaves the rest queued.

Trade ids are unique per pair of parties: the book keys each trade by
seller, buyer and id (`trade_key`), so one pair's id never blocks or
matches another pair's trade.

Events (in the entry): `unmatched`, `queued`, `settled`,
`partially_settled`, `failed`, `cancelled`, each with the trade id as
`ref`. A `Settle` that settles at once emits nothing: its OK result says so.

The package's modules, in the order events happen: `records` (codes,
commands, the book), `handlers` (the commands), `book` (settling,
queueing, retrying), `recycling` (retrying what a credit can cover),
`offsetting` (the liquidity pass). This module holds the protocol class.
"""

from __future__ import annotations

import msgspec

from engine import codes as C
from engine.protocol import Handler, Protocol, QueryAnswer
from engine.records import Command
from engine.state import State, Timer

from .book import (
    blocking_code,
    book_of,
    config_int,
    fail_now,
    keys_of,
    offsetting_enabled,
    queue_enabled,
    rebuild_trade_keys,
    rebuild_waitlists,
    retry_blocked,
    sweep_blocked,
    sweep_waitlists,
    try_queued,
)
from .handlers import (
    cancel,
    instruct,
    run_cutoff,
    schedule_cutoff,
    settle,
    validate_trade,
)
from .handlers import cutoff as _cutoff
from .offsetting import liquidity_pass, offset_select
from .records import (
    CODES,
    INSUFFICIENT_CASH,
    INSUFFICIENT_SECURITIES,
    NAME,
    NOT_YET,
    OFFSET_INTERVAL_KEY,
    OFFSET_INTERVAL_SECONDS_DEFAULT,
    OFFSET_TRADES_MAX,
    OFFSETTING_KEY,
    PARTIAL_KEY,
    PARTY_FROZEN,
    PARTY_INACTIVE,
    QUEUE_KEY,
    REASONS,
    SAME_PARTY,
    TRADE_EXISTS,
    UNKNOWN_TRADE,
    WRONG_ASSET_KIND,
    Book,
    Cancel,
    Cutoff,
    Instruct,
    ScheduleCutoff,
    Settle,
    Trade,
    Waiting,
    trade_key,
)
from .recycling import on_rise, recycle_all

__all__ = [
    "CODES",
    "INSUFFICIENT_CASH",
    "INSUFFICIENT_SECURITIES",
    "NAME",
    "NOT_YET",
    "OFFSETTING_KEY",
    "OFFSET_INTERVAL_KEY",
    "OFFSET_INTERVAL_SECONDS_DEFAULT",
    "OFFSET_TRADES_MAX",
    "PARTIAL_KEY",
    "PARTY_FROZEN",
    "PARTY_INACTIVE",
    "QUEUE_KEY",
    "REASONS",
    "SAME_PARTY",
    "TRADE_EXISTS",
    "UNKNOWN_TRADE",
    "WRONG_ASSET_KIND",
    "Book",
    "Cancel",
    "Cutoff",
    "DvP",
    "Instruct",
    "ScheduleCutoff",
    "Settle",
    "Trade",
    "Waiting",
    "blocking_code",
    "cancel",
    "config_int",
    "instruct",
    "liquidity_pass",
    "offset_select",
    "recycle_all",
    "run_cutoff",
    "schedule_cutoff",
    "settle",
    "trade_key",
    "validate_trade",
]


class DvP(Protocol):
    name = NAME
    reserved_prefixes = ("dvp:",)  # its escrow names: the engine refuses them in Hold, Release, ...
    # 2: trades keyed by seller, buyer and id; 3: a recycled trade checks the leg it waits on first;
    # 4: an unfreeze or reinstatement retries the queued trades the block left waiting on no account
    version = 4
    state_type = Book
    codes = CODES

    def handlers(self) -> dict[type[Command], Handler]:
        return {Settle: settle, Instruct: instruct, Cancel: cancel, Cutoff: _cutoff, ScheduleCutoff: schedule_cutoff}

    def on_due(self, state: State, timer: Timer) -> int:
        if timer.kind == "cutoff":
            run_cutoff(state)
        elif timer.kind == "settle":
            book = book_of(state)
            t = book.queue.get(timer.ref)
            if t is not None:
                code = try_queued(state, t, "settlement_time")
                if code and not queue_enabled(state):  # no queue: due and unable to settle, it fails now
                    state.pop(book.queue, timer.ref)
                    fail_now(state, t, code)
        return C.OK

    def on_rise(self, state: State, accounts: list[tuple[str, str]]) -> None:
        """Recycle, in FIFO order, the queued trades the risen accounts can now cover (`recycling`)."""
        on_rise(state, accounts)

    def on_time(self, state: State) -> None:
        book = book_of(state)
        if not (book.counters.get("dirty") and book.queue) or not offsetting_enabled(state):
            return
        interval = config_int(state, OFFSET_INTERVAL_KEY, OFFSET_INTERVAL_SECONDS_DEFAULT)
        if state.now - book.counters.get("offset_at", 0) < interval:
            return
        state.put(book.counters, "dirty", 0)
        state.put(book.counters, "offset_at", state.now)
        liquidity_pass(state)

    def after_batch(self, state: State) -> None:
        rebuild_trade_keys(state)
        sweep_waitlists(state)
        sweep_blocked(state)

    def on_notice(self, state: State, topic: str, key: str) -> None:
        """A freeze or suspension of `key` lifted: retry the trades it blocked (they wait on no account)."""
        if topic in ("unfrozen", "reinstated"):
            retry_blocked(state, key)

    def loaded(self, state: State) -> None:
        rebuild_waitlists(state)

    # ------------------------------------------------------------------ reads

    query_kinds = ("trade",)
    record_outcomes = {"settled": "settled", "failed": "failed", "cancelled": "cancelled"}

    def query(self, state: State, kind: str, key: str) -> list[QueryAnswer]:
        """The queued and unmatched trades with trade id `key` (one per pair of parties), found through an
        index of trade ids (not a scan of the book)."""
        from engine.protocol import QueryAnswer

        if kind != "trade":
            return []
        book = book_of(state)
        found = []
        for tkey in keys_of(state, key):
            t = book.queue.get(tkey)
            if t is not None and t.trade == key:
                found.append(QueryAnswer(kind="trade", key=key, status="queued", parties=(t.seller, t.buyer),
                                         record=msgspec.structs.asdict(t)))
        for tkey in keys_of(state, key):
            for side in ("deliver", "receive"):
                waiting = book.unmatched.get(f"{tkey}/{side}")
                if waiting is not None and waiting.trade.trade == key:
                    t = waiting.trade
                    found.append(QueryAnswer(kind="trade", key=key, status="unmatched", parties=(t.seller, t.buyer),
                                             record={**msgspec.structs.asdict(t), "side": waiting.side}))
        return found

    def record_of(self, command: Command) -> QueryAnswer | None:
        """A Settle or Instruct names its trade and both parties; a Cancel its trade (and the parties, if named)."""
        from engine.protocol import QueryAnswer

        if isinstance(command, (Settle, Instruct)):
            fields = msgspec.structs.asdict(command)
            record = {name: fields[name] for name in ("trade", "seller", "buyer", "security", "quantity",
                                                       "cash_asset", "amount", "settle_at")}
            return QueryAnswer(kind="trade", key=command.trade, status="settled",
                               parties=(command.seller, command.buyer), record=record)
        if isinstance(command, Cancel):
            parties = (command.seller, command.buyer) if command.seller and command.buyer else ()
            return QueryAnswer(kind="trade", key=command.trade, status="cancelled", parties=parties)
        return None
