"""Faults during a commit and out-of-range fields: the live ledger never shows what the journal does not hold.

A commit that fails (a full disk, a read-only file, an exception in the
journal's append) rolls the `Ledger` object's state back to the last
committed entry, rebuilt from the journal; if the journal cannot be read
either, every read raises `LedgerFault`. An envelope or ledger time whose
integer does not fit the journal's 64 bits is refused before anything runs
(`MalformedEnvelope`, `ValueError`), and the ledger goes on.
"""

from __future__ import annotations

import sqlite3

import pytest
from conftest import BANK_A, BANK_B, BANK_C, CASHBANK, T0, USD, UST, make_world, names

from engine.identity import encode_commands
from engine.journal import JournalError
from engine.ledger import Ledger, LedgerFault, MalformedEnvelope
from engine.records import Envelope, Hold, Mint, Move, Signature


def pay(cid: str, amount: int, source=BANK_A, target=BANK_B) -> Move:
    return Move(id=cid, asset=USD, source=source, target=target, amount=amount)


def picture(ledger: Ledger) -> tuple:
    return (ledger.head_seq, ledger.head_hash, ledger.digest(), ledger.balances(), dict(ledger.state.supply),
            dict(ledger.state.holds), dict(ledger.state.ids), dict(ledger.state.seqs))


def conserved(ledger: Ledger) -> None:
    state = ledger.state
    for asset, supply in state.supply.items():
        held = sum(h.amount for h in state.holds.values() if h.asset == asset)
        assert sum(state.balances.get(asset, {}).values()) + held == supply, asset


FAULTS = [
    OSError(28, "No space left on device"),
    sqlite3.OperationalError("database or disk is full"),
    sqlite3.OperationalError("attempt to write a readonly database"),
    RuntimeError("a bug inside the journal"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=["ENOSPC", "disk-full", "readonly", "bug"])
@pytest.mark.parametrize("snapshot_every", [0, 3])
def test_a_failed_commit_leaves_the_ledger_object_at_the_last_committed_entry(tmp_path, fault, snapshot_every):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=snapshot_every)
    for n in range(5):
        assert w.send(BANK_A, [pay(f"good-{n}", 100 + n)]) == ["ok"]
    assert w.send(CASHBANK, [Mint(id="good-mint", asset=USD, target=BANK_C, amount=300)]) == ["ok"]
    assert w.send(BANK_A, [Hold(id="good-hold", asset=USD, owner=BANK_A, beneficiary=BANK_B, amount=50)]) == ["ok"]
    committed = picture(w.ledger)
    journal = w.ledger.journal

    def failing(*args, **kwargs):
        raise fault

    journal.append = failing
    journal.append_many = failing
    batch = [w.env(CASHBANK, [Mint(id="phantom-mint", asset=USD, target=BANK_C, amount=300)]),
             w.env(BANK_A, [pay("phantom-pay", 7_000),
                            Hold(id="phantom-hold", asset=USD, owner=BANK_A, beneficiary=BANK_B, amount=9)])]
    with pytest.raises(LedgerFault):
        w.ledger.submit(batch, at=T0 + 60)
    assert picture(w.ledger) == committed, "the object shows a batch the journal does not hold"
    assert w.ledger.balance(BANK_C, USD) == 300 and w.ledger.state.supply[USD] == committed[4][USD]
    conserved(w.ledger)
    with pytest.raises(LedgerFault):  # still stopped: storage must be looked at before going on
        w.ledger.submit([w.env(BANK_A, [pay("after", 1)])])
    del journal.append, journal.append_many
    w.ledger.close()
    with Ledger.open(path, protocols=[]) as reopened:
        assert picture(reopened) == committed
        conserved(reopened)


def test_a_failed_commit_on_a_journal_that_cannot_be_read_either_makes_every_read_raise(tmp_path):
    w = make_world(str(tmp_path / "ledger.db"), snapshot_every=0)
    assert w.send(BANK_A, [pay("good", 100)]) == ["ok"]
    journal = w.ledger.journal

    def gone(*args, **kwargs):
        raise JournalError("the disk went away")

    journal.append = journal.rows = journal.body = gone
    with pytest.raises(LedgerFault):
        w.send(BANK_A, [pay("phantom", 1_000)])
    for read in (lambda: w.ledger.balance(BANK_B, USD), w.ledger.balances, w.ledger.digest,
                 lambda: w.ledger.state.supply, lambda: w.ledger.now):
        with pytest.raises(LedgerFault, match="could not be rebuilt"):
            read()


def test_a_failing_journal_inside_a_wrapper_is_rolled_back_too(tmp_path):
    """A fault layer wrapping the journal from outside (as `dvp selftest faults` does) gets the same rollback."""

    class Flaky:
        def __init__(self, inner):
            self.inner = inner
            self.fail = False

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def append(self, *args, **kwargs):
            if self.fail:
                raise OSError(28, "No space left on device")
            return self.inner.append(*args, **kwargs)

    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=2)
    flaky = w.ledger.journal = Flaky(w.ledger.journal)
    assert w.send(BANK_A, [pay("good", 100)]) == ["ok"]
    committed = picture(w.ledger)
    flaky.fail = True
    with pytest.raises(LedgerFault):
        w.send(BANK_A, [pay("phantom", 1_000)])
    assert picture(w.ledger) == committed
    assert w.ledger.journal is flaky


# ----------------------------------------------------------- out-of-range integers


def raw_envelope(w, commands, not_after=0, seq=None) -> Envelope:
    signer = w[BANK_A]
    signed = signer.envelope(commands)
    sig = signed.signatures[0]
    return Envelope(signed.chain_id, encode_commands(commands),
                    (Signature(sig.signer, sig.seq if seq is None else seq, sig.sig),), not_after)


@pytest.mark.parametrize("field", ["not_after", "seq", "not_after_negative", "not_after_float"])
def test_an_envelope_integer_out_of_64_bits_is_refused_before_the_journal_and_the_ledger_goes_on(tmp_path, field):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=0)
    before = picture(w.ledger)
    bad = {"not_after": {"not_after": 10**40}, "seq": {"seq": 10**40},
           "not_after_negative": {"not_after": -(10**40)}, "not_after_float": {"not_after": 1e300}}[field]
    env = raw_envelope(w, [pay("big", 1)], **bad)
    with pytest.raises(MalformedEnvelope, match="64 bits"):
        w.ledger.submit([w.env(BANK_B, [pay("fine", 1, BANK_B, BANK_A)]), env])
    assert picture(w.ledger) == before, "nothing of a refused batch is applied"
    with pytest.raises(MalformedEnvelope, match="64 bits"):
        list(w.ledger.submit_many([[env]]))
    assert picture(w.ledger) == before
    assert w.send(BANK_A, [pay("after", 5)]) == ["ok"], "the ledger did not stop"
    w.close()
    with Ledger.open(path, protocols=[]) as reopened:
        assert reopened.head_seq == before[0] + 1


@pytest.mark.parametrize("at", [10**40, -(10**40), 2**63])
def test_a_ledger_time_out_of_64_bits_is_refused_and_changes_nothing(at):
    w = make_world()
    before = picture(w.ledger)
    with pytest.raises(ValueError, match="64 bits"):
        w.ledger.submit([w.env(BANK_A, [pay("late", 1)])], at=at)
    assert picture(w.ledger) == before
    assert w.send(BANK_A, [pay("after", 5)]) == ["ok"]


def test_a_state_value_that_overflows_the_encoding_is_refused_and_rolled_back_not_a_fault(tmp_path):
    """The last net: whatever makes a batch's state or entry unencodable (a protocol's arithmetic,
    say) refuses that batch (MalformedEnvelope), with the state rebuilt, and the ledger goes on."""
    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=0)
    before = picture(w.ledger)
    machine = w.ledger.machine
    original = machine.apply

    def overflowing(state, *args, **kwargs):
        out = original(state, *args, **kwargs)
        state.put(state.engine.counters, "runaway", 10**40)
        return out

    machine.apply = overflowing
    with pytest.raises(MalformedEnvelope, match="64 bits"):
        w.send(BANK_A, [pay("overflow", 1)])
    machine.apply = original
    assert picture(w.ledger) == before
    assert "runaway" not in w.ledger.state.engine.counters
    assert w.send(BANK_A, [pay("after", 5)]) == ["ok"]
    assert names(w.ledger.submit([w.env(BANK_A, [pay("overflow", 1)])])) == ["ok"]
    conserved(w.ledger)
    assert w.ledger.balance(BANK_A, UST) == 10_000


def test_command_integers_at_the_edge_of_msgpack_are_result_codes_not_faults(tmp_path):
    """A payload carries at most 64-bit integers; at the top of that range every engine command gives a
    result code (or succeeds) and the ledger goes on, the journal still reopening to the same state."""
    from conftest import OPERATOR
    from engine.records import Tick

    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=2)
    top = 2**64 - 1
    assert w.send(CASHBANK, [Mint(id="edge-mint", asset=USD, target=BANK_C, amount=top)]) == ["invalid_amount"]
    assert w.send(BANK_A, [pay("edge-move", top)]) == ["insufficient_funds"]
    assert w.send(BANK_A, [Hold(id="edge-hold", asset=USD, owner=BANK_A, beneficiary=BANK_B, amount=5,
                                expires_at=top)]) == ["ok"]
    assert w.send(OPERATOR, [Tick(id="edge-tick", to=2**63 - 1)]) == ["ok"]
    assert w.send(BANK_A, [pay("after", 5)]) == ["ok"]
    conserved(w.ledger)
    expected = picture(w.ledger)
    w.close()
    with Ledger.open(path, protocols=[]) as reopened:
        assert picture(reopened) == expected


def test_a_command_integer_past_64_bits_cannot_leave_the_client():
    """A record holding 10**40 does not encode (msgspec's OverflowError at the signer): it never reaches a ledger."""
    w = make_world()
    with pytest.raises(OverflowError):
        w.env(BANK_A, [pay("huge", 10**40)])
    assert w.send(BANK_A, [pay("after", 5)]) == ["ok"]
