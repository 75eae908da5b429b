"""Crash safety and fail-over: a writer killed with SIGKILL mid-stream loses nothing it acknowledged.

A child process creates a ledger (on each backend: a SQLite file, a
PostgreSQL database) and submits a deterministic stream of batches, printing
`ack N` after each `submit` returns. The parent kills it with SIGKILL after
some acknowledgements, or while it is inside the transaction of batch N
(the entry written, not committed), reopens the journal as a new writer and
checks it holds exactly the acknowledged batches or one more (committed,
killed before the ack), with the state of a clean in-memory run of that many
batches, and that the new writer continues the stream like a clean run.
While the writer is alive a second writer is refused, naming its pid, and
readers see only what was committed.
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest

from engine.journal import JournalLocked
from engine.ledger import Ledger, LedgerFault
from engine.verify import verify_journal

LOCK_WAIT = 30  # seconds a new writer waits for a killed writer's lock to go (fail-over)

STREAM_SCRIPT = textwrap.dedent(
    '''
    """Submit a deterministic stream of batches to a new ledger, acknowledging each.

    With STALL_AT=N the writer stops inside the transaction of batch N, after
    writing its entry and before committing it, says `inside N` and waits.
    """
    import os
    import sys
    import time

    from engine.identity import Signer, derive_key
    from engine.ledger import Ledger, ManualClock
    from engine.records import Admit, Asset, Hold, Mint, Move, RegisterAsset, Release

    T0 = 1_772_443_800
    CHAIN = "crash"
    BANKS = ("BANK_A", "BANK_B", "BANK_C", "BANK_D")
    BATCHES = 400
    MOVES_PER_BATCH = 40


    def make_ledger(path):
        op = Signer("OPERATOR", derive_key("crash/OPERATOR"), CHAIN)
        return Ledger.create(path, chain_id=CHAIN, operator=op.id, operator_key=op.public_key,
                             clock=ManualClock(T0), protocols=[], snapshot_every=7)


    def batches():
        """Yield (at, envelopes); signers keep their sequence numbers across the stream."""
        s = {name: Signer(name, derive_key("crash/" + name), CHAIN) for name in ("OPERATOR", "ISSUER") + BANKS}
        yield T0, [s["OPERATOR"].envelope(
            [Admit(id="admit-issuer", participant="ISSUER", roles=("issuer",), public_key=s["ISSUER"].public_key)]
            + [Admit(id="admit-" + b, participant=b, public_key=s[b].public_key) for b in BANKS]
            + [RegisterAsset(id="usd", asset=Asset(id="USD", kind="cash", decimals=2, issuer="ISSUER"))])]
        yield T0, [s["ISSUER"].envelope(
            [Mint(id="mint-" + b, asset="USD", target=b, amount=1_000_000) for b in BANKS])]
        for n in range(BATCHES):
            envelopes = []
            for k, source in enumerate(BANKS):
                target = BANKS[(k + 1 + n) % len(BANKS)]
                if target == source:
                    target = BANKS[(k + 2) % len(BANKS)]
                moves = [Move(id=f"m{n}-{k}-{j}", asset="USD", source=source, target=target,
                              amount=1 + (n * 7 + j * 13 + k) % 5_000) for j in range(MOVES_PER_BATCH // 8)]
                # and DvP-shaped pairs (a linked move and one back), the engine's batch hot path
                for j in range(MOVES_PER_BATCH // 16):
                    moves += [Move(id=f"p{n}-{k}-{j}a", asset="USD", source=source, target=target,
                                   amount=1 + (n * 11 + j * 3 + k) % 4_000, linked=True),
                              Move(id=f"p{n}-{k}-{j}b", asset="USD", source=target, target=source,
                                   amount=1 + (n * 5 + j * 17 + k) % 4_000)]
                envelopes.append(s[target].cosign(s[source].envelope(moves)))
            envelopes.append(s["BANK_A"].envelope([
                Hold(id=f"h{n}", asset="USD", owner="BANK_A", beneficiary="BANK_B", amount=10,
                     expires_at=T0 + n + 5)]))
            if n % 3 == 0:
                envelopes.append(s["BANK_A"].envelope([Release(id=f"r{n}", hold=f"h{n}", to="beneficiary")]))
            yield T0 + n + 1, envelopes


    def stall_inside(ledger, at):
        journal = ledger.journal
        insert = journal._insert

        def stalled(seq, digest, body, snapshot):
            insert(seq, digest, body, snapshot)
            if seq == at:
                conn = getattr(journal, "_conn", None)
                if conn is not None:  # PostgreSQL: send what is queued; the server holds the open transaction
                    with conn.pipeline() as pipeline:
                        pipeline.sync()
                print(f"inside {seq}", flush=True)
                time.sleep(3600)

        journal._insert = stalled


    if __name__ == "__main__":
        ledger = make_ledger(sys.argv[1])
        if os.environ.get("STALL_AT"):
            stall_inside(ledger, int(os.environ["STALL_AT"]))
        for number, (at, envelopes) in enumerate(batches(), 1):
            ledger.submit(envelopes, at=at)
            print(f"ack {number}", flush=True)
        print("done", flush=True)
    '''
)


def reference(stream: dict, count: int) -> Ledger:
    """A clean in-memory run of the first `count` batches of the stream."""
    ledger = stream["make_ledger"](":memory:")
    for number, (at, envelopes) in enumerate(stream["batches"](), 1):
        if number > count:
            break
        ledger.submit(envelopes, at=at)
    return ledger


@pytest.fixture
def stream_script(tmp_path):
    script = tmp_path / "stream.py"
    script.write_text(STREAM_SCRIPT)
    return str(script)


def run_and_kill(script: str, path: str, kill_after: int = 0, stall: int = 0,
                 while_alive: Callable[[int], None] | None = None) -> list[int]:
    """Run the stream, SIGKILL it after `kill_after` acks (or inside batch `stall`); return every ack it printed.

    `while_alive(pid)` runs just before the kill, with the writer still holding its journal.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "STALL_AT": str(stall or "")}
    child = subprocess.Popen([sys.executable, script, path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    acks: list[int] = []
    try:
        for line in child.stdout:
            if line.startswith("ack "):
                acks.append(int(line.split()[1]))
            if (not stall and len(acks) >= kill_after) or line.strip() in ("done", f"inside {stall}"):
                break
        if while_alive is not None:
            while_alive(child.pid)
        child.send_signal(signal.SIGKILL)
        rest, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    acks += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("ack ")]
    assert child.returncode == -signal.SIGKILL, f"the writer was not killed mid-stream (stderr: {err[-2000:]})"
    assert "done" not in rest, "the stream finished before the kill"
    return acks


@pytest.mark.parametrize("kill_after", [3, 20, 45], ids=["killed after 3 acks", "killed after 20 acks",
                                                          "killed after 45 acks"])
def test_a_killed_writer_loses_no_acknowledged_batch(backend, stream_script, kill_after):
    path = backend.location()
    acks = run_and_kill(stream_script, path, kill_after)
    backend.settle(path)  # the killed writer's session is gone (PostgreSQL ends it a moment after the process)
    assert acks == list(range(1, len(acks) + 1)) and len(acks) >= kill_after
    acknowledged = acks[-1]
    audited = verify_journal(path)  # an auditor may check what the killed writer left, before any reopen
    assert audited.entries - 1 in (acknowledged, acknowledged + 1)

    with Ledger.open(path, protocols=[], lock_timeout=LOCK_WAIT) as reopened:
        committed = reopened.head_seq  # entry 0 is genesis: batch N is entry N
        assert committed in (acknowledged, acknowledged + 1), (acknowledged, committed)
        clean = reference(runpy.run_path(stream_script), committed)
        try:
            assert reopened.digest() == clean.digest()
            assert reopened.head_hash == clean.head_hash
            assert reopened.balances() == clean.balances()
            assert reopened.state.holds == clean.state.holds
            assert reopened.now == clean.now
        finally:
            clean.close()
    assert audited.entries == committed + 1
    assert verify_journal(path).head == audited.head


def test_a_ledger_reopened_after_a_kill_finishes_the_stream_like_a_clean_run(backend, stream_script):
    path = backend.location()
    run_and_kill(stream_script, path, 10)
    stream = runpy.run_path(stream_script)
    total = 60
    with Ledger.open(path, protocols=[], lock_timeout=LOCK_WAIT) as reopened:
        committed = reopened.head_seq
        for number, (at, envelopes) in enumerate(stream["batches"](), 1):
            if number > total:
                break
            if number > committed:  # the client resends what was never acknowledged or committed
                reopened.submit(envelopes, at=at)
        clean = reference(stream, total)
        try:
            assert reopened.head_seq == total
            assert reopened.digest() == clean.digest() and reopened.head_hash == clean.head_hash
            assert sum(reopened.balances()[b]["USD"] for b in ("BANK_A", "BANK_B", "BANK_C", "BANK_D")) + \
                sum(h.amount for h in reopened.state.holds.values()) == 4_000_000
        finally:
            clean.close()


STALLS = [
    ("killed inside the commit of an entry", 12),
    ("killed inside the commit of an entry that carries a snapshot", 21),  # snapshot_every=7
]


@pytest.mark.parametrize("stall", [s[1] for s in STALLS], ids=[s[0] for s in STALLS])
def test_a_writer_killed_inside_a_commit_leaves_the_prefix_before_it_and_a_new_writer_continues(
        backend, stream_script, stall):
    path = backend.location()
    seen: dict[str, object] = {}

    def while_alive(pid: int) -> None:
        with pytest.raises(JournalLocked) as refused:
            Ledger.open(path, protocols=[])
        seen["refusal"] = str(refused.value)
        seen["audit"] = verify_journal(path)  # a reader takes no lock and sees only what was committed
        with Ledger.open(path, protocols=[], readonly=True) as reader:
            seen["reader_head"] = reader.head_seq
            with pytest.raises(LedgerFault, match="read-only"):
                reader.submit([])

    acks = run_and_kill(stream_script, path, stall=stall, while_alive=while_alive)
    assert acks == list(range(1, stall)), "the writer acknowledged every batch before the one it died in"
    refusal = str(seen["refusal"])
    assert path in refusal and "another writer holds this journal" in refusal and "pid " in refusal
    assert "\n" not in refusal, "the refusal is one line"
    assert seen["audit"].entries == stall and seen["reader_head"] == stall - 1, "readers saw uncommitted work"

    stream = runpy.run_path(stream_script)
    total = stall + 8
    with Ledger.open(path, protocols=[], lock_timeout=LOCK_WAIT) as reopened:  # the fail-over writer
        assert reopened.head_seq == stall - 1, "the batch in flight was rolled back whole"
        clean = reference(stream, stall - 1)
        try:
            assert reopened.head_hash == clean.head_hash and reopened.digest() == clean.digest()
        finally:
            clean.close()
        for number, (at, envelopes) in enumerate(stream["batches"](), 1):
            if number > total:
                break
            if number >= stall:
                reopened.submit(envelopes, at=at)
    clean = reference(stream, total)
    try:
        audited = verify_journal(path)
        assert audited.entries == total + 1
        assert audited.head == clean.head_hash.hex() and audited.state == clean.digest().hex()
    finally:
        clean.close()


def test_the_refusal_names_the_pid_of_the_writer(backend, stream_script):
    path = backend.location()
    names: list[str] = []

    def while_alive(pid: int) -> None:
        with pytest.raises(JournalLocked) as refused:
            Ledger.open(path, protocols=[])
        names.append(str(refused.value))
        names.append(str(pid))

    run_and_kill(stream_script, path, stall=3, while_alive=while_alive)
    message, pid = names
    assert f"pid {pid}" in message, message
