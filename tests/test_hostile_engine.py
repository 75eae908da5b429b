"""Hostile probes of the engine's fault handling, limits and integrity checks (review of issue 10).

Each test is a probe that found a defect: an integer at the top of the
64-bit range that makes a ledger unusable after a reopen, a snapshot row
that stops a ledger from opening, a journal path that hangs an audit, a
head receipt read with non-ASCII digits, a protocol field that lets two
members block a price feed, a configuration value that stops the ledger.
Each asserts the behaviour wanted: a result code or a clear refusal, and
the ledger goes on.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from conftest import BANK_A, BANK_B, OPERATOR, USD, make_world

from engine.ledger import Ledger
from engine.records import Move, SetConfig, Tick

PAY = Move(id="pay", asset=USD, source=BANK_A, target=BANK_B, amount=5)


def pay(cid: str, amount: int = 5) -> Move:
    return Move(id=cid, asset=USD, source=BANK_A, target=BANK_B, amount=amount)


# ------------------------------------------------------------ ledger time past 64 bits


@pytest.mark.parametrize("to", [2**63, 2**64 - 1])
def test_a_tick_past_the_signed_64_bit_range_is_refused_so_the_ledger_still_works_after_a_reopen(tmp_path, to):
    """A Tick to 2**63..2**64-1 decodes (msgpack's uint64) and was applied: the ledger went on in process
    (each batch takes max(clock, state time)), but a reopen set the clock to that time and every submit
    after it raised ValueError ("ledger time ... is not an integer of 64 bits"): the ledger was dead."""
    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=0)
    assert w.send(OPERATOR, [Tick(id="far-tick", to=to)]) == ["invalid_field"]
    assert w.send(BANK_A, [pay("before-reopen")]) == ["ok"]
    w.reopen()
    assert w.send(BANK_A, [pay("after-reopen")]) == ["ok"]
    w.close()


# ------------------------------------------------------------ snapshot rows that are not the journal's


@pytest.mark.parametrize("seq", [-1, -(2**63)])
def test_a_snapshot_row_at_a_negative_entry_is_left_out_with_a_note_not_a_ledger_that_will_not_open(backend, seq):
    """Snapshots are a cache: one that names no entry of the journal must be skipped. A row at seq -1
    made opening ask the journal for entry -1 and fail (JournalError "entry -1 is missing")."""
    path = backend.location()
    w = make_world(path, snapshot_every=0)
    assert w.send(BANK_A, [PAY]) == ["ok"]
    balance = w.bal(BANK_B, USD)
    w.close()
    with backend.tamper(path) as conn:
        conn.execute("INSERT INTO snapshots (seq, hash, body) VALUES (?, ?, ?)",
                     (seq, hashlib.sha256(b"junk").digest(), b"junk"))
    with Ledger.open(path, protocols=[]) as reopened:
        assert reopened.balance(BANK_B, USD) == balance
        assert any(f"snapshot {seq}" in note for note in reopened.recovery_notes), reopened.recovery_notes


# ------------------------------------------------------------ journal paths that are not files


def dvp(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_verify_of_a_fifo_is_one_line_not_a_hang(tmp_path):
    """A FIFO named as the journal: SQLite's open blocks for a writer that never comes (verify hung)."""
    fifo = str(tmp_path / "journal.db")
    os.mkfifo(fifo)
    try:
        done = dvp("verify", fifo, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("dvp verify of a FIFO hangs")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a ledger journal" in lines[0], done.stderr


def test_opening_a_fifo_as_a_ledger_names_what_it_is(tmp_path):
    """A writer's open of a FIFO said "cannot open it: disk I/O error", as if the disk had failed."""
    fifo = str(tmp_path / "journal.db")
    os.mkfifo(fifo)
    code = ("import sys\nfrom engine.ledger import Ledger\nfrom engine.journal import JournalError\n"
            f"try:\n    Ledger.open({fifo!r}, protocols=[])\nexcept JournalError as e:\n    print(e); sys.exit(3)\n")
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("Ledger.open of a FIFO hangs")
    assert done.returncode == 3 and "not a ledger journal" in done.stdout, (done.stdout, done.stderr)


def test_a_symlinked_journal_verifies_like_its_target(tmp_path):
    path = str(tmp_path / "ledger.db")
    w = make_world(path, snapshot_every=0)
    receipt = w.ledger.receipt()
    w.close()
    link = str(tmp_path / "link.db")
    os.symlink(path, link)
    done = dvp("verify", link, "--expect-head", receipt)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------ head receipts


@pytest.mark.parametrize("seq_text", ["\u00b2", "\u0663", "\uff13"], ids=["superscript-2", "arabic-3", "fullwidth-3"])
def test_a_receipt_whose_entry_number_is_not_ascii_digits_is_refused_with_the_receipt_error(tmp_path, seq_text):
    """str.isdigit() accepts '²' (then int() fails: "invalid literal for int()") and '٣' (read as 3,
    so a receipt that is not SEQ:HASH in ASCII passed)."""
    from engine.verify import parse_receipt

    digest = "ab" * 32
    with pytest.raises(ValueError, match="is not an entry number"):
        parse_receipt(f"{seq_text}:{digest}")


def test_a_huge_receipt_gives_a_short_error():
    from engine.verify import parse_receipt

    with pytest.raises(ValueError) as caught:
        parse_receipt("x" * 100_000)
    assert len(str(caught.value)) < 400


# ------------------------------------------------------------ protocol fields at the top of the range


def test_a_repo_grace_past_64_bits_cannot_block_the_price_feed():
    """A repo opened with grace 2**64-1 (accepted) made its margin call's deadline now + grace
    unencodable: every price batch that called it was refused whole (MalformedEnvelope), so the oracle
    could not publish a lower price and no other repo on that collateral was revalued."""
    from fractions import Fraction

    from test_repo import Desk, fresh

    from engine import codes as C
    from protocols import prices, repo

    d = Desk(cash_b=0)
    assert d.open(repo_id="R1", grace=2**64 - 1) == repo.BAD_TERMS
    assert d.open(repo_id="R1", grace=2**63 - 1) == C.OK  # the top of the range still opens
    assert d.run("B", [Move(id=fresh(), asset="USD", source="B", target="L", amount=d.bal("B"))]) == [C.OK]
    assert d.run("ORC", [prices.SetPrice(id=fresh(), asset="NOTE", price="97.00")]) == [C.OK]
    assert prices.latest(d.ledger.state, "NOTE") == Fraction(97)
    assert d.repo("R1").call > 0


def test_a_huge_configured_repo_grace_is_the_default_not_a_refused_batch():
    """`repo.grace` set to a 30-digit number: a repo opened with the default grace could not be encoded,
    and its whole batch was refused as malformed."""
    from test_repo import Desk, fresh

    from engine import codes as C
    from protocols import repo

    d = Desk(cash_b=0)
    assert d.run("OP", [SetConfig(id=fresh(), key=repo.GRACE_KEY, value="9" * 30)]) == [C.OK]
    assert d.open(repo_id="R1") == C.OK
    assert d.repo("R1").grace == repo.GRACE_SECONDS_DEFAULT


def test_a_huge_configured_integer_counts_as_the_default_and_never_stops_the_ledger():
    """`dvp.offset_interval` set to a 5,000-digit number: int() raised ValueError (Python's 4,300-digit
    limit) inside due work, so every batch with a queued trade stopped the ledger (LedgerFault), again
    after each reopen."""
    from dvp_world import World

    from protocols import dvp as dvp_protocol

    w = World(cash={}, bonds={"A": 1, "B": 1})
    w.config(dvp_protocol.OFFSET_INTERVAL_KEY, "9" * 5000)
    w.settle("Y1", "A", "B", 1, 100)
    w.advance(1)
    w.settle("Y2", "B", "A", 1, 100)
    w.advance(dvp_protocol.OFFSET_INTERVAL_SECONDS_DEFAULT)
    w.advance(1)
    assert w.queue() == {}, "the offset interval did not fall back to its default"


def test_a_receipt_with_a_5000_digit_entry_number_is_the_receipt_error_not_pythons_int_limit():
    from engine.verify import parse_receipt

    with pytest.raises(ValueError, match="is not an entry number"):
        parse_receipt("9" * 5000 + ":" + "ab" * 32)


# ------------------------------------------------------------ PostgreSQL: the writer's session killed at a commit


def test_a_postgres_writer_whose_session_is_killed_before_a_commit_shows_nothing_of_the_batch(backend):
    """The server ends the writer's session (an operator's pg_terminate_backend, a failover): the append
    fails, the state cannot be rebuilt over the dead session, so every read raises; a reopen gives the
    committed state, and the batch is not in it."""
    if backend.name != "postgres":
        pytest.skip("a PostgreSQL session")
    import psycopg
    from test_faults import conserved, picture

    from engine.ledger import LedgerFault

    path = backend.location()
    w = make_world(path, snapshot_every=0)
    assert w.send(BANK_A, [PAY]) == ["ok"]
    committed = picture(w.ledger)
    backend_pid = w.ledger.journal._conn.info.backend_pid
    with psycopg.connect(path, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (backend_pid,)).fetchone()[0]
    with pytest.raises(LedgerFault):
        w.send(BANK_A, [pay("phantom", 1_000)])
    with pytest.raises(LedgerFault):
        w.ledger.balance(BANK_B, USD)
    w.ledger.close()
    backend.settle(path)
    with Ledger.open(path, protocols=[]) as reopened:
        assert picture(reopened) == committed
        conserved(reopened)


@pytest.mark.parametrize("terms", [{"rate": "1" + "0" * 30}, {"rate": "0.05", "end": 2**63 - 1}],
                         ids=["absurd-rate", "far-end"])
def test_a_repo_whose_exposure_cannot_stay_in_64_bits_is_bad_terms_and_cannot_block_the_price_feed(terms):
    """A repo at rate 10**30 (accepted): a minute later a one-point price drop called margin for an amount
    past 64 bits, and the oracle's whole price batch was refused (MalformedEnvelope), for every repo on
    that collateral. A repo's exposure at its end (at most the last ledger time) must fit."""
    from fractions import Fraction

    from test_repo import HOUR, T0, Desk, fresh

    from engine import codes as C
    from protocols import prices, repo

    d = Desk(cash_b=0)
    assert d.open(repo_id="R1", principal=970_000_000, **terms) == repo.BAD_TERMS
    assert d.open(repo_id="R2", quantity=1_000_000, principal=90_000_000, end=T0 + HOUR) == C.OK
    d.clock.advance(60)
    assert d.run("ORC", [prices.SetPrice(id=fresh(), asset="NOTE", price="98.00")]) == [C.OK]
    assert prices.latest(d.ledger.state, "NOTE") == Fraction(98)


# ------------------------------------------------------------ the service: one refused batch, many requests


def test_a_group_refused_by_the_64_bit_net_refuses_only_the_request_that_caused_it(tmp_path):
    """The writer commits waiting requests as one batch. When the engine's last net (a state that cannot be
    encoded: MalformedEnvelope, nothing applied) refused that batch, every request in the group was answered
    400 malformed_envelope, the innocent ones too, and a client does not retry a 400."""
    pytest.importorskip("prometheus_client")
    import asyncio

    from service_world import USD as SUSD
    from service_world import make_ledger

    from engine.service.metrics import Metrics
    from engine.service.views import envelope_digest
    from engine.service.wire import Limits
    from engine.service.writer import Submission, Writer

    path = str(tmp_path / "ledger.db")
    s = make_ledger(path, ["M1", "M2"])
    writer = Writer(path, limits=Limits(group_wait_seconds=1.0), metrics=Metrics())
    writer.start()
    try:
        machine = writer.ledger.machine
        original = machine.apply

        def overflowing(state, seq, now, envelopes, commands, *args, **kwargs):
            out = original(state, seq, now, envelopes, commands, *args, **kwargs)
            if any(c.id == "poison" for cmds in commands for c in cmds):
                state.put(state.engine.counters, "runaway", 10**40)
            return out

        machine.apply = overflowing
        loop = asyncio.new_event_loop()
        try:
            jobs = []
            for member, cid in (("M1", "innocent"), ("M2", "poison")):
                env = s[member].envelope([Move(id=cid, asset=SUSD, source=member, target="M1" if member == "M2"
                                               else "M2", amount=1)])
                job = Submission([env], [machine.decode(env.payload)], [envelope_digest(env)], loop,
                                 loop.create_future())
                jobs.append(job)
            for job in jobs:
                writer.submit(job)

            async def answers():
                return await asyncio.gather(*(j.future for j in jobs), return_exceptions=True)

            innocent, poison = loop.run_until_complete(asyncio.wait_for(answers(), 30))
        finally:
            loop.close()
        assert getattr(poison, "status", None) == 400, poison
        assert not isinstance(innocent, BaseException), f"the innocent request was refused: {innocent!r}"
    finally:
        writer.stop()


# ------------------------------------------------------------ a journal with two names


def test_a_journal_file_with_a_second_hard_link_is_refused_for_writers_and_readers(tmp_path):
    """SQLite keys its -wal and -shm files on the name: through a hard link, a second writer took its own
    lock (`b.db.lock`), and a reader or verify through `b.db` did not see the entry committed through
    `a.db` (its head was 3, not 4) -- one file, two journals. The lock and the log follow the name, so
    a journal file with more than one link is refused."""
    from engine.journal import JournalError

    a, b = str(tmp_path / "a.db"), str(tmp_path / "b.db")
    w = make_world(a, snapshot_every=0)
    assert w.send(BANK_A, [PAY]) == ["ok"]
    balance = w.bal(BANK_B, USD)
    os.link(a, b)
    for path, readonly in ((b, False), (b, True), (a, False)):
        with pytest.raises(JournalError, match="hard link"):
            Ledger.open(path, protocols=[], readonly=readonly)
    w.close()
    done = dvp("verify", b)
    assert done.returncode != 0 and "hard link" in done.stderr, done.stderr
    os.remove(b)
    with Ledger.open(a, protocols=[]) as reopened:
        assert reopened.balance(BANK_B, USD) == balance
