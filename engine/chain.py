"""The hash chain of a journal: every entry's hash, number and link checked in one pass.

`check_chain(journal)` takes any `engine.journal.Journal` and gives the
list of entry hashes, raising JournalError at the first entry that is
missing, does not match its hash, is not stored as bytes, does not decode,
or does not link to the one before. Asked for it, the same pass re-derives
the command-id index the entries give up to an entry (each id of a command
that succeeded, at its first place), which `Ledger.open` compares with a
snapshot's, since no digest covers that index.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Callable, Sequence

import msgspec

from .journal import Journal, JournalError
from .machine import ID_POSITION_BITS
from .records import ZERO_HASH, Command


class _EntryHead(msgspec.Struct):
    seq: int
    prev: bytes


class _EnvelopePayload(msgspec.Struct, array_like=True):
    chain_id: str
    payload: bytes


class _EntryIds(msgspec.Struct):
    """What the command-id index needs of an entry: its link, its payloads and its results."""

    seq: int
    prev: bytes
    envelopes: tuple[_EnvelopePayload, ...] = ()
    results: tuple[int, ...] = ()


_head_decoder = msgspec.msgpack.Decoder(_EntryHead)
_ids_decoder = msgspec.msgpack.Decoder(_EntryIds)


def _count_upto(ids: dict[str, int], seq: int) -> int:
    limit = (seq + 1) << ID_POSITION_BITS
    return sum(1 for location in ids.values() if location < limit)


def _ids_agree(snapshot_ids: dict[str, int], journal_ids: dict[str, int], seq: int) -> bool:
    """Whether a snapshot's command-id index equals the journal's up to entry `seq` (counts already equal)."""
    limit = (seq + 1) << ID_POSITION_BITS
    get = journal_ids.get
    return all(location < limit and get(cid) == location for cid, location in snapshot_ids.items())


def check_chain(journal: Journal, ids: dict[str, int] | None = None, ids_upto: int = 0,
                decode_commands: Callable[[bytes], Sequence[Command]] | None = None) -> list[bytes]:
    """Check every entry's hash, sequence number and link; return the hashes.

    `ids`, if given, receives the command-id index the entries up to
    `ids_upto` give (each id of a command that succeeded, at its first
    place), read in the same pass, to check a snapshot's index against;
    `decode_commands` decodes a payload (`Machine.decode`).
    """
    collecting = gc.isenabled()
    gc.disable()  # the pass allocates a struct per entry and keeps none in cycles: collections only cost time
    try:
        return _check_chain(journal, ids, ids_upto, decode_commands)
    finally:
        if collecting:
            gc.enable()


def _check_chain(journal: Journal, ids: dict[str, int] | None, ids_upto: int,
                 decode_commands: Callable[[bytes], Sequence[Command]] | None) -> list[bytes]:
    where = journal.path
    hashes: list[bytes] = []
    append = hashes.append
    prev = ZERO_HASH
    decode = _head_decoder.decode
    scan = _ids_decoder.decode
    command_ids = decode_commands
    setdefault = ids.setdefault if ids is not None else None
    sha256 = hashlib.sha256
    for seq, digest, body in journal.rows(0):
        if seq != len(hashes):
            raise JournalError(f"{where}: entry {len(hashes)} is missing (found {seq} next)")
        if type(body) is not bytes:
            raise JournalError(f"{where}: entry {seq} is stored as {type(body).__name__}, not bytes (corrupted)")
        if sha256(body).digest() != digest:
            raise JournalError(f"{where}: entry {seq} does not match its hash (corrupted)")
        try:
            if setdefault is not None and command_ids is not None and 0 < seq <= ids_upto:
                head = scan(body)
                if 0 in head.results:
                    flat = []
                    for env in head.envelopes:
                        flat.extend(command_ids(env.payload))
                    base = seq << ID_POSITION_BITS
                    for position, result in enumerate(head.results):
                        if result == 0:
                            setdefault(flat[position].id, base + position)
            else:
                head = decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, IndexError) as exc:
            raise JournalError(f"{where}: entry {seq} does not decode: {exc}") from None
        if head.seq != seq:
            raise JournalError(f"{where}: entry stored at {seq} says it is entry {head.seq} (reordered)")
        if head.prev != prev:
            raise JournalError(f"{where}: entry {seq} does not link to entry {seq - 1} (reordered or replaced)")
        append(digest)
        prev = digest
    if not hashes:
        raise JournalError(f"{where}: the journal is empty")
    return hashes
