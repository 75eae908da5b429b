"""`dvp selftest`: the crash harness and the fault table, run small (a few seeds), and proof that they can fail.

The crash harness must end with zero differences on a few seeds, with kills
landing at every kind of point (genesis, inside a commit, inside a snapshot,
after a commit, at a timed instant); a child that skips a batch it was told
to resubmit must be caught; the CLI ends with `N differences` and its exit
status follows N. The fault table must detect each stored and commit fault
with its own message; a fault layer that injects nothing must be reported as
undetected. A deleted last entry is detected here through the snapshot left
beyond the head; without one, only a head receipt detects it (docs/integrity.md).
"""

from __future__ import annotations

import os

import pytest

from protocols.selftest import crash as crash_module
from protocols.selftest import faults as faults_module
from protocols.selftest.crash import POINTS, crash
from protocols.selftest.workload import conservation, record

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the crash harness forks its writer")


@pytest.mark.parametrize("seed", [1, 2])
def test_crash_runs_end_with_zero_differences(seed, tmp_path):
    report = crash(1, seed, kills=8, workdir=str(tmp_path))
    assert report.differences == []
    assert report.runs == 1 and report.kills >= 4 and report.batches > 0
    assert os.listdir(tmp_path) == []  # nothing kept when all runs agree


def test_kills_land_at_every_kind_of_point(tmp_path):
    report = crash(3, 11, kills=12, workdir=str(tmp_path))
    assert report.differences == []
    assert set(report.kills_by_point) == set(POINTS), report.kills_by_point
    assert report.answered_replayed >= 1  # a batch committed but not acknowledged was resubmitted, as a replay


def test_a_child_that_skips_an_unacknowledged_batch_is_caught(tmp_path, monkeypatch):
    child = crash_module._child

    def skipping(work, root, start, point, kill_step, ack_fd):
        return child(work, root, start + 1 if start > 0 else start, point, kill_step, ack_fd)

    monkeypatch.setattr(crash_module, "_child", skipping)
    report = crash(2, 4, kills=6, workdir=str(tmp_path))
    assert report.differences, "a lost batch went unnoticed"
    assert os.listdir(tmp_path)  # the journals of a differing run are kept


def test_conservation_names_invented_money():
    work = record(5)
    assert work.steps and work.finals
    from engine.ledger import Ledger, ManualClock
    from protocols.replay.apply import main_protocols

    spec = work.chains[0]
    ledger = Ledger.create(":memory:", chain_id=spec.chain, operator=spec.operator, operator_key=spec.operator_key,
                           clock=ManualClock(spec.first_at), protocols=main_protocols())
    for step in work.steps:
        if step.chain == 0:
            assert ledger.submit(step.envelopes, at=step.at) == step.results
    assert conservation(ledger.state) is None
    asset = min(ledger.state.balances)
    owner = min(ledger.state.balances[asset])
    ledger.state.balances[asset][owner] += 1
    assert f"asset {asset}" in conservation(ledger.state)


def test_cli_crash_prints_differences_and_exits_by_them(capsys):
    from engine.cli import main

    assert main(["selftest", "crash", "--runs", "1", "--seed", "6", "--kills", "4"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "0 differences"
    assert "1 runs" in out[-2] and "kills" in out[-2]


def test_cli_crash_exits_non_zero_on_a_difference(capsys, monkeypatch):
    from engine.cli import main

    def differing(runs, seed, kills, workdir, progress):
        report = crash_module.CrashReport(runs=1)
        report.differences.append("seed 1: chain main: state digest differs from the clean run")
        return report

    monkeypatch.setattr(crash_module, "crash", differing)
    assert main(["selftest", "crash", "--runs", "1"]) == 1
    assert capsys.readouterr().out.strip().splitlines()[-1] == "1 differences"


@pytest.fixture(scope="module")
def table():
    return {r.fault: r for r in faults_module.faults()}


DETECTED = {
    "torn tail (last entry cut short)": "does not match its hash",
    "flipped byte in a middle entry": "does not match its hash",
    "deleted middle entry": "is missing",
    "duplicated last entry": "says it is entry",
    "middle entry replaced by a copy of its predecessor": "says it is entry",
    "snapshot with a changed balance (checksum recomputed)": "does not match the journal; ignored",
    "full disk while inserting the entry": "database or disk is full",
    "I/O error at COMMIT": "disk I/O error",
    "read-only file at BEGIN": "readonly database",
    "error reported after a durable COMMIT": "answered replayed_sequence",
    "deleted last entry": "beyond the journal's head",
    "snapshot with its command-id index emptied (checksum recomputed)": "(its command ids); ignored",
    "in-memory state after a failed commit": "reads show the last committed state",
}


@pytest.mark.parametrize("fault", sorted(DETECTED))
def test_each_fault_is_detected_with_its_own_error(table, fault):
    result = table[fault]
    assert result.detected, result.how
    assert DETECTED[fault] in result.how


def test_the_table_covers_every_fault(table):
    assert set(table) == set(DETECTED)


def test_a_durable_commit_that_reports_an_error_does_not_claim_nothing_was_written(table):
    how = table["error reported after a durable COMMIT"].how
    assert "nothing was written" not in how and "may or may not have reached the disk" in how


def test_a_fault_layer_that_injects_nothing_is_undetected(tmp_path):
    work = record(faults_module.SEED)
    path = str(tmp_path / "j.db")
    faults_module._build(work, path)
    detected, how = faults_module._commit_fault(path, work, lambda sql: None)
    assert not detected and "durable" in how


def test_cli_faults_exits_by_the_undetected(capsys, monkeypatch):
    from engine.cli import main

    rows = [faults_module.FaultResult("a", True, "JournalError: x"), faults_module.FaultResult("b", False, "no")]
    monkeypatch.setattr(faults_module, "faults", lambda: rows)
    assert main(["selftest", "faults"]) == 1
    assert "1 undetected" in capsys.readouterr().out
    monkeypatch.setattr(faults_module, "faults", lambda: rows[:1])
    assert main(["selftest", "faults"]) == 0
