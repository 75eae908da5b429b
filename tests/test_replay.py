"""Replay of trade files: the report contract, bad lines, determinism, formats."""

from __future__ import annotations

import csv
from decimal import Decimal
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from engine.ledger import Ledger
from engine.verify import verify_journal
from protocols.replay import replay
from protocols.tradefile import format_minor, to_minor

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

SETUP = [
    {"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
    {"type": "asset", "id": "UST", "kind": "security", "decimals": 0, "price": "99.5"},
    {"type": "participant", "id": "A"},
    {"type": "participant", "id": "B"},
    {"type": "deposit", "participant": "A", "asset": "UST", "amount": 1000},
    {"type": "deposit", "participant": "B", "asset": "USD", "amount": "5000.00"},
]


def dvp(n: int, at: str = "2026-03-02T10:00:00Z", **over) -> dict:
    event = {"type": "dvp", "at": at, "id": f"T{n}", "seller": "A", "buyer": "B", "security": "UST",
             "quantity": 10, "cash_asset": "USD", "amount": "99.50"}
    event.update(over)
    return event


def write(path: Path, events: list, extra_lines: list[str] = ()) -> Path:
    lines = [json.dumps(e) for e in events] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------- the report


def _contract(row: dict, *more: str) -> dict:
    """The fields of a trade row docs/formats.md names first (kind, status, settled_at, reason), and `more`."""
    return {k: v for k, v in row.items() if k in ("kind", "status", "settled_at", "reason") + more}


def test_the_report_has_every_section_of_the_contract(tmp_path):
    run = replay(str(write(tmp_path / "day.jsonl", SETUP + [dvp(1), dvp(2, amount="99999.00")])))
    report = run.report()
    assert set(report) >= {"input", "rejected", "trades", "margin_calls", "balances", "metrics", "ledger"}
    assert report["input"] == {"path": str(tmp_path / "day.jsonl"), "events": 8, "rejected": 0}
    assert report["trades"]["T1"] == {"kind": "dvp", "status": "settled", "settled_at": "2026-03-02T10:00:00Z",
                                      "queued_at": "2026-03-02T10:00:00Z", "seller": "A", "buyer": "B",
                                      "security": "UST", "quantity": "10", "cash_asset": "USD", "amount": "99.50"}
    assert _contract(report["trades"]["T2"]) == {"kind": "dvp", "status": "queued"}
    assert report["balances"] == {"A": {"USD": "99.50", "UST": "990"}, "B": {"USD": "4900.50", "UST": "10"}}
    assert report["metrics"]["settled"] == 1 and report["metrics"]["queued"] == 1
    assert report["metrics"]["gross_value"] == {"USD": "100098.50"}
    chain = report["ledger"]["chains"]["main"]
    assert len(chain["head"]) == 64 and len(chain["state"]) == 64 and chain["entries"] >= 3


def test_the_gross_example_settles_recycles_offsets_and_fails_at_cutoff():
    report = replay(str(EXAMPLES / "gross.jsonl")).report()
    trades = report["trades"]
    assert trades["T1"]["settled_at"] == "2026-03-02T09:30:00Z"
    assert trades["T2"]["settled_at"] == "2026-03-02T10:00:00Z"  # recycled when F1 brought cash
    assert {trades[g]["status"] for g in ("G1", "G2", "G3")} == {"settled"}
    # BANK_A holds 992,000.00 at the cut-off: 995,000 from T1, 99,500 from G1, 497,500 from T2's... less G3's 600,000
    assert _contract(trades["T9"], "short", "failed_at") == {
        "kind": "dvp", "status": "failed", "reason": "insufficient_cash", "failed_at": "2026-03-02T17:00:00Z",
        "short": {"party": "BANK_A", "asset": "USD", "amount": "4008000.00"}}
    assert [r["line"] for r in report["rejected"]] == [21, 22]
    assert report["rejected"][0]["reason"] == "dvp T17: unknown participant 'ZZZ' in field 'buyer'"


def test_the_net_example_unwinds_the_short_participant():
    report = replay(str(EXAMPLES / "net.jsonl")).report()
    assert _contract(report["trades"]["N3"]) == {"kind": "dvp", "status": "failed", "reason": "unwound"}
    assert report["trades"]["N1"]["settled_at"] == "2026-03-02T10:00:00Z"
    assert report["trades"]["N4"]["settled_at"] == "2026-03-02T11:00:00Z"
    assert "net_positions" in report
    metrics = report["metrics"]
    assert metrics["cycles"] == 2
    # cycle 1: A receives 99,875.00 net of 1,897,625.00 settled; cycle 2 nets to zero on 998,750.00
    assert metrics["netting_ratio_value"] == f"{9_987_500 / (189_762_500 + 99_875_000):.6f}"
    assert metrics["movements"] == {"gross": 10, "net": 4}


# ------------------------------------------------------------- bad lines

BAD_LINES = [
    ("broken JSON", '{"type": "dvp", "at": ', "not a JSON object"),
    ("a float amount", json.dumps(dvp(9, amount=99.5)), "fraction or exponent"),
    ("too many decimals", json.dumps(dvp(9, amount="99.505")), "more than 2 decimals"),
    ("an unknown participant", json.dumps(dvp(9, buyer="ZZZ")), "unknown participant 'ZZZ'"),
    ("an unknown asset", json.dumps(dvp(9, security="NOPE")), "unknown asset 'NOPE'"),
    ("an unknown type", json.dumps({"type": "swap", "at": "2026-03-02T10:00:00Z"}), "unknown event type 'swap'"),
    ("a missing field", json.dumps({k: v for k, v in dvp(9).items() if k != "seller"}), "missing field 'seller'"),
    ("a bad timestamp", json.dumps(dvp(9, at="2026-13-02T10:00:00Z")), "is not an ISO 8601 timestamp"),
    ("a timestamp not in UTC", json.dumps(dvp(9, at="2026-03-02T10:00:00+01:00")), "must be in UTC"),
    ("a negative amount", json.dumps(dvp(9, amount="-1.00")), "not a non-negative decimal"),
    ("a zero quantity", json.dumps(dvp(9, quantity=0)), "must be positive"),
    ("a reused id with different content", json.dumps(dvp(1, amount="1.00")), "id reused with different content"),
    ("the same party on both sides", json.dumps(dvp(9, buyer="A")), "same participant"),
    ("a deposit to an unknown participant", json.dumps({"type": "deposit", "participant": "Q", "asset": "USD",
                                                        "amount": "1.00"}), "unknown participant 'Q'"),
]


@pytest.mark.parametrize("line,reason", [(b[1], b[2]) for b in BAD_LINES], ids=[b[0] for b in BAD_LINES])
def test_a_bad_line_is_rejected_by_line_number_and_changes_nothing(tmp_path, line, reason):
    good = write(tmp_path / "good.jsonl", SETUP + [dvp(1), dvp(2, at="2026-03-02T11:00:00Z")])
    bad = tmp_path / "bad.jsonl"
    lines = good.read_text().splitlines()
    lines.insert(7, line)  # after the first trade, before the second
    bad.write_text("\n".join(lines) + "\n")
    clean, dirty = replay(str(good)).report(), replay(str(bad)).report()
    assert dirty["input"]["rejected"] == 1
    assert dirty["rejected"][0]["line"] == 8
    assert reason in dirty["rejected"][0]["reason"]
    assert dirty["balances"] == clean["balances"]
    assert dirty["trades"] == clean["trades"]


def test_comments_and_blank_lines_are_skipped(tmp_path):
    path = write(tmp_path / "c.jsonl", SETUP + [dvp(1)], extra_lines=["", "# a comment", "   "])
    report = replay(str(path)).report()
    assert report["input"]["rejected"] == 0 and report["input"]["events"] == 7


# ------------------------------------------------------------- determinism


def test_replaying_a_file_twice_gives_identical_reports_and_hashes(tmp_path):
    path = str(EXAMPLES / "gross.jsonl")
    first = replay(path, db=str(tmp_path / "one.db"))
    second = replay(path, db=str(tmp_path / "two.db"))
    assert first.report() == second.report()
    first.close(), second.close()
    report = verify_journal(str(tmp_path / "one.db"))
    assert report.head == first.report()["ledger"]["chains"]["main"]["head"]
    assert report.state == first.report()["ledger"]["chains"]["main"]["state"]


def test_an_unordered_file_replays_in_at_order_like_the_ordered_one(tmp_path):
    events = SETUP + [dvp(n, at=f"2026-03-02T1{n % 7}:00:00Z", amount=f"{n}.00") for n in range(1, 30)]
    ordered = sorted(events[len(SETUP):], key=lambda e: e["at"])
    shuffled = list(events[len(SETUP):])
    random.Random(3).shuffle(shuffled)
    a = replay(str(write(tmp_path / "a.jsonl", SETUP + ordered))).report()
    b = replay(str(write(tmp_path / "b.jsonl", shuffled[:5] + SETUP + shuffled[5:]))).report()
    assert a["trades"] == b["trades"] and a["balances"] == b["balances"]


def test_csv_and_json_lines_give_the_same_report(tmp_path):
    events = SETUP + [dvp(1), dvp(2, amount="4000.00"), dvp(3, at="2026-03-02T12:00:00Z")]
    jsonl = replay(str(write(tmp_path / "d.jsonl", events))).report()
    columns = sorted({k for e in events for k in e})
    with open(tmp_path / "d.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for e in events:
            writer.writerow([json.dumps(e[c]) if isinstance(e.get(c), (list, dict)) else e.get(c, "") for c in columns])
    from_csv = replay(str(tmp_path / "d.csv")).report()
    assert from_csv["trades"] == jsonl["trades"]
    assert from_csv["balances"] == jsonl["balances"]
    # Same state; the journals differ only in ids built from line numbers (CSV has a header line).
    assert from_csv["ledger"]["chains"]["main"]["state"] == jsonl["ledger"]["chains"]["main"]["state"]


def test_no_entry_leaves_a_negative_balance(tmp_path, monkeypatch):
    seen = []
    original = Ledger.submit

    def watching(self, envelopes, at=None):
        results = original(self, envelopes, at)
        seen.append(all(v >= 0 for book in self.state.balances.values() for v in book.values()))
        return results

    monkeypatch.setattr(Ledger, "submit", watching)
    replay(str(EXAMPLES / "gross.jsonl"), batch_commands=2)
    assert seen and all(seen)


def test_the_result_does_not_depend_on_the_batch_size(tmp_path):
    path = str(EXAMPLES / "gross.jsonl")
    small, large = replay(path, batch_commands=3).report(), replay(path).report()
    assert small["trades"] == large["trades"] and small["balances"] == large["balances"]


# ------------------------------------------------------------- amounts


@pytest.mark.parametrize("text,decimals,minor", [("995000.00", 2, 99_500_000), ("0.5", 2, 50), ("7", 2, 700),
                                                  ("99.875", 3, 99_875), ("12", 0, 12)],
                         ids=["two decimals", "fewer decimals than allowed", "whole units", "three", "no decimals"])
def test_decimal_strings_become_exact_minor_units(text, decimals, minor):
    assert to_minor(text, decimals, "amount") == minor
    assert to_minor(3, decimals, "amount") == 3 * 10**decimals  # a JSON integer counts whole units
    assert to_minor(format_minor(minor, decimals), decimals, "amount") == minor


# ------------------------------------------------------------- the command


def test_dvp_replay_prints_a_summary_and_writes_a_report(tmp_path):
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(EXAMPLES / "gross.jsonl"),
                           "--report", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr  # two lines of the example are rejected on purpose
    assert json.loads(out.read_text())["metrics"]["settled"] == 6
    assert "trades settled" in done.stdout  # the summary is printed with --report too
    table = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(EXAMPLES / "net.jsonl")],
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "netting ratio" in table.stdout


def test_dvp_replay_refuses_an_existing_journal_path(tmp_path):
    db = tmp_path / "x.db"
    db.write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(EXAMPLES / "gross.jsonl"),
                           "--db", str(db)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "exists" in done.stderr
    assert "--resume" in done.stderr and "--overwrite" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("ordered", [True, False], ids=["an ordered file", "an unordered file (falls back)"])
def test_the_parser_process_gives_the_same_report_and_hashes(tmp_path, ordered):
    events = SETUP + [dvp(n, at=f"2026-03-02T1{n % 7}:00:00Z", amount=f"{n}.00") for n in range(1, 40)]
    timed = sorted(events[len(SETUP):], key=lambda e: e["at"]) if ordered else events[len(SETUP):]
    path = str(write(tmp_path / "p.jsonl", SETUP + timed + [{"type": "cutoff", "at": "2026-03-02T18:00:00Z"}],
                     extra_lines=['{"type": "dvp", "broken'] ))
    inline = replay(path, pipeline=False, batch_commands=7).report()
    piped = replay(path, pipeline=True, batch_commands=7).report()
    assert piped == inline
    assert piped["input"]["rejected"] == 1


def test_the_streamed_report_file_equals_the_report(tmp_path):
    for example in ("gross.jsonl", "net.jsonl"):
        run = replay(str(EXAMPLES / example))
        run.write_report(str(tmp_path / "r.json"))
        assert json.loads((tmp_path / "r.json").read_text()) == run.report()


def test_a_pipelined_replay_writes_the_same_report_file(tmp_path):
    events = SETUP + [dvp(n, at=f"2026-03-02T1{n % 7}:00:00Z", amount=f"{n}.00") for n in range(1, 40)]
    events = SETUP + sorted(events[len(SETUP):], key=lambda e: e["at"])
    path = str(write(tmp_path / "w.jsonl", events))
    inline = replay(path, pipeline=False, batch_commands=5).report()
    run = replay(path, pipeline=True, batch_commands=5, report=str(tmp_path / "out.json"))
    assert json.loads((tmp_path / "out.json").read_text()) == inline
    assert run.summary() == inline["metrics"]


def test_a_pipelined_replay_that_keeps_no_rows_gives_the_same_summary(tmp_path):
    events = SETUP + [dvp(n, at=f"2026-03-02T1{n % 7}:00:00Z", amount=f"{n}.00") for n in range(1, 40)]
    events = SETUP + sorted(events[len(SETUP):], key=lambda e: e["at"])
    path = str(write(tmp_path / "k.jsonl", events, extra_lines=['{"type": "dvp", "broken']))
    inline = replay(path, pipeline=False, batch_commands=5)
    lean = replay(path, pipeline=True, batch_commands=5, keep_rows=False)
    assert lean.summary() == inline.summary()
    assert lean.trade_count == inline.trade_count == 39 and len(lean.rejected) == len(inline.rejected) == 1


def test_the_repo_example_reports_interest_calls_defaults_and_failures():
    run = replay(str(EXAMPLES / "repo.jsonl"))
    report = run.report()
    assert report["rejected"] == []
    trades = report["trades"]
    # R1: 9,700,000.00 at 5.31% for 6 hours = 357.6875 -> 357.69, paid at the end
    assert _contract(trades["R1"], "interest", "closed_at", "principal") == {
        "kind": "repo", "status": "closed", "interest": "357.69", "closed_at": "2026-03-02T15:00:00Z",
        "principal": "9700000.00"}
    assert trades["R2"]["status"] == "defaulted" and trades["R2"]["reason"] == "margin_call_unmet"
    assert _contract(trades["R3"]) == {"kind": "repo", "status": "failed", "reason": "insufficient_collateral"}
    calls = report["margin_calls"]
    assert [(c["repo"], c["status"]) for c in calls] == [("R1", "met"), ("R2", "defaulted")]
    # at 11:00, R1: I(2h) = 9,700,000.00 * 0.0531 * 7,200 / 31,104,000 = 119.229 -> 119.23, so
    # E = 9,700,119.23; at 97.00, CV = floor(9,700,000.00 * 0.98) = 9,506,000.00: call 194,119.23
    assert calls[0]["amount"] == "194119.23"
    assert report["metrics"]["repos"] == {"closed": 1, "defaulted": 1, "failed": 1}
    assert report["metrics"]["margin_calls"]["issued"] == 2


def test_an_open_call_follows_further_prices_in_the_report_and_a_recovery_withdraws_it(tmp_path):
    lines = [line for line in (EXAMPLES / "repo.jsonl").read_text().splitlines()
             if line and not line.startswith("#") and '"R1"' not in line and '"R3"' not in line
             and '"price", "at"' not in line and '"substitute"' not in line and '"cutoff"' not in line]
    prices = [{"type": "price", "at": f"2026-03-02T11:{m}:00Z", "asset": "UST5Y", "price": p}
              for m, p in (("00", "97.00"), ("10", "96.00"), ("20", "99.00"))]
    path = tmp_path / "calls.jsonl"
    path.write_text("\n".join(lines + [json.dumps(p) for p in prices]) + "\n")
    report = replay(str(path)).report()
    assert report["rejected"] == []
    # R2 (BANK, no cash left) at 11:10: E = 9,700,000.00 + I(2h05m at 5.25%) 122.79; at 96.00 CV = 9,408,000.00
    assert report["margin_calls"] == [{"repo": "R2", "at": "2026-03-02T11:00:00Z", "amount": "292122.79",
                                       "status": "withdrawn"}]
    assert report["metrics"]["margin_calls"]["withdrawn"] == 1
    assert report["trades"]["R2"]["status"] == "open"


def test_bad_repo_lines_are_rejected_with_their_reason(tmp_path):
    events = [{"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
              {"type": "asset", "id": "N", "kind": "security", "decimals": 0, "class": "ust_note",
               "maturity": "2030-01-01", "price": "99"},
              {"type": "participant", "id": "A"}, {"type": "participant", "id": "B"}]
    base = {"type": "repo", "at": "2026-03-02T09:00:00Z", "id": "R", "borrower": "A", "lender": "B",
            "collateral": "N", "quantity": 10, "cash_asset": "USD", "principal": "5.00", "rate": "0.05",
            "end": "2026-03-02T10:00:00Z"}
    bad = [dict(base, rate=0.05), dict(base, end="2026-03-02T08:00:00Z"), dict(base, haircut="1.5"),
           dict(base, lender="A"), dict(base, collateral="USD")]
    report = replay(str(write(tmp_path / "r.jsonl", events + bad))).report()
    reasons = [r["reason"] for r in report["rejected"]]
    assert len(reasons) == 5
    for fragment, reason in zip(("fraction or exponent", "not after the start", "haircut", "same participant",
                                 "not a security"), reasons):
        assert fragment in reason


def test_a_failure_on_the_ledger_side_stops_a_pipelined_replay_instead_of_hanging(tmp_path):
    events = SETUP + [dvp(n, at=f"2026-03-02T1{n % 7}:00:00Z", amount=f"{n}.00") for n in range(1, 40)]
    path = write(tmp_path / "f.jsonl", SETUP + sorted(events[len(SETUP):], key=lambda e: e["at"]))
    script = (
        "import protocols.replay as R\n"
        "calls = []\n"
        "import protocols.replay.apply as A\n"
        "original = A.Chains.submit\n"
        "def failing(self, *a):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 3:\n"
        "        raise OSError('disk full')\n"
        "    return original(self, *a)\n"
        "A.Chains.submit = failing\n"
        f"R.replay({str(path)!r}, pipeline=True, batch_commands=4)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "disk full" in done.stderr


def test_bad_setup_lines_are_rejected_without_stopping_the_replay(tmp_path):
    events = [{"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
              {"type": "participant", "id": "A", "roles": ["participant", "participant"]},
              {"type": "participant", "id": "B"},
              {"type": "deposit", "participant": "B", "asset": "USD", "amount": "100000000000000000.00"},
              {"type": "deposit", "participant": "B", "asset": "USD", "amount": "1.00"}]
    report = replay(str(write(tmp_path / "s.jsonl", events))).report()
    assert [r["line"] for r in report["rejected"]] == [2, 4]
    assert report["balances"] == {"B": {"USD": "1.00"}}


def test_an_unordered_file_found_late_by_the_parser_restarts_cleanly(tmp_path):
    # Many ordered batches first, so the ledger side is busy when the parser gives up.
    ordered = [dvp(n, at=f"2026-03-02T10:{n // 60:02d}:{n % 60:02d}Z", amount="1.00") for n in range(1, 600)]
    late = dvp(999, at="2026-03-02T09:00:00Z", amount="1.00")
    path = str(write(tmp_path / "late.jsonl", SETUP + ordered + [late]))
    for _ in range(3):
        piped = replay(path, pipeline=True, batch_commands=3).report()
        inline = replay(path, pipeline=False, batch_commands=3).report()
        assert piped == inline and piped["trades"]["T999"]["status"] == "settled"


def test_a_cross_chain_dvp_replays_as_a_swap_across_two_journals(tmp_path):
    path = str(EXAMPLES / "crosschain.jsonl")
    first = replay(path, db=str(tmp_path / "one.db"))
    report = first.report()
    assert {t: r["status"] for t, r in report["trades"].items()} == {"XC1": "settled", "XC2": "failed",
                                                                      "XC3": "settled"}
    assert report["trades"]["XC2"]["reason"] == "insufficient_cash"
    assert report["balances"] == {"BANK_A": {"USDT": "1495000.00", "UST10Y": "1500000"},
                                  "BANK_B": {"USDT": "5000.00", "UST10Y": "1500000"}}
    assert set(report["ledger"]["chains"]) == {"main", "deposits"}
    first.close()
    again = replay(path, db=str(tmp_path / "two.db"))
    assert again.report() == report  # the same hashes on both chains
    again.close()
    for journal in ("one.db", "one.db-deposits"):
        assert verify_journal(str(tmp_path / journal)).entries > 1


# ------------------------------------------------------- rows and tables


def test_every_trade_row_names_its_terms_times_and_shortfall():
    report = replay(str(EXAMPLES / "gross.jsonl")).report()
    for trade, row in report["trades"].items():
        assert {"kind", "status", "queued_at", "seller", "buyer", "security", "quantity", "cash_asset",
                "amount"} <= set(row) or row["kind"] != "dvp", trade
        assert ("settled_at" in row) == (row["status"] == "settled")
        assert ("failed_at" in row) == (row["status"] == "failed")
    repo_row = replay(str(EXAMPLES / "repo.jsonl")).report()["trades"]["R2"]
    assert {"principal", "rate", "collateral", "close_out", "defaulted_at"} <= set(repo_row)


def test_the_participants_section_adds_up(tmp_path):
    report = replay(str(EXAMPLES / "gross.jsonl")).report()
    people = report["participants"]
    assert set(people) == set(report["balances"])
    for party, row in people.items():
        for asset, figures in row["balances"].items():
            assert figures["closing"] == report["balances"][party][asset]
            if "drawn" in figures:  # cash: opening - lowest, and opening + received - sent = closing + escrow
                assert Decimal(figures["drawn"]) == Decimal(figures["opening"]) - Decimal(figures["lowest"])
                assert (Decimal(figures["opening"]) + Decimal(figures["received"]) - Decimal(figures["sent"])
                        == Decimal(figures["closing"]) + Decimal(figures["escrow"]))
    drawn = sum(Decimal(f["drawn"]) for row in people.values() for a, f in row["balances"].items() if a == "USD")
    assert report["metrics"]["liquidity_used"] == {"USD": f"{drawn:.2f}"}
    assert sum(row["settled"] for row in people.values()) == 2 * report["metrics"]["settled"]


def test_the_csv_tables_hold_the_reports_rows(tmp_path):
    trades, people = tmp_path / "t.csv", tmp_path / "p.csv"
    run = replay(str(EXAMPLES / "gross.jsonl"), trades_csv=str(trades), participants_csv=str(people))
    report = run.report()
    with open(trades, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == list(report["trades"])
    t9 = next(r for r in rows if r["id"] == "T9")
    assert (t9["status"], t9["short_party"], t9["short_amount"], t9["failed_at"]) == (
        "failed", "BANK_A", "4008000.00", "2026-03-02T17:00:00Z")
    assert Decimal(t9["amount"]) == Decimal("5000000.00")
    with open(people, newline="") as handle:
        table = list(csv.DictReader(handle))
    bank_b = next(r for r in table if r["participant"] == "BANK_B" and r["asset"] == "USD")
    assert bank_b["drawn"] == report["participants"]["BANK_B"]["balances"]["USD"]["drawn"]


def test_the_pipelined_replay_writes_the_same_tables(tmp_path):
    events = SETUP + [dvp(n, at=f"2026-03-02T1{n % 7}:00:00Z", amount=f"{n}.00") for n in range(1, 40)]
    path = str(write(tmp_path / "f.jsonl", SETUP + sorted(events[len(SETUP):], key=lambda e: e["at"])))
    outputs = {}
    for pipeline in (False, True):
        t, p = tmp_path / f"t{pipeline}.csv", tmp_path / f"p{pipeline}.csv"
        replay(path, pipeline=pipeline, batch_commands=7, trades_csv=str(t), participants_csv=str(p)).close()
        outputs[pipeline] = (t.read_text(), p.read_text())
    assert outputs[True] == outputs[False]
