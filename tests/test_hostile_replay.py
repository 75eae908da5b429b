"""A hostile user's replay: kills at awkward instants, odd resumptions, Ctrl-C, recycling after rollbacks.

Each test is a probe of issue 9's promises. Probes that held stay as plain
tests; each defect found is a test marked `xfail(strict=True)` whose reason
names it, so it documents the defect today and flips when it is fixed.

- Resuming: a kill after every journal entry of a cross-chain day (both
  chains), during the report write and during `--overwrite`, then
  `--resume`, gives the uninterrupted report; a journal holding more than
  the file gives (a shorter file, or entries another program appended) must
  not be taken for this file's.
- `--overwrite` deletes only a journal.
- Ctrl-C exits 130 with one line wherever it lands, the commit included.
- Recycling after a linked chain rolls back keeps FIFO order, on the
  indexed path as on the scan, for DvP trades and repo margin calls; a
  trade blocked by a frozen or suspended party recycles once the block lifts.
- Cost growth, counted (waitlist lookups, rebuild work, retries) at n and
  4n: long queues on one account, credits that cover nothing, entries
  whose need changes, trades moving behind later arrivals, one command
  crediting many accounts, a net cycle paying many borrowers.
- Cross-chain escrow: a lock expiring exactly at a cut-off, or exactly at
  the end of the file, is refunded; balances plus escrow equal the supply on
  every chain of random mixed days.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
import random
import subprocess
import sys
import time
from contextlib import nullcontext
from decimal import Decimal
from pathlib import Path

import pytest

from engine import codes as C
from engine.fastpath import general_paths
from engine.ledger import Ledger
from engine.records import Freeze, Mint, Move, Unfreeze
from engine.verify import verify_journal
from protocols import dvp, prices, repo
from protocols.replay import ResumeError, replay
from protocols.replay.apply import SNAPSHOT_EVERY, main_protocols

import dvp_world
from dvp_world import World, fresh

DAY = "2026-03-02T"
ROOT = Path(__file__).resolve().parent.parent


def write(path: Path, events: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    return str(path)


def _hhmmss(seconds: int) -> str:
    return f"{DAY}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}Z"


def crosschain_day() -> list[dict]:
    """Swaps both ways across two chains (some settle, two never find their counterparty), main-chain DvPs
    that queue and fail, a delivery, a lock still open at the end, a zero deposit, a cut-off."""
    events = [{"type": "config", "cutoff": f"{DAY}17:00:00Z"},
              {"type": "asset", "id": "UST", "kind": "security", "decimals": 0},
              {"type": "asset", "id": "USDT", "kind": "cash", "decimals": 2, "chain": "cash"},
              {"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
              {"type": "participant", "id": "S"}, {"type": "participant", "id": "B"}, {"type": "participant", "id": "C"},
              {"type": "deposit", "participant": "S", "asset": "UST", "amount": 100},
              {"type": "deposit", "participant": "B", "asset": "USDT", "amount": "1000.00"},
              {"type": "deposit", "participant": "C", "asset": "USD", "amount": "50.00"},
              {"type": "deposit", "participant": "C", "asset": "USDT", "amount": "0"},
              {"type": "dvp", "at": f"{DAY}10:00:00Z", "id": "X1", "seller": "S", "buyer": "B", "security": "UST",
               "quantity": 500, "cash_asset": "USDT", "amount": "100.00", "timeout": "PT1H"},
              {"type": "dvp", "at": f"{DAY}10:00:00Z", "id": "X2", "seller": "S", "buyer": "B", "security": "UST",
               "quantity": 5, "cash_asset": "USDT", "amount": "9000.00", "initiator": "seller", "timeout": "PT30M"}]
    for k in range(6):
        events.append({"type": "dvp", "at": f"{DAY}11:{k:02d}:00Z", "id": f"Y{k}", "seller": "S", "buyer": "B",
                       "security": "UST", "quantity": 1, "cash_asset": "USDT", "amount": "1.00",
                       "initiator": ("buyer", "seller")[k % 2]})
        events.append({"type": "dvp", "at": f"{DAY}11:{k:02d}:30Z", "id": f"M{k}", "seller": "S", "buyer": "C",
                       "security": "UST", "quantity": 1, "cash_asset": "USD", "amount": "20.00"})
    events.append({"type": "deliver", "at": f"{DAY}12:00:00Z", "id": "D1", "from": "S", "to": "C", "asset": "UST",
                   "amount": 1})
    events.append({"type": "dvp", "at": f"{DAY}16:00:00Z", "id": "X3", "seller": "S", "buyer": "B", "security": "UST",
                   "quantity": 1000, "cash_asset": "USDT", "amount": "1.00", "timeout": "PT1H"})
    return events


def _clean_report(path: str, **kw) -> dict:
    run = replay(path, **kw)
    try:
        return run.report()
    finally:
        run.close()


class _Killed(BaseException):
    """Stands for SIGKILL in-process: the replay stops dead, its journals closed as the kernel would leave them."""


# ------------------------------------------------------------------ resuming


def test_a_kill_after_any_entry_of_a_cross_chain_day_resumes_to_the_same_report(tmp_path, monkeypatch):
    """Every entry boundary on both chains: set-up, between a swap's two chains, between cut-off and sweep."""
    path = write(tmp_path / "x.jsonl", crosschain_day())
    clean = _clean_report(path)
    real = Ledger._commit
    commits = {"n": 0, "kill_at": 0}

    def commit(self, prepared, at):
        out = real(self, prepared, at)
        commits["n"] += 1
        if commits["n"] == commits["kill_at"]:
            raise _Killed
        return out

    monkeypatch.setattr(Ledger, "_commit", commit)
    total = None
    for k in itertools.count(1):
        db = str(tmp_path / f"k{k}.db")
        commits.update(n=0, kill_at=k)
        try:
            replay(path, db=db).close()
        except _Killed:
            pass
        else:
            total = k - 1
            break
        commits.update(n=0, kill_at=0)
        assert _clean_report(path, db=db, resume=True) == clean, f"killed after commit {k}"
    assert total is not None and total > 40  # both chains' entries were all visited


def test_a_sigkill_between_a_swaps_two_chains_resumes_to_the_same_report(tmp_path):
    """A real SIGKILL (os._exit in the process) right after the initiator's lock, before the follower's."""
    path = write(tmp_path / "x.jsonl", crosschain_day())
    clean = _clean_report(path)
    db, out = str(tmp_path / "k.db"), str(tmp_path / "k.json")
    script = ("import os, sys\n"
              "from protocols.replay import apply\n"
              "real = apply.Chains._one\n"
              "def one(slot, signer, command):\n"
              "    code = real(slot, signer, command)\n"
              "    if type(command).__name__ == 'Lock' and slot.chain == 'cash':\n"
              "        os._exit(137)\n"
              "    return code\n"
              "apply.Chains._one = staticmethod(one)\n"
              "from engine.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    killed = subprocess.run([sys.executable, "-c", script, "replay", path, "--db", db, "--report", out],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert killed.returncode == 137, killed.stderr
    done = _cli(path, "--db", db, "--report", out, "--resume")
    assert done.returncode == 0, done.stderr
    assert json.loads(Path(out).read_text()) == clean


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "replay", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=180, env=env)


_KILL_IN_REPORT = ("import os, sys\n"
                   "import protocols.replay.rows as report  # the report is written through rows.atomic_file\n"
                   "real_open = open\n"
                   "def opener(*a, **kw):\n"
                   "    f = real_open(*a, **kw)\n"
                   "    if '.tmp-' in str(a[0]):\n"
                   "        w = f.write\n"
                   "        def write(b):\n"
                   "            n = w(b); f.flush(); os._exit(137)\n"
                   "        f.write = write\n"
                   "    return f\n"
                   "report.open = opener\n"
                   "from engine.cli import main\n"
                   "sys.exit(main(sys.argv[1:]))\n")


def test_a_kill_during_the_report_write_leaves_no_report_and_resume_writes_it_whole(tmp_path):
    path = write(tmp_path / "x.jsonl", crosschain_day())
    clean = _clean_report(path)
    db, out = str(tmp_path / "k.db"), str(tmp_path / "k.json")
    killed = subprocess.run([sys.executable, "-c", _KILL_IN_REPORT, "replay", path, "--db", db, "--report", out],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert killed.returncode == 137, killed.stderr
    assert not os.path.exists(out)  # whole or absent
    done = _cli(path, "--db", db, "--report", out, "--resume")
    assert done.returncode == 0, done.stderr
    assert json.loads(Path(out).read_text()) == clean


def test_a_kill_during_the_report_write_leaves_no_partial_file_once_resumed(tmp_path):
    path = write(tmp_path / "x.jsonl", crosschain_day())
    db, out = str(tmp_path / "k.db"), str(tmp_path / "k.json")
    subprocess.run([sys.executable, "-c", _KILL_IN_REPORT, "replay", path, "--db", db, "--report", out],
                   capture_output=True, text=True, cwd=ROOT, timeout=120)
    done = _cli(path, "--db", db, "--report", out, "--resume")
    assert done.returncode == 0, done.stderr
    assert glob.glob(out + ".tmp-*") == []


def test_a_kill_during_overwrite_then_resume_is_refused_or_exact(tmp_path):
    """--overwrite of another file's journals, killed after each file it deletes: a resume never mixes the two."""
    events = crosschain_day()
    path = write(tmp_path / "x.jsonl", events)
    other = [dict(e) for e in events]
    other[8]["amount"] = "2000.00"  # B's opening USDT: the cash chain's set-up differs
    other_path = write(tmp_path / "other.jsonl", other)
    clean = _clean_report(path)
    script = ("import os, sys\n"
              "k = int(os.environ['KILL_AT']); n = [0]; real = os.remove\n"
              "def remove(p, *a, **kw):\n"
              "    real(p, *a, **kw); n[0] += 1\n"
              "    if n[0] == k: os._exit(137)\n"
              "os.remove = remove\n"
              "from engine.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    for k in (1, 2):
        db, out = str(tmp_path / f"w{k}.db"), str(tmp_path / f"w{k}.json")
        replay(other_path, db=db).close()
        killed = subprocess.run([sys.executable, "-c", script, "replay", path, "--db", db, "--overwrite"],
                                capture_output=True, text=True, cwd=ROOT, timeout=120,
                                env={**os.environ, "KILL_AT": str(k)})
        assert killed.returncode == 137, killed.stderr
        resumed = _cli(path, "--db", db, "--report", out, "--resume")
        if resumed.returncode == 1:
            assert len(resumed.stderr.strip().splitlines()) == 1 and "--overwrite" in resumed.stderr
        else:
            assert resumed.returncode == 0, resumed.stderr
            assert json.loads(Path(out).read_text()) == clean


def _dvp_day(n: int) -> list[dict]:
    events = [{"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
              {"type": "asset", "id": "B", "kind": "security", "decimals": 0},
              {"type": "participant", "id": "S"}, {"type": "participant", "id": "P"},
              {"type": "deposit", "participant": "S", "asset": "B", "amount": 10},
              {"type": "deposit", "participant": "P", "asset": "USD", "amount": "100.00"}]
    events += [{"type": "dvp", "at": f"{DAY}10:{k:02d}:00Z", "id": f"T{k}", "seller": "S", "buyer": "P",
                "security": "B", "quantity": 1, "cash_asset": "USD", "amount": "10.00"} for k in range(n)]
    return events


def test_resuming_with_a_file_shorter_than_the_journal_is_refused_or_exact(tmp_path):
    events = _dvp_day(6)
    full = write(tmp_path / "full.jsonl", events)
    shorter = write(tmp_path / "shorter.jsonl", events[:8])  # the same set-up, the first two trades
    db = str(tmp_path / "j.db")
    replay(full, db=db, batch_commands=1).close()
    clean = _clean_report(shorter, batch_commands=1)
    try:
        resumed = _clean_report(shorter, db=db, batch_commands=1, resume=True)
    except ResumeError:
        return  # refused: fine
    assert resumed == clean  # today: 2 trades, but the balances of all 6 and the longer journal's head


def test_resuming_a_journal_another_program_extended_is_refused_or_exact(tmp_path):
    path = write(tmp_path / "d.jsonl", _dvp_day(3))
    db = str(tmp_path / "j.db")
    clean = _clean_report(path, db=db)
    ledger = Ledger.open(db, protocols=main_protocols(), snapshot_every=SNAPSHOT_EVERY)
    ledger.advance(ledger.now + 86_400)  # say, an operator's tool moving time on
    ledger.close()
    try:
        resumed = _clean_report(path, db=db, resume=True)
    except ResumeError:
        return
    assert resumed == clean


@pytest.mark.parametrize("flags", [("--batch-commands", "3"), ("--mode", "net")],
                         ids=["another batch size", "another mode"])
def test_resuming_with_other_options_is_refused_in_one_line_and_changes_nothing(tmp_path, flags):
    path = write(tmp_path / "d.jsonl", _dvp_day(12))
    db = str(tmp_path / "j.db")
    replay(path, db=db, batch_commands=5).close()
    head = verify_journal(db).head
    refused = _cli(path, "--db", db, "--resume", *flags)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "--overwrite" in refused.stderr and "Traceback" not in refused.stderr
    assert verify_journal(db).head == head


def test_two_replays_on_one_db_never_both_write(tmp_path):
    """Started together (no journal yet), or the second with --resume or --overwrite while the first runs."""
    path = write(tmp_path / "x.jsonl", crosschain_day())
    for second in ([], ["--resume"], ["--overwrite"]):
        db = str(tmp_path / f"two{len(second)}{second[:1]}.db")
        procs = [subprocess.Popen([sys.executable, "-m", "engine.cli", "replay", path, "--db", db, *flags],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                 for flags in ([], second)]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes in ([0, 0], [0, 1]), results
        if codes == [0, 0]:  # the second started after the first had finished: it resumed or started over
            assert second, results
        for code, err in results:
            if code == 1:
                assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        verify_journal(db)


@pytest.mark.parametrize("victim", ["notes", "the trade file"], ids=["a text file", "the trade file itself"])
def test_overwrite_deletes_only_a_journal(tmp_path, victim):
    path = write(tmp_path / "x.jsonl", _dvp_day(2))
    target = str(tmp_path / "notes.txt") if victim == "notes" else path
    if victim == "notes":
        Path(target).write_text("the desk's notes\n")
    before = Path(target).read_bytes()
    result = _cli(path, "--db", target, "--overwrite")
    assert Path(target).read_bytes() == before, "the file was replaced by a journal"
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_during_a_commit_exits_130_with_one_line(tmp_path, monkeypatch, capsys):
    from engine import cli, journal

    path = write(tmp_path / "d.jsonl", _dvp_day(12))
    db = str(tmp_path / "c.db")
    real = journal.SqliteJournal.append
    calls = {"n": 0}

    def append(self, *args, **kw):
        calls["n"] += 1
        if calls["n"] == 4:  # the signal lands while the entry is being written
            raise KeyboardInterrupt
        return real(self, *args, **kw)

    monkeypatch.setattr(journal.SqliteJournal, "append", append)
    try:
        code = cli.main(["replay", path, "--db", db, "--batch-commands", "2", "--no-progress"])
    except KeyboardInterrupt:
        code = "KeyboardInterrupt escaped"
    err = capsys.readouterr().err
    assert code == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err


_SIGINT_IN_COMMIT = ("import os, signal, sys\n"
                     "import protocols.replay as r\n"
                     "r.PIPELINE_BYTES_MIN = 0  # the forked parser, whatever the file's size\n"
                     "from engine import journal\n"
                     "real = journal.SqliteJournal.append\n"
                     "n = [0]\n"
                     "def append(self, *a, **kw):\n"
                     "    n[0] += 1\n"
                     "    if n[0] == int(os.environ['SIGINT_AT']):\n"
                     "        os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, mid-write\n"
                     "    return real(self, *a, **kw)\n"
                     "journal.SqliteJournal.append = append\n"
                     "from engine.cli import main\n"
                     "sys.exit(main(sys.argv[1:]))\n")


def _sigint_pipelined(tmp_path, at: int) -> tuple[subprocess.CompletedProcess, str]:
    from benchmarks.tradegen import generate

    path = str(tmp_path / "hard.jsonl")
    if not os.path.exists(path):
        generate(path, 2_000, participants=30, securities=3, seed=5, hard=True)
    db = str(tmp_path / f"p{at}.db")
    done = subprocess.run([sys.executable, "-c", _SIGINT_IN_COMMIT, "replay", path, "--db", db, "--batch-commands",
                           "97", "--no-progress"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "SIGINT_AT": str(at)})
    return done, db


def test_ctrl_c_in_the_pipelined_mode_leaves_no_parser_and_a_journal_that_resumes(tmp_path):
    done, db = _sigint_pipelined(tmp_path, at=12)
    assert done.returncode in (1, 130), done.stderr  # 130 wanted: see the next test
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", db], capture_output=True, text=True).stdout.split()
    assert left == [], f"processes left behind: {left}"
    verify_journal(db)
    resumed = _cli(str(tmp_path / "hard.jsonl"), "--db", db, "--batch-commands", "97", "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr


def test_ctrl_c_in_the_pipelined_mode_exits_130(tmp_path):
    done, _db = _sigint_pipelined(tmp_path, at=12)
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stderr


def test_ctrl_c_before_the_replay_starts_prints_one_line(tmp_path, monkeypatch, capsys):
    from engine import cli
    from engine.service import server

    def interrupted(_sub):
        raise KeyboardInterrupt

    monkeypatch.setattr(server, "add_parser", interrupted)
    try:
        code = cli.main(["replay", write(tmp_path / "d.jsonl", _dvp_day(1))])
    except KeyboardInterrupt:
        code = "KeyboardInterrupt escaped (a traceback on a terminal)"
    assert code == 130


# ---------------------------------------------------------------- recycling


def _dvp_rollback_day(amount_again: int, reopen: bool, general: tuple[str, ...], tmp_path, queued: int = 4) -> list:
    """T0 (arrival 1) and T1.. queue on D's cash; a linked chain cancels T0, settles it again, and fails."""
    dvp_world._ids = itertools.count(1)
    path = str(tmp_path / f"w{reopen}{len(general)}{amount_again}.db") if reopen else ":memory:"
    with general_paths(*general) if general else nullcontext():
        w = World(cash={"A": 1000}, bonds={"C": 100}, path=path)
        w.config(dvp.OFFSET_INTERVAL_KEY, "100000")
        for k in range(queued):
            assert w.settle(f"T{k}", "C", "D", 1, 50) == C.OK
        chain = [dvp.Cancel(id=fresh(), trade="T0", seller="C", buyer="D", linked=True),
                 dvp.Settle(id=fresh(), trade="T0", seller="C", buyer="D", security="BOND", quantity=1,
                            cash_asset="USD", amount=amount_again, linked=True),
                 Move(id=fresh(), asset="USD", source="D", target="A", amount=10**9)]  # D has nothing: it fails
        assert w.run(("C", "D"), chain)[2] == C.INSUFFICIENT_FUNDS
        assert w.queue()["T0"].arrival == 1  # rolled back: T0 waits as before, first in line
        if reopen:
            saved = w.clock.now
            w.reopen()
            w.clock.set(saved)
        w.mint("D", 60)
        events = [(e.kind, e.ref) for e in w.events()]
        w.ledger.close()
    return events


def test_a_rolled_back_requeue_keeps_fifo_on_the_indexed_path(tmp_path):
    scan = _dvp_rollback_day(50, False, ("dvp.indexed_recycling",), tmp_path)
    assert scan == [("settled", "T0")]  # T0 arrived first
    assert _dvp_rollback_day(50, False, (), tmp_path) == scan


def test_a_rolled_back_requeue_recycles_as_a_reopened_ledger_does(tmp_path):
    reopened = _dvp_rollback_day(500, True, (), tmp_path, queued=1)
    assert reopened == [("settled", "T0")]
    assert _dvp_rollback_day(500, False, ("dvp.indexed_recycling",), tmp_path, queued=1) == reopened  # the scan
    assert _dvp_rollback_day(500, False, (), tmp_path, queued=1) == reopened


def _repo_rollback_day(general: tuple[str, ...]) -> list:
    """Calls on R1 (deadline 10:01:40) and R2 (10:05:00); a linked chain of price moves reissues both with later
    deadlines, then fails; cash then arrives for one call."""
    from test_differential_repo import T0, Desk

    with general_paths(*general) if general else nullcontext():
        d = Desk()

        def at(seconds):
            d.clock.set(T0 + seconds)

        def price(p, **kw):
            return prices.SetPrice(id=d.id(), asset="EQ", price=p, **kw)

        for name, quantity, grace in (("R1", 1000, 1800), ("R2", 1300, 600)):
            assert d.run(("B1", "L"), [repo.OpenRepo(id=d.id(), repo=name, borrower="B1", lender="L", collateral="EQ",
                                                     quantity=quantity, cash_asset="USD", principal=800_000, rate="0",
                                                     end=T0 + 8 * 3600, mta=0, grace=grace)]) == [C.OK]
        assert d.run("B1", [Move(id=d.id(), asset="USD", source="B1", target="SINK", amount=1_600_000)]) == [C.OK]
        at(100)
        d.run("ORC", [price("10")])  # R1 called, deadline T0 + 1900
        at(1500)
        d.run("ORC", [price("8")])  # R1 amended; R2 called, deadline T0 + 2100
        at(1600)
        chain = [price("12", linked=True), price("8", linked=True),
                 Move(id=d.id(), asset="USD", source="ORC", target="L", amount=1)]  # the oracle has no cash
        assert d.run("ORC", chain)[2] == C.INSUFFICIENT_FUNDS
        at(1700)
        assert d.run("ISS", [Mint(id=d.id(), asset="USD", target="B1", amount=200_000)]) == [C.OK]
        return [(e.kind, e.ref) for e in d.ledger.last_events]


def test_a_rolled_back_price_chain_keeps_margin_calls_in_deadline_order():
    scan = _repo_rollback_day(("repo.indexed_recycling",))
    assert scan == [("margin_met", "R1")]  # R1's deadline is the earlier
    assert _repo_rollback_day(()) == scan


@pytest.mark.parametrize("block,lift", [("freeze", "unfreeze"), ("suspend", "reinstate")],
                         ids=["frozen, then unfrozen", "suspended, then reinstated"])
@pytest.mark.parametrize("covered", [True, False], ids=["covered at the lift", "short at the lift"])
def test_a_trade_blocked_by_a_party_is_recycled_by_a_credit_once_the_block_lifts(block, lift, covered):
    """A trade retried while a party is frozen or suspended waits on no account (waits=''): the unfreeze or
    reinstatement notice retries it at once (it settles if covered), else it waits on the leg it lacks and a
    credit there recycles it."""
    from engine.records import Reinstate, Suspend

    commands = {"freeze": ("CMP", Freeze), "unfreeze": ("CMP", Unfreeze), "suspend": ("OP", Suspend),
                "reinstate": ("OP", Reinstate)}
    w = World(cash={"A": 1000}, bonds={"C": 100})

    def do(what):
        signer, cls = commands[what]
        assert w.run(signer, [cls(id=fresh(), participant="C")]) == [C.OK]

    assert w.settle("T0", "C", "D", 1, 50) == C.OK  # queued: D has no cash
    do(block)
    w.mint("D", 40)  # not enough for T0 yet
    w.mint("D", 10)  # covered, but C cannot settle now: T0 now waits on no account
    if not covered:
        assert w.run("D", [Move(id=fresh(), asset="USD", source="D", target="A", amount=5)]) == [C.OK]
    assert list(w.queue()) == ["T0"]
    do(lift)
    if covered:
        assert [(e.kind, e.ref) for e in w.events()] == [("settled", "T0")]  # retried on the notice
        return
    assert list(w.queue()) == ["T0"] and w.events() == []  # still short: it now waits on D's cash
    w.mint("D", 5)  # D's cash rises: T0 can settle
    assert [(e.kind, e.ref) for e in w.events()] == [("settled", "T0")]


# ---------------------------------------------------------------- escrow


def _one_swap(initiator: str, extra: list[dict], config: dict | None = None) -> list[dict]:
    events = [{"type": "asset", "id": "UST", "kind": "security", "decimals": 0},
              {"type": "asset", "id": "USDT", "kind": "cash", "decimals": 2, "chain": "cash"},
              {"type": "participant", "id": "S"}, {"type": "participant", "id": "B"},
              {"type": "deposit", "participant": "S", "asset": "UST", "amount": 100},
              {"type": "deposit", "participant": "B", "asset": "USDT", "amount": "1000.00"},
              # the follower lacks its asset and never locks; T1 = 12:00
              {"type": "dvp", "at": f"{DAY}10:00:00Z", "id": "X1", "seller": "S", "buyer": "B", "security": "UST",
               "quantity": 500 if initiator == "buyer" else 10, "cash_asset": "USDT",
               "amount": "100.00" if initiator == "buyer" else "5000.00", "initiator": initiator, "timeout": "PT1H"}]
    return ([config] if config else []) + events + extra


_AT_T1 = {"type": "dvp", "at": f"{DAY}12:00:00Z", "id": "L", "seller": "S", "buyer": "B", "security": "UST",
          "quantity": 1, "cash_asset": "USDT", "amount": "1.00"}
_BEFORE_T1 = dict(_AT_T1, at=f"{DAY}11:59:59Z")
ESCROW_CASES = [
    ("a config cut-off exactly at T1 refunds it", [], {"type": "config", "cutoff": f"{DAY}12:00:00Z"}, False),
    ("a cut-off line exactly at T1 refunds it", [{"type": "cutoff", "at": f"{DAY}12:00:00Z"}], None, False),
    ("a last line exactly at T1 refunds it", [_AT_T1], None, False),
    ("a last line a second before T1 leaves it escrowed", [_BEFORE_T1], None, True),
    ("a cut-off before the trade leaves it escrowed", [], {"type": "config", "cutoff": f"{DAY}09:00:00Z"}, True),
]


@pytest.mark.parametrize("initiator", ["buyer", "seller"])
@pytest.mark.parametrize("extra,config,held", [c[1:] for c in ESCROW_CASES], ids=[c[0] for c in ESCROW_CASES])
def test_a_lock_is_refunded_exactly_when_a_chain_reaches_its_expiry(tmp_path, initiator, extra, config, held):
    run = replay(write(tmp_path / "e.jsonl", _one_swap(initiator, extra, config)))
    report = run.report()
    times = {chain: slot.ledger.now for chain, slot in run.chains.slots.items()}
    run.close()
    assert len(set(times.values())) == 1, times  # every chain reached the end of the file
    locked = {"B": {"USDT": "100.00"}} if initiator == "buyer" else {"S": {"UST": "10"}}
    assert report["escrow"] == (locked if held else {})
    _supply_holds(report)


def _supply_holds(report: dict) -> None:
    total: dict[str, Decimal] = {}
    for book in (report["balances"], report["escrow"]):
        for held in book.values():
            for asset, amount in held.items():
                total[asset] = total.get(asset, Decimal(0)) + Decimal(amount)
    supply = {a: Decimal(v) for a, v in report["supply"].items()}
    assert set(total) <= set(supply)
    assert supply == {a: total.get(a, Decimal(0)) for a in supply}


def _mixed_day(seed: int) -> list[dict]:
    """A random day on three chains: DvPs and swaps both ways, deliveries, repos, prices, substitutions, cut-offs."""
    rng = random.Random(seed)
    parties = [f"P{i}" for i in range(5)]
    events = [{"type": "config", "cutoff": _hhmmss(rng.choice((15, 16, 17)) * 3600), "mta": "0", "grace": "PT10M"},
              {"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
              {"type": "asset", "id": "USDT", "kind": "cash", "decimals": 2, "chain": "cash"},
              {"type": "asset", "id": "N", "kind": "security", "decimals": 0, "class": "ust_note",
               "maturity": "2030-01-01", "price": "100"},
              {"type": "asset", "id": "E", "kind": "security", "decimals": 0, "class": "equity",
               "price_basis": "per_unit", "price": "10"},
              {"type": "asset", "id": "G", "kind": "security", "decimals": 0, "chain": "sec"}]
    events += [{"type": "participant", "id": p} for p in parties]
    for p in parties:
        for asset in ("USD", "USDT", "N", "E", "G"):
            if rng.random() < 0.7:
                events.append({"type": "deposit", "participant": p, "asset": asset,
                               "amount": str(rng.choice((0, 50, 500, 5000, 50000)))})
    now = 9 * 3600
    for k in range(rng.randint(10, 60)):
        now += rng.choice((1, 30, 300, 1200))
        a, b = rng.sample(parties, 2)
        roll = rng.random()
        if roll < 0.35:
            security, cash = rng.choice((("N", "USD"), ("E", "USD"), ("N", "USDT"), ("G", "USD"), ("G", "USDT")))
            e = {"type": "dvp", "at": _hhmmss(now), "id": f"D{k}", "seller": a, "buyer": b, "security": security,
                 "quantity": rng.choice((1, 5, 20, 100)), "cash_asset": cash,
                 "amount": str(rng.choice((1, 10, 100, 1000)))}
            if rng.random() < 0.3:
                e["initiator"] = rng.choice(("buyer", "seller"))
            if rng.random() < 0.3:
                e["timeout"] = rng.choice(("PT1S", "PT10M", "PT2H"))
            events.append(e)
        elif roll < 0.5:
            events.append({"type": "deliver", "at": _hhmmss(now), "id": f"V{k}", "from": a, "to": b,
                           "asset": rng.choice(("USD", "N", "E")), "amount": str(rng.choice((1, 10, 100)))})
        elif roll < 0.7:
            events.append({"type": "repo", "at": _hhmmss(now), "id": f"R{k}", "borrower": a, "lender": b,
                           "collateral": rng.choice(("N", "E")), "quantity": rng.choice((50, 100, 500)),
                           "cash_asset": "USD", "principal": str(rng.choice((5, 40, 90, 400))),
                           "rate": rng.choice(("0", "0.05")), "end": _hhmmss(now + rng.choice((600, 3600, 14400)))})
        elif roll < 0.9:
            events.append({"type": "price", "at": _hhmmss(now), "asset": rng.choice(("N", "E")),
                           "price": rng.choice(("80", "95", "100", "110", "5", "9", "12"))})
        elif roll < 0.95:
            events.append({"type": "substitute", "at": _hhmmss(now), "repo": f"R{rng.randint(0, k)}",
                           "collateral": rng.choice(("N", "E")), "quantity": rng.choice((10, 300))})
        else:
            events.append({"type": "cutoff", "at": _hhmmss(now)})
    return events


@pytest.mark.parametrize("mode", ["gross", "net"])
def test_balances_and_escrow_equal_the_supply_on_every_chain_of_random_days(tmp_path, mode):
    for seed in range(40):
        run = replay(write(tmp_path / "m.jsonl", _mixed_day(seed)), mode=mode)
        report = run.report()
        for chain, slot in run.chains.slots.items():
            state = slot.ledger.state
            held: dict[str, int] = {asset: sum(book.values()) for asset, book in state.balances.items()}
            for hold in state.holds.values():
                held[hold.asset] = held.get(hold.asset, 0) + hold.amount
            assert {a: held.get(a, 0) for a in state.supply} == dict(state.supply), (seed, chain)
        run.close()
        _supply_holds(report)


def test_a_kill_before_a_chains_genesis_is_written_resumes_to_the_same_report(tmp_path):
    """The journal file exists, empty: the main chain's (first write) or the cash chain's (second)."""
    path = write(tmp_path / "x.jsonl", crosschain_day())
    clean = _clean_report(path)
    script = ("import os, sys\n"
              "from engine import journal\n"
              "real = journal.SqliteJournal.append; n = [0]\n"
              "def append(self, *a, **kw):\n"
              "    n[0] += 1\n"
              "    if n[0] == int(os.environ['KILL_AT']): os._exit(137)\n"
              "    return real(self, *a, **kw)\n"
              "journal.SqliteJournal.append = append\n"
              "from engine.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    for k in (1, 2):
        db, out = str(tmp_path / f"g{k}.db"), str(tmp_path / f"g{k}.json")
        killed = subprocess.run([sys.executable, "-c", script, "replay", path, "--db", db], capture_output=True,
                                text=True, cwd=ROOT, timeout=120, env={**os.environ, "KILL_AT": str(k)})
        assert killed.returncode == 137 and os.path.exists(db), killed.stderr
        done = _cli(path, "--db", db, "--report", out, "--resume")
        assert done.returncode == 0, done.stderr
        assert json.loads(Path(out).read_text()) == clean


# ------------------------------------------------------------- cost growth
#
# Work is counted, not timed (times are noisy): the entries each waitlist rebuild touches, and the retries.


@pytest.fixture
def rebuild_work(monkeypatch):
    """How many entries the waitlists copy into runs they build (their rebuild work)."""
    from protocols import waitlist

    work = {"entries": 0}
    real = waitlist._Run.__init__

    def counted(self, entries=(), extra=0):
        work["entries"] += len(entries)
        return real(self, entries, extra)

    monkeypatch.setattr(waitlist._Run, "__init__", counted)
    return work


def _amend_every_entry(n: int, work: dict) -> int:
    from protocols.waitlist import Waitlist

    wl = Waitlist()
    for k in range(n):
        wl.add(k, 100, f"t{k}")
    work["entries"] = 0
    for k in range(n):
        wl.add(k, 99, f"t{k}")  # the same entry, a new need: what an amended margin call does
    return work["entries"]


def test_updating_every_entry_of_a_waitlist_costs_linear_work(rebuild_work):
    small, large = _amend_every_entry(2_000, rebuild_work), _amend_every_entry(8_000, rebuild_work)
    assert large <= 6 * max(small, 2_000), (small, large)  # 4x the entries: about 4x the work (9.6x today)


def _borrower_with_open_calls(n: int):
    """One borrower with `n` repos, each with an open margin call (the borrower has no cash)."""
    from test_differential_repo import T0, Desk

    d = Desk()
    d.run("ISS", [Mint(id=d.id(), asset="EQ", target="B1", amount=10**9)])
    for i in range(0, n, 500):
        opens = [repo.OpenRepo(id=d.id(), repo=f"R{k:06d}", borrower="B1", lender="L", collateral="EQ",
                               quantity=1000, cash_asset="USD", principal=800_000, rate="0", end=T0 + 8 * 3600,
                               mta=0, grace=1800) for k in range(i, min(n, i + 500))]
        assert set(d.run(("B1", "L"), opens)) == {C.OK}
    d.run("B1", [Move(id=d.id(), asset="USD", source="B1", target="SINK", amount=d.ledger.balance("B1", "USD"))])
    d.clock.advance(10)
    d.run("ORC", [prices.SetPrice(id=d.id(), asset="EQ", price="10")])  # a call on every repo
    return d


def _price_tick_work(n: int, work: dict) -> int:
    d = _borrower_with_open_calls(n)
    assert sum(1 for r in d.ledger.protocol_state(repo.NAME).repos.values() if r.call) == n
    work["entries"] = 0
    d.clock.advance(10)
    d.run("ORC", [prices.SetPrice(id=d.id(), asset="EQ", price="9")])  # amends every call
    return work["entries"]


def test_a_price_tick_amending_one_borrowers_calls_costs_linear_work(rebuild_work):
    small, large = _price_tick_work(400, rebuild_work), _price_tick_work(1_600, rebuild_work)
    assert large <= 6 * max(small, 400), (small, large)


def _leg_switch_work(n: int, work: dict) -> int:
    """C's n trades to D wait on C's bonds; A's n later trades to D wait on D's cash; bonds reach C, and C's
    trades move to wait on D's cash, behind A's."""
    dvp_world._ids = itertools.count(1)
    w = World(cash={}, bonds={"A": 10 * n})
    w.config(dvp.OFFSET_INTERVAL_KEY, "100000000")

    def trade(seller: str, k: int):
        return dvp.Settle(id=fresh(), trade=f"{seller}{k}", seller=seller, buyer="D", security="BOND", quantity=1,
                          cash_asset="USD", amount=50)

    assert set(w.run(("C", "D"), [trade("C", k) for k in range(n)])) == {C.OK}
    assert set(w.run(("A", "D"), [trade("A", k) for k in range(n)])) == {C.OK}
    work["entries"] = 0
    w.mint("C", n, "BOND")
    assert sum(1 for t in w.queue().values() if t.waits == "cash") == 2 * n
    w.ledger.close()
    return work["entries"]


def test_trades_moving_to_wait_behind_later_arrivals_cost_linear_work(rebuild_work):
    small, large = _leg_switch_work(500, rebuild_work), _leg_switch_work(2_000, rebuild_work)
    assert large <= 6 * max(small, 500), (small, large)  # 11x today


def _recycling_work(n: int, need: int, credit: int) -> tuple[int, int]:
    """n trades queued on D's cash (each needing `need`), then n credits of `credit`: (retries, settled)."""
    from protocols.dvp import recycling

    dvp_world._ids = itertools.count(1)
    w = World(cash={}, bonds={"C": n})
    w.config(dvp.OFFSET_INTERVAL_KEY, "100000000")
    assert set(w.run(("C", "D"), [dvp.Settle(id=fresh(), trade=f"T{k}", seller="C", buyer="D", security="BOND",
                                             quantity=1, cash_asset="USD", amount=need) for k in range(n)])) == {C.OK}
    calls = {"n": 0}
    real = recycling.try_queued

    def counting(*args):
        calls["n"] += 1
        return real(*args)

    recycling.try_queued = counting
    try:
        for i in range(0, n, 500):
            w.run("ISS", [Mint(id=fresh(), asset="USD", target="D", amount=credit) for _ in range(i, min(n, i + 500))])
    finally:
        recycling.try_queued = real
    settled = n - len(w.queue())
    w.ledger.close()
    return calls["n"], settled


@pytest.mark.parametrize("need,credit,label", [(50, 50, "each credit covers one trade"),
                                               (10**6, 1, "credits that cover nothing")],
                         ids=["a long queue on one account", "credits that cover nothing"])
def test_recycling_work_grows_linearly(need, credit, label, rebuild_work):
    (small, settled_small), (large, settled_large) = _recycling_work(1_000, need, credit), _recycling_work(4_000, need,
                                                                                                      credit)
    if credit == need:
        assert (small, large) == (settled_small, settled_large) == (1_000, 4_000)  # one retry per settlement
    else:
        assert small == large == 0  # not a single retry
    assert rebuild_work["entries"] <= 20 * 4_000


@pytest.fixture
def lookups(monkeypatch):
    """How many times any waitlist is asked for its next entry (`Waitlist.first`)."""
    from protocols.waitlist import Waitlist

    count = {"n": 0}
    real = Waitlist.first

    def first(self, after, most):
        count["n"] += 1
        return real(self, after, most)

    monkeypatch.setattr(Waitlist, "first", first)
    return count


def _one_command_credits_many(n: int, count: dict) -> int:
    """n buyers each wait with one trade on their cash; one linked chain of n mints credits them all at once."""
    from test_differential_repo import Desk  # any ledger with DvP and signers on demand

    buyers = [f"W{k}" for k in range(n)]
    desk = Desk()
    from engine.identity import Signer, derive_key
    from engine.records import Admit

    for name in buyers:
        desk.s[name] = Signer(name, derive_key(f"many/{name}"), "repo")
    for i in range(0, n, 500):
        admits = [Admit(id=desk.id(), participant=b, public_key=desk.s[b].public_key) for b in buyers[i:i + 500]]
        assert set(desk.run("OP", admits)) == {C.OK}
    desk.run("ISS", [Mint(id=desk.id(), asset="NOTE", target="SINK", amount=n)])
    for i in range(0, n, 100):
        group = buyers[i:i + 100]
        trades = [dvp.Settle(id=desk.id(), trade=f"T{b}", seller="SINK", buyer=b, security="NOTE", quantity=1,
                             cash_asset="USD", amount=50) for b in group]
        assert set(desk.run(("SINK", *group), trades)) == {C.OK}
    credits = [Mint(id=desk.id(), asset="USD", target=b, amount=50, linked=k + 1 < n) for k, b in enumerate(buyers)]
    count["n"] = 0
    assert set(desk.run("ISS", credits)) == {C.OK}
    assert not desk.ledger.protocol_state(dvp.NAME).queue  # every trade settled by recycling
    return count["n"]


def test_one_command_crediting_many_accounts_recycles_in_linear_work(lookups):
    small, large = _one_command_credits_many(250, lookups), _one_command_credits_many(1_000, lookups)
    assert large <= 6 * max(small, 250), (small, large)  # 16x today


def _net_day_paying_many_borrowers(n: int) -> list[dict]:
    """n borrowers, each with an unmet margin call, are paid by one net cycle at 10:00."""
    events = [{"type": "config", "mode": "net", "netting_cycle": "PT1H", "cutoff": f"{DAY}17:00:00Z",
               "grace": "PT3H", "mta": "0"},
              {"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
              {"type": "asset", "id": "EQ", "kind": "security", "decimals": 0, "class": "equity",
               "price_basis": "per_unit", "price": "12"},
              {"type": "asset", "id": "N", "kind": "security", "decimals": 0},
              {"type": "participant", "id": "L"}, {"type": "participant", "id": "K"},
              {"type": "participant", "id": "SINK"},
              {"type": "deposit", "participant": "L", "asset": "USD", "amount": str(8000 * n)},
              {"type": "deposit", "participant": "K", "asset": "USD", "amount": str(1000 * n)}]
    for i in range(n):
        events += [{"type": "participant", "id": f"B{i}"},
                   {"type": "deposit", "participant": f"B{i}", "asset": "EQ", "amount": 1000},
                   {"type": "deposit", "participant": f"B{i}", "asset": "N", "amount": 1}]
    for i in range(n):
        events += [{"type": "repo", "at": f"{DAY}09:00:00Z", "id": f"R{i}", "borrower": f"B{i}", "lender": "L",
                    "collateral": "EQ", "quantity": 1000, "cash_asset": "USD", "principal": "8000.00", "rate": "0",
                    "end": f"{DAY}16:00:00Z"},
                   {"type": "deliver", "at": f"{DAY}09:01:00Z", "id": f"S{i}", "from": f"B{i}", "to": "SINK",
                    "asset": "USD", "amount": "8000.00"},
                   {"type": "dvp", "at": f"{DAY}09:03:00Z", "id": f"T{i}", "seller": f"B{i}", "buyer": "K",
                    "security": "N", "quantity": 1, "cash_asset": "USD", "amount": "1000.00"}]
    events.append({"type": "price", "at": f"{DAY}09:02:00Z", "asset": "EQ", "price": "10"})  # a call on every repo
    events.append({"type": "price", "at": f"{DAY}10:30:00Z", "asset": "EQ", "price": "10"})
    return events


def _net_day_lookups(tmp_path, n: int, count: dict) -> int:
    count["n"] = 0
    report = _clean_report(write(tmp_path / f"net{n}.jsonl", _net_day_paying_many_borrowers(n)))
    assert [c["status"] for c in report["margin_calls"]] == ["met"] * n  # met when the cycle paid them
    return count["n"]


def test_a_net_cycle_paying_many_borrowers_meets_their_calls_in_linear_work(tmp_path, lookups):
    small, large = _net_day_lookups(tmp_path, 150, lookups), _net_day_lookups(tmp_path, 600, lookups)
    assert large <= 6 * max(small, 150), (small, large)
