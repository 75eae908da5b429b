"""The trade-file format: its event types and how its values are written.

Takes nothing; gives the typed events of a trade file (`ConfigEvent`,
`DvpEvent`, ...: one `msgspec.Struct` per event type, decoded and
type-checked in one step), `BadLine` (an error that names its line), and
the parsers and formatters of the values in it: timestamps (ISO 8601 UTC,
whole seconds), durations (`PT1H`), amounts (decimal strings or integers,
converted exactly to minor units). The file format itself is described in
`docs/formats.md`; reading files is `protocols.replay.read`.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Union

import msgspec

from engine.machine import AMOUNT_MAX

Amount = Union[int, str]
_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
SETUP_TYPES = frozenset({"asset", "participant", "deposit", "config"})


class BadLine(Exception):
    """A line that cannot be applied: its number and a one-line reason (data, never raised across stages)."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason

    def __reduce__(self):
        return BadLine, (self.line, self.reason)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BadLine) and (self.line, self.reason) == (other.line, other.reason)

    def __hash__(self) -> int:
        return hash((self.line, self.reason))


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
    queue: bool | None = None  # false: no DvP settlement queue (a trade short of funds fails at once)
    offsetting: bool | None = None  # false: no liquidity-saving offsetting (queue and recycling only)


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


_FORMATTED: dict[int, str] = {}


def format_time(seconds: int) -> str:
    """Seconds since the epoch as an ISO 8601 UTC timestamp (`2026-03-02T09:30:00Z`)."""
    text = _FORMATTED.get(seconds)
    if text is None:
        text = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if len(_FORMATTED) >= _TIME_CACHE_MAX:
            _FORMATTED.clear()
        _FORMATTED[seconds] = text
    return text


DURATION_DAYS_MAX = 3_660  # about ten years: no settlement interval is longer
DURATION_SECONDS_MAX = DURATION_DAYS_MAX * 86_400


def parse_duration(value: str, field: str) -> int:
    """Parse an ISO 8601 duration (PnDTnHnMnS) into seconds, at most `DURATION_DAYS_MAX` days."""
    match = _DURATION.match(value) if isinstance(value, str) and len(value) <= 40 else None
    if not match or value in ("P", "PT") or value.endswith("T"):
        raise ValueError(f"field '{field}': {value!r:.60} is not an ISO 8601 duration like PT1H")
    days, hours, minutes, seconds = (int(x or 0) for x in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"field '{field}': duration {value!r} must be positive")
    if total > DURATION_SECONDS_MAX:
        raise ValueError(f"field '{field}': duration {value!r} is longer than {DURATION_DAYS_MAX} days")
    return total


_POW10 = tuple(10**k for k in range(19))
AMOUNT_TEXT_MAX = 40  # characters of a decimal amount: more than 2^63 - 1 at any scale


def to_minor(value: Amount, decimals: int, field: str, positive: bool = True) -> int:
    """Convert a decimal string or JSON integer of whole units to integer minor units, exactly."""
    if type(value) is str and len(value) <= AMOUNT_TEXT_MAX:  # the common case, checked in a few C calls
        dot = value.find(".")
        minor = -1
        if dot < 0:
            if value.isdigit() and value.isascii() and (value[0] != "0" or len(value) == 1):
                minor = int(value) * _POW10[decimals]
        else:
            frac = len(value) - dot - 1
            digits = value[:dot] + value[dot + 1:]
            if 0 < dot and 0 < frac <= decimals and digits.isdigit() and digits.isascii() \
                    and (value[0] != "0" or dot == 1):
                minor = int(digits) * _POW10[decimals - frac]
        if 0 < minor <= AMOUNT_MAX or (minor == 0 and not positive):
            return minor
    return _to_minor(value, decimals, field, positive)


def _to_minor(value: Amount, decimals: int, field: str, positive: bool) -> int:
    kind = type(value)
    if kind is int:
        minor = value * 10**decimals
    elif kind is not str:
        raise ValueError(f"field '{field}': expected a decimal string or integer, got {value!r:.60}")
    elif len(value) > AMOUNT_TEXT_MAX:
        raise ValueError(f"field '{field}': {value!r:.60} is longer than {AMOUNT_TEXT_MAX} characters")
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
