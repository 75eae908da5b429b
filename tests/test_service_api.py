"""The service's API against a real `dvp serve` on 127.0.0.1: DvP between two clients, reads, refusals, limits.

One server per module (its ledger time stays at T0: `--clock ledger`);
each test uses its own banks, so tests do not depend on one another.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

pytest.importorskip("starlette")  # the service extra: pip install -e '.[service]'
pytest.importorskip("uvicorn")

import httpx  # noqa: E402
import msgspec
import pytest

from engine.client import Client, ServiceError
from engine.identity import Signer, derive_key
from engine.records import Envelope, Move
from engine.service.auth import sign_request
from engine.service.wire import MSGPACK, SubmitRequest
from protocols import dvp, prices, repo
from service_world import (
    AUDITOR,
    BOND,
    CASH_EACH,
    COMPLIANCE,
    OPERATOR,
    ORACLE,
    ROOT,
    T0,
    USD,
    Server,
    banks,
    make_ledger,
    signer,
)

BANKS = banks(24)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("service") / "ledger.db")
    make_ledger(db, BANKS)
    with Server(db, "--clock", "ledger") as running:
        yield running


_pool = iter(BANKS)


def client(server: Server, name: str | None = None) -> Client:
    """A client for a bank no other test uses (or for `name`), its signer resumed from the ledger."""
    c = Client(server.url, signer(name or next(_pool)))
    c.resume()
    return c


def pair_envelope(seller: Signer, buyer: Signer, tag: str, quantity: int = 100, amount: int = 9_950) -> Envelope:
    env = seller.envelope([Move(id=f"{tag}-sec", asset=BOND, source=seller.id, target=buyer.id, amount=quantity,
                                linked=True),
                           Move(id=f"{tag}-cash", asset=USD, source=buyer.id, target=seller.id, amount=amount)])
    return buyer.cosign(env)


# ------------------------------------------------------------------ DvP


def test_the_health_check_needs_no_signature(server):
    health = httpx.get(f"{server.url}/v1/health").json()
    assert health["status"] == "ok" and health["chain_id"] == "svc" and health["head_seq"] >= 2
    assert "dvp" in health["protocols"]


def test_two_banks_settle_a_dvp_each_signing_its_own_leg(server):
    seller, buyer = client(server), client(server)
    fields = dict(trade="T-1", seller=seller.signer.id, buyer=buyer.signer.id, security=BOND, quantity=1_000,
                  cash_asset=USD, amount=99_500_00)
    first = seller.submit([dvp.Instruct(id="t1-deliver", side="deliver", **fields)])
    assert first.names == ["ok"] and first.code == 200
    assert [(r.status, r.live) for r in seller.trade("T-1")] == [("unmatched", True)]
    second = buyer.submit([dvp.Instruct(id="t1-receive", side="receive", **fields)])
    assert second.names == ["ok"] and second.seq > first.seq
    assert seller.balances()[BOND] == 1_000_000 - 1_000
    assert buyer.balances() == {USD: CASH_EACH - 99_500_00, BOND: 1_000_000 + 1_000}
    for reader in (seller, buyer, client(server, AUDITOR)):
        (record,) = reader.trade("T-1")
        assert (record.status, record.live, record.seq) == ("settled", False, second.seq)
        assert record.parties == [seller.signer.id, buyer.signer.id]
    with pytest.raises(ServiceError) as refused:
        client(server).trade("T-1")
    assert (refused.value.code, refused.value.name) == (404, "not_found")


def test_a_dvp_envelope_cosigned_by_both_banks_is_sent_as_it_is(server):
    seller, buyer = client(server), client(server)
    done = seller.submit(pair_envelope(seller.signer, buyer.signer, "cosigned"))
    assert done.names == ["ok", "ok"] and not done.already_applied
    assert seller.balances() == {USD: CASH_EACH + 9_950, BOND: 1_000_000 - 100}


def test_resubmitting_an_envelope_says_already_applied_and_changes_nothing(server):
    seller, buyer = client(server), client(server)
    env = pair_envelope(seller.signer, buyer.signer, "twice")
    first = seller.submit(env)
    again = buyer.submit(env)
    assert again.already_applied and (again.seq, again.hash, again.results) == (first.seq, first.hash, [0, 0])
    assert seller.balances() == {USD: CASH_EACH + 9_950, BOND: 1_000_000 - 100}
    assert httpx.get(f"{server.url}/v1/health").json()["head_seq"] >= first.seq


def test_refused_commands_answer_422_with_every_code_and_the_entry(server):
    seller, buyer = client(server), client(server)
    done = seller.submit(pair_envelope(seller.signer, buyer.signer, "short", amount=CASH_EACH + 1))
    assert (done.code, done.name) == (422, "commands_refused")
    assert done.names == ["linked_event_failed", "insufficient_funds"] and done.seq > 0
    assert seller.balances() == {USD: CASH_EACH, BOND: 1_000_000}


def test_an_auditor_cannot_sign_anything(server):
    auditor = client(server, AUDITOR)
    done = auditor.submit([Move(id="aud-1", asset=USD, source=AUDITOR, target=BANKS[0], amount=1)])
    assert done.names == ["signer_read_only"] and done.code == 422


# ------------------------------------------------------------ who reads what


def test_a_member_reading_another_members_account_is_refused(server):
    mine, theirs = client(server), client(server)
    with pytest.raises(ServiceError) as refused:
        mine.balances(theirs.signer.id)
    assert (refused.value.code, refused.value.name) == (403, "not_your_account")
    assert mine.balances() == {USD: CASH_EACH, BOND: 1_000_000}
    for privileged in (OPERATOR, COMPLIANCE, AUDITOR):
        assert client(server, privileged).balances(theirs.signer.id) == {USD: CASH_EACH, BOND: 1_000_000}


def test_an_unsigned_account_read_answers_401(server):
    response = httpx.get(f"{server.url}/v1/accounts/{BANKS[0]}")
    assert response.status_code == 401
    assert response.json()["name"] == "unsigned_request" and set(response.json()) == {"code", "name", "detail"}


def _forged(server, who):
    return sign_request(Signer(who, derive_key("someone else"), "svc"), "GET", f"/v1/accounts/{who}")


def _replayed(server, who):
    headers = sign_request(signer(who), "GET", f"/v1/accounts/{who}")
    assert httpx.get(f"{server.url}/v1/accounts/{who}", headers=headers).status_code == 200
    return headers


def _expired(server, who):
    return sign_request(signer(who), "GET", f"/v1/accounts/{who}", timestamp=int(time.time()) - 31)


def _from_the_future(server, who):
    return sign_request(signer(who), "GET", f"/v1/accounts/{who}", timestamp=int(time.time()) + 120)


def _signed_for_another_path(server, who):
    return sign_request(signer(who), "GET", f"/v1/accounts/{who}?x=1")


def _signed_for_another_chain(server, who):
    return sign_request(Signer(who, signer(who).key, "other-chain"), "GET", f"/v1/accounts/{who}")


def _never_admitted(server, who):
    return sign_request(signer("MALLORY"), "GET", f"/v1/accounts/{who}")


@pytest.mark.parametrize("build,status,name", [
    pytest.param(_replayed, 401, "replayed_request", id="a replayed request is refused"),
    pytest.param(_forged, 401, "bad_request_signature", id="a request signed with another key is refused"),
    pytest.param(_expired, 401, "stale_request", id="a request stamped 31 s ago is refused"),
    pytest.param(_from_the_future, 401, "stale_request", id="a request stamped 2 minutes ahead is refused"),
    pytest.param(_signed_for_another_path, 401, "bad_request_signature",
                 id="a signature over another path and query is refused"),
    pytest.param(_signed_for_another_chain, 401, "bad_request_signature",
                 id="a signature made for another chain is refused"),
    pytest.param(_never_admitted, 401, "unknown_participant", id="a request by someone never admitted is refused"),
])
def test_signed_read_refusals(server, build, status, name):
    who = BANKS[-1]
    response = httpx.get(f"{server.url}/v1/accounts/{who}", headers=build(server, who))
    assert (response.status_code, response.json()["name"]) == (status, name)


def test_entries_are_paged_and_cut_to_the_reader(server):
    seller, buyer = client(server), client(server)
    seller.submit(pair_envelope(seller.signer, buyer.signer, "paged"))
    other = client(server)
    page = other.entries(0, limit=2)
    assert [e.seq for e in page.entries] == [0, 1] and page.next_seq == 2
    everything = client(server, AUDITOR).entries(1, limit=100)
    seen = [e for e in everything.entries if any(c.command.get("id") == "paged-sec" for c in e.commands)]
    assert len(seen) == 1 and seen[0].complete
    (mine,) = [e for e in other.entries(seen[0].seq, limit=1).entries]
    assert mine.seq == seen[0].seq and mine.hash == seen[0].hash and not mine.commands and not mine.complete
    with pytest.raises(ServiceError) as refused:
        other.entries(0, limit=101)
    assert refused.value.name == "invalid_parameter" and "page_entries_max=100" in refused.value.detail


def test_the_event_stream_starts_after_the_last_event_id_it_is_given(server):
    from httpx_sse import connect_sse

    target = "/v1/events?from_seq=0"
    headers = {**sign_request(signer(AUDITOR), "GET", target), "last-event-id": "1"}
    with httpx.Client(base_url=server.url, timeout=10) as http, \
            connect_sse(http, "GET", target, headers=headers) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        first = next(e for e in source.iter_sse() if e.event == "entry")
    assert first.id == "2" and msgspec.json.decode(first.data)["seq"] == 2


def test_a_repo_reads_its_exposure_collateral_value_and_margin(server):
    borrower, lender, oracle = client(server), client(server), client(server, ORACLE)
    assert oracle.submit([prices.SetPrice(id="px-1", asset=BOND, price="99.00")]).names == ["ok"]
    open_repo = repo.OpenRepo(id="open-R1", repo="R1", borrower=borrower.signer.id, lender=lender.signer.id,
                              collateral=BOND, quantity=100_000, cash_asset=USD, principal=9_000_000, rate="0.05",
                              end=T0 + 3600)
    env = lender.signer.cosign(borrower.signer.envelope([open_repo]))
    assert borrower.submit(env).names == ["ok"]
    for reader in (borrower, lender, client(server, COMPLIANCE)):
        (record,) = reader.repo("R1")
        assert (record.status, record.live) == ("open", True)
        # 100,000 at 99.00 per 100: MV 99,000.00; a note maturing 2030 (3-4 years): 2% haircut, CV 97,020.00
        assert record.record["market_value"] == 9_900_000 and record.record["collateral_value"] == 9_702_000
        assert record.record["exposure"] == 9_000_000 and record.record["margin"] == 0 and record.record["call"] == 0
    with pytest.raises(ServiceError) as refused:
        client(server).repo("R1")
    assert refused.value.code == 404


# ------------------------------------------------------------------ bounds


def _post(server, body: bytes, content_type: str = MSGPACK) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/envelopes", content=body, headers={"content-type": content_type})


def test_a_body_over_the_limit_is_refused_naming_it(server):
    response = _post(server, b"\x00" * (16 * 1024 * 1024 + 1))
    assert (response.status_code, response.json()["name"]) == (413, "body_too_large")
    assert "body_bytes_max=16777216" in response.json()["detail"]


def test_too_many_envelopes_in_one_request_are_refused(server):
    envs = [Envelope("svc", msgspec.msgpack.encode(()), ()) for _ in range(65)]
    response = _post(server, msgspec.msgpack.encode(SubmitRequest(envs)))
    assert (response.status_code, response.json()["name"]) == (413, "too_many_envelopes")
    assert "envelopes_per_request_max=64" in response.json()["detail"]


def test_too_many_commands_in_one_envelope_are_refused(server):
    moves = [Move(id=f"big-{i}", asset=USD, source=BANKS[0], target=BANKS[1], amount=1) for i in range(32_769)]
    env = signer(BANKS[0], 10**6).envelope(moves)
    response = _post(server, msgspec.msgpack.encode(SubmitRequest([env])))
    assert (response.status_code, response.json()["name"]) == (413, "too_many_commands")
    assert "commands_per_envelope_max=32768" in response.json()["detail"]


_SIG = [["BANK_00", 1, b"\0" * 64]]


@pytest.mark.parametrize("body,content_type,status,name", [
    pytest.param(b"{not json", "application/json", 400, "malformed_request", id="broken JSON is a malformed_request"),
    pytest.param(b'{"envelopes": [], "extra": 1}', "application/json", 400, "malformed_request",
                 id="an unknown field is a malformed_request"),
    pytest.param(b'{"envelopes": []}', "application/json", 400, "no_envelopes", id="no envelope is refused"),
    pytest.param(msgspec.json.encode({"envelopes": [["svc", b"\x91\x93\xa5alien\xa1x\xc2", _SIG, 0]]}),
                 "application/json", 400, "malformed_envelope",
                 id="a payload of unknown commands is a malformed_envelope"),
    pytest.param(msgspec.json.encode({"envelopes": [["svc", msgspec.msgpack.encode(()), _SIG, 0]]}),
                 "application/json", 400, "no_commands", id="an envelope of no command is refused"),
    pytest.param(msgspec.msgpack.encode(SubmitRequest([Envelope("svc", msgspec.msgpack.encode(
        (Move(id="u-1", asset=USD, source="OP", target="BANK_00", amount=1),)))])), MSGPACK, 401,
        "unsigned_envelope", id="an unsigned envelope is refused whatever the ledger allows"),
])
def test_malformed_submissions_are_refused_and_change_nothing(server, body, content_type, status, name):
    before = httpx.get(f"{server.url}/v1/health").json()["head_seq"]
    response = _post(server, body, content_type)
    assert (response.status_code, response.json()["name"]) == (status, name)
    assert httpx.get(f"{server.url}/v1/health").json()["head_seq"] == before


def _a_move(who: Signer) -> Envelope:
    return who.envelope([Move(id=f"forged-{who.id}-{who.chain_id}", asset=USD, source="BANK_00", target="BANK_01",
                              amount=1)])


@pytest.mark.parametrize("build,status,name", [
    pytest.param(lambda: _a_move(Signer("BANK_00", derive_key("not BANK_00's key"), "svc")), 401, "bad_signature",
                 id="an envelope signed with another key than the member's is refused before the journal"),
    pytest.param(lambda: signer(BANKS[1]).cosign(_a_move(Signer("BANK_00", derive_key("x"), "svc"))), 401,
                 "bad_signature", id="one bad signature among good ones refuses the request"),
    pytest.param(lambda: _a_move(Signer("MALLORY", derive_key("mallory"), "svc")), 401, "unknown_signer",
                 id="an envelope signed by a stranger is refused before the journal"),
    pytest.param(lambda: _a_move(Signer("BANK_00", signer("BANK_00").key, "other-chain")), 400, "wrong_chain",
                 id="an envelope for another chain is refused before the journal"),
])
def test_forgeries_are_refused_before_they_reach_the_journal(server, build, status, name):
    before = httpx.get(f"{server.url}/v1/health").json()["head_seq"]
    response = _post(server, msgspec.msgpack.encode(SubmitRequest([build()])))
    assert (response.status_code, response.json()["name"]) == (status, name)
    assert httpx.get(f"{server.url}/v1/health").json()["head_seq"] == before


def test_json_and_msgpack_bodies_are_both_accepted(server):
    seller, buyer = signer(BANKS[-2]), signer(BANKS[-3])
    env = pair_envelope(seller, buyer, "as-json")
    response = _post(server, msgspec.json.encode(SubmitRequest([env])), "application/json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json()["outcomes"][0]["names"] == ["ok", "ok"]


@pytest.mark.parametrize("method,path,status,name", [
    pytest.param("GET", "/v1/nothing", 404, "not_found", id="an unknown route is a JSON 404"),
    pytest.param("DELETE", "/v1/envelopes", 405, "method_not_allowed", id="a wrong method is a JSON 405"),
])
def test_http_errors_are_json(server, method, path, status, name):
    response = httpx.request(method, f"{server.url}{path}")
    assert (response.status_code, response.json()["name"]) == (status, name)


def test_metrics_count_entries_commands_and_refusals(server):
    seller, buyer = client(server), client(server)
    seller.submit(pair_envelope(seller.signer, buyer.signer, "metered", amount=CASH_EACH + 1))
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("dvp_entries_total", "dvp_commands_total", 'dvp_refusals_total{code="insufficient_funds"}',
                 "dvp_commit_seconds_count", "dvp_queue_depth", "dvp_streams"):
        assert name in text, name


def test_reads_over_the_rate_are_refused_naming_it(tmp_path):
    db = str(tmp_path / "rate.db")
    make_ledger(db, ["BANK_X"])
    with Server(db, "--reads-per-second", "3") as running:
        c = Client(running.url, signer("BANK_X"), retry_seconds=0)
        with pytest.raises(ServiceError) as refused:
            for _ in range(10):
                c.balances()
        assert (refused.value.code, refused.value.name) == (429, "rate_limited")
        assert "reads_per_second=3" in refused.value.detail


def test_streams_over_the_limit_are_refused_naming_it(tmp_path):
    db = str(tmp_path / "streams.db")
    make_ledger(db, ["BANK_X"])
    with Server(db, "--streams-max", "1") as running:
        url = running.url
        with httpx.Client(base_url=url, timeout=10) as http:
            first = sign_request(signer("BANK_X"), "GET", "/v1/events?from_seq=0")
            with http.stream("GET", "/v1/events?from_seq=0", headers=first) as open_stream:
                assert open_stream.status_code == 200
                second = http.get("/v1/events?from_seq=0",
                                  headers=sign_request(signer("BANK_X"), "GET", "/v1/events?from_seq=0"))
                assert (second.status_code, second.json()["name"]) == (429, "too_many_streams")
                assert "streams_max=1" in second.json()["detail"]


def test_the_two_bank_example_runs_against_a_local_server(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "service_dvp.py"), str(tmp_path / "ex.db")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "settled" in done.stdout and "BANK_A" in done.stdout


def test_after_a_restart_an_envelope_sent_before_is_still_known_and_trades_still_read(tmp_path):
    db = str(tmp_path / "restart.db")
    make_ledger(db, ["BANK_X", "BANK_Y"])
    x, y = signer("BANK_X"), signer("BANK_Y")
    env = pair_envelope(x, y, "before")
    settle = dvp.Settle(id="settle-r", trade="T-R", seller="BANK_X", buyer="BANK_Y", security=BOND, quantity=5,
                        cash_asset=USD, amount=500)
    running = Server(db, "--clock", "ledger").start()
    first = Client(running.url, x).submit(env)
    settled = Client(running.url, x).submit(y.cosign(x.envelope([settle])))
    assert settled.names == ["ok"]
    assert running.stop() == 0, "SIGTERM stops the server gracefully"
    with Server(db, "--clock", "ledger") as running:
        again = Client(running.url, y).submit(env)
        assert again.already_applied and (again.seq, again.hash) == (first.seq, first.hash)
        assert Client(running.url, x).balances() == {USD: CASH_EACH + 9_950 + 500, BOND: 1_000_000 - 105}
        (record,) = Client(running.url, y).trade("T-R")
        assert (record.status, record.live, record.seq) == ("settled", False, settled.seq)


def test_a_storage_failure_stops_the_ledger_and_acknowledges_nothing(tmp_path):
    """A real server in this process (uvicorn in a thread) whose journal write fails: 503, nothing applied."""
    import socket
    import threading

    import uvicorn

    from engine.ledger import Ledger
    from engine.service.app import build_app
    from engine.service.metrics import Metrics
    from engine.service.wire import Limits
    from engine.service.writer import Writer

    db = str(tmp_path / "fault.db")
    make_ledger(db, ["BANK_X", "BANK_Y"])
    writer = Writer(db, limits=Limits(), metrics=Metrics())
    writer.start()
    head = writer.published_seq

    def disk_full(*_args, **_kwargs):
        raise OSError("disk full (injected)")

    writer.ledger.journal.append = disk_full
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(build_app(writer, Limits()), log_level="critical"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        x = Client(url, signer("BANK_X"), retry_seconds=0)
        with pytest.raises(ServiceError) as refused:
            x.submit(pair_envelope(x.signer, signer("BANK_Y"), "doomed"))
        assert (refused.value.code, refused.value.name) == (503, "ledger_stopped")
        assert httpx.get(f"{url}/v1/health").json()["status"] == "stopped"
        with pytest.raises(ServiceError) as refused:
            x.balances()
        assert refused.value.name == "ledger_stopped", "no read of a state ahead of the journal"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        writer.stop()
    reopened = Ledger.open(db)
    assert reopened.head_seq == head and reopened.balance("BANK_X", USD) == CASH_EACH
    reopened.close()


def test_the_writer_takes_snapshots_between_requests_and_they_verify(tmp_path):
    from engine.ledger import Ledger

    db = str(tmp_path / "snap.db")
    make_ledger(db, ["BANK_X", "BANK_Y"])
    x, y = signer("BANK_X"), signer("BANK_Y")
    with Server(db, "--snapshot-every", "2") as running:
        c = Client(running.url, x)
        for i in range(5):
            assert c.submit(pair_envelope(x, y, f"snap-{i}")).names == ["ok", "ok"]
        assert "dvp_snapshot_seconds_count 3.0" in httpx.get(f"{running.url}/metrics").text
    ledger = Ledger.open(db)
    assert ledger.journal.snapshots() == [3, 5, 7] and not ledger.recovery_notes
    ledger.close()
    verify = subprocess.run([sys.executable, "-m", "engine.cli", "verify", db], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert verify.returncode == 0 and "snapshots  3 checked" in verify.stdout, verify.stdout + verify.stderr
