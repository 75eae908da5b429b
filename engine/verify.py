"""Audit a journal end to end: hash chain, signatures, results, state digests.

`verify_journal` rebuilds the state from genesis, ignoring snapshots,
re-verifying every signature and re-running every command; each entry's
results, events and state digest must equal what was recorded. Then each
stored snapshot must decode to the state the journal gives at its entry.

`path` is anything `Ledger.open` takes: a SQLite file (opened read-only, so
a journal on a read-only mount can be audited) or a `postgresql://` URL.
The audit takes no writer's lock and runs on one consistent view: beside a
live writer it checks the entries committed when it started.

A journal whose last entries were deleted is still a valid, shorter chain:
only a head receipt kept outside the journal (`Ledger.receipt()`, printed
by `dvp verify` as `SEQ:HASH`) tells. `expect_head` compares with one: the
journal must hold that entry with that hash (it may have grown since).
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

    @property
    def receipt(self) -> str:
        """The head receipt: `SEQ:HASH` of the last entry, for clients to keep and compare later."""
        return f"{self.entries - 1}:{self.head}"


def parse_receipt(text: str) -> tuple[int | None, bytes]:
    """Read a head receipt, `SEQ:HASH` or a bare `HASH` (64 hex digits); ValueError naming what is wrong."""
    shown = repr(text) if len(text) <= 150 else f"{text[:100]!r}... ({len(text)} characters)"
    seq_text, sep, hash_text = text.strip().rpartition(":")
    seq = None
    if sep:
        if not (seq_text.isascii() and seq_text.isdigit() and len(seq_text) <= 20):  # isdigit() alone: "²", "٣"
            raise ValueError(f"head receipt {shown}: {seq_text[:80]!r} is not an entry number (expected SEQ:HASH)")
        seq = int(seq_text)
    try:
        digest = bytes.fromhex(hash_text)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"head receipt {shown}: {hash_text[:80]!r} is not a hash of 64 hex digits")
    return seq, digest


def check_receipt(journal: Journal, report: VerifyReport, expected: str) -> None:
    """Raise JournalError unless the journal holds the receipt's entry with the receipt's hash."""
    seq, digest = parse_receipt(expected)
    head = report.entries - 1
    path = report.path
    if seq is not None and seq > head:
        raise JournalError(f"{path}: the journal is shorter than the receipt: its head is entry {head}, "
                           f"the receipt names entry {seq} (entries were removed)")
    found = None
    for row_seq, row_digest, _body in journal.rows(0 if seq is None else seq):
        if row_seq > head:
            break
        if seq is not None:
            found = row_seq if row_digest == digest else None
            break
        if row_digest == digest:
            found = row_seq
            break
    if found is None:
        where = f"entry {seq}" if seq is not None else "no entry"
        raise JournalError(f"{path}: the head differs from the receipt: {where} has hash {digest.hex()} "
                           f"(the journal's head is {report.receipt})")


def verify_journal(path: str, protocols: Sequence[Protocol] | None = None,
                   progress: Callable[[int, int, int], None] | None = None,
                   expect_head: str | None = None) -> VerifyReport:
    """Check a journal completely; raise JournalError on the first fault.

    `progress(entries done, entries in all, commands done)` is called after each entry.
    `expect_head` (`SEQ:HASH` or `HASH`, a receipt): the journal must hold that entry (ValueError if malformed).
    """
    if expect_head is not None:
        parse_receipt(expect_head)  # a malformed receipt is refused before the audit
    journal = open_journal(path, readonly=True)
    path = journal.path
    try:
        with journal.reading():
            report = _audit(journal, path, protocols, progress)
            if expect_head is not None:
                check_receipt(journal, report, expect_head)
            return report
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
