"""Copy a journal to another location or backend, auditing it as it goes: `dvp copy SRC DST`.

Takes two locations of any backend (a SQLite path, a `postgresql://` URL);
gives a `CopyReport`. The source is read without a lock, on one consistent
view (a live writer may go on); the destination must be new or empty and is
held with the writer's lock for the duration.

Each entry is checked before it is written: its hash, its link to the entry
before it, and its replay by the state machine (results, events and state
digest equal to the recorded ones, every signature re-verified); each
snapshot must decode to the state at its entry, command ids included. All
entries and snapshots go into the destination in one transaction, so a copy
that fails or is killed leaves no entry there. Then the destination is
audited from its own storage (`verify_journal`), and its head and state
hashes must equal the source's.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import msgspec

from .journal import Journal, JournalError, Row, is_postgres, open_journal
from .ledger import Ledger, check_chain, decode_entry
from .protocol import Protocol
from .verify import verify_journal


class CopyReport(msgspec.Struct):
    source: str
    destination: str
    entries: int
    snapshots: int
    head: str
    state: str


def copy_journal(src: str, dst: str, protocols: Sequence[Protocol] | None = None) -> CopyReport:
    """Copy the journal at `src` to the new journal `dst`; raise JournalError (nothing copied) on a fault."""
    source = open_journal(src, readonly=True)
    try:
        with source.reading():
            hashes = check_chain(source)
            ledger = Ledger._at_genesis(source, hashes[0], protocols)
            fresh = not is_postgres(dst) and not os.path.exists(dst)
            target = open_journal(dst, create=True)
            try:
                if not target.is_empty():
                    raise FileExistsError(f"{target.path}: a journal exists here; copy writes a new one")
                snapshots = [seq for seq in source.snapshots()]
                target.append_many(_checked_rows(ledger, source, hashes, set(snapshots)))
                destination = target.path
            except BaseException:
                target.close()
                if fresh:
                    _remove_sqlite(dst)
                raise
            target.close()
    finally:
        source.close()
    head, state = ledger.head_hash.hex(), ledger.digest().hex()
    copied = verify_journal(dst, protocols)
    if (copied.head, copied.state, copied.entries) != (head, state, len(hashes)):
        raise JournalError(f"{destination}: the copy does not equal its source (head {copied.head}, "
                           f"source head {head}); remove it")
    return CopyReport(source=source.path, destination=destination, entries=len(hashes), snapshots=len(snapshots),
                      head=head, state=state)


def _checked_rows(ledger: Ledger, source: Journal, hashes: list[bytes], snapshots: set[int]) -> Iterator[Row]:
    """Yield the source's rows, each only once its entry has replayed (and its snapshot loaded) correctly."""
    where = source.path
    beyond = [seq for seq in snapshots if seq >= len(hashes)]
    if beyond:
        raise JournalError(f"{where}: snapshot {min(beyond)} does not match the journal (beyond its last entry)")
    encoders = ledger.machine.encoders
    for seq, digest, body in source.rows(0):
        if seq >= len(hashes):
            break  # committed after the chain was read: not part of this view
        if digest != hashes[seq]:
            raise JournalError(f"{where}: entry {seq} changed while the journal was read")
        entry = decode_entry(body, where, seq)
        if seq:
            ledger._replay(entry, digest)
        snapshot = None
        if seq in snapshots:
            snapshot = source.snapshot(seq)
            state = ledger._load_snapshot(seq)
            if snapshot is None or state is None or state.digest(encoders) != entry.digest:
                raise JournalError(f"{where}: snapshot {seq} does not match the journal")
            if state.ids != ledger.state.ids:
                raise JournalError(f"{where}: snapshot {seq} holds command ids that disagree with the journal")
        yield seq, digest, body, snapshot


def _remove_sqlite(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal", ".lock"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
