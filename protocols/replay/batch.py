"""Batch: instructions to encoded batches of a fixed size, and signatures over them.

Takes `Instruction`s in order; gives `Batch`es: the msgpack encoding of up
to `size` commands for one ledger, the sorted names of the parties that must
sign, and the instructions themselves (for the `account` stage). Ledger
time moves with a `Tick` (signed by the operator) before the first
instruction of a later time, so one batch spans many ledger seconds and
each trade runs at its own time. Batches cut at a fixed size and every
key is derived from its owner's id, so the same file always gives the same
envelopes.

`sign` makes the envelope: one signature per signer over the payload's
digest, with each signer's next sequence number.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from engine.identity import Signer, derive_key, payload_digest
from engine.records import Envelope, Tick

from .setup import OPERATOR, key_seed
from .steps import MAIN, Batch, Instruction

BATCH_COMMANDS = 65_536
_encode = msgspec.msgpack.Encoder().encode


class Batcher:
    """Collect one ledger's instructions into batches."""

    __slots__ = ("chain", "size", "commands", "instructions", "signers", "now")

    def __init__(self, chain: str = MAIN, size: int = BATCH_COMMANDS, now: int = 0):
        self.chain = chain
        self.size = size
        self.commands: list = []
        self.instructions: list[Instruction | None] = []
        self.signers: set[str] = set()
        self.now = now  # the ledger time the batches reach so far

    def add(self, inst: Instruction) -> Batch | None:
        """Add an instruction (after a Tick to its time, if it needs one); return a batch once one is full."""
        if inst.tick and inst.at > self.now:
            self.now = inst.at
            self.commands.append(Tick(id=f"tick:{inst.at}", to=inst.at))
            self.instructions.append(None)
            self.signers.add(OPERATOR)
        self.commands.append(inst.command)
        self.instructions.append(inst)
        self.signers.update(inst.signers)
        if len(self.commands) >= self.size:
            return self.flush()
        return None

    def tick(self, at: int) -> None:
        """Move the batches' time to `at` (for a step that runs outside them, such as a swap)."""
        if at > self.now:
            self.now = at
            self.commands.append(Tick(id=f"tick:{at}", to=at))
            self.instructions.append(None)
            self.signers.add(OPERATOR)

    def flush(self) -> Batch | None:
        """The batch collected so far (None if empty)."""
        if not self.commands:
            return None
        batch = Batch(self.chain, _encode(self.commands), sorted(self.signers), self.instructions)
        self.commands = []
        self.instructions = []
        self.signers = set()
        return batch

    def extend(self, instructions: Iterable[Instruction]) -> list[Batch]:
        """Add many instructions; return the batches they filled, and the rest as a last one."""
        out = [b for b in (self.add(i) for i in instructions) if b is not None]
        last = self.flush()
        return out + [last] if last is not None else out


class Signers:
    """Every replay member's signer on one chain, made on first use from its derived key."""

    def __init__(self, chain: str):
        self.chain = chain
        self._signers: dict[str, Signer] = {}

    def __getitem__(self, name: str) -> Signer:
        signer = self._signers.get(name)
        if signer is None:
            signer = self._signers[name] = Signer(name, derive_key(key_seed(name)), self.chain)
        return signer

    def sign(self, payload: bytes, names: list[str]) -> Envelope:
        """One envelope: the payload signed once by each named member."""
        digest = payload_digest(payload)
        signatures = tuple(self[name].signature_of_digest(digest) for name in names)
        return Envelope(self.chain, payload, signatures)
