"""`dvp selftest faults`: inject storage faults into a small journal; each must be detected, clearly.

Takes nothing; gives one `FaultResult` per fault: what was injected, whether
it was detected with a clear error (a `JournalError` or `LedgerFault` naming
it, or a recovery note), and how. The journal is a recorded seeded day
(`workload.record`) written to a SQLite file with snapshots. Stored faults are
made by editing a copy of the file with SQLite (a torn tail, a flipped byte,
a deleted or duplicated entry, snapshots that disagree with the journal);
faults during a commit come from a fault layer put between the journal and its
SQLite connection (`FaultyConnection`: a full disk, an I/O error, a read-only
file, an error after a durable commit), so the engine's own code paths run.
Engine files are not changed: a fault the engine misses is reported here as
undetected.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable

import msgspec

from engine import codes as C
from engine.journal import JournalError
from engine.ledger import Ledger, LedgerFault, ManualClock
from engine.state import Snapshot

from .workload import Workload, conservation, record

SEED = 7


class FaultResult(msgspec.Struct):
    fault: str
    detected: bool
    how: str


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:150]}"


def _protocols(kind: str) -> list:
    from ..replay.apply import main_protocols, side_protocols

    return main_protocols() if kind == "main" else side_protocols()


def _build(work: Workload, path: str, upto: int | None = None) -> None:
    """Write the main chain's steps (the first `upto`) to a new SQLite journal, with snapshots every 4 entries."""
    spec = work.chains[0]
    ledger = Ledger.create(path, chain_id=spec.chain, operator=spec.operator, operator_key=spec.operator_key,
                           clock=ManualClock(spec.first_at), protocols=_protocols("main"), snapshot_every=4)
    steps = [s for s in work.steps if s.chain == 0][:upto]
    for step in steps:
        ledger.submit(step.envelopes, at=step.at)
    ledger.close()


def _open(path: str, **kw) -> Ledger:
    return Ledger.open(path, protocols=_protocols("main"), **kw)


def _sql(path: str, fn: Callable[[sqlite3.Connection], None]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        fn(db)
    finally:
        db.close()


def _head(db: sqlite3.Connection) -> int:
    return db.execute("SELECT max(seq) FROM journal").fetchone()[0]


def _expect_open_error(path: str, phrase: str) -> tuple[bool, str]:
    try:
        ledger = _open(path)
    except JournalError as exc:
        return phrase in str(exc), _one_line(exc)
    except Exception as exc:  # noqa: BLE001 - detected, but not as the engine's own clear error
        return False, f"not a clear error: {_one_line(exc)}"
    ledger.close()
    return False, "opened without an error"


# ------------------------------------------------------------- stored faults

def _torn_tail(path: str) -> tuple[bool, str]:
    def tear(db):
        seq = _head(db)
        db.execute("UPDATE journal SET body = substr(body, 1, length(body) / 2) WHERE seq = ?", (seq,))
    _sql(path, tear)
    return _expect_open_error(path, "does not match its hash")


def _flipped_byte(path: str) -> tuple[bool, str]:
    def flip(db):
        seq = _head(db) // 2
        body = bytearray(db.execute("SELECT body FROM journal WHERE seq = ?", (seq,)).fetchone()[0])
        body[len(body) // 2] ^= 0x01
        db.execute("UPDATE journal SET body = ? WHERE seq = ?", (bytes(body), seq))
    _sql(path, flip)
    return _expect_open_error(path, "does not match its hash")


def _deleted_middle(path: str) -> tuple[bool, str]:
    _sql(path, lambda db: db.execute("DELETE FROM journal WHERE seq = ?", (_head(db) // 2,)))
    return _expect_open_error(path, "is missing")


def _duplicated_entry(path: str) -> tuple[bool, str]:
    def dup(db):
        seq = _head(db)
        digest, body = db.execute("SELECT hash, body FROM journal WHERE seq = ?", (seq,)).fetchone()
        db.execute("INSERT INTO journal (seq, hash, body) VALUES (?, ?, ?)", (seq + 1, digest, body))
    _sql(path, dup)
    return _expect_open_error(path, "says it is entry")


def _duplicated_middle(path: str) -> tuple[bool, str]:
    def dup(db):
        seq = _head(db) // 2
        digest, body = db.execute("SELECT hash, body FROM journal WHERE seq = ?", (seq - 1,)).fetchone()
        db.execute("UPDATE journal SET hash = ?, body = ? WHERE seq = ?", (digest, body, seq))
    _sql(path, dup)
    return _expect_open_error(path, "says it is entry")


def _deleted_last(path: str) -> tuple[bool, str]:
    kept = {}
    def cut(db):
        seq = _head(db)
        kept["head"] = db.execute("SELECT hash FROM journal WHERE seq = ?", (seq,)).fetchone()[0]
        db.execute("DELETE FROM journal WHERE seq = ?", (seq,))
    _sql(path, cut)
    try:
        ledger = _open(path)
    except JournalError as exc:
        return True, _one_line(exc)
    try:
        if ledger.recovery_notes:
            return True, f"recovery note: {ledger.recovery_notes[0]}"
        return False, (f"opened as a shorter valid journal (head {ledger.head_seq}, the lost head "
                       f"{kept['head'].hex()[:16]}...): the engine has no expected head to compare with")
    finally:
        ledger.close()


def _edit_snapshot(path: str, edit: Callable[[Snapshot], None]) -> int:
    holder = {}
    def change(db):
        seq, body = db.execute("SELECT seq, body FROM snapshots ORDER BY seq DESC LIMIT 1").fetchone()
        snap = msgspec.msgpack.decode(body, type=Snapshot)
        edit(snap)
        new = msgspec.msgpack.Encoder(order="deterministic").encode(snap)
        db.execute("UPDATE snapshots SET body = ?, hash = ? WHERE seq = ?", (new, hashlib.sha256(new).digest(), seq))
        holder["seq"] = seq
    _sql(path, change)
    return holder["seq"]


def _snapshot_balance(path: str) -> tuple[bool, str]:
    def richer(snap: Snapshot) -> None:
        asset = min(snap.engine.balances)
        owner = min(snap.engine.balances[asset])
        snap.engine.balances[asset][owner] += 1_000
        snap.engine.supply[asset] = snap.engine.supply.get(asset, 0) + 1_000
    _edit_snapshot(path, richer)
    return _snapshot_verdict(path)


def _snapshot_ids(path: str) -> tuple[bool, str]:
    def forget(snap: Snapshot) -> None:
        snap.ids = {}
    _edit_snapshot(path, forget)
    return _snapshot_verdict(path)


def _snapshot_verdict(path: str) -> tuple[bool, str]:
    with _open(path, use_snapshots=False) as truth:
        digest, ids = truth.digest(), dict(truth.state.ids)
    try:
        ledger = _open(path)
    except JournalError as exc:
        return True, _one_line(exc)
    with ledger:
        if ledger.recovery_notes:
            ok = ledger.digest() == digest and ledger.state.ids == ids
            return ok, f"recovery note: {ledger.recovery_notes[0]}" + ("" if ok else " (but the state differs)")
        if ledger.digest() == digest and ledger.state.ids == ids:
            return False, "loaded without a note, though the state agrees (the edit was not used)"
        what = "its command-id index" if ledger.digest() == digest else "its state"
        return False, f"loaded silently: {what} differs from the journal's (a retried id would apply again)"


# -------------------------------------------------------- faults in a commit

class FaultyConnection:
    """A SQLite connection that fails as told: `fail(sql)` returns an exception to raise instead, or None."""

    def __init__(self, real: sqlite3.Connection, fail: Callable[[str], BaseException | None], after: bool = False):
        self._real = real
        self._fail = fail
        self._after = after  # raise after the statement ran (an error reported for a durable commit)

    def execute(self, sql: str, *params):
        exc = self._fail(sql)
        if exc is not None and not self._after:
            raise exc
        result = self._real.execute(sql, *params)
        if exc is not None:
            raise exc
        return result

    def __getattr__(self, name):
        return getattr(self._real, name)


def _commit_fault(path: str, work: Workload, fail: Callable[[str], BaseException | None],
                  after: bool = False) -> tuple[bool, str]:
    steps = [s for s in work.steps if s.chain == 0]
    held = len(steps) - 1
    _sql(path, lambda db: db.execute("DELETE FROM journal WHERE seq > ?", (held,)))
    _sql(path, lambda db: db.execute("DELETE FROM snapshots WHERE seq > ?", (held,)))
    ledger = _open(path)
    before = ledger.digest()
    journal = ledger.journal
    journal._db = FaultyConnection(journal._db, fail, after)  # the fault layer, from outside the engine
    step = steps[-1]
    notes = []
    try:
        ledger.submit(step.envelopes, at=step.at)
    except LedgerFault as exc:
        notes.append(_one_line(exc))
    except Exception as exc:  # noqa: BLE001
        ledger.close()
        return False, f"not a clear error: {_one_line(exc)}"
    else:
        ledger.close()
        return False, "submit returned as if the batch were durable"
    try:
        ledger.submit([], at=step.at)
        stopped = False
    except LedgerFault:
        stopped = True
    journal._db = journal._db._real
    ledger.close()
    if not stopped:
        return False, "the ledger went on after the fault"
    with _open(path) as again:
        problem = conservation(again.state)
        if problem:
            return False, f"reopened: {problem}"
        if not after and (again.head_seq != held or again.digest() != before):
            return False, "reopened with part of the failed batch"
        if after:
            if again.head_seq != held + 1:
                return False, "the durable batch is missing after reopening"
            codes = again.submit(step.envelopes, at=step.at)
            if not codes or any(code not in (C.REPLAYED_SEQUENCE, C.STALE_SEQUENCE) for code in codes):
                return False, f"resubmitting the durable batch gave {codes[:4]}, not a replay"
            notes.append("reopened with the batch; its resubmission answered replayed_sequence")
        else:
            notes.append("reopened at the last committed entry")
    return True, "; ".join(notes)


def _phantom(path: str, work: Workload) -> tuple[bool, str]:
    """After a failed commit, reads must show the last committed state or raise."""
    steps = [s for s in work.steps if s.chain == 0]
    held = len(steps) - 1
    _sql(path, lambda db: db.execute("DELETE FROM journal WHERE seq > ?", (held,)))
    ledger = _open(path)
    before = (ledger.digest(), ledger.balances())
    journal = ledger.journal
    full = sqlite3.OperationalError("database or disk is full")
    journal._db = FaultyConnection(journal._db, lambda sql: full if sql.startswith("INSERT INTO journal") else None)
    step = steps[-1]
    try:
        ledger.submit(step.envelopes, at=step.at)
    except LedgerFault:
        pass
    try:
        now = (ledger.digest(), ledger.balances())
    except (LedgerFault, JournalError) as exc:
        return True, f"reads raise: {_one_line(exc)}"
    finally:
        journal._db = journal._db._real
        ledger.close()
    if now == before:
        return True, "reads show the last committed state"
    return False, ("reads show the failed batch's state (balances or state digest differ from the journal's "
                   "head): phantom state after a LedgerFault")


def _sqlite_error(text: str, on: str) -> Callable[[str], BaseException | None]:
    return lambda sql: sqlite3.OperationalError(text) if sql.startswith(on) else None


def faults() -> list[FaultResult]:
    """Inject each fault into a fresh copy of the journal; return what was detected."""
    work = record(SEED)
    cases: list[tuple[str, Callable[[str], tuple[bool, str]]]] = [
        ("torn tail (last entry cut short)", _torn_tail),
        ("flipped byte in a middle entry", _flipped_byte),
        ("deleted middle entry", _deleted_middle),
        ("duplicated last entry", _duplicated_entry),
        ("middle entry replaced by a copy of its predecessor", _duplicated_middle),
        ("deleted last entry", _deleted_last),
        ("snapshot with a changed balance (checksum recomputed)", _snapshot_balance),
        ("snapshot with its command-id index emptied (checksum recomputed)", _snapshot_ids),
        ("full disk while inserting the entry",
         lambda p: _commit_fault(p, work, _sqlite_error("database or disk is full", "INSERT INTO journal"))),
        ("I/O error at COMMIT", lambda p: _commit_fault(p, work, _sqlite_error("disk I/O error", "COMMIT"))),
        ("read-only file at BEGIN",
         lambda p: _commit_fault(p, work, _sqlite_error("attempt to write a readonly database", "BEGIN"))),
        ("error reported after a durable COMMIT",
         lambda p: _commit_fault(p, work, _sqlite_error("disk I/O error", "COMMIT"), after=True)),
        ("in-memory state after a failed commit", lambda p: _phantom(p, work)),
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="dvp-faults-") as tmp:
        original = os.path.join(tmp, "original.db")
        _build(work, original)
        for n, (name, inject) in enumerate(cases):
            path = os.path.join(tmp, f"case{n}.db")
            _copy(original, path)
            try:
                detected, how = inject(path)
            except Exception as exc:  # noqa: BLE001 - a crash of the harness or the engine: not detected
                detected, how = False, f"unexpected {_one_line(exc)}"
            results.append(FaultResult(name, detected, how))
    return results


def _copy(source: str, destination: str) -> None:
    shutil.copyfile(source, destination)
    for tail in ("-wal", "-shm"):
        if os.path.exists(source + tail):
            shutil.copyfile(source + tail, destination + tail)
