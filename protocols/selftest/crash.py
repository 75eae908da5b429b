"""`dvp selftest crash`: SIGKILL a writer at seeded instants, restart it, and compare with the clean run.

Takes a number of runs and a seed; gives a `CrashReport` (runs, kills,
batches, differences, and each difference in words). Each run records a
seeded workload (`workload.record`), then submits it to durable SQLite
ledgers, one per chain, in a child process forked from this one. The child
acknowledges each batch on a pipe after `submit` returns, checks after every
commit (and at every reopen) that each asset's supply equals its balances
plus its holds, and checks each batch's results against the clean run's. The
parent kills the child with SIGKILL at a seeded instant, or the child kills
itself at a seeded point: inside a commit (the entry inserted, the
transaction open), while a snapshot is written inside it, after the commit
and before the acknowledgement, or while genesis is written. A new child
reopens the journals (recreating one killed during genesis), resubmits every
batch from the first one not acknowledged, with the same envelopes and ids,
and requires a batch already committed to be answered as a replay
(`replayed_sequence` or `stale_sequence`, nothing applied). At the end each
chain must have the clean run's state digest and balances, every
acknowledged command id, and pass `engine.verify`.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field

from engine import codes as C
from engine.journal import JournalError, SqliteJournal, journal_exists, remove_journal
from engine.ledger import Ledger, ManualClock
from engine.verify import verify_journal

from .workload import Workload, conservation, record

SNAPSHOT_EVERY = 3  # often, so that kills land while snapshots are written
REPLAYED = (C.REPLAYED_SEQUENCE, C.STALE_SEQUENCE)
POINTS = ("timed", "inside_commit", "inside_snapshot", "after_commit", "genesis")
EXIT_DIFFERENCE = 3


@dataclass
class CrashReport:
    runs: int = 0
    kills: int = 0
    lives: int = 0
    batches: int = 0
    resubmitted: int = 0
    answered_replayed: int = 0
    kills_by_point: dict[str, int] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)


def _protocols(kind: str) -> list:
    from ..replay.apply import main_protocols, side_protocols

    return main_protocols() if kind == "main" else side_protocols()


def _path(root: str, chain: str) -> str:
    return os.path.join(root, f"{chain}.db")


def _open(work: Workload, root: str, i: int) -> Ledger:
    spec = work.chains[i]
    path = _path(root, spec.chain)
    protocols = _protocols(spec.protocols)
    if journal_exists(path):
        try:
            return Ledger.open(path, protocols=protocols, snapshot_every=SNAPSHOT_EVERY)
        except JournalError as exc:
            if "journal is empty" not in str(exc):
                raise
            remove_journal(path)  # killed while genesis was written: nothing was committed
    elif os.path.exists(path):
        remove_journal(path)
    return Ledger.create(path, chain_id=spec.chain, operator=spec.operator, operator_key=spec.operator_key,
                         clock=ManualClock(spec.first_at), protocols=protocols, snapshot_every=SNAPSHOT_EVERY)


def _install_kill_point(point: str, step_chain: int, step_seq_offset: int, chains: list[str]) -> None:
    """Make this (child) process SIGKILL itself at `point` (hooks the SQLite journal's insert, in this process)."""
    insert = SqliteJournal._insert
    target = {"chain": chains[step_chain], "countdown": step_seq_offset}

    def hooked(self, seq, digest, body, snapshot):
        mine = os.path.basename(self.path) == f"{target['chain']}.db"
        if point == "genesis" and seq == 0 and mine:
            insert(self, seq, digest, body, snapshot)
            os.kill(os.getpid(), signal.SIGKILL)
        if point == "inside_snapshot" and snapshot is not None and mine:
            self._db.execute("INSERT INTO journal (seq, hash, body) VALUES (?, ?, ?)", (seq, digest, body))
            os.kill(os.getpid(), signal.SIGKILL)  # the entry written, its snapshot about to be, uncommitted
        insert(self, seq, digest, body, snapshot)
        if mine and seq > 0 and point == "inside_commit":
            target["countdown"] -= 1
            if target["countdown"] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    SqliteJournal._insert = hooked  # type: ignore[method-assign]


def _child(work: Workload, root: str, start: int, point: str, kill_step: int, ack_fd: int) -> None:
    """Submit steps[start:], acknowledging each as `index\\n` on ack_fd; exit 0 when done, 3 on a difference."""
    def fail(text: str) -> None:
        os.write(ack_fd, f"diff {text}\n".encode())
        os._exit(EXIT_DIFFERENCE)

    chains = [c.chain for c in work.chains]
    if point in ("genesis", "inside_snapshot", "inside_commit"):
        _install_kill_point(point, work.steps[kill_step].chain, kill_step - start + 1 if point == "inside_commit"
                            else 0, chains)
    ledgers = []
    for i in range(len(work.chains)):
        ledger = _open(work, root, i)
        problem = conservation(ledger.state)
        if problem:
            fail(f"at reopen of {chains[i]}: {problem}")
        ledgers.append(ledger)
    for index in range(start, len(work.steps)):
        step = work.steps[index]
        results = ledgers[step.chain].submit(step.envelopes, at=step.at)
        problem = conservation(ledgers[step.chain].state)
        if problem:
            fail(f"after batch {index}: {problem}")
        if results != step.results:
            if index == start and step.envelopes and all(code in REPLAYED for code in results):
                os.write(ack_fd, f"replayed {index}\n".encode())  # committed before the kill, not acknowledged
            else:
                fail(f"batch {index} on {chains[step.chain]}: results {results[:8]} differ from the clean "
                     f"run's {step.results[:8]}")
        if point == "after_commit" and index == kill_step:
            os.kill(os.getpid(), signal.SIGKILL)
        os.write(ack_fd, f"ack {index}\n".encode())
    for ledger in ledgers:
        ledger.close()
    os.write(ack_fd, b"done\n")
    os._exit(0)


def _life(work: Workload, root: str, start: int, point: str, kill_step: int, delay: float) -> tuple[list[str], int]:
    """Fork a child from `start`; return its messages and how it ended (signal number, or -exit status)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            _child(work, root, start, point, kill_step, write_fd)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as a difference
            try:
                os.write(write_fd, f"diff child raised {type(exc).__name__}: {' '.join(str(exc).split())}\n".encode())
            finally:
                os._exit(EXIT_DIFFERENCE)
        os._exit(0)
    os.close(write_fd)
    data = b""
    deadline = time.monotonic() + delay if point == "timed" else None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([read_fd], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            deadline = None
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        data += chunk
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        how = os.WTERMSIG(status)
    else:
        how = -os.WEXITSTATUS(status)
    return data.decode(errors="replace").splitlines(), how


def run_one(seed: int, root: str, report: CrashReport, kills: int, rng: random.Random) -> None:
    """One run: record the workload, then kill and restart its writer `kills` times, then compare."""
    work = record(seed)
    acked = -1
    kills_done = 0
    while True:
        start = acked + 1
        if kills_done < kills and start < len(work.steps):
            point = rng.choice(POINTS)
            if start == 0 and rng.random() < 0.3:
                point = "genesis"
            if point == "genesis" and start > 0:
                point = "inside_commit"
            kill_step = rng.randrange(start, min(len(work.steps), start + 4))  # near: many kills per run
            if point == "inside_snapshot":
                kill_step = start
            delay = rng.uniform(0.0, 0.03)
        else:
            point, kill_step, delay = "none", 0, 0.0
        messages, how = _life(work, root, start, point, kill_step, delay)
        report.lives += 1
        done = False
        for line in messages:
            word, _, rest = line.partition(" ")
            if word == "ack":
                index = int(rest)
                if index != acked + 1:
                    report.differences.append(f"seed {seed}: acknowledgement {index} after {acked}")
                acked = index
            elif word == "replayed":
                report.answered_replayed += 1
            elif word == "diff":
                report.differences.append(f"seed {seed}: {rest}")
            elif word == "done":
                done = True
        if start > 0:
            report.resubmitted += 1
        if how == signal.SIGKILL:
            kills_done += 1
            report.kills += 1
            report.kills_by_point[point] = report.kills_by_point.get(point, 0) + 1
        elif how == -EXIT_DIFFERENCE or not done:
            if how != -EXIT_DIFFERENCE:
                report.differences.append(f"seed {seed}: child ended with status {how} before the end")
            return
        if done:
            break
    report.batches += len(work.steps)
    _compare(work, root, seed, report)


def _compare(work: Workload, root: str, seed: int, report: CrashReport) -> None:
    for i, spec in enumerate(work.chains):
        path = _path(root, spec.chain)
        ledger = Ledger.open(path, protocols=_protocols(spec.protocols))
        try:
            final = work.finals[i]
            if ledger.digest() != final.digest:
                report.differences.append(f"seed {seed}: chain {spec.chain}: state digest differs from the clean run")
            if ledger.balances() != final.balances:
                report.differences.append(f"seed {seed}: chain {spec.chain}: balances differ from the clean run")
            problem = conservation(ledger.state)
            if problem:
                report.differences.append(f"seed {seed}: chain {spec.chain}: {problem}")
            ids = ledger.state.ids
            for step in work.steps:
                if step.chain != i:
                    continue
                commands = [command for env in step.envelopes for command in ledger.decode(env)]
                for command, code in zip(commands, step.results):
                    if code == C.OK and command.id not in ids:
                        report.differences.append(f"seed {seed}: chain {spec.chain}: acknowledged command "
                                                  f"{command.id!r} is missing")
        finally:
            ledger.close()
        try:
            verify_journal(path, protocols=_protocols(spec.protocols))
        except JournalError as exc:
            report.differences.append(f"seed {seed}: chain {spec.chain}: verify: {exc}")


def crash(runs: int, seed: int, kills: int = 12, workdir: str | None = None, progress=None) -> CrashReport:
    """Run `runs` seeded runs of `kills` kills each; return the report."""
    report = CrashReport()
    rng = random.Random(seed)
    base = tempfile.mkdtemp(prefix="dvp-selftest-", dir=workdir)
    try:
        for n in range(runs):
            root = os.path.join(base, f"run{n}")
            os.makedirs(root)
            run_one(seed * 1_000_003 + n, root, report, kills, rng)
            report.runs += 1
            if not report.differences:
                shutil.rmtree(root, ignore_errors=True)
            if progress is not None:
                progress(report)
    finally:
        if not report.differences:
            shutil.rmtree(base, ignore_errors=True)
    return report
