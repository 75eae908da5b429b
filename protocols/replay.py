"""Replay a recorded trade file through the ledger and report what happened.

The driver reads a trade file (`protocols.tradefile`), applies the setup
events, then the timed events in `at` order, as signed batches: each batch
is one envelope signed once by every party it needs (the operator for time
and cut-offs, the oracle for prices, both parties of each trade). Keys are
derived from the participants' ids, and batches have a fixed size, so two
replays of one file give the same ledger `head` and `state` hashes.

Ledger time moves with `Tick` commands inside a batch, so a batch may span
many ledger seconds and every trade is applied at its own `at`.

Gross mode submits each `dvp` as a jointly signed `dvp.Settle`; net mode as
a `netting.Obligate` in the open cycle, closed every `netting_cycle` (UTC
multiples) and at each cut-off. A line that fails validation is rejected
with its line number and a one-line reason and changes nothing.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import msgspec

from engine import codes as C
from engine.identity import Signer, derive_key, payload_digest
from engine.ledger import Ledger, ManualClock
from engine.records import (
    ROLE_ISSUER,
    ROLE_ORACLE,
    ROLE_PARTICIPANT,
    ROLES,
    Admit,
    Asset,
    Command,
    Envelope,
    Event,
    Mint,
    Move,
    RegisterAsset,
    SetConfig,
    Tick,
)

from . import collateral as collateral_protocol
from . import dvp as dvp_protocol
from . import htlc as htlc_protocol
from . import swap as swap_protocol
from . import netting as net_protocol
from . import prices as price_protocol
from . import repo as repo_protocol
from .tradefile import _TIME_CACHE
from .tradefile import _json_decoder as _json_event_decoder
from .tradefile import (
    AssetEvent,
    BadLine,
    ConfigEvent,
    CutoffEvent,
    DeliverEvent,
    DepositEvent,
    DvpEvent,
    ParticipantEvent,
    PriceEvent,
    RepoEvent,
    SubstituteEvent,
    TradeFile,
    format_minor,
    format_time,
    parse_duration,
    parse_time,
    to_minor,
)

CHAIN = "main"
OPERATOR = "replay.operator"
ISSUER = "replay.issuer"
ORACLE = "replay.oracle"
RESERVED = frozenset({OPERATOR, ISSUER, ORACLE})
BATCH_COMMANDS = 65_536
PROGRESS_BYTES_MIN = 4_000_000
SETUP_EVENTS = frozenset({AssetEvent, ParticipantEvent, DepositEvent, ConfigEvent})
PIPELINE_BYTES_MIN = 2_000_000
QUANTITY_FAST_MAX = 1 << 62
SWAP_TIMEOUT_DEFAULT = 3600  # seconds: a participant's timeout for a cross-chain swap (T1 = 2 x timeout)  # a whole-unit quantity up to this needs no conversion for 0-decimal securities  # below this a parser process costs more than it saves  # about a second of replay: show a progress bar above this

SETTLED, FAILED, QUEUED = "settled", "failed", "queued"
_encode = msgspec.msgpack.Encoder().encode
_decode_message = msgspec.msgpack.Decoder().decode
_decode_events = msgspec.msgpack.Decoder(list[Event]).decode


def _pump(connection, into: queue.Queue) -> None:
    """Move messages from a pipe into a queue (a reader thread, so neither side blocks the other)."""
    try:
        while True:
            into.put(_decode_message(connection.recv_bytes()))
    except (EOFError, OSError):
        into.put(("eof",))  # the ledger process has gone: wake whoever waits


def replay_protocols() -> list:
    return [collateral_protocol.Collateral(), dvp_protocol.DvP(), htlc_protocol.HTLC(), net_protocol.Netting(),
            price_protocol.Prices(), repo_protocol.Repos()]


# A refused opening leg is a repo that failed (reported as a trade), not a bad line.
REPO_FAILURES = {
    repo_protocol.INSUFFICIENT_COLLATERAL: "insufficient_collateral",
    collateral_protocol.INELIGIBLE: "ineligible_collateral",
    repo_protocol.NO_PRICE: "no_price",
    dvp_protocol.INSUFFICIENT_SECURITIES: "insufficient_securities",
    dvp_protocol.INSUFFICIENT_CASH: "insufficient_cash",
}


def _signer(participant: str) -> Signer:
    return Signer(participant, derive_key(f"replay/{CHAIN}/{participant}"), CHAIN)


class Replay:
    """One replay: the ledger, the trades' outcomes, and the report figures."""

    def __init__(self, path: str, mode: str | None, db: str | None, fmt: str | None, batch_commands: int):
        self.file = TradeFile(path, fmt)
        self.path = path
        self.cli_mode = mode
        self.mode = mode or "gross"
        self.db = db
        self.batch_commands = batch_commands
        self.rejected: list[BadLine] = []
        self.events_read = 0
        self.assets: dict[str, Asset] = {}
        self.asset_events: dict[str, AssetEvent] = {}
        self.participants: dict[str, Signer] = {}
        self.signers = {name: _signer(name) for name in RESERVED}
        # trade id -> [kind, status, time, reason, at]
        self.trades: dict[str, list[Any]] = {}
        self.cycle_members: list[tuple[str, str, str]] = []
        self.cycles: list[dict[str, str]] = []
        self.margin_calls: dict[str, dict[str, Any]] = {}  # "repo#n" -> the call, in issue order
        self.margin_returned: dict[str, int] = {}
        self.repo_borrowers: dict[str, str] = {}
        self.seen: set[str] = set()  # trade ids met so far in the file
        self.gross_value: dict[str, int] = {}
        self.settled_value: dict[str, int] = {}
        self.delay_seconds = 0
        self.delay_max = 0
        self.batch: list[Command] = []
        self.batch_meta: list[tuple | None] = []  # (kind, line, ref, at[, cash, amount, seller, buyer])
        self._pipe: Any = None  # set in the parser process of a pipelined replay
        self._results: Any = None  # the parser process's queue of batch results
        self._inflight: collections.deque = collections.deque()  # metas of batches sent, awaiting results
        self._info: dict[str, Any] | None = None  # ledger figures, when the ledger is in another process
        self._summary: dict[str, Any] | None = None
        self._trade_count: int | None = None
        self.report_path: str | None = None  # where the parser process writes the report
        self._offset = 0
        self.batch_signers: set[str] = set()
        self.now = 0
        self.config = ConfigEvent()
        self.cutoff_at: int | None = None
        self.ledger: Ledger | None = None
        self.chains: dict[str, Ledger] = {}  # ledgers of the other chains (cross-chain DvP), by chain id
        self.chain_signers: dict[str, dict[str, Signer]] = {}

    # ------------------------------------------------------------ batches

    def _add(self, cmd: Command, signers: tuple[str, ...], meta: tuple | None) -> None:
        batch = self.batch
        batch.append(cmd)
        self.batch_meta.append(meta)
        for signer in signers:
            self.batch_signers.add(signer)
        if len(batch) >= self.batch_commands:
            self.flush()

    def _tick(self, at: int) -> None:
        if at > self.now:
            self.now = at
            self._add(Tick(id=f"tick:{at}", to=at), (OPERATOR,), None)

    def flush(self) -> None:
        """Encode the batch being built and hand it on (to the ledger, or to the parent process)."""
        if not self.batch:
            return
        message = (_encode(tuple(self.batch)), sorted(self.batch_signers), self.batch_meta)
        self.batch = []
        self.batch_meta = []
        self.batch_signers = set()
        if self._pipe is None:
            self.deliver(*message)
        else:  # the parser process: the ledger process applies it; the results come back here
            payload, signers, metas = message
            self._inflight.append(metas)
            self._pipe.send_bytes(_encode(("batch", payload, signers, self._offset)))
            self._take_results(block=False)

    def _take_results(self, block: bool) -> None:
        """In the parser process: record the results of applied batches (all of them if `block`)."""
        while self._inflight and (block or not self._results.empty()):
            message = self._results.get()
            if message[0] != "results":
                raise RuntimeError(f"the ledger process stopped (expected batch results, got {message[0]!r})")
            events = _decode_events(message[2])
            self._record(list(message[1]), events, self._inflight.popleft())

    def deliver(self, payload: bytes, signers: list[str], metas: list) -> None:
        """Apply a batch and record what happened to its trades."""
        results = self.apply_batch(payload, signers)
        assert self.ledger is not None
        self._record(results, self.ledger.last_events, metas)

    def apply_batch(self, payload: bytes, signers: list[str]) -> list[int]:
        """Sign a batch once for every party it needs and submit it; return the results."""
        assert self.ledger is not None
        digest = payload_digest(payload)
        signatures = []
        for name in signers:
            signer = self.participants.get(name) or self.signers[name]
            signatures.append(signer.signature_of_digest(digest))
        return self.ledger.submit([Envelope(CHAIN, payload, tuple(signatures))])

    def ledger_info(self) -> dict[str, Any]:
        """What the report needs from the ledger: balances, last net positions, hashes."""
        assert self.ledger is not None
        ledger = self.ledger
        balances = {p: dict(held) for p, held in ledger.balances().items() if p not in RESERVED}
        chains = {CHAIN: {"entries": ledger.head_seq + 1, "head": ledger.head_hash.hex(),
                          "state": ledger.digest().hex()}}
        for chain, other in sorted(self.chains.items()):
            for p, held in other.balances().items():
                if p not in RESERVED:
                    balances.setdefault(p, {}).update(held)
            chains[chain] = {"entries": other.head_seq + 1, "head": other.head_hash.hex(),
                             "state": other.digest().hex()}
        return {
            "balances": balances,
            "net_positions": dict(ledger.protocol_state(net_protocol.NAME).last_positions),
            "chains": chains,
        }

    def _record(self, results: list[int], events: list, metas: list) -> None:
        """Take a batch's results and events in the order they happened."""
        pending = iter(events)
        event = next(pending, None)
        while event is not None and event.position < 0:
            self._on_event(event)
            event = next(pending, None)
        trades = self.trades
        gross = self.mode == "gross"
        for position, (code, meta) in enumerate(zip(results, metas)):
            if meta is None:
                if code:
                    raise RuntimeError(f"replay control command refused: {C.name(code)}")
            elif gross and not code and meta[0] == "dvp" and meta[2] not in trades:
                # the common case, inline: a new trade settled at once
                # (record: kind, status, time, reason, accepted at, cash asset, amount)
                trades[meta[2]] = ["dvp", SETTLED, meta[3], None, meta[3], meta[4], meta[5]]
            else:
                self._result(code, meta)
            while event is not None and event.position <= position:
                self._on_event(event)
                event = next(pending, None)
        while event is not None:
            self._on_event(event)
            event = next(pending, None)

    def _result(self, code: int, meta: tuple) -> None:
        trades = self.trades
        kind, line, ref, at = meta[:4]
        if code == C.OK:
            if ref in trades:
                return  # the same id with the same content: idempotent, nothing changed
            if kind == "dvp":
                trades[ref] = ["dvp", SETTLED if self.mode == "gross" else QUEUED, at, None, at, meta[4], meta[5]]
                if self.mode == "net":
                    self.cycle_members.append((ref, meta[6], meta[7]))
            elif kind == "deliver":
                trades[ref] = ["deliver", SETTLED, at, None, at, None, 0]
            elif kind == "repo":
                trades[ref] = ["repo", "open", at, None, at, meta[4], meta[5], {}]
        elif kind == "repo" and code in REPO_FAILURES and ref not in trades:
            trades[ref] = ["repo", FAILED, at, REPO_FAILURES[code], at, meta[4], meta[5], {}]
        elif code == C.ID_CONFLICT:
            self.rejected.append(BadLine(line, f"{kind} {ref}: id reused with different content"))
        else:
            self.rejected.append(BadLine(line, f"{kind} {ref}: refused by the ledger: {C.name(code)}"))

    def _on_event(self, event) -> None:
        if event.protocol == dvp_protocol.NAME:
            record = self.trades.get(event.ref)
            if record is None:
                return
            if event.kind == "queued":
                record[1] = QUEUED
            elif event.kind == "settled":
                record[1] = SETTLED
                record[2] = event.at
            elif event.kind == "failed":
                record[1] = FAILED
                record[3] = event.data.get("reason", "failed")
        elif event.protocol == repo_protocol.NAME:
            self._on_repo_event(event)
        elif event.protocol == net_protocol.NAME and event.kind == "cycle_closed":
            unwound = set(filter(None, event.data.get("unwound", "").split(",")))
            for trade, seller, buyer in self.cycle_members:
                record = self.trades[trade]
                if seller in unwound or buyer in unwound:
                    record[1] = FAILED
                    record[3] = "unwound"
                else:
                    record[1] = SETTLED
                    record[2] = event.at
            self.cycle_members = []
            self.cycles.append(dict(event.data))

    def _on_repo_event(self, event) -> None:
        kind, ref, data = event.kind, event.ref, event.data
        record = self.trades.get(ref)
        if kind == "margin_call":
            self.margin_calls[f"{ref}#{data['call']}"] = {"repo": ref, "at": event.at, "amount": int(data["amount"]),
                                                      "status": "open", "met_at": None}
        elif kind == "margin_call_amended":  # the open call follows the deficit after another price move
            call = self.margin_calls.get(f"{ref}#{data['call']}")
            if call is not None:
                call["amount"] = int(data["amount"])
        elif kind in ("margin_met", "margin_default", "margin_closed", "margin_call_withdrawn"):
            call = self.margin_calls.get(f"{ref}#{data['call']}")
            if call is not None:
                call["status"] = {"margin_met": "met", "margin_default": "defaulted",
                                  "margin_call_withdrawn": "withdrawn"}.get(kind, "closed")
                if kind == "margin_met":
                    call["met_at"] = event.at
        elif record is None:
            return
        elif kind == "repo_closed":
            record[1] = "closed"
            record[2] = event.at
            record[7]["interest"] = int(data["interest"])
        elif kind == "repo_defaulted":
            record[1] = "defaulted"
            record[2] = event.at
            record[3] = data["reason"]
            record[7]["close_out"] = int(data["close_out"])
        elif kind == "margin_return":
            self.margin_returned[record[5]] = self.margin_returned.get(record[5], 0) + int(data["amount"])

    # -------------------------------------------------------------- setup

    def _reject(self, line: int, reason: str) -> None:
        self.rejected.append(BadLine(line, reason))

    def _asset(self, ref: str, field: str, kind: str | None = None) -> Asset:
        asset = self.assets.get(ref)
        if asset is None:
            raise ValueError(f"unknown asset {ref!r} in field '{field}'")
        if kind is not None and asset.kind != kind:
            raise ValueError(f"field '{field}': asset {ref!r} is not a {kind} asset")
        return asset

    def _party(self, ref: str, field: str) -> str:
        if ref not in self.participants:
            raise ValueError(f"unknown participant {ref!r} in field '{field}'")
        return ref

    def decode_setup(self, lines: list[tuple[int, int, bytes]]) -> list[tuple[int, Any]]:
        decoded = []
        for line, _offset, raw in lines:
            try:
                decoded.append((line, self.file.decode(raw)))
            except ValueError as exc:
                self._reject(line, f"{_raw_label(raw)}: {exc}")
        return decoded

    def setup(self, decoded: list[tuple[int, Any]], first_at: int) -> None:
        """Apply the setup events (config, participants, assets, deposits) before any timed one."""
        for line, ev in decoded:
            if isinstance(ev, ConfigEvent):
                try:
                    self._config(ev)
                except ValueError as exc:
                    self._reject(line, f"config: {exc}")
        if self.cli_mode is None and self.config.mode:
            self.mode = self.config.mode
        self.ledger = Ledger.create(
            self.db or ":memory:",
            chain_id=CHAIN,
            operator=OPERATOR,
            operator_key=self.signers[OPERATOR].public_key,
            clock=ManualClock(first_at),
            protocols=replay_protocols(),
            snapshot_every=0,
        )
        self.now = first_at
        control = [
            Admit(id="setup:issuer", participant=ISSUER, roles=(ROLE_ISSUER,), public_key=self.signers[ISSUER].public_key),
            Admit(id="setup:oracle", participant=ORACLE, roles=(ROLE_ORACLE,), public_key=self.signers[ORACLE].public_key),
        ]
        for cmd in control:
            self._add(cmd, (OPERATOR,), None)
        for line, ev in decoded:
            try:
                if isinstance(ev, ParticipantEvent):
                    self._participant(ev)
                elif isinstance(ev, AssetEvent):
                    self._asset_event(ev, on_main=(ev.chain or CHAIN) == CHAIN)
            except ValueError as exc:
                self._reject(line, f"{ev.__struct_config__.tag} {getattr(ev, 'id', '')}: {exc}".replace("  ", " "))
        self.flush()  # members must exist before they can sign
        for asset_id, ev in self.asset_events.items():
            if ev.price is not None and self.assets[asset_id].chain == CHAIN:
                self._add(price_protocol.SetPrice(id=f"price:{asset_id}:initial", asset=asset_id, price=str(ev.price)),
                          (ORACLE,), None)
        for line, ev in decoded:
            if isinstance(ev, DepositEvent):
                try:
                    asset = self._asset(ev.asset, "asset")
                    party = self._party(ev.participant, "participant")
                    amount = to_minor(ev.amount, asset.decimals, "amount")
                except ValueError as exc:
                    self._reject(line, f"deposit: {exc}")
                    continue
                if asset.chain == CHAIN:
                    self._add(Mint(id=f"deposit:{line}", asset=asset.id, target=party, amount=amount), (ISSUER,), None)
                else:
                    self._deposits.append((line, asset.chain, Mint(id=f"deposit:{line}", asset=asset.id, target=party,
                                                                   amount=amount)))
        if self.config.haircuts:
            self._add(collateral_protocol.SetHaircuts(id="setup:haircuts", haircuts={
                cls: str(h) for cls, h in sorted(self.config.haircuts.items())}), (OPERATOR,), None)
        if self.config.partial_settlement:
            self._add(SetConfig(id="setup:partial", key=dvp_protocol.PARTIAL_KEY, value="true"), (OPERATOR,), None)
        if self.mode == "net":
            period = parse_duration(self.config.netting_cycle, "netting_cycle") if self.config.netting_cycle else 0
            self._add(net_protocol.ConfigureCycles(id="setup:cycles", period=period,
                                                    bilateral=bool(self.config.bilateral)), (OPERATOR,), None)
        self._setup_chains(first_at)

    def _setup_chains(self, first_at: int) -> None:
        """Open a ledger for every other chain the assets name: members, its assets, their deposits."""
        for chain in sorted({a.chain for a in self.assets.values()} - {CHAIN}):
            path = f"{self.db}-{chain}" if self.db else ":memory:"
            signers = {name: Signer(name, signer.key, chain)
                       for name, signer in list(self.participants.items()) + list(self.signers.items())}
            ledger = Ledger.create(path, chain_id=chain, operator=OPERATOR, operator_key=signers[OPERATOR].public_key,
                                   clock=ManualClock(first_at), protocols=[htlc_protocol.HTLC()], snapshot_every=0)
            setup = [Admit(id="setup:issuer", participant=ISSUER, roles=(ROLE_ISSUER,),
                           public_key=signers[ISSUER].public_key)]
            setup += [Admit(id=f"participant:{p}", participant=p, roles=self._roles[p] or (ROLE_PARTICIPANT,),
                            public_key=signers[p].public_key) for p in sorted(self.participants)]
            setup += [RegisterAsset(id=f"asset:{a.id}", asset=a) for a in self.assets.values() if a.chain == chain]
            ledger.submit([signers[OPERATOR].envelope(setup)])
            mints = [mint for _line, on, mint in self._deposits if on == chain]
            if mints:
                ledger.submit([signers[ISSUER].envelope(mints)])
            self.chains[chain] = ledger
            self.chain_signers[chain] = signers

    def _config(self, ev: ConfigEvent) -> None:
        if ev.mode is not None and ev.mode not in ("gross", "net"):
            raise ValueError(f"field 'mode': {ev.mode!r} is not gross or net")
        if ev.netting_cycle is not None:
            parse_duration(ev.netting_cycle, "netting_cycle")
        if ev.grace is not None:
            parse_duration(ev.grace, "grace")
        if ev.mta is not None:
            to_minor(ev.mta, 18, "mta", positive=False)
        for cls, h in (ev.haircuts or {}).items():
            if collateral_protocol.parse_haircut(str(h)) is None:
                raise ValueError(f"field 'haircuts': {cls}: {h!r} is not a fraction from 0 up to (not including) 1")
        if ev.cutoff is not None:
            self.cutoff_at = parse_time(ev.cutoff, "cutoff")
        merged = {f: getattr(ev, f) for f in ev.__struct_fields__ if getattr(ev, f) is not None}
        self.config = msgspec.structs.replace(self.config, **merged)

    def _participant(self, ev: ParticipantEvent) -> None:
        if ev.id in RESERVED:
            raise ValueError(f"id {ev.id!r} is reserved by the replay")
        from engine.identity import valid_id

        if not valid_id(ev.id):
            raise ValueError(f"field 'id': {ev.id!r} is not a valid id (letters, digits, _.:-/)")
        roles = tuple(ev.roles)
        bad = [r for r in roles if r not in ROLES or r == "operator"]
        if bad:
            raise ValueError(f"field 'roles': unknown or reserved role {bad[0]!r}")
        if len(set(roles)) != len(roles):
            raise ValueError(f"field 'roles': a role appears twice in {list(roles)}")
        if ev.id in self.participants:
            if self._roles.get(ev.id) == roles:
                return
            raise ValueError("id reused with different content")
        self._roles[ev.id] = roles
        signer = _signer(ev.id)
        self.participants[ev.id] = signer
        self._add(Admit(id=f"participant:{ev.id}", participant=ev.id, roles=roles or (ROLE_PARTICIPANT,),
                        public_key=signer.public_key), (OPERATOR,), None)

    _roles: dict[str, tuple[str, ...]]

    def _asset_event(self, ev: AssetEvent, on_main: bool = True) -> None:
        from engine.identity import valid_id

        if not valid_id(ev.id):
            raise ValueError(f"field 'id': {ev.id!r} is not a valid id")
        if ev.kind not in ("cash", "security"):
            raise ValueError(f"field 'kind': {ev.kind!r} is not cash or security")
        if not 0 <= ev.decimals <= 18:
            raise ValueError(f"field 'decimals': {ev.decimals} is not between 0 and 18")
        if ev.price_basis not in (None, "per_100", "per_unit"):
            raise ValueError(f"field 'price_basis': {ev.price_basis!r} is not per_100 or per_unit")
        if ev.day_count not in (None, "ACT/360", "ACT/365"):
            raise ValueError(f"field 'day_count': {ev.day_count!r} is not ACT/360 or ACT/365")
        if ev.price is not None and price_protocol.parse_price(str(ev.price)) is None:
            raise ValueError(f"field 'price': {ev.price!r} is not a positive decimal")
        if ev.id in self.asset_events:
            if self.asset_events[ev.id] == ev:
                return
            raise ValueError("id reused with different content")
        asset = Asset(
            id=ev.id, kind=ev.kind, decimals=ev.decimals, issuer=ISSUER, chain=ev.chain, asset_class=ev.asset_class,
            maturity=ev.maturity, price_basis=ev.price_basis or ("per_100" if ev.kind == "security" else "per_unit"),
            day_count=ev.day_count or "ACT/360",
        )
        self.asset_events[ev.id] = ev
        self.assets[ev.id] = asset
        if on_main:  # an asset of another chain is registered on that chain's ledger
            self._add(RegisterAsset(id=f"asset:{ev.id}", asset=asset), (OPERATOR,), None)

    # -------------------------------------------------------------- timed

    def timed(self, line: int, raw: bytes, at: int) -> None:
        try:
            ev = self.file.decode(raw)
        except ValueError as exc:
            self._reject(line, f"{_raw_label(raw)}: {exc}")
            return
        self.timed_event(line, ev, at)

    def timed_event(self, line: int, ev: Any, at: int) -> None:
        try:
            self._timed(line, ev, at)
        except ValueError as exc:
            self._reject(line, f"{_label(ev)}: {exc}")

    def _timed(self, line: int, ev: Any, at: int) -> None:
        if type(ev) is DvpEvent:
            assets = self.assets
            security = assets.get(ev.security)
            if security is None or security.kind != "security":
                security = self._asset(ev.security, "security", "security")  # raises the reason
            cash = assets.get(ev.cash_asset)
            if cash is None or cash.kind != "cash":
                cash = self._asset(ev.cash_asset, "cash_asset", "cash")
            seller = ev.seller
            buyer = ev.buyer
            if seller not in self.participants:
                self._party(seller, "seller")
            if buyer not in self.participants:
                self._party(buyer, "buyer")
            if seller == buyer:
                raise ValueError("seller and buyer are the same participant")
            if security.chain != cash.chain:
                return self._swap(line, ev, at, security, cash)
            if security.chain != CHAIN:
                raise ValueError(f"a DvP within chain {security.chain!r} is not supported (only cross-chain there)")
            if ev.initiator is not None and ev.initiator not in ("buyer", "seller"):
                raise ValueError(f"field 'initiator': {ev.initiator!r} is not buyer or seller")
            if ev.timeout is not None:
                parse_duration(ev.timeout, "timeout")
            quantity = ev.quantity
            if type(quantity) is not int or not 0 < quantity <= QUANTITY_FAST_MAX or security.decimals:
                quantity = to_minor(quantity, security.decimals, "quantity")  # the general case, with its checks
            amount = to_minor(ev.amount, cash.decimals, "amount")
            if not ev.id:
                raise ValueError("field 'id': must not be empty")
            self._tick_unless_seen(ev.id, at)
            if self.mode == "gross":
                cmd: Command = dvp_protocol.Settle(id=f"trade:{ev.id}", trade=ev.id, seller=seller, buyer=buyer,
                                                   security=security.id, quantity=quantity, cash_asset=cash.id,
                                                   amount=amount)
            else:
                cmd = net_protocol.Obligate(id=f"trade:{ev.id}", trade=ev.id, seller=seller, buyer=buyer,
                                            security=security.id, quantity=quantity, cash_asset=cash.id, amount=amount)
            self._add(cmd, (seller, buyer), ("dvp", line, ev.id, at, cash.id, amount, seller, buyer))
        elif type(ev) is DeliverEvent:
            asset = self._asset(ev.asset, "asset")
            source = self._party(ev.source, "from")
            target = self._party(ev.target, "to")
            amount = to_minor(ev.amount, asset.decimals, "amount")
            if source == target:
                raise ValueError("from and to are the same participant")
            self._tick_unless_seen(ev.id, at)
            self._add(Move(id=f"trade:{ev.id}", asset=asset.id, source=source, target=target, amount=amount),
                      (source,), ("deliver", line, ev.id, at))
        elif type(ev) is PriceEvent:
            self._asset(ev.asset, "asset")
            if price_protocol.parse_price(str(ev.price)) is None:
                raise ValueError(f"field 'price': {ev.price!r} is not a positive decimal")
            self._tick(at)
            self._add(price_protocol.SetPrice(id=f"price:{line}", asset=ev.asset, price=str(ev.price)),
                      (ORACLE,), None)
        elif type(ev) is CutoffEvent:
            self._cutoff(at, f"cutoff:{line}")
        elif type(ev) is RepoEvent:
            self._repo(line, ev, at)
        elif type(ev) is SubstituteEvent:
            security = self._asset(ev.collateral, "collateral", "security")
            borrower = self.repo_borrowers.get(ev.repo)
            if borrower is None:
                raise ValueError(f"unknown repo {ev.repo!r} in field 'repo'")
            quantity = to_minor(ev.quantity, security.decimals, "quantity")
            self._tick(at)
            self._add(repo_protocol.Substitute(id=f"substitute:{line}", repo=ev.repo, collateral=security.id,
                                               quantity=quantity), (borrower,), ("substitute", line, ev.repo, at))
        else:
            raise ValueError(f"{ev.__struct_config__.tag} events are not supported by this version yet")

    def _swap(self, line: int, ev: DvpEvent, at: int, security: Asset, cash: Asset) -> None:
        """A cross-chain DvP: run the hashed-timelock swap between the two chains' ledgers at `at`.

        Honest parties act at once: both locks, the reveal and the follow
        happen in the trade's instant. The secret is derived from the
        initiator's key and the trade id, so replays stay exact.
        """
        seller = self._party(ev.seller, "seller")
        buyer = self._party(ev.buyer, "buyer")
        if seller == buyer:
            raise ValueError("seller and buyer are the same participant")
        initiator = ev.initiator or "buyer"
        if initiator not in ("buyer", "seller"):
            raise ValueError(f"field 'initiator': {ev.initiator!r} is not buyer or seller")
        timeout = parse_duration(ev.timeout, "timeout") if ev.timeout is not None else SWAP_TIMEOUT_DEFAULT
        quantity = to_minor(ev.quantity, security.decimals, "quantity")
        amount = to_minor(ev.amount, cash.decimals, "amount")
        if ev.id in self.seen:
            raise ValueError("id reused (a cross-chain trade runs once)")
        self.seen.add(ev.id)
        if self._pipe is not None:
            raise RuntimeError("cross-chain trades are replayed in one process")
        self._tick(at)
        self.flush()
        ledgers = {CHAIN: self.ledger, **self.chains}
        signers = {CHAIN: {**self.participants, **self.signers}, **self.chain_signers}
        for ledger in (ledgers[security.chain], ledgers[cash.chain]):
            if ledger is not self.ledger:
                ledger.submit([], at=at)
        coordinator = swap_protocol.SwapCoordinator(ledgers[security.chain], ledgers[cash.chain],
                                                    signers[security.chain], signers[cash.chain])
        terms = swap_protocol.SwapTerms(trade=ev.id, seller=seller, buyer=buyer, security=security.id,
                                        quantity=quantity, cash_asset=cash.id, amount=amount, timeout=timeout,
                                        initiator=initiator)
        key = (self.participants[buyer if initiator == "buyer" else seller]).key
        secret = swap_protocol.derived_secret(bytes(key), ev.id)
        status, reason = FAILED, None
        try:
            coordinator.initiate(terms, secret)
            coordinator.respond(terms)
            coordinator.claim_second(terms, secret)
            if coordinator.follow(terms) == htlc_protocol.CLAIMED:
                status = SETTLED
        except swap_protocol.SwapError as exc:
            first_short = "buyer" if initiator == "buyer" else "seller"
            second_short = "seller" if first_short == "buyer" else "buyer"
            short = first_short if "first lock" in str(exc) else second_short
            reason = "insufficient_cash" if short == "buyer" else "insufficient_securities"
        self.trades[ev.id] = ["dvp", status, at, reason, at, cash.id, amount]

    def _tick_unless_seen(self, trade: str, at: int) -> None:
        """Move ledger time to a new trade's `at`; not for an id seen before in this file.

        Every trade, DvP, delivery or repo, has its ledger command id
        `trade:<id>`, so the ledger itself decides a reused id: the same
        content is idempotent (nothing changes), other content is refused
        (a rejected line). Such a line must not move ledger time either, so
        it goes in without a Tick.
        """
        if trade in self.seen:
            return
        self.seen.add(trade)
        self._tick(at)

    def _repo(self, line: int, ev: RepoEvent, at: int) -> None:
        security = self._asset(ev.collateral, "collateral", "security")
        cash = self._asset(ev.cash_asset, "cash_asset", "cash")
        borrower = self._party(ev.borrower, "borrower")
        lender = self._party(ev.lender, "lender")
        if borrower == lender:
            raise ValueError("borrower and lender are the same participant")
        if not ev.id:
            raise ValueError("field 'id': must not be empty")
        quantity = to_minor(ev.quantity, security.decimals, "quantity")
        principal = to_minor(ev.principal, cash.decimals, "principal")
        rate = str(ev.rate)
        if repo_protocol.parse_rate(rate) is None:
            raise ValueError(f"field 'rate': {ev.rate!r} is not a non-negative decimal (annual, e.g. \"0.0531\")")
        end = parse_time(ev.end, "end")
        if end <= at:
            raise ValueError(f"field 'end': {ev.end!r} is not after the start")
        haircut = ""
        if ev.haircut is not None:
            haircut = str(ev.haircut)
            if collateral_protocol.parse_haircut(haircut) is None:
                raise ValueError(f"field 'haircut': {ev.haircut!r} is not a fraction from 0 up to (not including) 1")
        mta_text = ev.mta if ev.mta is not None else self.config.mta
        mta = to_minor(mta_text, cash.decimals, "mta", positive=False) if mta_text is not None else -1
        grace_text = ev.grace if ev.grace is not None else self.config.grace
        grace = parse_duration(grace_text, "grace") if grace_text is not None else -1
        self.repo_borrowers.setdefault(ev.id, borrower)
        self._tick_unless_seen(ev.id, at)
        self._add(repo_protocol.OpenRepo(id=f"trade:{ev.id}", repo=ev.id, borrower=borrower, lender=lender,
                                         collateral=security.id, quantity=quantity, cash_asset=cash.id,
                                         principal=principal, rate=rate, end=end, haircut=haircut, mta=mta,
                                         grace=grace),
                  (borrower, lender), ("repo", line, ev.id, at, cash.id, principal, borrower, lender))


    def _cutoff(self, at: int, ref: str) -> None:
        self._tick(at)
        if self.mode == "net":
            self._add(net_protocol.CloseCycle(id=f"{ref}:net"), (OPERATOR,), None)
        self._add(dvp_protocol.Cutoff(id=ref), (OPERATOR,), None)

    # ---------------------------------------------------------------- run

    def _begin(self) -> None:
        self._roles = {}
        self._deposits: list[tuple[int, str, Mint]] = []
        self._cutoff_pending: int | None = None

    def _decode_line(self, number: int, raw: bytes) -> Any:
        """Decode one line, or reject it (returning None) with the same reason a scan gives."""
        try:
            return self.file.decode(raw)
        except ValueError as exc:
            verdict = self.file.classify(number, raw)
            if type(verdict) is not BadLine:
                verdict = BadLine(number, f"{_raw_label(raw)}: {exc}")
            self.rejected.append(verdict)
            return None

    def _time_of(self, number: int, ev: Any) -> int | None:
        try:
            return parse_time(ev.at)
        except ValueError as exc:
            self._reject(number, f"{ev.__struct_config__.tag}: {exc}")
            return None

    def run_streaming(self, progress: bool = False, pipeline: bool | None = None) -> bool:
        """Replay in one pass, for the usual file: setup first, then timed events in order.

        Each line is decoded once. With `pipeline` (default: for files of a
        few MB or more, where fork is available) a forked parser process
        reads, validates and encodes batches while this process signs,
        submits and records them: the two cores work at once and the
        commands, hence the hashes, are the same as without it.

        Returns False as soon as the file turns out otherwise (a setup event
        after a timed one, or time going backwards); the caller then starts
        over with `run`.
        """
        self._begin()
        size = os.path.getsize(self.path)
        lines = self.file.lines()
        setup: list[tuple[int, Any]] = []
        first = None
        for number, offset, raw in lines:
            self.events_read += 1
            ev = self._decode_line(number, raw)
            if ev is None:
                continue
            if type(ev) in SETUP_EVENTS:
                setup.append((number, ev))
                continue
            at = self._time_of(number, ev)
            if at is None:
                continue
            first = (number, offset, len(raw), ev, at)
            break
        self.setup(setup, first[4] if first else 0)
        self.flush()  # setup is its own batch, so batches do not depend on how the rest is read
        self._cutoff_pending = self.cutoff_at
        if first is None:
            self._end_stream()
            self._finish_values()
            return True
        if pipeline is None:
            pipeline = size >= PIPELINE_BYTES_MIN and "fork" in multiprocessing.get_all_start_methods()
        if self.chains:
            pipeline = False  # cross-chain swaps drive several ledgers from one process
        bar = _progress(progress and size >= PROGRESS_BYTES_MIN, size)
        with bar:
            task = bar.add_task("replay", total=size)
            if pipeline:  # the parser process keeps the books and finishes them
                return self._pipelined(first, lambda offset: bar.update(task, completed=offset))
            if not self._stream(first, lines, lambda offset: bar.update(task, completed=offset)):
                return False
            self._end_stream()
        self._finish_values()
        return True

    def _stream(self, first: tuple, lines: Iterator[tuple[int, int, bytes]], progress) -> bool:
        """Apply timed events from `first` on; False if the file is not in streaming order.

        The hot loop of a replay: decoding, time and order checks inline.
        """
        number, _offset, _length, ev, at = first
        last = at
        self._timed_in_order(number, ev, at)
        decode = self.file.decode if self.file.fmt != "jsonl" else _json_event_decoder.decode
        time_cache = _TIME_CACHE
        for number, offset, raw in lines:
            self.events_read += 1
            self._offset = offset
            try:
                ev = decode(raw)
            except (ValueError, msgspec.ValidationError, msgspec.DecodeError):
                self._decode_line(number, raw)  # rejects it with the scan's reason
                continue
            if type(ev) in SETUP_EVENTS:
                return False
            at = time_cache.get(ev.at)
            if at is None:
                at = self._time_of(number, ev)
                if at is None:
                    continue
            if at < last:
                return False
            last = at
            if self._cutoff_pending is not None:
                self._timed_in_order(number, ev, at)
            else:
                try:
                    self._timed(number, ev, at)
                except ValueError as exc:
                    self._reject(number, f"{_label(ev)}: {exc}")
            if number & 0x3FFF == 0:
                progress(offset)
        return True

    def _timed_in_order(self, number: int, ev: Any, at: int) -> None:
        pending = self._cutoff_pending
        if pending is not None and at > pending:
            self._cutoff(pending, "cutoff:config")
            self._cutoff_pending = None
        self.timed_event(number, ev, at)

    def _end_stream(self) -> None:
        if self._cutoff_pending is not None:
            self._cutoff(max(self._cutoff_pending, self.now), "cutoff:config")
            self._cutoff_pending = None
        self.flush()

    def _pipelined(self, first: tuple, progress) -> bool:
        """Parse and keep the books in a forked child; sign and apply here.

        The child streams the file, validates and encodes batches, and keeps
        every trade's record from the results this process sends back; at
        the end it writes the report (or sends its records here). This
        process only signs, applies and journals. False if the file needs
        ordering first.
        """
        batches_in, batches_out = multiprocessing.Pipe(duplex=False)
        results_in, results_out = multiprocessing.Pipe(duplex=False)
        context = multiprocessing.get_context("fork")
        parser = context.Process(target=self._parser_main, args=(batches_out, results_in, first), daemon=True)
        parser.start()
        batches_out.close()
        results_in.close()
        assert self.ledger is not None
        finished = False
        try:
            while True:
                try:
                    message = _decode_message(batches_in.recv_bytes())
                except EOFError:
                    raise RuntimeError("the trade-file parser process ended unexpectedly") from None
                tag = message[0]
                if tag == "batch":
                    _tag, payload, signers, offset = message
                    results = self.apply_batch(payload, signers)
                    events = _encode(self.ledger.last_events)
                    try:
                        results_out.send_bytes(_encode(("results", results, events)))
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the parser has stopped (a restart or an error): its last message tells which
                    progress(offset)
                elif tag == "done":
                    results_out.send_bytes(_encode(("final", self.ledger_info())))
                elif tag == "finished":
                    self._adopt(message[1])
                    finished = True
                    return True
                elif tag == "restart":
                    finished = True
                    return False
                else:
                    raise RuntimeError(f"the trade-file parser failed:\n{message[1]}")
        finally:
            batches_in.close()
            results_out.close()
            if not finished:
                parser.kill()  # this side failed: do not wait for a parser that waits for us
            parser.join()

    def _adopt(self, books: dict) -> None:
        """Take over the parser process's books (or, if it wrote the report, its summary)."""
        self.events_read = books["events_read"]
        self.rejected = [BadLine(line, reason) for line, reason in books["rejected"]]
        if books.get("summary") is not None:
            self._summary = books["summary"]
            self._trade_count = books["trades"]
            return
        self.trades = books["trades"]
        self.cycles = books["cycles"]
        self.gross_value = books["gross_value"]
        self.settled_value = books["settled_value"]
        self.delay_seconds = books["delay_seconds"]
        self.delay_max = books["delay_max"]
        self.margin_calls = books["margin_calls"]
        self.margin_returned = books["margin_returned"]

    def _parser_main(self, sender, results, first: tuple) -> None:
        """The parser process: stream, validate and encode batches; keep the books; write the report."""
        try:
            self._pipe = sender
            self._results = queue.Queue()
            self._inflight = collections.deque()
            reader = threading.Thread(target=_pump, args=(results, self._results), daemon=True)
            reader.start()
            number, offset, _length, _ev, _at = first
            lines = self.file.lines(start=offset, number=number - 1)
            next(lines)  # the first timed line itself, already decoded
            if not self._stream(first, lines, lambda offset: None):
                sender.send_bytes(_encode(("restart",)))
                return
            self._end_stream()
            sender.send_bytes(_encode(("done",)))
            self._take_results(block=True)
            final = self._results.get()
            if final[0] != "final":
                raise RuntimeError(f"the ledger process stopped (expected its final figures, got {final[0]!r})")
            self._info = final[1]
            self._finish_values()
            books: dict[str, Any] = {"events_read": self.events_read,
                                     "rejected": [(b.line, b.reason) for b in self.rejected]}
            if self.report_path is not None:
                self.write_report(self.report_path)
                books.update(summary=self.summary(), trades=len(self.trades))
            else:
                books.update(trades=self.trades, cycles=self.cycles, gross_value=self.gross_value,
                             settled_value=self.settled_value, delay_seconds=self.delay_seconds,
                             delay_max=self.delay_max, margin_calls=self.margin_calls,
                             margin_returned=self.margin_returned)
            sender.send_bytes(_encode(("finished", books)))
        except BaseException:
            sender.send_bytes(_encode(("error", traceback.format_exc())))
        finally:
            sender.close()
            os._exit(0)  # never run the parent's finalizers (its SQLite connection) here

    def run(self, progress: bool = False) -> None:
        """Replay in two passes: scan (types and times), then timed events in `at` order."""
        self._begin()
        setup, times, numbers, offsets, errors, in_order = self.file.scan()
        self.rejected.extend(errors)
        self.events_read += len(errors) + len(setup) + len(times)
        first_at = min(times) if len(times) else 0
        self.setup(self.decode_setup(setup), first_at)
        self.flush()
        cutoff_pending = self.cutoff_at
        show = progress and os.path.getsize(self.path) >= PROGRESS_BYTES_MIN
        bar = _progress(show, len(times))
        with bar:
            task = bar.add_task("replay", total=len(times))
            if in_order:
                stream = zip(times, numbers, self._sequential(numbers))
            else:
                idx = sorted(range(len(times)), key=lambda i: (times[i], numbers[i]))
                stream = zip((times[i] for i in idx), (numbers[i] for i in idx),
                             self.file.read_at([offsets[i] for i in idx]))
            for done, (at, line, raw) in enumerate(stream, 1):
                if cutoff_pending is not None and at > cutoff_pending:
                    self._cutoff(cutoff_pending, "cutoff:config")
                    cutoff_pending = None
                self.timed(line, raw, at)
                if done % 16384 == 0:
                    bar.update(task, completed=done)
            if cutoff_pending is not None:
                self._cutoff(max(cutoff_pending, self.now), "cutoff:config")
            bar.update(task, completed=len(times))
        self.flush()
        self._finish_values()

    def _sequential(self, numbers) -> Iterator[bytes]:
        """Yield the timed lines in file order (they are already in `at` order)."""
        wanted = iter(numbers)
        want = next(wanted, None)
        for number, raw in self.file.read_lines():
            if number == want:
                yield raw
                want = next(wanted, None)

    def _finish_values(self) -> None:
        for record in self.trades.values():
            if record[0] != "dvp":
                continue
            cash, amount = record[5], record[6]
            self.gross_value[cash] = self.gross_value.get(cash, 0) + amount
            if record[1] == SETTLED:
                self.settled_value[cash] = self.settled_value.get(cash, 0) + amount
                delay = record[2] - record[4] if record[4] is not None else 0
                self.delay_seconds += delay
                self.delay_max = max(self.delay_max, delay)

    # -------------------------------------------------------------- report

    def summary(self) -> dict[str, Any]:
        """Counts and figures: the report's `metrics`."""
        if self._summary is not None:
            return self._summary
        transfers = [r for r in self.trades.values() if r[0] != "repo"]  # DvPs and deliveries; repos below
        settled = sum(1 for r in transfers if r[1] == SETTLED)
        failed = sum(1 for r in transfers if r[1] == FAILED)
        queued = sum(1 for r in transfers if r[1] == QUEUED)
        reasons: dict[str, int] = {}
        for r in transfers:
            if r[1] == FAILED:
                reasons[r[3]] = reasons.get(r[3], 0) + 1
        metrics: dict[str, Any] = {
            "settled": settled,
            "failed": failed,
            "queued": queued,
            "failed_by_reason": dict(sorted(reasons.items())),
            "gross_value": {a: format_minor(v, self.assets[a].decimals) for a, v in sorted(self.gross_value.items())},
            "settled_value": {a: format_minor(v, self.assets[a].decimals) for a, v in sorted(self.settled_value.items())},
            "settlement_rate": f"{settled / len(transfers):.6f}" if transfers else "0",
            "delay_seconds_mean": f"{self.delay_seconds / settled:.3f}" if settled else "0",
            "delay_seconds_max": self.delay_max,
        }
        repos = [r for r in self.trades.values() if r[0] == "repo"]
        if repos or self.margin_calls:
            statuses: dict[str, int] = {}
            for r in repos:
                statuses[r[1]] = statuses.get(r[1], 0) + 1
            drawn: dict[str, int] = {}
            for call in self.margin_calls.values():
                if call["status"] == "met":
                    cash = self.trades[call["repo"]][5]
                    drawn[cash] = drawn.get(cash, 0) + call["amount"]
            metrics["repos"] = dict(sorted(statuses.items()))
            metrics["margin_calls"] = {
                "issued": len(self.margin_calls),
                "met": sum(1 for c in self.margin_calls.values() if c["status"] == "met"),
                "defaulted": sum(1 for c in self.margin_calls.values() if c["status"] == "defaulted"),
                "withdrawn": sum(1 for c in self.margin_calls.values() if c["status"] == "withdrawn"),
                "liquidity_drawn": {a: format_minor(v, self.assets[a].decimals) for a, v in sorted(drawn.items())},
                "returned": {a: format_minor(v, self.assets[a].decimals)
                             for a, v in sorted(self.margin_returned.items())},
            }
        if self.mode == "gross":
            metrics["liquidity_used"] = metrics["settled_value"]
        else:
            gross_cash = sum(sum(int(x.split("=")[1]) for x in c["gross_cash"].split(",") if x) for c in self.cycles)
            positive = sum(int(c["positive_net_cash"]) for c in self.cycles)
            moves_gross = sum(int(c["gross_movements"]) for c in self.cycles)
            moves_net = sum(int(c["net_movements"]) for c in self.cycles)
            cash_decimals = max((a.decimals for a in self.assets.values() if a.kind == "cash"), default=0)
            metrics["cycles"] = len(self.cycles)
            metrics["netting_ratio_value"] = f"{positive / gross_cash:.6f}" if gross_cash else "0"
            metrics["netting_ratio_movements"] = f"{moves_net / moves_gross:.6f}" if moves_gross else "0"
            metrics["movements"] = {"gross": moves_gross, "net": moves_net}
            metrics["liquidity_used"] = format_minor(positive, cash_decimals)
        return metrics

    def report_head(self) -> dict[str, Any]:
        info = self._info if self._info is not None else self.ledger_info()
        balances: dict[str, dict[str, str]] = {p: {} for p in sorted(self.participants)}
        for party, held in sorted(info["balances"].items()):
            balances[party] = {a: format_minor(v, self.assets[a].decimals) for a, v in sorted(held.items())}
        report: dict[str, Any] = {
            "input": {"path": self.path, "events": self.events_read, "rejected": len(self.rejected)},
            "rejected": [{"line": b.line, "reason": b.reason} for b in sorted(self.rejected, key=lambda b: b.line)],
        }
        tail: dict[str, Any] = {"margin_calls": self.margin_calls_json(), "balances": balances}
        if self.mode == "net":
            last = info["net_positions"]
            tail["net_positions"] = {
                p: {a: format_minor(v, self.assets[a].decimals) for a, v in held.items()}
                for p, held in sorted(last.items())
            }
        tail["metrics"] = self.summary()
        tail["ledger"] = {"chains": info["chains"]}
        tail["balances"] = dict(sorted(balances.items()))
        return {"head": report, "tail": tail}

    def trade_json(self, trade: str, record: list[Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": record[0], "status": record[1]}
        if record[1] == SETTLED:
            out["settled_at"] = format_time(record[2])
        elif record[1] == FAILED:
            out["reason"] = record[3]
        if record[0] == "repo":
            decimals = self.assets[record[5]].decimals
            extra = record[7]
            if "interest" in extra:
                out["interest"] = format_minor(extra["interest"], decimals)
                out["closed_at"] = format_time(record[2])
            if record[1] == "defaulted":
                out["reason"] = record[3]
                out["defaulted_at"] = format_time(record[2])
                out["close_out"] = format_minor(extra["close_out"], decimals)
        return out

    def margin_calls_json(self) -> list[dict[str, Any]]:
        out = []
        for call in self.margin_calls.values():
            cash = self.trades[call["repo"]][5]
            row = {"repo": call["repo"], "at": format_time(call["at"]),
                   "amount": format_minor(call["amount"], self.assets[cash].decimals), "status": call["status"]}
            if call["met_at"] is not None:
                row["met_at"] = format_time(call["met_at"])
            out.append(row)
        return out

    def report(self) -> dict[str, Any]:
        """The whole report as one dict (for small files and tests)."""
        parts = self.report_head()
        out = dict(parts["head"])
        out["trades"] = {t: self.trade_json(t, r) for t, r in self.trades.items()}
        out.update(parts["tail"])
        return out

    def write_report(self, path: str) -> None:
        """Stream the report to `path` without building the trades map in memory."""
        parts = self.report_head()
        enc = msgspec.json.encode
        with open(path, "wb") as out:
            out.write(b"{")
            for key, value in parts["head"].items():
                out.write(enc(key) + b":" + enc(value) + b",\n")
            out.write(b'"trades":{')
            times: dict[int, bytes] = {}
            reasons: dict[str, bytes] = {}
            kinds = {kind: enc(kind) for kind in ("dvp", "deliver", "repo")}
            chunk: list[bytes] = []
            separator = b"\n"
            for trade, record in self.trades.items():
                # The same JSON as trade_json(), written without building a dict per trade.
                if record[0] == "repo":
                    chunk.append(separator + enc(trade) + b":" + enc(self.trade_json(trade, record)))
                    separator = b",\n"
                    continue
                head = separator + enc(trade) + b':{"kind":' + kinds[record[0]]
                separator = b",\n"
                status = record[1]
                if status == SETTLED:
                    at = times.get(record[2])
                    if at is None:
                        at = times[record[2]] = enc(format_time(record[2]))
                    chunk.append(head + b',"status":"settled","settled_at":' + at + b"}")
                elif status == FAILED:
                    reason = reasons.get(record[3])
                    if reason is None:
                        reason = reasons[record[3]] = enc(record[3])
                    chunk.append(head + b',"status":"failed","reason":' + reason + b"}")
                else:
                    chunk.append(head + b',"status":' + enc(status) + b"}")
                if len(chunk) >= 8192:
                    out.write(b"".join(chunk))
                    chunk = []
            out.write(b"".join(chunk) + b"}")
            for key, value in parts["tail"].items():
                out.write(b",\n" + enc(key) + b":" + enc(value))
            out.write(b"}\n")

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
        for ledger in self.chains.values():
            ledger.close()


def _label(ev: Any) -> str:
    tag = ev.__struct_config__.tag
    ref = getattr(ev, "id", None) or getattr(ev, "repo", None)
    return f"{tag} {ref}" if ref else tag


def _raw_label(raw: bytes) -> str:
    """Name an undecodable line's event as well as possible ('dvp T18')."""
    try:
        obj = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return "line"
    if not isinstance(obj, dict):
        return "line"
    ref = obj.get("id") or obj.get("repo")
    return f"{obj.get('type', 'event')} {ref}" if isinstance(ref, str) else str(obj.get("type", "event"))


class _NoProgress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def add_task(self, *a, **k):
        return 0

    def update(self, *a, **k):
        pass


def _progress(show: bool, total: int):
    if not show:
        return _NoProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    return Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), transient=True)


def replay(path: str, *, mode: str | None = None, db: str | None = None, fmt: str | None = None,
           batch_commands: int = BATCH_COMMANDS, progress: bool = False, pipeline: bool | None = None,
           report: str | None = None) -> Replay:
    """Replay a trade file; return the finished `Replay`.

    With `report`, the JSON report is written there (by the parser process
    when pipelined, which then keeps the per-trade records to itself: use
    `.summary()`); without it, call `.report()` or `.write_report()`.
    """
    if mode not in (None, "gross", "net"):
        raise ValueError(f"mode must be gross or net, not {mode!r}")
    if db is not None and os.path.exists(db):
        raise FileExistsError(f"{db}: exists; replay writes a new journal")
    run = Replay(path, mode, db, fmt, batch_commands)
    run.report_path = report
    if run.run_streaming(progress, pipeline):
        if report is not None and run._summary is None:
            run.write_report(report)
        return run
    run.close()  # the file needs ordering first: start over with two passes
    if db is not None:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
    run = Replay(path, mode, db, fmt, batch_commands)
    run.run(progress)
    if report is not None:
        run.write_report(report)
    return run


# ------------------------------------------------------------------- CLI


def _print_summary(run: Replay, seconds: float) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics = run.summary()
    console = Console()
    table = Table(title=f"dvp replay {run.path} ({run.mode} mode)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("events read", str(run.events_read))
    table.add_row("lines rejected", str(len(run.rejected)))
    table.add_row("trades settled", str(metrics["settled"]))
    for reason, n in metrics["failed_by_reason"].items():
        table.add_row(f"trades failed: {reason}", str(n))
    table.add_row("trades still queued", str(metrics["queued"]))
    for asset, value in metrics["gross_value"].items():
        table.add_row(f"gross value {asset}", value)
    if run.mode == "net":
        table.add_row("netting ratio (value)", metrics["netting_ratio_value"])
        table.add_row("netting ratio (movements)", metrics["netting_ratio_movements"])
        table.add_row("liquidity used (net debits paid)", metrics["liquidity_used"])
    else:
        for asset, value in metrics["liquidity_used"].items():
            table.add_row(f"liquidity used {asset}", value)
    table.add_row("seconds", f"{seconds:.2f}")
    console.print(table)
    for bad in sorted(run.rejected, key=lambda b: b.line)[:20]:
        console.print(f"[yellow]line {bad.line}[/]: {bad.reason}")
    if len(run.rejected) > 20:
        console.print(f"... and {len(run.rejected) - 20} more rejected lines (see --report)")
    chain = run.ledger
    assert chain is not None
    console.print(f"head  {chain.head_hash.hex()}\nstate {chain.digest().hex()}")
    if run.db:
        console.print(f"journal kept at {run.db}: audit it with `dvp verify {run.db}`")


def _cmd_replay(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        run = replay(args.file, mode=args.mode, db=args.db, fmt=args.format, progress=sys.stderr.isatty(),
                     report=args.report)
    except (OSError, ValueError) as exc:
        print(f"dvp replay: {exc}", file=sys.stderr)
        return 2
    try:
        if args.report:
            trades = run._trade_count if run._trade_count is not None else len(run.trades)
            print(f"report written to {args.report} ({trades} trades, {len(run.rejected)} rejected lines)")
        else:
            _print_summary(run, time.perf_counter() - started)
    finally:
        run.close()
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("replay", help="replay a recorded trade file (JSON Lines or CSV)")
    p.add_argument("file")
    p.add_argument("--mode", choices=("gross", "net"), help="settlement mode (default: the file's config, else gross)")
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument("--db", help="keep the journal in this new SQLite file (audit it with dvp verify)")
    p.add_argument("--format", choices=("jsonl", "csv"), help="input format (default: by extension)")
    p.set_defaults(func=_cmd_replay)
