"""Hostile trade files: every bad line is rejected with its number and reason, and the rest applies.

Each case is a small file with one hostile line among good ones. The
replay must not stop, must not print a traceback, and must change nothing
for the bad line: the good trades settle as they would without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.replay import replay

DAY = "2026-03-02T"
SETUP = [
    {"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
    {"type": "asset", "id": "UST", "kind": "security", "decimals": 0, "price": "99.5"},
    {"type": "participant", "id": "A"},
    {"type": "participant", "id": "B"},
    {"type": "deposit", "participant": "A", "asset": "UST", "amount": 1000},
    {"type": "deposit", "participant": "B", "asset": "USD", "amount": "5000.00"},
]


def dvp(n: int, at: str = "10:00:00Z", **over) -> dict:
    event = {"type": "dvp", "at": f"{DAY}{at}", "id": f"T{n}", "seller": "A", "buyer": "B", "security": "UST",
             "quantity": 10, "cash_asset": "USD", "amount": "99.50"}
    event.update(over)
    return event


def lines_of(events: list) -> list[str]:
    return [e if isinstance(e, str) else json.dumps(e) for e in events]


def _run(tmp_path: Path, events: list, name: str = "f.jsonl", encoding_prefix: bytes = b"") -> dict:
    path = tmp_path / name
    path.write_bytes(encoding_prefix + ("\n".join(lines_of(events)) + "\n").encode())
    run = replay(str(path))
    report = run.report()
    run.close()
    return report


GOOD = [dvp(1), dvp(2, at="11:00:00Z")]
BAD_LINES = [
    ("an id over 128 characters", dvp(9, id="X" * 200), "1 to 122 characters"),
    ("JSON nested 1,000 deep", '{"type": "dvp", "x": ' + "[" * 1000 + "]" * 1000 + "}", "nested too deeply"),
    ("a grace of P999999999999999D", {"type": "repo", "at": f"{DAY}10:30:00Z", "id": "R9", "borrower": "B",
                                       "lender": "A", "collateral": "UST", "quantity": 1, "cash_asset": "USD",
                                       "principal": "1.00", "rate": "0", "end": f"{DAY}12:00:00Z",
                                       "grace": "P999999999999999D"}, "longer than"),
    ("a timeout of P999999999999999D", dvp(9, timeout="P999999999999999D"), "longer than"),
    ("a price for an asset on another chain", {"type": "price", "at": f"{DAY}10:30:00Z", "asset": "EUR",
                                                "price": "1.1"}, "prices are kept on the main chain"),
    ("a repeated key (1,000 units for 1.00)", '{"type": "dvp", "at": "2026-03-02T10:30:00Z", "id": "T9", '
     '"seller": "A", "buyer": "B", "security": "UST", "quantity": 1, "cash_asset": "USD", "amount": "1.00", '
     '"quantity": 1000}', "'quantity' is given twice"),
    ("a float amount", dvp(9, amount=99.5), "fraction or exponent"),
    ("NaN", '{"type": "dvp", "at": "2026-03-02T10:30:00Z", "id": "T9", "amount": NaN}', "not a JSON object"),
    ("a line that is not UTF-8", b'{"type": "dvp", "id": "\xff\xfe"}'.decode("latin-1"), ""),
]


@pytest.mark.parametrize("bad,fragment", [(c[1], c[2]) for c in BAD_LINES], ids=[c[0] for c in BAD_LINES])
def test_a_hostile_line_is_rejected_and_the_rest_applies(tmp_path, bad, fragment):
    events = SETUP + [{"type": "asset", "id": "EUR", "kind": "cash", "decimals": 2, "chain": "side"}] + GOOD[:1] + [bad] + GOOD[1:]
    report = _run(tmp_path, events)
    bad_line = len(SETUP) + 3  # setup, the side-chain asset, the first good trade
    assert [r["line"] for r in report["rejected"]] == [bad_line]
    assert fragment in report["rejected"][0]["reason"]
    assert {t: r["status"] for t, r in report["trades"].items()} == {"T1": "settled", "T2": "settled"}
    assert report["balances"]["B"] == {"USD": "4801.00", "UST": "20"}


@pytest.mark.parametrize("chain", ["wal", "shm", "journal", "a/b", "bad chain", "x" * 200])
def test_a_chain_that_cannot_name_a_journal_is_rejected(tmp_path, chain):
    events = SETUP + [{"type": "asset", "id": "EUR", "kind": "cash", "decimals": 2, "chain": chain}] + GOOD
    db = str(tmp_path / "j.db")
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines_of(events)) + "\n")
    run = replay(str(path), db=db)
    report = run.report()
    run.close()
    assert [r["line"] for r in report["rejected"]] == [len(SETUP) + 1]
    assert "cannot name a chain" in report["rejected"][0]["reason"]
    assert set(report["ledger"]["chains"]) == {"main"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "j.db", "j.db.lock"]


def test_deposits_that_sum_past_the_ledgers_limit_reject_only_the_last(tmp_path):
    big = "46116860184271379.03"  # with B's 5,000.00, twice fits under 2^63 - 1 cents; a third does not
    events = SETUP + [{"type": "participant", "id": "C"}] + [
        {"type": "deposit", "participant": "C", "asset": "USD", "amount": big} for _ in range(3)] + GOOD
    report = _run(tmp_path, events)
    assert [r["line"] for r in report["rejected"]] == [len(SETUP) + 4]
    assert "invalid_amount" in report["rejected"][0]["reason"] and "2^63" in report["rejected"][0]["reason"]
    assert report["balances"]["C"] == {"USD": "92233720368542758.06"}
    assert report["trades"]["T2"]["status"] == "settled"


def test_a_side_chain_deposit_the_chain_refuses_is_a_rejected_line(tmp_path):
    big = "46116860184273879.03"  # 2^62 - 1 cents: twice is 2^63 - 2, a third passes 2^63 - 1
    events = SETUP + [{"type": "asset", "id": "EUR", "kind": "cash", "decimals": 2, "chain": "side"}] + [
        {"type": "deposit", "participant": "B", "asset": "EUR", "amount": big} for _ in range(3)] + GOOD
    report = _run(tmp_path, events)
    assert [r["line"] for r in report["rejected"]] == [len(SETUP) + 4]
    assert report["balances"]["B"]["EUR"] == "92233720368547758.06"


def test_a_reused_repo_id_after_a_failed_opening_opens_at_its_own_time(tmp_path):
    """The second line's repo pays interest from its own start, not from the failed line's."""
    events = [{"type": "config", "cutoff": f"{DAY}17:00:00Z"},
              {"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
              {"type": "asset", "id": "N", "kind": "security", "decimals": 0, "class": "ust_bill",
               "maturity": "2026-06-01", "price": "100"},
              {"type": "participant", "id": "B"}, {"type": "participant", "id": "L"},
              {"type": "deposit", "participant": "B", "asset": "N", "amount": 2_000_000},
              {"type": "deposit", "participant": "B", "asset": "USD", "amount": "1000.00"},
              {"type": "deposit", "participant": "L", "asset": "USD", "amount": "2000000.00"}]
    repo = {"type": "repo", "id": "R1", "borrower": "B", "lender": "L", "collateral": "N", "cash_asset": "USD",
            "principal": "1000000.00", "rate": "0.05", "end": f"{DAY}16:00:00Z"}
    events.append({**repo, "at": f"{DAY}08:00:00Z", "quantity": 100})  # CV far below the principal: fails
    events.append({**repo, "at": f"{DAY}12:00:00Z", "quantity": 1_100_000})
    report = _run(tmp_path, events)
    assert report["rejected"] == []
    trade = report["trades"]["R1"]
    # 1,000,000.00 x 5% x 4 h / (360 x 24 h) = 23.148 -> 23.15 (half-up); from 08:00 it would be 46.30
    assert trade["status"] == "closed" and trade["interest"] == "23.15"


def test_a_cross_chain_trade_id_used_again_on_the_main_chain_is_rejected(tmp_path):
    events = [{"type": "asset", "id": "UST", "kind": "security", "decimals": 0},
              {"type": "asset", "id": "USDT", "kind": "cash", "decimals": 2, "chain": "cash"},
              {"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
              {"type": "participant", "id": "S"}, {"type": "participant", "id": "B"},
              {"type": "deposit", "participant": "S", "asset": "UST", "amount": 100},
              {"type": "deposit", "participant": "B", "asset": "USD", "amount": "1000.00"},
              {"type": "dvp", "at": f"{DAY}10:00:00Z", "id": "X1", "seller": "S", "buyer": "B", "security": "UST",
               "quantity": 1, "cash_asset": "USDT", "amount": "1.00"},  # B has no USDT: fails
              {"type": "dvp", "at": f"{DAY}11:00:00Z", "id": "X1", "seller": "S", "buyer": "B", "security": "UST",
               "quantity": 5, "cash_asset": "USD", "amount": "5.00"}]
    report = _run(tmp_path, events)
    assert [r["line"] for r in report["rejected"]] == [9] and "id reused" in report["rejected"][0]["reason"]
    assert report["trades"]["X1"]["status"] == "failed"
    assert report["balances"]["S"] == {"UST": "100"}  # the main-chain trade did not settle either


def test_a_cross_chain_file_out_of_at_order_replays_with_a_journal(tmp_path):
    events = [{"type": "asset", "id": "UST", "kind": "security", "decimals": 0},
              {"type": "asset", "id": "USDT", "kind": "cash", "decimals": 2, "chain": "cash"},
              {"type": "participant", "id": "S"}, {"type": "participant", "id": "B"},
              {"type": "deposit", "participant": "S", "asset": "UST", "amount": 100},
              {"type": "deposit", "participant": "B", "asset": "USDT", "amount": "1000.00"}]
    trades = [{"type": "dvp", "at": f"{DAY}1{k}:00:00Z", "id": f"X{k}", "seller": "S", "buyer": "B",
               "security": "UST", "quantity": 1, "cash_asset": "USDT", "amount": "1.00"} for k in (3, 1, 2)]
    path = tmp_path / "x.jsonl"
    path.write_text("\n".join(lines_of(events + trades)) + "\n")
    run = replay(str(path), db=str(tmp_path / "x.db"))
    report = run.report()
    run.close()
    assert report["rejected"] == [] and {r["status"] for r in report["trades"].values()} == {"settled"}


def test_a_byte_order_mark_costs_nothing(tmp_path):
    report = _run(tmp_path, SETUP + GOOD, encoding_prefix=b"\xef\xbb\xbf")
    assert report["rejected"] == [] and len(report["trades"]) == 2


def _csv(tmp_path: Path, text: str, prefix: bytes = b"") -> dict:
    path = tmp_path / "f.csv"
    path.write_bytes(prefix + text.encode())
    run = replay(str(path))
    report = run.report()
    run.close()
    return report


CSV_SETUP = (
    "type,id,kind,decimals,participant,asset,amount,at,seller,buyer,security,quantity,cash_asset\n"
    "asset,USD,cash,2,,,,,,,,,\n"
    "asset,UST,security,0,,,,,,,,,\n"
    "participant,A,,,,,,,,,,,\n"
    "participant,B,,,,,,,,,,,\n"
    "deposit,,,,A,UST,1000,,,,,,\n"
    "deposit,,,,B,USD,5000.00,,,,,,\n"
)
CSV_TRADE = "dvp,{id},,,,,99.50,2026-03-02T10:00:00Z,A,B,UST,10,USD\n"


def test_an_excel_csv_with_a_byte_order_mark_and_a_semicolon_delimiter_reads(tmp_path):
    text = (CSV_SETUP + CSV_TRADE.format(id="T1")).replace(",", ";").replace("\n", "\r\n")
    report = _csv(tmp_path, text, prefix=b"\xef\xbb\xbf")
    assert report["rejected"] == [] and report["trades"]["T1"]["status"] == "settled"


def test_a_quoted_newline_in_a_csv_cell_keeps_its_row_whole_and_line_numbers_right(tmp_path):
    text = CSV_SETUP + 'dvp,"T\n1",,,,,99.50,2026-03-02T10:00:00Z,A,B,UST,10,USD\n' + "dvp,T2,,,,,9.5.0,x,A,B,UST,1,USD\n"
    report = _csv(tmp_path, text)
    assert "T\n1" in report["trades"]  # one row, its id holding the newline
    assert [r["line"] for r in report["rejected"]] == [10]  # the row after it starts on line 10


def test_a_carriage_return_inside_the_csv_header_is_tolerated(tmp_path):
    text = CSV_SETUP.replace("kind,", "kind\r,", 1) + CSV_TRADE.format(id="T1")
    report = _csv(tmp_path, text)
    assert report["trades"]["T1"]["status"] == "settled"


def test_a_csv_header_naming_a_column_twice_is_refused_once(tmp_path):
    text = CSV_SETUP.replace("amount,at", "amount,amount", 1) + CSV_TRADE.format(id="T1")
    report = _csv(tmp_path, text)
    assert report["rejected"] == [{"line": 1, "reason": "the CSV header names column 'amount' twice"}]
    assert report["trades"] == {}


def test_the_cli_never_prints_a_traceback_on_hostile_files(tmp_path):
    hostile = tmp_path / "h.jsonl"
    hostile.write_bytes(b"\x00\xff{{{\n" + b"[" * 100_000 + b"\n" + json.dumps(dvp(1)).encode() + b"\n")
    directory = tmp_path / "dir"
    directory.mkdir()
    for args in ([str(hostile)], [str(directory)], [str(tmp_path / "missing.jsonl")]):
        done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", *args], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode in (1, 3) and "Traceback" not in done.stderr, done.stderr
        if done.returncode == 1:
            assert len(done.stderr.strip().splitlines()) == 1


def test_a_csv_header_missing_a_column_names_it_for_each_row_of_that_type(tmp_path):
    text = CSV_SETUP.replace(",seller,", ",sold_by,", 1) + CSV_TRADE.format(id="T1") + CSV_TRADE.format(id="T2")
    report = _csv(tmp_path, text)
    assert [r["line"] for r in report["rejected"]] == [8, 9]
    assert {r["reason"] for r in report["rejected"]} == {
        "dvp rows need a column 'seller', which the CSV header (line 1) does not have"}
    assert report["balances"]["B"] == {"USD": "5000.00"}  # the set-up rows still applied


def test_dvp_version_and_help_on_every_subcommand():
    import argparse

    from engine.cli import build_parser

    done = subprocess.run([sys.executable, "-m", "engine.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("dvp ")
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in subparsers._choices_actions}
    missing = []
    for name, sub in subparsers.choices.items():
        if not helps.get(name) or not sub.description:
            missing.append(f"{name}: no help or description")
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {action.dest}: no help")
    assert missing == []


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(alphabet="0123456789.-e ", max_size=24), st.integers(-10, 10**20)),
       st.integers(0, 18), st.booleans())
def test_the_fast_amount_parser_agrees_with_the_general_one(value, decimals, positive):
    from protocols.tradefile import _to_minor, to_minor

    def outcome(parse):
        try:
            return parse(value, decimals, "amount", positive)
        except ValueError:
            return "refused"

    assert outcome(to_minor) == outcome(_to_minor)


@pytest.mark.parametrize("ordered", [True, False], ids=["a file in order", "a file out of order"])
def test_a_line_over_the_readers_limit_is_refused_in_either_order(tmp_path, ordered):
    from protocols.replay.read import LINE_BYTES_MAX

    huge = dvp(9, at="10:30:00Z", note="x" * (LINE_BYTES_MAX + 1))
    timed = [dvp(1), huge, dvp(2, at="11:00:00Z")] if ordered else [dvp(2, at="11:00:00Z"), huge, dvp(1)]
    report = _run(tmp_path, SETUP + timed)
    assert [r["line"] for r in report["rejected"]] == [len(SETUP) + 2]
    assert "longer than" in report["rejected"][0]["reason"]
