"""Trade files: reading JSON Lines and CSV events, validating them line by line.

The format is `shared/spec/FORMATS.md`. Reading is a pipeline of small
stages, each returning records or errors that carry their line number:

1. `scan` reads each line's type and time (cheap) so timed events can be
   put in `at` order (file order among equal times) without holding the
   file in memory: only (time, line, offset) triples are kept.
2. `decode` turns one line into a typed event (msgspec validates types as it
   decodes: a float amount, a missing field or a wrong type fails here).
3. The replay driver checks references (unknown participants and assets)
   and converts amounts to integer minor units with `to_minor`.

An error is a `BadLine(line, reason)`; it never stops the replay.
"""

from __future__ import annotations

import csv
import datetime
import re
from array import array
from collections.abc import Iterator
from typing import Any, Union

import msgspec

from engine.machine import AMOUNT_MAX

Amount = Union[int, str]
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
SETUP_TYPES = frozenset({"asset", "participant", "deposit", "config"})


class BadLine(Exception):
    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class _Event(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class ConfigEvent(_Event, tag="config"):
    mode: str | None = None
    netting_cycle: str | None = None
    cutoff: str | None = None
    mta: Amount | None = None
    grace: str | None = None
    haircuts: dict[str, Amount] | None = None
    partial_settlement: bool | None = None
    bilateral: bool | None = None


class AssetEvent(_Event, tag="asset"):
    id: str
    kind: str
    decimals: int
    chain: str = "main"
    asset_class: str = msgspec.field(default="", name="class")
    maturity: str = ""
    price_basis: str | None = None
    day_count: str | None = None
    price: Amount | None = None


class ParticipantEvent(_Event, tag="participant"):
    id: str
    roles: list[str] = msgspec.field(default_factory=lambda: ["participant"])


class DepositEvent(_Event, tag="deposit"):
    participant: str
    asset: str
    amount: Amount


class PriceEvent(_Event, tag="price"):
    at: str
    asset: str
    price: Amount


class DvpEvent(_Event, tag="dvp"):
    at: str
    id: str
    seller: str
    buyer: str
    security: str
    quantity: Amount
    cash_asset: str
    amount: Amount
    timeout: str | None = None
    initiator: str | None = None


class RepoEvent(_Event, tag="repo"):
    at: str
    id: str
    borrower: str
    lender: str
    collateral: str
    quantity: Amount
    cash_asset: str
    principal: Amount
    rate: Amount
    end: str
    haircut: Amount | None = None
    mta: Amount | None = None
    grace: str | None = None


class SubstituteEvent(_Event, tag="substitute"):
    at: str
    repo: str
    collateral: str
    quantity: Amount


class DeliverEvent(_Event, tag="deliver"):
    at: str
    id: str
    source: str = msgspec.field(name="from")
    target: str = msgspec.field(name="to")
    asset: str
    amount: Amount


class CutoffEvent(_Event, tag="cutoff"):
    at: str


Event = Union[
    ConfigEvent, AssetEvent, ParticipantEvent, DepositEvent, PriceEvent, DvpEvent, RepoEvent,
    SubstituteEvent, DeliverEvent, CutoffEvent,
]
EVENT_TYPES = {
    cls.__struct_config__.tag: cls
    for cls in (ConfigEvent, AssetEvent, ParticipantEvent, DepositEvent, PriceEvent, DvpEvent, RepoEvent,
                SubstituteEvent, DeliverEvent, CutoffEvent)
}
_json_decoder = msgspec.json.Decoder(Event)


class _Head(msgspec.Struct):
    type: str = ""
    at: Any = None


_head_decoder = msgspec.json.Decoder(_Head)
_JSON_FIELDS = frozenset({"roles", "haircuts"})


def _explain(exc: Exception) -> str:
    """Turn a msgspec error into 'field X: ...' wording."""
    text = str(exc)
    match = re.match(r"^(.*) - at `\$\.([A-Za-z_]+)`", text)
    if match:
        message, field = match.groups()
        if "got `float`" in message:
            return f"field '{field}': a number with a fraction or exponent is not allowed (use a decimal string)"
        if field == "type" and message.startswith("Invalid value"):
            return f"unknown event type {message.split('Invalid value ', 1)[1]}"
        return f"field '{field}': {message[0].lower()}{message[1:]}"
    missing = re.match(r"^Object missing required field `([A-Za-z_]+)`", text)
    if missing:
        return f"missing field '{missing.group(1)}'"
    if "missing required field `type`" in text or "Expected `object`" in text:
        return f"not an event object ({text})"
    return text


_TIME_CACHE: dict[str, int] = {}
_TIME_CACHE_MAX = 1 << 16


def parse_time(value: Any, field: str = "at") -> int:
    """Parse an ISO 8601 UTC timestamp into integer seconds since the epoch."""
    seconds = _TIME_CACHE.get(value) if type(value) is str else None
    if seconds is not None:
        return seconds
    seconds = _parse_time(value, field)
    if len(_TIME_CACHE) >= _TIME_CACHE_MAX:
        _TIME_CACHE.clear()
    _TIME_CACHE[value] = seconds
    return seconds


def _parse_time(value: Any, field: str) -> int:
    if not isinstance(value, str):
        raise ValueError(f"field '{field}': expected an ISO 8601 UTC timestamp, got {value!r}")
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"field '{field}': {value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None or moment.utcoffset() != datetime.timedelta(0):
        raise ValueError(f"field '{field}': {value!r} must be in UTC (end with Z)")
    if moment.microsecond:
        raise ValueError(f"field '{field}': {value!r} has fractions of a second; whole seconds only")
    seconds = int(moment.timestamp())
    if seconds < 0:
        raise ValueError(f"field '{field}': {value!r} is before 1970")
    return seconds


def format_time(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration(value: str, field: str) -> int:
    """Parse an ISO 8601 duration (PnDTnHnMnS) into seconds."""
    match = _DURATION.match(value or "")
    if not match or value in ("P", "PT") or value.endswith("T"):
        raise ValueError(f"field '{field}': {value!r} is not an ISO 8601 duration like PT1H")
    days, hours, minutes, seconds = (int(x or 0) for x in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"field '{field}': duration {value!r} must be positive")
    return total


def to_minor(value: Amount, decimals: int, field: str, positive: bool = True) -> int:
    """Convert a decimal string or JSON integer of whole units to integer minor units."""
    kind = type(value)
    if kind is int:
        minor = value * 10**decimals
    elif kind is not str:
        raise ValueError(f"field '{field}': expected a decimal string or integer, got {value!r}")
    else:
        whole, dot, frac = value.partition(".")
        if not (whole.isdigit() and whole.isascii() and (not dot or (frac.isdigit() and frac.isascii()))):
            raise ValueError(f"field '{field}': {value!r} is not a non-negative decimal number")
        if len(whole) > 1 and whole[0] == "0":
            raise ValueError(f"field '{field}': {value!r} has a leading zero")
        if len(frac) > decimals:
            raise ValueError(f"field '{field}': {value!r} has more than {decimals} decimals")
        minor = int(whole) * 10**decimals + (int(frac) * 10 ** (decimals - len(frac)) if frac else 0)
    if minor < 0 or (positive and minor == 0):
        raise ValueError(f"field '{field}': {value!r} must be {'positive' if positive else 'non-negative'}")
    if minor > AMOUNT_MAX:
        raise ValueError(f"field '{field}': {value!r} is larger than the ledger can hold")
    return minor


def format_minor(amount: int, decimals: int) -> str:
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if not decimals:
        return f"{sign}{amount}"
    scale = 10**decimals
    return f"{sign}{amount // scale}.{amount % scale:0{decimals}d}"


# ------------------------------------------------------------------- reading


class TradeFile:
    """A trade file opened for reading in `at` order, by line."""

    def __init__(self, path: str, fmt: str | None = None):
        self.path = path
        if fmt is None:
            fmt = "csv" if path.lower().endswith(".csv") else "jsonl"
        if fmt not in ("jsonl", "csv"):
            raise ValueError(f"unknown trade file format {fmt!r} (jsonl or csv)")
        self.fmt = fmt
        self.header: list[str] | None = None

    def lines(self, start: int = 0, number: int = 0) -> Iterator[tuple[int, int, bytes]]:
        """Yield (line number, byte offset, raw line) for every non-blank, non-comment line.

        `start` is a byte offset where a line begins and `number` the number
        of the line before it, to resume reading part way through.
        """
        offset = start
        with open(self.path, "rb") as handle:
            handle.seek(start)
            for number, raw in enumerate(handle, number + 1):
                start = offset
                offset += len(raw)
                stripped = raw.strip()
                if not stripped or stripped.startswith(b"#"):
                    continue
                if self.fmt == "csv" and self.header is None:
                    self.header = next(csv.reader([stripped.decode("utf-8")]))
                    continue
                yield number, start, stripped

    def _csv_object(self, raw: bytes) -> dict[str, Any]:
        assert self.header is not None
        cells = next(csv.reader([raw.decode("utf-8")]))
        if len(cells) > len(self.header):
            raise ValueError(f"{len(cells)} cells but the header names {len(self.header)} columns")
        row: dict[str, Any] = {}
        for name, cell in zip(self.header, cells):
            if cell == "":
                continue
            if name in _JSON_FIELDS:
                row[name] = msgspec.json.decode(cell)
            elif name == "decimals" and cell.isdigit():
                row[name] = int(cell)
            elif name in ("partial_settlement", "bilateral") and cell in ("true", "false"):
                row[name] = cell == "true"
            else:
                row[name] = cell
        return row

    def head(self, raw: bytes) -> tuple[str, Any]:
        """Return (type, raw `at`) of a line, cheaply."""
        if self.fmt == "jsonl":
            head = _head_decoder.decode(raw)
            return head.type, head.at
        row = self._csv_object(raw)
        return row.get("type", ""), row.get("at")

    def decode(self, raw: bytes) -> Any:
        """Decode one line into its typed event; raise ValueError with a clear reason."""
        try:
            if self.fmt == "jsonl":
                return _json_decoder.decode(raw)
            return msgspec.convert(self._csv_object(raw), Event, strict=True)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ValueError(_explain(exc)) from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ValueError(f"unreadable line ({exc})") from None

    def classify(self, number: int, raw: bytes) -> tuple[str, int] | BadLine:
        """Return a line's (type, at seconds; -1 for setup types), or why it is bad."""
        try:
            kind, at = self.head(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, csv.Error, ValueError) as exc:
            return BadLine(number, f"not a JSON object ({_explain(exc)})")
        if kind not in EVENT_TYPES:
            return BadLine(number, f"unknown event type {kind!r}" if kind else "missing field 'type'")
        if kind in SETUP_TYPES:
            return kind, -1
        if at is None:
            return BadLine(number, f"{kind}: missing field 'at'")
        try:
            return kind, parse_time(at)
        except ValueError as exc:
            return BadLine(number, f"{kind}: {exc}")

    def scan(self) -> tuple[list[tuple[int, int, bytes]], array, array, array, list[BadLine], bool]:
        """Split lines into setup events (kept), timed events (time, line, offset) and errors.

        Returns (setup, times, line numbers, offsets, errors, in_order).
        """
        setup: list[tuple[int, int, bytes]] = []
        times, numbers, offsets = array("q"), array("q"), array("q")
        errors: list[BadLine] = []
        in_order = True
        last = None
        for number, offset, raw in self.lines():
            verdict = self.classify(number, raw)
            if type(verdict) is BadLine:
                errors.append(verdict)
                continue
            seconds = verdict[1]
            if seconds < 0:
                setup.append((number, offset, raw))
                continue
            if last is not None and seconds < last:
                in_order = False
            last = seconds
            times.append(seconds)
            numbers.append(number)
            offsets.append(offset)
        return setup, times, numbers, offsets, errors, in_order

    def read_at(self, offsets: list[int]) -> Iterator[bytes]:
        """Yield the lines starting at the given byte offsets, in the order given."""
        with open(self.path, "rb") as handle:
            for offset in offsets:
                handle.seek(offset)
                yield handle.readline().strip()

    def read_lines(self) -> Iterator[tuple[int, bytes]]:
        for number, _offset, raw in self.lines():
            yield number, raw
