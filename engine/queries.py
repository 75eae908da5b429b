"""Queries for embedders: a trade's status, a repo's state, any protocol record's story.

Takes a `Ledger` (the writer or a read-only one) and a record's key; gives
typed records:

- `trade(ledger, trade_id, seller=None, buyer=None) -> TradeStatus | None`:
  a DvP trade's terms, where it stands (`queued`, `unmatched`,
  `settled`, `failed`, `cancelled`), why, and every command and event
  of it; `trades(ledger, trade_id)` lists one per pair of parties that used
  the id.
- `repo(ledger, repo_id) -> RepoState | None`: a repo's terms, its
  exposure `E`, collateral value `CV` (and `MV`) now, the open margin call,
  the cash margin `M` held; for a repo that ended, how (`closed` with
  its interest, `defaulted` with its close-out amount).
- `records(ledger, kind, key) -> list[RecordHistory]`: the same for any
  record kind a protocol answers reads of (`Protocol.query_kinds`).
- Account history is `engine.history.history` (`Ledger.history`).

The engine knows no protocol: it asks the protocol that serves the kind
(`Protocol.query` for the live record, `record_of` for the record each
command names, `record_outcomes` for the events that end a record). A
record that ended has left the live state (a settled trade leaves the DvP
book), so its story comes from the journal: every entry whose bytes
contain the key is decoded (a key's UTF-8 bytes appear verbatim in the
msgpack of any command naming it and of any event whose `ref` it is), its
commands that name the record and its events whose `ref` is the key are
collected in journal order (`record_of` is asked only of commands one of
whose fields equals the key: a protocol names a record by a field of its
command). Cost: one pass over the journal's bytes (a substring search per
entry, in C) and the decoding of the entries that mention the key; the
live part is a lookup in the state. On a replay's journal, whose entries
hold 65,536 commands each, a lookup took 0.2 to 0.6 s per 100,000 trades.

Events carry a record's key alone (a trade id, not its pair of parties).
When several pairs used one trade id, an event is given to the trade
whose command caused it, or to the one trade still open; failing that, to
every trade still open with that id, and those are marked `shared_id`.

    status = ledger.trade("T-1")
    if status and status.status == "failed":
        print(status.reason, status.short)       # insufficient_cash Shortfall(party='BANK_B', ...)
    state = ledger.repo("R1")
    print(state.exposure, state.collateral_value, state.call, state.margin)
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import msgspec

from . import codes as C
from .history import CommandRef, Decoded, RecordEvent, command_ref, decode_commands, event_record
from .ledger import Ledger, decode_entry
from .protocol import Protocol, QueryAnswer
from .records import Entry, Event

TRADE = "trade"
REPO = "repo"


class RecordHistory(msgspec.Struct, kw_only=True):
    """One protocol record (a trade of one pair, a repo) and its story in the journal.

    `status` is the live record's status if it is live, else the status the
    event that ended it gives (`Protocol.record_outcomes`), else what its
    protocol says a record whose command left no event ended as (a DvP
    `Settle` that settled at once). `record` is the live record if live,
    else the last terms a command gave it; `detail` the data of the event
    that ended it.
    """

    kind: str
    key: str
    parties: tuple[str, ...]
    status: str = ""
    live: bool = False
    record: dict[str, Any] = {}
    detail: dict[str, str] = {}
    began_at: int = 0  # ledger time of the first accepted command naming it
    ended_at: int | None = None  # ledger time of the event (or command) that ended it
    seq: int = 0  # the last entry that touched it
    commands: list[CommandRef] = []
    events: list[RecordEvent] = []
    shared_id: bool = False  # another pair used the key: some events could not be told apart (module docstring)
    default_status: str = ""  # the status once not live, if no event said otherwise (`QueryAnswer.status`)
    outcome: str = ""  # the status the event that ended it gave ("" if none did)


def serving(ledger: Ledger, kind: str) -> Protocol:
    """The protocol of this ledger that answers reads of `kind`; LookupError if none does."""
    for protocol in ledger.machine.protocols.values():
        if kind in protocol.query_kinds:
            return protocol
    raise LookupError(f"no protocol of this ledger answers reads of {kind!r} records "
                      f"(protocols: {', '.join(sorted(ledger.machine.protocols)) or 'none'})")


def records(ledger: Ledger, kind: str, key: str) -> list[RecordHistory]:
    """Every record of `kind` keyed `key` the journal shows, one per set of parties, oldest first.

    A key used again by the same parties after its record ended starts a
    new record (the older one stays in the list).
    """
    protocol = serving(ledger, kind)
    handled = set(protocol.handlers())
    found: list[RecordHistory] = []
    needle = key.encode()
    journal = ledger.journal
    with journal.reading():
        for seq, _digest, body in journal.rows(1):
            if seq > ledger.head_seq:
                break  # a reader beside a live writer: what it has replayed, no more
            if needle not in body:
                continue
            decoded = decode_commands(ledger, decode_entry(body, journal.path, seq))
            _follow(decoded, protocol, handled, kind, key, found)
    _finish(ledger, protocol, kind, key, found)
    return found


def _follow(decoded: Decoded, protocol: Protocol, handled: set[type], kind: str, key: str,
            found: list[RecordHistory]) -> None:
    """Add one entry's commands and events about (kind, key) to the records, in the order they ran.

    Each command comes before the events it caused (events carry its
    position); due work (-1) comes first, the after-batch hooks last. A
    command that begins or renews a record and causes no event about it
    has done all it will: the record ends with the status its protocol
    names for that case (`QueryAnswer.status`: a DvP `Settle` that settled
    at once).
    """
    entry = decoded.entry
    by_position: dict[int, list[Event]] = {}
    for event in entry.events:
        if event.protocol == protocol.name and event.ref == key:
            by_position.setdefault(event.position, []).append(event)
    for event in by_position.pop(-1, ()):
        _event(entry, event, [], found, protocol)
    for i, cmd in enumerate(decoded.commands):
        named: list[RecordHistory] = []
        renewed: list[RecordHistory] = []
        if type(cmd) in handled and key in msgspec.structs.astuple(cmd):  # a field names the key: ask
            answer = protocol.record_of(cmd)
            if answer is not None and answer.kind == kind and answer.key == key:
                named, renewed = _command(decoded, i, answer, found)
        events = by_position.pop(i, ())
        for event in events:
            _event(entry, event, named, found, protocol)
        if not events:
            for record in renewed:  # it emitted nothing about the record: it did all it will
                record.outcome = record.outcome or record.default_status
                record.ended_at = decoded.times[i]
    for position in sorted(by_position):  # the after-batch hooks
        for event in by_position[position]:
            _event(entry, event, [], found, protocol)


def _command(decoded: Decoded, i: int, answer: QueryAnswer,
             found: list[RecordHistory]) -> tuple[list[RecordHistory], list[RecordHistory]]:
    """Add command `i` to the records it names; return them, and those it begins or renews."""
    cmd = decoded.commands[i]
    result = decoded.entry.results[i]
    ref = command_ref(decoded, i)
    renewed: list[RecordHistory] = []
    if not answer.parties:  # it names the key only: the open records with it, else the latest
        targets = [r for r in found if not r.outcome] or found[-1:]
    else:
        parties = tuple(answer.parties)
        same = [r for r in found if r.parties == parties]
        targets = same[-1:]
        repeat = bool(same) and any(c.id == cmd.id and c.result == C.OK for c in same[-1].commands)
        if result == C.OK and not repeat:  # a command sent again (idempotent) changed nothing
            if not same or same[-1].outcome:  # the key is used again after its record ended: a new record
                targets = [RecordHistory(kind=answer.kind, key=answer.key, parties=parties, began_at=ref.at)]
                found.extend(targets)
            record = targets[0]
            record.default_status = answer.status or record.default_status
            if isinstance(answer.record, dict):
                record.record = dict(answer.record)
            renewed = targets
    for record in targets:
        record.commands.append(ref)
        record.seq = decoded.entry.seq
    return targets, renewed


def _event(entry: Entry, event: Event, named: list[RecordHistory], found: list[RecordHistory],
           protocol: Protocol) -> None:
    """Give an event to the records it concerns: those its command named, else the one open record."""
    targets = named
    if not targets:
        open_ones = [r for r in found if not r.outcome]
        if len(open_ones) > 1:
            for r in open_ones:
                r.shared_id = True
        targets = open_ones or found[-1:]
    outcome = protocol.record_outcomes.get(event.kind)
    for record in targets:
        record.events.append(event_record(entry, event))
        record.seq = entry.seq
        if outcome:
            record.outcome = outcome
            record.detail = dict(event.data)
            record.ended_at = event.at


def _finish(ledger: Ledger, protocol: Protocol, kind: str, key: str, found: list[RecordHistory]) -> None:
    """Settle each record's status: live records from the state, the others from their story."""
    live = {tuple(a.parties): a for a in protocol.query(ledger.state, kind, key)}
    for record in found:
        record.status = record.outcome or record.default_status
    for parties, answer in live.items():
        same = [r for r in found if r.parties == parties]
        if same:
            record = same[-1]
        else:  # live, but no command of the journal names it (it should not happen): show it anyway
            record = RecordHistory(kind=kind, key=key, parties=parties)
            found.append(record)
        record.live = True
        record.status = answer.status
        record.ended_at = None
        if isinstance(answer.record, dict):
            record.record = dict(answer.record)


# ------------------------------------------------------------------ trades


class Shortfall(msgspec.Struct, frozen=True, kw_only=True):
    """Who lacked what, and how much (minor units), when a trade failed for lack of funds."""

    party: str
    asset: str
    amount: int


class TradeStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A DvP trade of one pair of parties: its terms, where it stands, and its story.

    `status`: `queued` or `unmatched` while it waits in the book (`live`),
    then `settled`, `failed` or `cancelled`. `reason` says why it waits
    (the leg that blocked it) or why it failed (`insufficient_cash`,
    `insufficient_securities`, `party_frozen`, `party_inactive`,
    `unmatched`); `short` who was short of what at the cut-off. Amounts in
    minor units, times in ledger seconds.
    """

    trade: str
    seller: str
    buyer: str
    security: str
    quantity: int
    cash_asset: str
    amount: int
    settle_at: int
    status: str
    live: bool
    reason: str
    short: Shortfall | None
    instructed_at: int
    ended_at: int | None
    seq: int
    commands: tuple[CommandRef, ...]
    events: tuple[RecordEvent, ...]
    shared_id: bool


def _trade_status(r: RecordHistory) -> TradeStatus:
    terms = r.record
    reason = ""
    if r.status == "failed":
        reason = r.detail.get("reason", "")
    elif r.live:
        queued = [e for e in r.events if e.kind == "queued"]
        reason = queued[-1].data.get("reason", "") if queued else ""
    short = None
    if r.status == "failed" and {"party", "asset", "short"} <= r.detail.keys():
        short = Shortfall(party=r.detail["party"], asset=r.detail["asset"], amount=int(r.detail["short"]))
    seller, buyer = (r.parties + ("", ""))[:2]
    return TradeStatus(trade=r.key, seller=str(terms.get("seller", seller)), buyer=str(terms.get("buyer", buyer)),
                       security=str(terms.get("security", "")), quantity=int(terms.get("quantity", 0)),
                       cash_asset=str(terms.get("cash_asset", "")), amount=int(terms.get("amount", 0)),
                       settle_at=int(terms.get("settle_at", 0)), status=r.status, live=r.live, reason=reason,
                       short=short, instructed_at=r.began_at, ended_at=r.ended_at, seq=r.seq,
                       commands=tuple(r.commands), events=tuple(r.events), shared_id=r.shared_id)


def trades(ledger: Ledger, trade_id: str) -> list[TradeStatus]:
    """Every DvP trade with id `trade_id`, one per pair of parties (and per reuse after it ended), oldest first."""
    return [_trade_status(r) for r in records(ledger, TRADE, trade_id)]


def trade(ledger: Ledger, trade_id: str, seller: str | None = None, buyer: str | None = None) -> TradeStatus | None:
    """The DvP trade `trade_id` (of `seller` and `buyer`, if named); None if the journal has none.

    Trade ids are unique per pair of parties: if several pairs used this
    id, name the pair (ValueError otherwise). Of a pair that used the id
    again after its trade ended, the latest trade.
    """
    found = trades(ledger, trade_id)
    if seller is not None or buyer is not None:
        found = [t for t in found if (seller is None or t.seller == seller) and (buyer is None or t.buyer == buyer)]
    if len({(t.seller, t.buyer) for t in found}) > 1:
        pairs = ", ".join(sorted({f"{t.seller}->{t.buyer}" for t in found}))
        raise ValueError(f"trade {trade_id!r} was used by several pairs ({pairs}): name the seller and buyer")
    return found[-1] if found else None


# ------------------------------------------------------------------- repos


class MarginCallState(msgspec.Struct, frozen=True, kw_only=True):
    """A repo's open margin call: its number, amount (cash minor units) and deadline (0: held past it)."""

    number: int
    amount: int
    deadline: int


class RepoState(msgspec.Struct, frozen=True, kw_only=True):
    """A repo: its terms, its figures now (while open), how it ended, and its story.

    `status`: `open`, `closing` (the closing leg waits for the borrower's
    cash), `closed` or `defaulted`. While `live`, the figures are at ledger
    time `at`: `interest` accrued, exposure `E = principal + interest -
    margin`, `market_value` and `collateral_value` of the collateral at the
    latest price (None if it has no price or is not eligible now),
    `haircut` applied, the open `call`, and `margin` (M, the cash margin the
    lender holds). Once ended: `closed` gives `interest` and the `margin`
    that was netted against the repayment; `defaulted` gives the `reason`,
    `exposure`, `market_value`, `close_out` (E - MV, what the borrower still
    owes) and `margin` kept. Amounts in the cash asset's minor units.
    """

    repo: str
    borrower: str
    lender: str
    collateral: str
    quantity: int
    cash_asset: str
    principal: int
    rate: str
    start: int
    end: int
    status: str
    live: bool
    at: int
    interest: int | None
    exposure: int | None
    market_value: int | None
    collateral_value: int | None
    haircut: str
    margin: int | None
    call: MarginCallState | None
    calls: int
    reason: str
    close_out: int | None
    seq: int
    commands: tuple[CommandRef, ...]
    events: tuple[RecordEvent, ...]


def _int(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def _decimal_text(fraction_text: str) -> str:
    """A haircut as a decimal string when it is one exactly ("1/50" -> "0.02"), else as given."""
    if not fraction_text:
        return ""
    f = Fraction(fraction_text)
    for places in range(0, 19):
        scaled = f * 10 ** places
        if scaled.denominator == 1:
            sign = "-" if scaled < 0 else ""
            digits = str(abs(scaled.numerator)).rjust(places + 1, "0")
            return sign + (digits[:-places] + "." + digits[-places:] if places else digits)
    return fraction_text


def _repo_state(r: RecordHistory) -> RepoState:
    terms = r.record
    collateral, quantity = str(terms.get("collateral", "")), int(terms.get("quantity", 0))
    principal = int(terms.get("principal", 0))
    detail = r.detail
    call = None
    interest = exposure = market_value = collateral_value = close_out = margin = None
    if r.live:
        start, at, haircut = int(terms.get("start", 0)), int(terms.get("at", 0)), str(terms.get("haircut_applied", ""))
        interest, exposure = _int(terms.get("interest")), _int(terms.get("exposure"))
        market_value, collateral_value = _int(terms.get("market_value")), _int(terms.get("collateral_value"))
        margin = int(terms.get("margin", 0))
        if terms.get("call"):
            call = MarginCallState(number=int(terms.get("calls", 0)), amount=int(terms["call"]),
                                   deadline=int(terms.get("deadline", 0)) if terms.get("timer") else 0)
    else:
        start, at, haircut = r.began_at, r.ended_at or 0, str(terms.get("haircut", ""))
        for e in r.events:  # a substitution changed the collateral since the terms the opening gave
            if e.kind == "repo_substituted" and "collateral" in e.data:
                collateral, quantity = e.data["collateral"], int(e.data.get("quantity", 0))
        if r.status == "closed" and "interest" in detail:
            interest = int(detail["interest"])
            margin = principal + interest - int(detail.get("paid", 0))  # paid = principal + I - M
        elif r.status == "defaulted":
            exposure, market_value = _int(detail.get("exposure")), _int(detail.get("mv"))
            close_out, margin = _int(detail.get("close_out")), _int(detail.get("margin"))
    return RepoState(repo=r.key, borrower=str(terms.get("borrower", "")), lender=str(terms.get("lender", "")),
                     collateral=collateral, quantity=quantity, cash_asset=str(terms.get("cash_asset", "")),
                     principal=principal, rate=str(terms.get("rate", "")), start=start, end=int(terms.get("end", 0)),
                     status=r.status, live=r.live, at=at, interest=interest, exposure=exposure,
                     market_value=market_value, collateral_value=collateral_value, haircut=_decimal_text(haircut),
                     margin=margin, call=call, calls=int(terms.get("calls", 0)) if r.live else sum(
                         e.kind == "margin_call" for e in r.events),
                     reason=detail.get("reason", "") if not r.live else "", close_out=close_out, seq=r.seq,
                     commands=tuple(r.commands), events=tuple(r.events))


def repo(ledger: Ledger, repo_id: str) -> RepoState | None:
    """The repo `repo_id`: live figures if it is open, else how it ended; None if no repo opened with this id.

    A repo id may be used again once its repo ended: the latest repo.
    """
    found = [r for r in records(ledger, REPO, repo_id) if r.commands and any(c.result == C.OK for c in r.commands)]
    return _repo_state(found[-1]) if found else None
