"""Apply: batches and swaps to the ledgers, one per chain, durably; or, resuming, read them back.

Takes `Batch`es, `Swap`s and `ChainTime`s; gives, per batch, its result
codes and events, and per swap the codes of its steps. Each chain is its own
ledger and journal: `main` at `--db PATH`, the others beside it
(`engine.journal.chain_location`). Every submission is signed here, by the
members it names, with keys derived from their ids.

Resuming (`resume=True`) opens the journals an interrupted replay left.
The replay runs again from the start of the file, and each submission
whose entry is already in its ledger's journal is not submitted again: its
envelope must equal the recorded one byte for byte (else the journal is
not this file's: `ResumeError`), and the recorded results and events come
back as if it had just run. Past the last recorded entry the submissions
go to the ledger. So a resumed replay ends in exactly the journal, hashes
and report of one that never stopped.

A cross-chain swap runs its four steps on the two ledgers, each step only
if the one before succeeded: the initiator's lock (expiring at
T1 = at + 2 x timeout), the follower's lock (T2 = at + timeout), the
initiator's claim (revealing the secret) and the follower's claim. Its
secret is derived from the initiator's key and the trade id. Whatever a
swap leaves locked stays escrowed until its chain's time passes the
lock's expiry: every chain is brought to each cut-off and to the end of
the file, where the expiry sweep refunds it.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from engine.identity import derive_key
from engine.journal import chain_location, journal_exists, remove_journal
from engine.ledger import Ledger, ManualClock
from engine.records import Envelope

from .. import collateral, dvp, htlc, netting, prices, repo, swap
from .batch import Batcher, Signers
from .setup import OPERATOR, RESERVED, key_seed, public_key
from .steps import MAIN, Batch, Instruction, Swap, SwapResult

log = logging.getLogger("dvp.replay")
SNAPSHOT_EVERY = 16  # a resumed replay opens a journal from its newest snapshot, not from genesis


class ResumeError(Exception):
    """The journal cannot be resumed with this file."""


def main_protocols() -> list:
    return [collateral.Collateral(), dvp.DvP(), htlc.HTLC(), netting.Netting(), prices.Prices(), repo.Repos()]


def side_protocols() -> list:
    return [htlc.HTLC()]


class Slot:
    """One chain's ledger, its signers, and where this replay's submissions are on its journal."""

    def __init__(self, chain: str, ledger: Ledger, recorded: int, first_at: int):
        self.chain = chain
        self.ledger = ledger
        self.signers = Signers(chain)
        self.next = 1  # the entry this replay's next submission makes (0 is the genesis)
        self.recorded = recorded  # entries already in the journal, beyond the genesis, when resuming
        self.now = first_at  # the time this replay's submissions brought the ledger to (resuming: not the head's)

    def reach(self, at: int) -> None:
        """Bring the ledger's time to `at` with an empty entry, unless this replay brought it there already."""
        if at > self.now:
            self.now = at
            self.submit([], at=at)

    def submit(self, envelopes: list[Envelope], at: int | None = None) -> tuple[list[int], list]:
        seq = self.next
        self.next += 1
        if seq <= self.recorded:  # resuming: this submission is already in the journal
            entry = self.ledger.entry(seq)
            log.debug("%s: entry %d already in the journal: resumed", self.chain, seq)
            if entry.envelopes != tuple(envelopes) or (at is not None and entry.at != at):
                raise ResumeError(f"{self.ledger.journal.path}: entry {seq} differs from what this file gives "
                                  "(another file, or another version of the replay): start over with --overwrite")
            return list(entry.results), list(entry.events)
        results = self.ledger.submit(envelopes, at=at)
        if log.isEnabledFor(logging.INFO):
            refused = sum(1 for code in results if code)
            log.info("%s: entry %d committed: %d commands, %d refused, %d events", self.chain, seq, len(results),
                     refused, len(self.ledger.last_events))
        return results, self.ledger.last_events


class Chains:
    """The ledgers of a replay, by chain."""

    def __init__(self, slots: dict[str, Slot]):
        self.slots = slots
        self.main = slots[MAIN]

    # -------------------------------------------------------------- opening

    @classmethod
    def open(cls, db: str | None, chains: list[str], first_at: int, *, resume: bool = False,
             overwrite: bool = False) -> Chains:
        """Create (or, resuming, open) the main chain's ledger and one per side chain."""
        locations = {MAIN: db or ":memory:"}
        for chain in chains:
            locations[chain] = chain_location(db, chain) if db else ":memory:"
        existing = [loc for loc in locations.values() if journal_exists(loc)]
        if existing and overwrite:
            for loc in locations.values():
                remove_journal(loc)
        elif existing and not resume:
            raise FileExistsError(f"{existing[0]}: a journal exists here: add --resume to continue it, "
                                  "or --overwrite to start over")
        slots = {}
        try:
            for chain, location in locations.items():
                slots[chain] = cls._slot(chain, location, first_at, resume)
        except BaseException:
            for slot in slots.values():
                slot.ledger.close()
            raise
        return cls(slots)

    @staticmethod
    def _slot(chain: str, location: str, first_at: int, resume: bool) -> Slot:
        protocols = main_protocols() if chain == MAIN else side_protocols()
        operator_key = public_key(OPERATOR)
        if resume and journal_exists(location):
            try:
                ledger = Ledger.open(location, protocols=protocols, snapshot_every=SNAPSHOT_EVERY)
            except Exception as exc:
                if "journal is empty" not in str(exc):
                    raise
                remove_journal(location)  # a kill before its genesis was written: nothing to keep
            else:
                genesis = ledger.entry(0).genesis
                if genesis is None or genesis.chain_id != chain or genesis.operator != OPERATOR \
                        or genesis.operator_key != operator_key:
                    ledger.close()
                    raise ResumeError(f"{location}: not a journal this replay wrote (chain or operator differ)")
                return Slot(chain, ledger, ledger.head_seq, first_at)
        ledger = Ledger.create(location, chain_id=chain, operator=OPERATOR, operator_key=operator_key,
                               clock=ManualClock(first_at), protocols=protocols, snapshot_every=SNAPSHOT_EVERY)
        return Slot(chain, ledger, 0, first_at)

    # ------------------------------------------------------------- applying

    def submit(self, batch: Batch) -> tuple[list[int], list]:
        """Sign a batch once for every party it needs and apply it: its results and events."""
        slot = self.slots[batch.chain]
        return slot.submit([slot.signers.sign(batch.payload, batch.signers)])

    def advance(self, at: int) -> None:
        """Bring every side chain's ledger time to `at` (the main chain moves with its batches' ticks)."""
        for chain, slot in sorted(self.slots.items()):
            if chain != MAIN:
                slot.reach(at)

    def swap(self, step: Swap) -> SwapResult:
        """Run a cross-chain DvP's four steps, each only if the one before succeeded."""
        t = step.terms
        first, second = swap.legs(t)
        chain_of = {"cash": step.cash_chain, "securities": step.security_chain}
        first_slot, second_slot = self.slots[chain_of[first[4]]], self.slots[chain_of[second[4]]]
        for slot in (first_slot, second_slot):
            if slot.chain != MAIN:
                slot.reach(step.at)
        initiator = t.buyer if t.initiator == "buyer" else t.seller
        secret = swap.derived_secret(bytes(derive_key(key_seed(initiator))), t.trade)
        hashlock = hashlib.sha256(secret).digest()
        lock = swap.first_lock(t, hashlock, step.at)
        result = SwapResult(first=self._one(first_slot, first[0], lock))
        if result.first:
            return result
        result.second = self._one(second_slot, second[0], swap.second_lock(t, hashlock, lock.expires_at, step.at))
        if result.second:
            return result
        result.reveal = self._one(second_slot, second[1], swap.reveal(t, secret))
        if result.reveal:
            return result
        result.follow = self._one(first_slot, first[1], swap.follow_claim(t, secret))
        return result

    @staticmethod
    def _one(slot: Slot, signer: str, command) -> int:
        envelope = slot.signers[signer].envelope([command])
        results, _events = slot.submit([envelope])
        return results[0]

    def finish(self) -> None:
        """At the end of the file: every entry a resumed journal held must have come from this file."""
        for chain, slot in sorted(self.slots.items()):
            if slot.recorded >= slot.next:
                raise ResumeError(f"{slot.ledger.journal.path}: the journal holds {slot.recorded} entries beyond its "
                                  f"genesis, but this file gives {slot.next - 1}: not this file's journal (a longer "
                                  "file, or entries another program added); start over with --overwrite")

    # -------------------------------------------------------------- reading

    def info(self) -> dict[str, Any]:
        """What the report needs from the ledgers: balances, escrow, supply, net positions, hashes."""
        balances: dict[str, dict[str, int]] = {}
        escrow: dict[str, dict[str, int]] = {}
        supply: dict[str, int] = {}
        heads: dict[str, dict[str, Any]] = {}
        for chain, slot in sorted(self.slots.items(), key=lambda kv: (kv[0] != MAIN, kv[0])):
            ledger = slot.ledger
            for party, held in ledger.balances().items():
                if party not in RESERVED:
                    balances.setdefault(party, {}).update(held)
            for hold in ledger.state.holds.values():
                owned = escrow.setdefault(hold.owner, {})
                owned[hold.asset] = owned.get(hold.asset, 0) + hold.amount
            supply.update(ledger.state.supply)
            heads[chain] = {"entries": ledger.head_seq + 1, "head": ledger.head_hash.hex(),
                            "state": ledger.digest().hex()}
        return {"balances": balances, "escrow": escrow, "supply": supply, "chains": heads,
                "net_positions": dict(self.main.ledger.protocol_state(netting.NAME).last_positions)}

    def close(self) -> None:
        for slot in self.slots.values():
            slot.ledger.close()


def apply_setup(chains: Chains, main: list[list[Instruction]], side: dict[str, list[list[Instruction]]],
                size: int) -> list[tuple[Batch, list[int], list]]:
    """Apply the set-up batches (members first, so they can sign what follows); return what each gave."""
    done = []
    for chain in [MAIN] + sorted(side):
        for group in (main if chain == MAIN else side[chain]):
            for batch in Batcher(chain, size).extend(group):
                results, events = chains.submit(batch)
                done.append((batch, results, events))
    return done

