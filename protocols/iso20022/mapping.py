"""What the trade file's values are in ISO 20022, and back: the vocabulary every mapping shares.

Takes bound messages, element paths and trade-file values; gives:

- `build(cls, tree)`: a bound message from a nested dict keyed by ISO 20022
  element names (`{"TxId": ..., "SttlmAmt": {"Amt": {"value": ..., "Ccy": ...}}}`),
  each code string turned into its schema enumeration, so a mapping reads
  like the element paths of docs/iso20022.md and no XML is written by hand;
- `get(message, "A/B/C")`: the value at an element path, or None;
- `Assets`: the set-up's assets (kind, decimals, price basis), and the
  conversions between minor units and decimal amounts, which refuse more
  decimals than the asset has;
- times (`xml_time`, `seconds_of`), security identification (ISIN when
  the asset id is one, else a proprietary id), party identification (BIC
  and LEI), and the quantity element for the asset's price basis.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import typing
from decimal import Decimal
from enum import Enum
from typing import Any

import msgspec
from xsdata.models.datatype import XmlDate, XmlDateTime

from ..tradefile import AssetEvent, format_time
from .parties import Parties

ISIN = re.compile(r"[A-Z]{2}[A-Z0-9]{9}[0-9]")
CURRENCY = re.compile(r"[A-Z]{3}")
ISSUER = "dvp"  # the issuer of this bridge's proprietary codes and ids
LEDGER_ASSET = "LEDGER-ASSET"  # OthrId/Tp/Prtry: the id is the ledger's own asset id
AMOUNT_DIGITS_MAX = 18  # ActiveCurrencyAndAmount and FaceAmt: 18 digits, 5 of them decimals
FRACTION_DIGITS_MAX = 5

_SLOTS: dict[type, dict[str, tuple[str, Any, bool]]] = {}


def _slots(cls: type) -> dict[str, tuple[str, Any, bool]]:
    """XML name -> (attribute, inner type, repeated) for a binding class (cached)."""
    slots = _SLOTS.get(cls)
    if slots is None:
        hints = typing.get_type_hints(cls)
        slots = {}
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            inner = args[0] if args and typing.get_origin(hint) is not list else hint
            many = typing.get_origin(inner) is list
            if many:
                inner = typing.get_args(inner)[0]
            slots[f.metadata.get("name", f.name)] = (f.name, inner, many)
        _SLOTS[cls] = slots
    return slots


def build(cls: type, tree: dict[str, Any]) -> Any:
    """Instantiate binding `cls` from a dict keyed by element names (None values are left out)."""
    slots = _slots(cls)
    kwargs = {}
    for name, value in tree.items():
        if value is None:
            continue
        try:
            attr, inner, many = slots[name]
        except KeyError:
            raise KeyError(f"{cls.__name__} has no element {name!r}") from None
        if many:
            kwargs[attr] = [_value(inner, item) for item in (value if isinstance(value, list) else [value])]
        else:
            kwargs[attr] = _value(inner, value)
    return cls(**kwargs)


def _value(inner: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return build(inner, value)
    if isinstance(inner, type) and issubclass(inner, Enum) and not isinstance(value, Enum):
        return inner(value)
    return value


def get(message: Any, path: str) -> Any:
    """The value at `path` (element names joined by /) under `message`, or None if any step is absent."""
    node = message
    for name in path.split("/"):
        if node is None:
            return None
        attr = _slots(type(node))[name][0]
        node = getattr(node, attr)
        if isinstance(node, list):
            node = node[0] if node else None
    return node.value if isinstance(node, Enum) else node


# -------------------------------------------------------------- assets


class AssetInfo(msgspec.Struct, frozen=True):
    id: str
    kind: str  # cash | security
    decimals: int
    per_unit: bool  # quoted per unit (funds, equities): quantities are units, not face amounts
    chain: str = "main"
    isin: str = ""  # a security's ISIN: its id if the id is one, else the asset line's own `isin`
    currency: str = ""  # a cash asset's ISO 4217 code: its id if the id is one, else the asset line's `currency`


class Assets:
    """The set-up's assets, by id, and by the codes ISO 20022 names them with (ISIN, currency)."""

    def __init__(self) -> None:
        self.by_id: dict[str, AssetInfo] = {}
        self.by_isin: dict[str, str] = {}
        self.by_currency: dict[str, list[str]] = {}

    def add(self, event: AssetEvent, isin: str = "", currency: str = "") -> str | None:
        """Add an asset line's asset; return why its codes cannot be used, or None."""
        if event.kind == "security":
            isin = isin or (event.id if isin_valid(event.id) else "")
            if isin and not isin_valid(isin):
                return f"isin {isin!r} is not an ISIN (12 characters, its check digit)"
            if isin in self.by_isin:
                return f"isin {isin} already names asset {self.by_isin[isin]!r}"
            currency = ""
        else:
            currency = currency or (event.id if CURRENCY.fullmatch(event.id) else "")
            if currency and not CURRENCY.fullmatch(currency):
                return f"currency {currency!r} is not an ISO 4217 code (three capital letters)"
            isin = ""
        per_unit = event.price_basis == "per_unit"
        self.by_id[event.id] = AssetInfo(event.id, event.kind, event.decimals, per_unit, event.chain, isin, currency)
        if isin:
            self.by_isin[isin] = event.id
        if currency:
            self.by_currency.setdefault(currency, []).append(event.id)
        return None

    def add_plain(self, event: AssetEvent) -> None:
        """Add an asset whose codes were refused: it keeps its id, and no ISO 20022 code names it."""
        self.by_id[event.id] = AssetInfo(event.id, event.kind, event.decimals, event.price_basis == "per_unit",
                                         event.chain)

    def get(self, asset: str) -> AssetInfo | None:
        return self.by_id.get(asset)

    def security(self, code: str) -> str | None:
        """The asset an ISIN or a ledger asset id names."""
        return self.by_isin.get(code) or (code if code in self.by_id else None)

    def cash(self, currency: str) -> list[str]:
        """The cash assets a currency code names (more than one: ambiguous)."""
        return self.by_currency.get(currency, [])


def to_decimal(minor: int, decimals: int) -> Decimal:
    """Minor units as a decimal with exactly the asset's decimals (995000.00)."""
    return Decimal(minor).scaleb(-decimals) if decimals else Decimal(minor)


def written(value: int | str) -> Decimal:
    """A trade-file amount (a JSON integer or a decimal string) as a decimal written the same way."""
    return Decimal(value) if isinstance(value, int) else Decimal(value)


def fits(amount: Decimal) -> str | None:
    """Why an amount cannot go in an ISO 20022 amount or face amount (18 digits, 5 decimals), or None."""
    sign, digits, exponent = amount.as_tuple()
    fraction = max(0, -exponent)
    whole = len(digits) - fraction if exponent < 0 else len(digits) + exponent
    if fraction > FRACTION_DIGITS_MAX:
        return f"has {fraction} decimals; ISO 20022 amounts have at most {FRACTION_DIGITS_MAX}"
    if whole + fraction > AMOUNT_DIGITS_MAX:
        return f"has more than {AMOUNT_DIGITS_MAX} digits, more than ISO 20022 amounts hold"
    return None


def trade_file_amount(value: Decimal, decimals: int, what: str) -> int | str:
    """An XML decimal as the trade file writes it: a JSON integer if written without a point, else a string.

    Raises ValueError when it has more decimals than `what` (the asset or
    currency) has, is negative or zero, or is not finite.
    """
    if not value.is_finite():
        raise ValueError("not a finite number")
    sign, digits, exponent = value.as_tuple()
    if sign or not any(digits):
        raise ValueError("must be positive")
    fraction = max(0, -exponent)
    if fraction > decimals:
        raise ValueError(f"has {fraction} decimals; {what} has {decimals}")
    if exponent >= 0:
        return int(value)
    return format(value, "f")


# --------------------------------------------------------------- times


def xml_time(seconds: int) -> XmlDateTime:
    return XmlDateTime.from_string(format_time(seconds))


def xml_date(seconds: int) -> XmlDate:
    return XmlDate.from_string(format_time(seconds)[:10])


def seconds_of(value: Any) -> int:
    """A date-time (or a date: its 00:00:00 UTC) as whole seconds since the epoch; ValueError if it cannot be."""
    if isinstance(value, XmlDate):
        moment = datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.timezone.utc)
    elif isinstance(value, XmlDateTime):
        if value.offset is None:
            raise ValueError("has no UTC offset (end it with Z or +00:00)")
        if value.fractional_second:
            raise ValueError("has fractions of a second; the ledger keeps whole seconds")
        moment = value.to_datetime()
    else:
        raise ValueError("is not a date or date-time")
    seconds = int(moment.timestamp())
    if seconds < 0:
        raise ValueError("is before 1970")
    return seconds


# ----------------------------------------------------- identifications


def isin_valid(code: str) -> bool:
    """An ISIN: its pattern and its check digit (Luhn over the letters as numbers)."""
    if not ISIN.fullmatch(code):
        return False
    digits = "".join(str(int(c, 36)) for c in code[:-1])
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return (10 - total % 10) % 10 == int(code[-1])


def security_tree(info: AssetInfo) -> dict[str, Any]:
    """FinInstrmId for a ledger asset: its ISIN if it has one, else its id as a proprietary identification."""
    if info.isin:
        return {"ISIN": info.isin}
    return {"OthrId": {"Id": info.id, "Tp": {"Prtry": LEDGER_ASSET}}}


def quantity_tree(info: AssetInfo, quantity: Decimal) -> dict[str, Any]:
    """FinancialInstrumentQuantity: units for per-unit assets, a face amount for bonds and bills."""
    return {"Unit": quantity} if info.per_unit else {"FaceAmt": quantity}


def party_tree(parties: Parties, participant: str) -> dict[str, Any]:
    """A party by BIC (AnyBIC) and LEI; with only an LEI, Id is the participant id as a proprietary id."""
    bic = parties.bic.get(participant)
    lei = parties.lei.get(participant)
    if bic:
        ident = {"AnyBIC": bic}
    else:
        ident = {"PrtryId": {"Id": participant[:35], "Issr": ISSUER}}
    return {"Id": ident, "LEI": lei}
