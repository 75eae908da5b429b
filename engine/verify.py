"""Audit a journal end to end: hash chain, signatures, results, state digests.

`verify_journal` rebuilds the state from genesis, ignoring snapshots,
re-verifying every signature and re-running every command; each entry's
results, events and state digest must equal what was recorded. Then each
stored snapshot must decode to the state the journal gives at its entry.

`path` is anything `Ledger.open` takes: a SQLite file (opened read-only, so
a journal on a read-only mount can be audited) or a `postgresql://` URL.
The audit takes no writer's lock and runs on one consistent view: beside a
live writer it checks the entries committed when it started.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from .journal import Journal, JournalError, open_journal
from .ledger import Ledger, _entry_decoder
from .machine import ID_POSITION_BITS
from .protocol import Protocol
from .records import Entry


class VerifyReport(msgspec.Struct):
    path: str
    chain_id: str
    entries: int
    commands: int
    signatures: int
    snapshots: int
    head: str
    state: str


def verify_journal(path: str, protocols: Sequence[Protocol] | None = None,
                   progress: Callable[[int, int, int], None] | None = None) -> VerifyReport:
    """Check a journal completely; raise JournalError on the first fault.

    `progress(entries done, entries in all, commands done)` is called after each entry.
    """
    journal = open_journal(path, readonly=True)
    path = journal.path
    try:
        with journal.reading():
            return _audit(journal, path, protocols, progress)
    finally:
        journal.close()


def _audit(journal: Journal, path: str, protocols: Sequence[Protocol] | None, progress) -> VerifyReport:
    digests: dict[int, bytes] = {}
    counts = [0, 0]  # commands, signatures

    def seen(entry: Entry, head_seq: int) -> None:
        digests[entry.seq] = entry.digest
        counts[0] += len(entry.results)
        counts[1] += sum(len(env.signatures) for env in entry.envelopes)
        if progress is not None:
            progress(entry.seq + 1, head_seq + 1, counts[0])

    ledger = Ledger._recover(journal, protocols, None, 0, 0, use_snapshots=False, on_entry=seen)
    genesis_entry = _entry_decoder.decode(journal.body(0))
    digests[0] = genesis_entry.digest
    commands, signatures = counts
    snapshots = journal.snapshots()
    final_ids = ledger.state.ids
    for seq in snapshots:
        state = ledger._load_snapshot(seq)
        if state is None or seq not in digests or state.digest(ledger.machine.encoders) != digests[seq]:
            raise JournalError(f"{path}: snapshot {seq} does not match the journal")
        # Command ids are not in the digest: they must be exactly those applied up to `seq`.
        expected = {k: v for k, v in final_ids.items() if v >> ID_POSITION_BITS <= seq}
        if state.ids != expected:
            raise JournalError(f"{path}: snapshot {seq} holds command ids that disagree with the journal")
    genesis = genesis_entry.genesis
    assert genesis is not None
    return VerifyReport(
        path=path,
        chain_id=genesis.chain_id,
        entries=ledger.head_seq + 1,
        commands=commands,
        signatures=signatures,
        snapshots=len(snapshots),
        head=ledger.head_hash.hex(),
        state=ledger.digest().hex(),
    )
