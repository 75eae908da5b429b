"""Read: a trade file's bytes to typed events, and what is wrong with each bad line.

Takes a path to a JSON Lines or CSV trade file; gives, per line, its
number, its byte offset and either a typed event (`protocols.tradefile`:
decoding checks every field's type) or a `BadLine(line, reason)`. It also
gives the file's `Plan`: whether its timed events are already in `at`
order (then they stream in one pass), else the (time, line, offset) of each
so a second pass can read them back in order without holding the file in
memory. Setup events (config, assets, participants, deposits) are kept
aside: they take effect before every timed event.

Both formats tolerate a UTF-8 byte-order mark. CSV records are read with
`csv.reader`, so a quoted cell may hold a comma, a quote or a newline and
line numbers stay those of the file; the header is read once, and a `;`
delimiter is recognised.
"""

from __future__ import annotations

import csv
import io
import json
from array import array
from collections.abc import Iterator
from typing import Any

import msgspec

from ..tradefile import _TIME_CACHE, EVENT_TYPES, SETUP_TYPES, BadLine, DvpEvent, Event, _explain, parse_time

BOM = b"\xef\xbb\xbf"
LINE_BYTES_MAX = 1 << 20  # a longer line is refused as a whole (no event is anywhere near)
_JSON_FIELDS = frozenset({"roles", "haircuts"})
_BOOL_FIELDS = frozenset({"partial_settlement", "bilateral", "queue", "offsetting"})
_json_decoder = msgspec.json.Decoder(Event)


class _Head(msgspec.Struct):
    type: str = ""
    at: Any = None


_head_decoder = msgspec.json.Decoder(_Head)


def _present(ev: Any) -> int:
    """How many keys a decoded event's line had, at least: its type and every field not at its default."""
    if type(ev) is DvpEvent:  # the common line, counted without looking at every field
        return 9 + (ev.timeout is not None) + (ev.initiator is not None)
    n = 1
    for name, default in zip(ev.__struct_fields__, _defaults(type(ev))):
        if getattr(ev, name) != default:
            n += 1
    return n


def _defaults(kind: type) -> tuple:
    found = _DEFAULTS.get(kind)
    if found is None:
        fields = msgspec.structs.fields(kind)
        found = _DEFAULTS[kind] = tuple(_MISSING if f.required else f.default for f in fields)
    return found


_DEFAULTS: dict[type, tuple] = {}
_MISSING = object()


def duplicate_key(raw: bytes, ev: Any) -> str | None:
    """The first key a JSON line gives twice, or None. (msgspec keeps the last value of a repeated key.)

    A compact count of `":` equal to the keys the event has settles it
    cheaply; anything else (spaces before a colon, nested objects, escaped
    quotes, a field given at its default) is parsed exactly.
    """
    if raw.count(b'":') == _present(ev) and b'" :' not in raw and b'"\t:' not in raw:
        return None
    seen: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _v in items]
        if len(set(keys)) != len(keys) and not seen:
            seen.append(next(k for i, k in enumerate(keys) if k in keys[:i]))
        return dict(items)

    try:
        json.loads(raw, object_pairs_hook=pairs)
    except (ValueError, RecursionError):
        return None  # msgspec read it: a difference of dialect, not a repeated key
    return seen[0] if seen else None


class Plan(msgspec.Struct):
    """What a first look at the file found."""

    setup: list[tuple[int, int, Any]]  # (line, offset, payload) of each setup event
    lines: int  # event lines in the file, good and bad
    timed: int  # how many timed events
    stream_line: int  # in order: the line (and byte offset) of the first timed event, where the timed pass starts
    stream_offset: int
    first_at: int  # the earliest timed event's time (0 if none)
    in_order: bool  # timed events already in `at` order, after every setup event
    times: array  # when not in order: per timed event, its time, line and offset
    numbers: array
    offsets: array
    errors: list[BadLine]  # lines whose type or time cannot be read (in order: those before the first timed one)


def detect_format(path: str) -> str:
    """jsonl or csv: by the extension, else by the first byte that is not blank or a BOM."""
    lower = path.lower()
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    with open(path, "rb") as handle:
        start = handle.read(4096)
    start = start[len(BOM):] if start.startswith(BOM) else start
    text = start.lstrip()
    if not text or text[:1] in (b"{", b"#"):
        return "jsonl"
    if b"," in text.split(b"\n", 1)[0] or b";" in text.split(b"\n", 1)[0]:
        return "csv"
    raise ValueError(f"{path}: cannot tell the format (not JSON Lines, not CSV with a header); use --format")


class TradeFile:
    """A trade file, read line by line (or record by record, for CSV)."""

    def __init__(self, path: str, fmt: str | None = None):
        self.path = path
        self.fmt = fmt or detect_format(path)
        if self.fmt not in ("jsonl", "csv"):
            raise ValueError(f"unknown trade file format {self.fmt!r} (jsonl or csv)")
        self.header: list[str] | None = None
        self.header_line = 0
        self.header_error: str | None = None
        self.missing: dict[str, str] = {}  # event type -> a required column the header lacks
        self.dialect: Any = None

    # ----------------------------------------------------------- the lines

    def lines(self, start: int = 0, number: int = 0) -> Iterator[tuple[int, int, Any]]:
        """Yield (line number, byte offset, payload) for every event line.

        The payload is the raw line (JSON Lines) or the list of cells (CSV).
        Blank lines and lines starting with `#` are skipped. `start` is the
        byte offset where a line begins and `number` the number of the line
        before it, to resume part way through.
        """
        if self.fmt == "csv":
            yield from self._records(start, number)
            return
        offset = start
        with open(self.path, "rb") as handle:
            handle.seek(start)
            for number, raw in enumerate(handle, number + 1):
                at = offset
                offset += len(raw)
                if at == 0 and raw.startswith(BOM):
                    raw = raw[len(BOM):]
                stripped = raw.strip()
                if not stripped or stripped[:1] == b"#":
                    continue
                yield number, at, stripped

    def _records(self, start: int, number: int) -> Iterator[tuple[int, int, Any]]:
        """CSV records through `csv.reader`, with the line and byte offset where each begins."""
        with open(self.path, "rb") as handle:
            if start == 0:
                head = handle.read(len(BOM))
                if head != BOM:
                    handle.seek(0)
            else:
                handle.seek(start)
            feed = _LineFeed(handle, number)
            if self.header is None and start == 0:
                self._read_header(feed)
                if self.header_error is not None:
                    yield self.header_line, 0, BadLine(self.header_line, self.header_error)
            if self.header is None:
                return
            reader = csv.reader(feed, self.dialect)
            while True:
                feed.mark()
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    yield feed.start_line, feed.start_offset, BadLine(feed.start_line, f"unreadable CSV ({exc})")
                    reader = csv.reader(feed, self.dialect)
                    continue
                if not cells or not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                    continue
                yield feed.start_line, feed.start_offset, cells

    def _read_header(self, feed: _LineFeed) -> None:
        for text in feed:
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            self.header_line = feed.number
            clean = text.replace("\r", "").rstrip("\n")
            try:
                self.dialect = csv.Sniffer().sniff(clean, delimiters=",;")
            except csv.Error:
                self.dialect = csv.excel
            self.dialect.doublequote = True
            self.dialect.quotechar = '"'
            try:
                cells = next(csv.reader([clean], self.dialect))
            except csv.Error as exc:
                self.header_error = f"the CSV header does not read ({exc})"
                return
            names = [c.strip() for c in cells]
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                self.header_error = f"the CSV header names column {duplicated[0]!r} twice"
            elif "type" not in names:
                self.header_error = "the CSV header has no 'type' column"
            else:
                self.header = names
                self.missing = _missing_columns(names)
            return

    # ---------------------------------------------------------- decoding

    def decode(self, payload: Any) -> Any:
        """One line's typed event; raise ValueError with a clear reason."""
        try:
            if self.fmt == "jsonl":
                if len(payload) > LINE_BYTES_MAX:
                    raise ValueError(f"line of {len(payload)} bytes is longer than {LINE_BYTES_MAX}")
                ev = _json_decoder.decode(payload)
                twice = duplicate_key(payload, ev)
                if twice is not None:
                    raise ValueError(f"field {twice!r:.60} is given twice")
                return ev
            return msgspec.convert(self._row(payload), Event, strict=True)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ValueError(_explain(exc)) from None
        except RecursionError:
            raise ValueError("nested too deeply") from None

    def _row(self, cells: list[str]) -> dict[str, Any]:
        header = self.header
        assert header is not None
        if len(cells) > len(header):
            raise ValueError(f"{len(cells)} cells but the header names {len(header)} columns")
        kind = cells[header.index("type")].strip() if len(cells) > header.index("type") else ""
        if kind in self.missing:
            raise ValueError(f"{kind} rows need a column {self.missing[kind]!r}, which the CSV header (line "
                             f"{self.header_line}) does not have")
        row: dict[str, Any] = {}
        for name, cell in zip(header, cells):
            if cell == "":
                continue
            try:
                cell.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"column {name!r}: not UTF-8 text") from None
            if name in _JSON_FIELDS:
                try:
                    row[name] = msgspec.json.decode(cell)
                except msgspec.DecodeError as exc:
                    raise ValueError(f"column {name!r}: {cell!r:.60} is not JSON ({exc})") from None
            elif name == "decimals" and cell.isdigit():
                row[name] = int(cell)
            elif name in _BOOL_FIELDS and cell in ("true", "false"):
                row[name] = cell == "true"
            else:
                row[name] = cell
        return row

    def head(self, payload: Any) -> tuple[str, Any]:
        """A line's (type, raw `at`), cheaply."""
        if self.fmt == "jsonl":
            head = _head_decoder.decode(payload)
            return head.type, head.at
        row = self._row(payload)
        return row.get("type", ""), row.get("at")

    def classify(self, number: int, payload: Any) -> tuple[str, int] | BadLine:
        """A line's (type, time in seconds; -1 for setup types), or why it is bad."""
        if type(payload) is BadLine:
            return payload
        try:
            kind, at = self.head(payload)
        except (msgspec.ValidationError, msgspec.DecodeError, ValueError, RecursionError) as exc:
            if self.fmt == "csv":
                return BadLine(number, str(exc))
            return BadLine(number, f"not a JSON object ({_explain(exc) if not isinstance(exc, RecursionError) else 'nested too deeply'})")
        if not isinstance(kind, str) or kind not in EVENT_TYPES:
            return BadLine(number, f"unknown event type {kind!r:.60}" if kind else "missing field 'type'")
        if kind in SETUP_TYPES:
            return kind, -1
        if at is None:
            return BadLine(number, f"{kind}: missing field 'at'")
        try:
            return kind, parse_time(at)
        except ValueError as exc:
            return BadLine(number, f"{kind}: {exc}")

    # ------------------------------------------------------------ planning

    def plan(self) -> Plan:
        """Look through the file once: setup events, and whether timed events are in order."""
        setup: list[tuple[int, int, Any]] = []
        times, numbers, offsets = array("q"), array("q"), array("q")
        errors: list[BadLine] = []
        in_order = True
        last = -1
        first_at = None
        timed = lines = 0
        stream_line = stream_offset = -1
        early = 0  # errors before the first timed event
        fast = self.fmt == "jsonl"
        head_decode = _head_decoder.decode
        times_seen = _TIME_CACHE
        for number, offset, payload in self.lines():
            lines += 1
            verdict = None
            if fast:  # the common line, classified inline; anything unusual takes `classify`
                try:
                    head = head_decode(payload)
                    kind = head.type
                    if kind in SETUP_TYPES:
                        verdict = (kind, -1)
                    elif kind in EVENT_TYPES:
                        at = times_seen.get(head.at) if type(head.at) is str else None
                        if at is not None:
                            verdict = (kind, at)
                except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
                    pass
            if verdict is None:
                verdict = self.classify(number, payload)
            if type(verdict) is BadLine:
                errors.append(verdict)
                if not timed:
                    early += 1
                continue
            seconds = verdict[1]
            if seconds < 0:
                setup.append((number, offset, payload))
                if timed:
                    in_order = False  # a setup event after a timed one: it still takes effect first
                continue
            if not timed:
                stream_line, stream_offset = number, offset
            timed += 1
            if seconds < last:
                in_order = False
            last = seconds
            if first_at is None or seconds < first_at:
                first_at = seconds
            times.append(seconds)
            numbers.append(number)
            offsets.append(offset)
        if in_order:  # the timed events stream in one pass: no need to keep where they are
            times, numbers, offsets = array("q"), array("q"), array("q")
            errors = errors[:early]  # the timed pass finds the others again, in their place
        return Plan(setup=setup, lines=lines, timed=timed, stream_line=stream_line, stream_offset=stream_offset,
                    first_at=first_at or 0, in_order=in_order, times=times, numbers=numbers, offsets=offsets,
                    errors=errors)

    def read_at(self, offsets: Iterator[int] | list[int]) -> Iterator[Any]:
        """Yield the payload of the lines starting at the given byte offsets, in the order given."""
        with open(self.path, "rb") as handle:
            for offset in offsets:
                handle.seek(offset)
                if self.fmt == "jsonl":
                    raw = handle.readline()
                    yield (raw[len(BOM):] if offset == 0 and raw.startswith(BOM) else raw).strip()
                else:
                    feed = _LineFeed(handle, 0)
                    try:
                        yield next(csv.reader(feed, self.dialect))
                    except (StopIteration, csv.Error) as exc:
                        yield BadLine(0, f"unreadable CSV ({exc})")


def _missing_columns(names: list[str]) -> dict[str, str]:
    """For each event type, the first required field the CSV header has no column for (checked once)."""
    out = {}
    for tag, kind in EVENT_TYPES.items():
        for field in msgspec.structs.fields(kind):
            if field.required and field.encode_name not in names:
                out[tag] = field.encode_name
                break
    return out


class _LineFeed:
    """Physical lines of a binary file as text, for `csv.reader`, remembering where each record begins.

    Bytes that are not UTF-8 become lone surrogates, which the row check
    turns into a clear error for that record alone.
    """

    def __init__(self, handle: io.BufferedReader, number: int):
        self.handle = handle
        self.number = number  # the number of the last line read
        self.offset = handle.tell()  # where the next line begins
        self.start_line = number + 1
        self.start_offset = self.offset

    def mark(self) -> None:
        self.start_line = self.number + 1
        self.start_offset = self.offset

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        raw = self.handle.readline()
        if not raw:
            raise StopIteration
        self.number += 1
        self.offset += len(raw)
        return raw.decode("utf-8", "surrogateescape")
