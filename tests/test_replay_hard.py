"""Replays on hard days: counterparties that never lock, interruptions at any instant, resumption.

- A cross-chain DvP whose counterparty never locks leaves the initiator's
  asset escrowed only until its lock expires: every chain's ledger reaches
  every cut-off and the end of the file, so the expiry sweep refunds it,
  and the report shows what is still escrowed (balances plus escrow equal
  the supply), whichever side initiates.
- A durable replay killed at a random instant (SIGKILL), then resumed,
  ends with the same report and hashes as one that never stopped; so does
  one interrupted with Ctrl-C (exit 130, one line).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from engine.verify import verify_journal
from protocols.replay import replay

from benchmarks.tradegen import generate

DAY = "2026-03-02T"


def write(path: Path, events: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    return str(path)


def crosschain_day(initiator: str, cutoff: str | None) -> list[dict]:
    events = [
        {"type": "asset", "id": "UST", "kind": "security", "decimals": 0},
        {"type": "asset", "id": "USDT", "kind": "cash", "decimals": 2, "chain": "cash"},
        {"type": "participant", "id": "S"},
        {"type": "participant", "id": "B"},
        {"type": "deposit", "participant": "S", "asset": "UST", "amount": 100},
        {"type": "deposit", "participant": "B", "asset": "USDT", "amount": "1000.00"},
        # the follower lacks its asset, so it never locks: X1 the seller (100 held, 500 sold), X2 the buyer
        {"type": "dvp", "at": f"{DAY}10:00:00Z", "id": "X1", "seller": "S", "buyer": "B", "security": "UST",
         "quantity": 500 if initiator == "buyer" else 10, "cash_asset": "USDT",
         "amount": "100.00" if initiator == "buyer" else "5000.00", "initiator": initiator, "timeout": "PT1H"},
    ]
    if cutoff:
        events.insert(0, {"type": "config", "cutoff": f"{DAY}{cutoff}"})
    return events


def _supply_holds(report: dict) -> None:
    """Balances plus escrow equal the supply, per asset: no money is invisible."""
    total: dict[str, Decimal] = {}
    for book in (report["balances"], report["escrow"]):
        for held in book.values():
            for asset, amount in held.items():
                total[asset] = total.get(asset, Decimal(0)) + Decimal(amount)
    assert {a: Decimal(v) for a, v in report["supply"].items()} == total


@pytest.mark.parametrize("initiator", ["buyer", "seller"], ids=["the buyer initiates", "the seller initiates"])
def test_a_counterparty_that_never_locks_gets_the_initiator_refunded_by_the_cutoff(tmp_path, initiator):
    run = replay(write(tmp_path / "x.jsonl", crosschain_day(initiator, cutoff="17:00:00Z")))
    report = run.report()
    run.close()
    trade = report["trades"]["X1"]
    assert trade["status"] == "failed"
    assert trade["reason"] == ("insufficient_securities" if initiator == "buyer" else "insufficient_cash")
    assert report["escrow"] == {}  # T1 = 12:00, the cut-off at 17:00 reached every chain: refunded
    assert report["balances"] == {"B": {"USDT": "1000.00"}, "S": {"UST": "100"}}
    _supply_holds(report)


@pytest.mark.parametrize("initiator", ["buyer", "seller"], ids=["the buyer initiates", "the seller initiates"])
def test_a_lock_that_expires_after_the_file_ends_is_shown_in_escrow(tmp_path, initiator):
    events = crosschain_day(initiator, cutoff=None)
    run = replay(write(tmp_path / "x.jsonl", events))
    report = run.report()
    run.close()
    held = {"B": {"USDT": "100.00"}} if initiator == "buyer" else {"S": {"UST": "10"}}
    assert report["escrow"] == held  # the file ends at 10:00, T1 is 12:00: still locked, and visible
    _supply_holds(report)


def test_the_end_of_the_file_reaches_every_chain(tmp_path):
    events = crosschain_day("buyer", cutoff=None)
    events.append({"type": "dvp", "at": f"{DAY}13:00:00Z", "id": "L1", "seller": "S", "buyer": "S2",
                   "security": "UST", "quantity": 1, "cash_asset": "USDT", "amount": "1.00"})  # rejected, but late
    run = replay(write(tmp_path / "x.jsonl", events))
    report = run.report()
    assert run.chains.slots["cash"].ledger.now == run.ledger.now
    run.close()
    assert report["escrow"] == {}  # the last line is at 13:00, past T1: the cash chain swept the lock


def test_a_zero_deposit_declares_an_account_shown_at_zero(tmp_path):
    events = [{"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
              {"type": "participant", "id": "A"},
              {"type": "deposit", "participant": "A", "asset": "USD", "amount": "0"},
              {"type": "deposit", "participant": "A", "asset": "USD", "amount": "0.00"}]
    report = replay(write(tmp_path / "z.jsonl", events)).report()
    assert report["rejected"] == [] and report["balances"] == {"A": {"USD": "0.00"}}


@pytest.mark.parametrize("mta,accepted", [("9.22", True), ("9.23", True), ("1000000.00", True), ("92233720368547758.07", True),
                                          ("0.001", False), ("-1", False), ("1e3", False)],
                         ids=["below 2^63 at 18 decimals", "above it", "a large one", "the cash asset's largest",
                              "more decimals than the cash has", "negative", "an exponent"])
def test_a_config_mta_is_checked_in_the_cash_assets_decimals(tmp_path, mta, accepted):
    events = [{"type": "config", "mta": mta, "haircuts": {"ust_note": "0.02"}, "cutoff": f"{DAY}17:00:00Z"},
              {"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
              {"type": "asset", "id": "N", "kind": "security", "decimals": 0, "class": "ust_note", "price": "99"},
              {"type": "participant", "id": "B"}, {"type": "participant", "id": "L"},
              {"type": "deposit", "participant": "B", "asset": "N", "amount": 1000},
              {"type": "deposit", "participant": "L", "asset": "USD", "amount": "10000.00"},
              {"type": "deposit", "participant": "B", "asset": "USD", "amount": "1.00"},
              {"type": "repo", "at": f"{DAY}10:00:00Z", "id": "R1", "borrower": "B", "lender": "L", "collateral": "N",
               "quantity": 100, "cash_asset": "USD", "principal": "90.00", "rate": "0.05", "end": f"{DAY}12:00:00Z"}]
    report = replay(write(tmp_path / "m.jsonl", events)).report()
    assert (report["trades"].get("R1", {}).get("status") == "closed") is accepted
    reasons = [r["reason"] for r in report["rejected"]]
    if accepted:
        assert reasons == []
    else:  # the config line is kept, its haircuts apply: only the mta is wrong, for this cash asset or any
        assert len(reasons) == 1 and "mta" in reasons[0]


# ------------------------------------------------------------ interruptions


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "replay", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def hard_day(tmp_path_factory) -> tuple[str, dict]:
    """A small hard day (dealers short: queues, recycling, cut-off) and its uninterrupted report."""
    folder = tmp_path_factory.mktemp("hard")
    path = str(folder / "day.jsonl")
    generate(path, 3_000, participants=30, securities=3, seed=5, hard=True)
    db = str(folder / "clean.db")
    run = replay(path, db=db, batch_commands=97, pipeline=True)
    report = run.report()
    run.close()
    return path, report


def _resumed_until_done(path: str, db: str, out: str, kills: int, rng: random.Random) -> None:
    """Kill the replay at random instants, `kills` times, resuming each time, then let it finish."""
    for attempt in range(kills + 1):
        args = [path, "--db", db, "--batch-commands", "97", "--report", out] + (["--resume"] if attempt else [])
        child = _cli(*args)
        if attempt < kills:
            time.sleep(rng.uniform(0.05, 1.2))
            child.send_signal(signal.SIGKILL)
        _out, err = child.communicate(timeout=120)
        if attempt == kills:
            assert child.returncode == 0, err


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_replay_killed_at_random_instants_resumes_to_the_same_report(tmp_path, hard_day, seed):
    path, clean = hard_day
    db, out = str(tmp_path / "k.db"), str(tmp_path / "k.json")
    _resumed_until_done(path, db, out, kills=3, rng=random.Random(seed))
    resumed = json.loads(Path(out).read_text())
    assert resumed == clean
    assert verify_journal(db).head == clean["ledger"]["chains"]["main"]["head"]


def test_a_cross_chain_replay_killed_and_resumed_keeps_both_chains_exact(tmp_path):
    events = crosschain_day("buyer", cutoff="17:00:00Z")
    for k in range(40):  # swaps that settle, among the one whose counterparty never locks
        events.append({"type": "dvp", "at": f"{DAY}11:{k:02d}:00Z", "id": f"Y{k}", "seller": "S", "buyer": "B",
                       "security": "UST", "quantity": 1, "cash_asset": "USDT", "amount": "1.00"})
    path = write(tmp_path / "x.jsonl", events)
    clean = replay(path, db=str(tmp_path / "clean.db"))
    expected = clean.report()
    clean.close()
    db, out = str(tmp_path / "k.db"), str(tmp_path / "k.json")
    for kill_after in (0.3, 0.6):
        child = _cli(path, "--db", db, "--report", out, *(["--resume"] if os.path.exists(db) else []))
        time.sleep(kill_after)
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", path, "--db", db, "--report", out,
                           "--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(Path(out).read_text()) == expected


def test_ctrl_c_exits_130_with_one_line_and_resume_finishes(tmp_path, hard_day):
    path, clean = hard_day
    db, out = str(tmp_path / "c.db"), str(tmp_path / "c.json")
    child = _cli(path, "--db", db, "--batch-commands", "97", "--report", out)
    time.sleep(1.0)
    child.send_signal(signal.SIGINT)
    _out, err = child.communicate(timeout=60)
    if child.returncode == 130:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "interrupted" in lines[0] and "Traceback" not in err
        assert "--resume" in lines[0] or not os.path.exists(db)  # the hint, once there is a journal to resume
        if os.path.exists(out):  # the signal came after the report was written: it is whole
            assert json.loads(Path(out).read_text()) == clean
        if os.path.exists(db):
            verify_journal(db)  # valid up to its last committed entry
    else:
        assert child.returncode == 0, err  # it finished before the signal came: nothing to resume
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", path, "--db", db, "--batch-commands", "97",
                           "--report", out, "--resume"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(Path(out).read_text()) == clean


def test_a_killed_replay_leaves_no_parser_process_behind(tmp_path, hard_day):
    path, _ = hard_day
    child = _cli(path, "--db", str(tmp_path / "o.db"), "--batch-commands", "97")
    time.sleep(0.8)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", str(tmp_path / "o.db")], capture_output=True, text=True).stdout.split()
        if not found:
            break
        time.sleep(0.1)
    assert not found, f"processes left behind: {found}"


def test_overwrite_starts_over_and_resume_of_another_file_is_refused(tmp_path, hard_day):
    path, clean = hard_day
    db = str(tmp_path / "w.db")
    replay(path, db=db, batch_commands=97).close()
    other = write(tmp_path / "other.jsonl", crosschain_day("buyer", cutoff=None)[:6])
    refused = subprocess.run([sys.executable, "-m", "engine.cli", "replay", other, "--db", db, "--resume"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "--overwrite" in refused.stderr and "Traceback" not in refused.stderr
    again = replay(path, db=db, batch_commands=97, overwrite=True)
    assert again.report() == clean
    again.close()


def _tracked_agrees_with_the_ledger(run) -> None:
    """The liquidity tracker's final cash balances are the ledger's, and no balance it saw went below zero."""
    report = run.report()
    for (party, asset), position in run.accounts.liquidity.positions.items():
        assert position.lowest >= 0, (party, asset, position)
        assert position.lowest <= min(position.opening, position.balance)
        held = report["balances"].get(party, {}).get(asset)
        escrow = report["escrow"].get(party, {}).get(asset)
        decimals = run._prepared.resolver.assets[asset].decimals
        from protocols.tradefile import to_minor
        on_ledger = (to_minor(held, decimals, "b", positive=False) if held else 0) + \
            (to_minor(escrow, decimals, "e", positive=False) if escrow else 0)
        assert position.balance == on_ledger, (party, asset)


@pytest.mark.parametrize("example", ["gross.jsonl", "net.jsonl", "repo.jsonl", "crosschain.jsonl"])
def test_the_liquidity_drawn_follows_the_ledgers_cash_exactly_on_the_examples(example):
    run = replay(str(Path(__file__).resolve().parent.parent / "examples" / example))
    _tracked_agrees_with_the_ledger(run)
    run.close()


@pytest.mark.parametrize("mode", ["gross", "net"])
def test_the_liquidity_drawn_follows_the_ledgers_cash_exactly_on_a_hard_day(hard_day, mode):
    path, _ = hard_day
    run = replay(path, mode=mode, batch_commands=97)
    _tracked_agrees_with_the_ledger(run)
    drawn = run.summary()["liquidity_used"]
    assert set(drawn) == {"USD"} and Decimal(drawn["USD"]) > 0
    run.close()
