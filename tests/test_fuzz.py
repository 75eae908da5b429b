"""Fuzzing (Hypothesis) of what crosses the trust boundary: trade files, command payloads, envelopes.

Trade files (JSON Lines and CSV, `protocols.replay.read` and `protocols.tradefile`):
a valid day with one hostile line (oversized fields, deep nesting,
NaN/Infinity, duplicate keys or columns, invalid UTF-8, truncation, random
bytes) must replay without raising; a hostile line that is rejected names
its line number with a one-line reason, and the ledger ends in exactly the
state of the same day without that line.

Command payloads and envelopes (`engine.records`, `engine.identity`,
`Ledger.decode` and `submit`): random or mutated msgpack (non-canonical
encodings, truncation, oversized and out-of-range values, NaN, deep nesting,
invalid UTF-8) either decodes or raises only the documented errors
(`MalformedEnvelope`, `msgspec.DecodeError`/`ValidationError`); submitted,
it never raises anything else and never changes the state, because a
mutated payload no longer matches its signature.
"""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine import codes as C
from engine.identity import Signer, derive_key
from engine.ledger import Ledger, MalformedEnvelope, ManualClock
from engine.records import Envelope, Mint, Move
from protocols.replay import replay
from protocols.tradefile import BadLine

SETUP = [
    b'{"type": "asset", "id": "USD", "kind": "cash", "decimals": 2}',
    b'{"type": "asset", "id": "UST5Y", "kind": "security", "decimals": 0, "class": "ust_note", "price": "99.00"}',
    b'{"type": "participant", "id": "BANK_A"}',
    b'{"type": "participant", "id": "BANK_B"}',
    b'{"type": "deposit", "participant": "BANK_A", "asset": "UST5Y", "amount": 1000}',
    b'{"type": "deposit", "participant": "BANK_B", "asset": "USD", "amount": "5000.00"}',
]
GOOD = (b'{"type": "dvp", "at": "2026-03-02T10:00:00Z", "id": "T1", "seller": "BANK_A", "buyer": "BANK_B", '
        b'"security": "UST5Y", "quantity": 10, "cash_asset": "USD", "amount": "9.90"}')
AFTER = (b'{"type": "dvp", "at": "2026-03-02T11:00:00Z", "id": "T2", "seller": "BANK_A", "buyer": "BANK_B", '
         b'"security": "UST5Y", "quantity": 5, "cash_asset": "USD", "amount": "4.95"}')
HOSTILE_VALUES = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b"2" * 40, b"-1", b"null", b"true",
                  b'"' + b"x" * 200 + b'"', b'"' + b"9" * 5000 + b'"', b"[" * 1000 + b"]" * 1000,
                  b'{"a":' * 300 + b"1" + b"}" * 300, b'"\xff\xfe"', b'"\\ud800"', b'"P999999999999999D"',
                  b'"2026-03-02T10:00:00+01:00"', b'"9999-12-31T23:59:59Z"', b"[]", b"{}"]
FIELDS = [b"id", b"at", b"amount", b"quantity", b"seller", b"buyer", b"security", b"cash_asset", b"type",
          b"timeout"]


def _replay(tmp_path, name: str, lines: list[bytes]):
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    done = replay(str(path), pipeline=False)
    try:
        return done.rejected, done._prepared.chains.main.ledger.digest()
    finally:
        done.close()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """The day without the hostile line (a comment in its place): the state a rejected line must leave."""
    tmp = tmp_path_factory.mktemp("fuzz-base")
    return _replay(tmp, "base.jsonl", SETUP + [GOOD, b"# hostile line here", AFTER])


def _check(tmp_path, hostile: bytes, baseline) -> None:
    lines = SETUP + [GOOD, hostile, AFTER]
    number = len(SETUP) + 2
    rejected, digest = _replay(tmp_path, "day.jsonl", lines)
    for bad in rejected:
        assert isinstance(bad, BadLine)
        assert bad.reason and "\n" not in bad.reason and "Traceback" not in bad.reason
    ours = [bad for bad in rejected if bad.line == number]
    if ours:
        assert digest == baseline[1], f"rejected line changed the state: {ours[0].reason}"
    assert [bad.line for bad in rejected if bad.line != number] == [], "a hostile line cost another line"


hostile_json = st.one_of(
    st.tuples(st.sampled_from(FIELDS), st.sampled_from(HOSTILE_VALUES)).map(
        lambda fv: GOOD.replace(b'"' + fv[0] + b'": ', b'"' + fv[0] + b'": ' + fv[1] + b", \"_x\": ", 1)
        if fv[0] not in GOOD else GOOD[:-1] + b', "' + fv[0] + b'": ' + fv[1] + b"}"),  # duplicate key
    st.tuples(st.sampled_from(FIELDS), st.sampled_from(HOSTILE_VALUES)).map(
        lambda fv: b'{"type": "dvp", "' + fv[0] + b'": ' + fv[1] + b"}"),
    st.integers(1, len(GOOD) - 1).map(lambda n: GOOD[:n]),  # truncated
    st.tuples(st.integers(0, len(GOOD) - 1), st.binary(min_size=1, max_size=4)).map(
        lambda ib: GOOD[:ib[0]] + ib[1] + GOOD[ib[0] + 1:]),  # bytes replaced (invalid UTF-8 among them)
    st.binary(min_size=1, max_size=300).filter(lambda b: b"\n" not in b and b"\r" not in b),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile=hostile_json)
def test_a_hostile_jsonl_line_is_rejected_alone_and_changes_nothing(tmp_path, baseline, hostile):
    hostile = hostile.replace(b"\n", b" ").replace(b"\r", b" ")
    if not hostile.strip() or hostile.strip().startswith(b"#"):
        return
    _check(tmp_path, hostile, baseline)


CSV_HEADER = "type,id,at,seller,buyer,security,quantity,cash_asset,amount,kind,decimals,participant,asset,class,price"
CSV_ROWS = ["asset,USD,,,,,,,,cash,2,,,,", "asset,UST5Y,,,,,,,,security,0,,,ust_note,99.00",
            "participant,BANK_A,,,,,,,,,,,,,", "participant,BANK_B,,,,,,,,,,,,,",
            "deposit,,,,,,,,1000,,,BANK_A,UST5Y,,", "deposit,,,,,,,,5000.00,,,BANK_B,USD,,"]
CSV_GOOD = ["dvp", "T1", "2026-03-02T10:00:00Z", "BANK_A", "BANK_B", "UST5Y", "10", "USD", "9.90", "", "", "", "",
            "", ""]
CSV_AFTER = "dvp,T2,2026-03-02T11:00:00Z,BANK_A,BANK_B,UST5Y,5,USD,4.95,,,,,,"
CSV_VALUES = ["NaN", "inf", "-Infinity", "1e999", "9" * 5000, "x" * 300, "-1", "0", "P999999999999999D",
              '"quoted, with a comma"', '"a""b"', "\u00ff\u0000", "\ud800", "2026-13-45T99:99:99Z", " 10 ", "1_000"]


@pytest.fixture(scope="module")
def csv_baseline(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-csv")
    path = tmp / "base.csv"
    path.write_text("\n".join([CSV_HEADER, *CSV_ROWS, ",".join(CSV_GOOD), "# hostile", CSV_AFTER]) + "\n")
    done = replay(str(path), pipeline=False)
    try:
        assert done.rejected == []
        return done._prepared.chains.main.ledger.digest()
    finally:
        done.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(column=st.integers(0, 8), value=st.sampled_from(CSV_VALUES), extra=st.integers(0, 3),
       cut=st.one_of(st.none(), st.integers(1, 40)))
def test_a_hostile_csv_row_is_rejected_alone_and_changes_nothing(tmp_path, csv_baseline, column, value, extra, cut):
    cells = list(CSV_GOOD)
    cells[column] = value
    row = ",".join(cells) + ",x" * extra
    if cut is not None:
        row = row[:cut]
    row = row.replace("\n", " ").replace("\r", " ")
    assume(row.count('"') % 2 == 0)  # an open quote runs on into the next lines: CSV's rule, not a fault
    path = tmp_path / "day.csv"
    data = "\n".join([CSV_HEADER, *CSV_ROWS, ",".join(CSV_GOOD), row, CSV_AFTER]) + "\n"
    path.write_bytes(data.encode("utf-8", "surrogatepass"))
    done = replay(str(path), pipeline=False)
    try:
        rejected, digest = done.rejected, done._prepared.chains.main.ledger.digest()
    finally:
        done.close()
    number = len(CSV_ROWS) + 3
    for bad in rejected:
        assert bad.reason and "\n" not in bad.reason
    assert all(bad.line == number for bad in rejected), [(b.line, b.reason) for b in rejected]
    if rejected:
        assert digest == csv_baseline


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(column=st.sampled_from(["amount", "quantity", "seller", "id"]))
def test_a_duplicated_csv_column_is_refused(tmp_path, column):
    header = CSV_HEADER + "," + column
    row = ",".join(CSV_GOOD) + ",1000000"
    path = tmp_path / "dup.csv"
    path.write_text("\n".join([header, *(r + "," for r in CSV_ROWS), row, CSV_AFTER + ","]) + "\n")
    done = replay(str(path), pipeline=False)
    try:
        assert done.rejected, "a header naming a column twice was accepted"
        assert any(column in bad.reason for bad in done.rejected)
    finally:
        done.close()


# --------------------------------------------------------- payloads and envelopes

CHAIN = "fuzz"


@pytest.fixture(scope="module")
def ledger():
    op = Signer("OP", derive_key("fuzz/OP"), CHAIN)
    ledger = Ledger.create(":memory:", chain_id=CHAIN, operator="OP", operator_key=op.public_key,
                           clock=ManualClock(1_772_443_800), protocols=[])
    yield ledger, op
    ledger.close()


def _non_canonical(data: bytes) -> list[bytes]:
    """Re-encodings msgspec would not produce: wider ints and strings, a map key twice."""
    out = []
    if b"\xa4move" in data:
        out.append(data.replace(b"\xa4move", b"\xd9\x04move", 1))  # str8 for a 4-byte string
    out.append(data.replace(b"\x01", b"\xcd\x00\x01", 1))  # uint16 for 1
    out.append(data.replace(b"\x81", b"\x82\xa2id\xa1x", 1))
    return out


payloads = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda n: msgspec.msgpack.encode([["move", "m1", "USD", "OP", "A", n]]), st.one_of(
        st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1), st.floats(allow_nan=True))),
    st.builds(lambda s: msgspec.msgpack.encode([{"type": "move", "id": s, "asset": "USD", "source": "OP",
                                                   "target": "A", "amount": 1}]),
              st.one_of(st.text(max_size=300), st.just("x" * 5000))),
    st.integers(1, 400).map(lambda d: b"\x91" * d + b"\x01"),  # nested arrays
    st.integers(0, 60).map(lambda n: msgspec.msgpack.encode(
        (Move(id="m1", asset="USD", source="OP", target="A", amount=5),))[:n]),  # truncated
    st.builds(lambda b: msgspec.msgpack.encode((Mint(id="i1", asset="USD", target="A", amount=1),)).replace(
        b"USD", b"U\xff\xfe", 1), st.none()),  # invalid UTF-8 in a string
    st.sampled_from(_non_canonical(msgspec.msgpack.encode((Move(id="m1", asset="USD", source="OP", target="A",
                                                                amount=1),)))),
)


@settings(max_examples=300, deadline=None)
@given(payload=payloads)
def test_a_hostile_payload_decodes_or_is_refused_and_changes_nothing(ledger, payload):
    ledger, op = ledger
    before, head = ledger.digest(), ledger.head_seq
    env = Envelope(chain_id=CHAIN, payload=payload)
    try:
        commands = ledger.decode(env)
    except MalformedEnvelope as exc:
        assert str(exc) and "\n" not in str(exc).strip()
        commands = None
    signed = op.envelope([Move(id="sig", asset="USD", source="OP", target="A", amount=1)])
    forged = Envelope(chain_id=CHAIN, payload=payload, signatures=signed.signatures)  # a signature of other bytes
    try:
        codes = ledger.submit([forged])
    except MalformedEnvelope:
        assert commands is None
        assert ledger.head_seq == head
    else:
        assert commands is not None
        assert all(code != C.OK for code in codes)
    assert ledger.digest() == before


envelope_bytes = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda e, n: msgspec.msgpack.encode(e)[:n], st.builds(
        Envelope, chain_id=st.text(max_size=20), payload=st.binary(max_size=40)), st.integers(0, 80)),
    st.builds(lambda items: msgspec.msgpack.encode(items), st.lists(
        st.one_of(st.text(max_size=10), st.binary(max_size=10), st.integers(-(2 ** 63), 2 ** 64 - 1), st.floats(),
                  st.none(), st.lists(st.integers(0, 2 ** 32), max_size=3)), max_size=6)),
    st.builds(lambda payload, not_after: msgspec.msgpack.encode(Envelope(chain_id=CHAIN, payload=payload,
                                                                         not_after=not_after)),
              st.sampled_from([msgspec.msgpack.encode((Move(id="m1", asset="USD", source="OP", target="A",
                                                             amount=1),)), b"\x90"]),
              st.integers(0, 2 ** 63 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(data=envelope_bytes)
def test_a_hostile_envelope_is_a_decode_error_or_is_refused(ledger, data):
    ledger, _op = ledger
    before = ledger.digest()
    try:
        env = msgspec.msgpack.decode(data, type=Envelope)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        assert str(exc)
        return
    try:
        codes = ledger.submit([env])
    except MalformedEnvelope as exc:
        assert str(exc)
    else:
        assert all(code != C.OK for code in codes)
    assert ledger.digest() == before
