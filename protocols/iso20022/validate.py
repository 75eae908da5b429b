"""Check a bound ISO 20022 message against its schema's rules, from the bindings' own metadata.

Takes a message (an xsdata dataclass of `python-iso20022`); gives the list
of `Problem`s (element path, value, rule broken), empty when the message
is valid. The rules are the schema facets xsdata generated into each
field's metadata: mandatory elements (`required`, `min_occurs`),
repetitions (`max_occurs`), text lengths and patterns (BIC, LEI, ISIN,
currency codes), decimals' total and fraction digits and bounds, and the
schema's choices (every ISO 20022 type named `...Choice` holds exactly one
of its elements). xsdata does not check facets when it parses or
serialises; this does, for messages read and written alike.

What it cannot see: rules the XSDs do not state (ISO 20022 usage rules
and market practice), which the mapping checks itself.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from decimal import Decimal
from enum import Enum
from typing import Any, NamedTuple


class Problem(NamedTuple):
    path: str
    value: Any
    rule: str


class _Field(NamedTuple):
    attr: str
    xml: str  # the element name, @attribute, or "" for an element's text
    required: bool
    many: bool
    min_occurs: int
    max_occurs: int | None
    child: type | None  # a dataclass: recurse
    facets: tuple  # (name, value) pairs to check on scalars


_PLANS: dict[type, tuple[bool, tuple[_Field, ...]]] = {}
_PATTERNS: dict[str, re.Pattern] = {}
_FACETS = ("min_length", "max_length", "length", "pattern", "total_digits", "fraction_digits", "min_inclusive",
           "max_inclusive", "min_exclusive", "max_exclusive")


def _plan(cls: type) -> tuple[bool, tuple[_Field, ...]]:
    plan = _PLANS.get(cls)
    if plan is not None:
        return plan
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        md = f.metadata
        kind = md.get("type")
        if kind == "Wildcard":
            continue
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        inner = args[0] if args else hint
        many = typing.get_origin(inner) is list or typing.get_origin(hint) is list
        if typing.get_origin(inner) is list:
            inner = typing.get_args(inner)[0]
        elif typing.get_origin(hint) is list:
            inner = typing.get_args(hint)[0]
        name = md.get("name", f.name)
        xml = f"@{name}" if kind == "Attribute" else ("" if kind is None else name)
        fields.append(_Field(
            attr=f.name, xml=xml, required=bool(md.get("required")) or md.get("min_occurs", 0) > 0,
            many=many, min_occurs=md.get("min_occurs", 0), max_occurs=md.get("max_occurs"),
            child=inner if dataclasses.is_dataclass(inner) else None,
            facets=tuple((k, md[k]) for k in _FACETS if k in md)))
    plan = _PLANS[cls] = ("Choice" in cls.__name__, tuple(fields))
    return plan


def problems(message: Any, root: str = "Document") -> list[Problem]:
    """Every rule of the schema `message` breaks, each with its element path."""
    found: list[Problem] = []
    _walk(message, root, found)
    return found


def _walk(obj: Any, path: str, found: list[Problem]) -> None:
    choice, fields = _plan(type(obj))
    present = 0
    for f in fields:
        value = getattr(obj, f.attr)
        where = f"{path}/{f.xml}" if f.xml else path
        if f.many:
            items = value or []
            if items:
                present += 1
            if len(items) < f.min_occurs:
                found.append(Problem(where, None, f"missing mandatory element (at least {f.min_occurs})"))
            if f.max_occurs is not None and len(items) > f.max_occurs:
                found.append(Problem(where, len(items), f"more than {f.max_occurs} repetitions"))
            for item in items:
                _one(item, f, where, found)
            continue
        if value is None:
            if f.required and not choice:
                found.append(Problem(where, None, "missing mandatory element" if f.xml else "missing value"))
            continue
        present += 1
        _one(value, f, where, found)
    if choice and present != 1:
        names = ", ".join(f.xml for f in fields)
        found.append(Problem(path, None, f"a choice holds exactly one of {names}; it holds {present}"))


def _one(value: Any, f: _Field, where: str, found: list[Problem]) -> None:
    if f.child is not None:
        if not isinstance(value, f.child):
            found.append(Problem(where, value, f"expected {f.child.__name__}"))
        else:
            _walk(value, where, found)
        return
    for facet, limit in f.facets:
        broken = _breaks(value, facet, limit)
        if broken:
            found.append(Problem(where, value, broken))


def _breaks(value: Any, facet: str, limit: Any) -> str | None:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str):
        if facet == "pattern":
            pattern = _PATTERNS.get(limit)
            if pattern is None:
                pattern = _PATTERNS[limit] = re.compile(limit)
            return None if pattern.fullmatch(value) else f"does not match the pattern {limit}"
        if facet == "min_length" and len(value) < limit:
            return f"shorter than {limit} characters"
        if facet == "max_length" and len(value) > limit:
            return f"longer than {limit} characters"
        if facet == "length" and len(value) != limit:
            return f"not {limit} characters long"
        return None
    if isinstance(value, Decimal):
        if not value.is_finite():
            return "not a finite decimal"
        digits, exponent = _digits(value)
        if facet == "total_digits" and digits > limit:
            return f"more than {limit} digits"
        if facet == "fraction_digits" and exponent > limit:
            return f"more than {limit} fraction digits"
        if facet == "min_inclusive" and value < limit:
            return f"less than {limit}"
        if facet == "max_inclusive" and value > limit:
            return f"more than {limit}"
        if facet == "min_exclusive" and value <= limit:
            return f"not more than {limit}"
        if facet == "max_exclusive" and value >= limit:
            return f"not less than {limit}"
    return None


def _digits(value: Decimal) -> tuple[int, int]:
    """(total digits, fraction digits) of the value, as XML Schema counts them: trailing zeros do not count."""
    if not value:
        return 1, 0
    sign, digits, exponent = value.normalize().as_tuple()
    fraction = max(0, -exponent)
    total = max(len(digits), fraction) if exponent < 0 else len(digits) + exponent
    return total, fraction
