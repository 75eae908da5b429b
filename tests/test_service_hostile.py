"""The service against a hostile user, on a real `dvp serve` on 127.0.0.1: each test is one probe that once broke it.

One server per module (`--clock ledger`, time at T0); each test takes its
own banks, so tests do not depend on one another. Probes that need a
server of their own (limits, faults) start one.
"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time

import pytest

pytest.importorskip("starlette")  # the service extra: pip install -e '.[service]'
pytest.importorskip("uvicorn")

import httpx  # noqa: E402
import msgspec  # noqa: E402

from engine.client import Client, ServiceError  # noqa: E402
from engine.records import Admit, Envelope, Move, SetRoles, Signature, Suspend  # noqa: E402
from engine.service.auth import sign_request  # noqa: E402
from engine.service.wire import MSGPACK, SubmitRequest  # noqa: E402
from service_world import CASH_EACH, OPERATOR, USD, Server, banks, make_ledger, signer  # noqa: E402

BANKS = banks(40)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("hostile") / "ledger.db")
    make_ledger(db, BANKS)
    with Server(db, "--clock", "ledger") as running:
        yield running


_pool = iter(BANKS)


def client(server: Server, name: str | None = None) -> Client:
    """A client for a bank no other test uses (or for `name`), its signer resumed from the ledger."""
    c = Client(server.url, signer(name or next(_pool)))
    c.resume()
    return c


def head_seq(server: Server) -> int:
    return httpx.get(f"{server.url}/v1/health").json()["head_seq"]


# ------------------------------------------------------------ event stream


@pytest.mark.parametrize("last_event_id", [
    pytest.param("9" * 5000, id="a Last-Event-ID of 5,000 digits is refused, not a 500"),
    pytest.param("9" * 19, id="a Last-Event-ID past 18 digits is refused"),
])
def test_an_oversized_last_event_id_is_a_clear_400(server, last_event_id):
    target = "/v1/events?from_seq=0"
    headers = {**sign_request(signer(BANKS[-1]), "GET", target), "last-event-id": last_event_id}
    response = httpx.get(f"{server.url}{target}", headers=headers, timeout=10)
    assert (response.status_code, response.json()["name"]) == (400, "invalid_parameter")
    assert "Last-Event-ID" in response.json()["detail"]


# ------------------------------------------------------------- submissions


def _json_envelope(seq: int, not_after: int = 0) -> bytes:
    payload = msgspec.msgpack.encode((Move(id="big-int", asset=USD, source=BANKS[0], target=BANKS[1], amount=1),))
    sig = base64.b64encode(bytes(64)).decode()
    return (f'{{"envelopes": [["svc", "{base64.b64encode(payload).decode()}", [["{BANKS[0]}", {seq}, "{sig}"]], '
            f'{not_after}]]}}').encode()


@pytest.mark.parametrize("body", [
    pytest.param(_json_envelope(2**64), id="a sequence number of 2**64 in JSON is a malformed_request"),
    pytest.param(_json_envelope(-2**63 - 1), id="a sequence number below -2**63 in JSON is a malformed_request"),
    pytest.param(_json_envelope(1, not_after=2**70), id="a not_after of 2**70 in JSON is a malformed_request"),
])
def test_json_integers_past_64_bits_are_refused_not_a_500(server, body):
    before = head_seq(server)
    response = httpx.post(f"{server.url}/v1/envelopes", content=body, headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["name"]) == (400, "malformed_request")
    assert "64-bit" in response.json()["detail"]
    assert head_seq(server) == before


def test_the_duplicate_of_an_envelope_refused_as_a_whole_is_not_called_applied(server):
    c = client(server)
    env = c.signer.envelope([Move(id="expired-twice", asset=USD, source=c.signer.id, target=BANKS[0], amount=1)],
                            not_after=1_000)  # ledger time is T0, long after
    done = c.send([env, env])
    assert [(o.names, o.already_applied) for o in done.outcomes] == [(["expired"], False), (["expired"], False)]
    assert [(o.names, o.already_applied) for o in c.send([env]).outcomes] == [(["expired"], False)]


def _rss_mib(server: Server) -> float:
    with open(f"/proc/{server.proc.pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the server's memory from /proc")
def test_signer_names_no_member_could_have_are_refused_without_being_remembered(server):
    payload = msgspec.msgpack.encode((Move(id="huge-signer", asset=USD, source=BANKS[0], target=BANKS[1], amount=1),))
    before = _rss_mib(server)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(24):
            name = f"{i:04d}" + "A" * (4 << 20)  # 4 MiB: a rate bucket per name kept them all
            env = Envelope("svc", payload, (Signature(name, 1, bytes(64)),))
            response = http.post("/v1/envelopes", content=msgspec.msgpack.encode(SubmitRequest([env])),
                                 headers={"content-type": MSGPACK})
            assert (response.status_code, response.json()["name"]) == (401, "unknown_signer")
            assert len(response.json()["detail"]) < 300
    assert _rss_mib(server) - before < 32, "24 names of 4 MiB are not held by the server"


def test_head_requests_on_the_event_stream_hold_no_stream_open(server):
    who, target = next(_pool), "/v1/events?from_seq=0"
    for _ in range(5):  # more than streams_per_participant_max (4)
        response = httpx.head(f"{server.url}{target}", headers=sign_request(signer(who), "HEAD", target), timeout=10)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    with httpx.Client(base_url=server.url, timeout=10) as http, \
            http.stream("GET", target, headers=sign_request(signer(who), "GET", target)) as stream:
        assert stream.status_code == 200, "the HEAD requests left no stream counted against the participant"


def _follow(url: str, who: str, from_seq: int, into: list, until_seq: int) -> None:
    """Read `who`'s event stream from `from_seq` into `into` until an entry at `until_seq` or the stream ends."""
    from httpx_sse import connect_sse

    target = f"/v1/events?from_seq={from_seq}"
    with httpx.Client(base_url=url, timeout=20) as http, \
            connect_sse(http, "GET", target, headers=sign_request(signer(who), "GET", target)) as source:
        for event in source.iter_sse():
            if event.event == "entry":
                into.append(msgspec.json.decode(event.data))
                if into[-1]["seq"] >= until_seq:
                    return


def test_an_open_stream_follows_its_readers_roles_and_status(server):
    operator = client(server, OPERATOR)
    assert operator.submit([Admit(id="adm-aud-2", participant="AUDITOR_2", roles=("auditor",),
                                  public_key=signer("AUDITOR_2").public_key)]).names == ["ok"]
    suspended, payer, payee = next(_pool), client(server), next(_pool)
    start = head_seq(server) + 1
    watched = {"AUDITOR_2": [], suspended: []}
    threads = [threading.Thread(target=_follow, args=(server.url, who, start, into, start + 1), daemon=True)
               for who, into in watched.items()]
    for t in threads:
        t.start()
    time.sleep(0.5)  # both streams are open and waiting
    changed = operator.submit([SetRoles(id="demote-aud-2", participant="AUDITOR_2", roles=("participant",)),
                               Suspend(id="suspend-streamer", participant=suspended)])
    assert changed.names == ["ok", "ok"] and changed.seq == start
    paid = payer.submit([Move(id="after-demotion", asset=USD, source=payer.signer.id, target=payee, amount=1)])
    assert paid.seq == start + 1
    for t in threads:
        t.join(timeout=20)
        assert not t.is_alive()
    (last,) = [v for v in watched["AUDITOR_2"] if v["seq"] == start + 1]
    assert last["commands"] == [] and not last["complete"], "a demoted auditor's stream shows what a member sees"
    assert watched[suspended] == [], "a suspended member's stream ends before the entry that suspended it"


def test_a_member_whose_certificate_expired_reads_nothing(server):
    from engine.identity import issue_certificate
    from engine.records import Tick

    operator = client(server, OPERATOR)
    now = httpx.get(f"{server.url}/v1/health").json()["at"]
    who = signer("CERT_BANK")
    certificate = issue_certificate(signer(OPERATOR).key, OPERATOR, who.id, who.public_key, now - 10, now + 60)
    assert operator.submit([Admit(id="adm-cert-bank", participant=who.id, certificate=certificate)]).names == ["ok"]
    reader = Client(server.url, who)
    assert reader.balances() == {}
    streamed: list = []
    stream = threading.Thread(target=_follow, args=(server.url, who.id, head_seq(server) + 1, streamed, 10**9),
                              daemon=True)
    stream.start()
    time.sleep(0.5)
    assert operator.submit([Tick(id="tick-past-cert", to=now + 120)]).names == ["ok"]
    assert httpx.get(f"{server.url}/v1/health").json()["at"] == now + 120, "health tells ledger time after the Tick"
    stream.join(timeout=20)
    assert not stream.is_alive() and streamed == [], "the stream ended when ledger time passed the certificate's end"
    with pytest.raises(ServiceError) as refused:
        reader.balances()
    assert (refused.value.code, refused.value.name) == (403, "participant_inactive")
    assert "certificate" in refused.value.detail


# -------------------------------------------------------- in-process server


def _wait_for(condition, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


class InProcess:
    """A real server in this process (uvicorn in a thread) with the `Limits` a probe needs."""

    def __init__(self, db: str, limits):
        self.db = db
        self.limits = limits

    def __enter__(self) -> InProcess:
        import socket

        import uvicorn

        from engine.service.app import build_app
        from engine.service.metrics import Metrics
        from engine.service.writer import Writer

        self.writer = Writer(self.db, limits=self.limits, metrics=Metrics())
        self.writer.start()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        self.app = build_app(self.writer, self.limits)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="critical"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.writer.stop()


def test_reads_refused_for_their_rate_do_not_fill_the_nonce_memory(tmp_path):
    from engine.service.wire import Limits

    db = str(tmp_path / "nonces.db")
    make_ledger(db, ["BANK_X", "BANK_Y"])
    with InProcess(db, Limits(nonces_max=20, reads_per_second=2)) as running:
        target = "/v1/accounts/BANK_X"
        with httpx.Client(base_url=running.url, timeout=10) as http:
            names = [http.get(target, headers=sign_request(signer("BANK_X"), "GET", target)).json().get("name")
                     for _ in range(40)]
            assert "nonce_memory_full" not in names and names.count("rate_limited") >= 20, names
            time.sleep(1.1)
            fresh = http.get("/v1/accounts/BANK_Y", headers=sign_request(signer("BANK_Y"), "GET", "/v1/accounts/BANK_Y"))
            assert fresh.status_code == 200, "another member's read finds room in the nonce memory"
            seen = sign_request(signer("BANK_Y"), "GET", "/v1/accounts/BANK_Y")
            assert http.get("/v1/accounts/BANK_Y", headers=seen).status_code == 200
            for _ in range(3):  # a replay is refused as one, and spends none of the member's rate
                replayed = http.get("/v1/accounts/BANK_Y", headers=seen)
                assert (replayed.status_code, replayed.json()["name"]) == (401, "replayed_request")


# ------------------------------------------------------------------ faults


def _pool_workers(pid: int) -> list[int]:
    """The signature-checking processes a server spawned (not its resource tracker)."""
    found = []
    for child in os.listdir("/proc"):
        if not child.isdigit():
            continue
        try:
            with open(f"/proc/{child}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                spawned = b"spawn_main" in cmdline.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and spawned:
            found.append(int(child))
    return found


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="finds the server's pool in /proc")
def test_a_killed_signature_worker_does_not_stop_the_writer(tmp_path):
    import signal

    members = banks(6)
    db = str(tmp_path / "pool.db")
    make_ledger(db, members)
    signers = {m: signer(m) for m in members}

    def round_of_requests(tag: str) -> list:
        """Six concurrent requests of 64 envelopes each: one group of 384 signatures, checked on the pool."""
        answers: list = []

        def send(k: int) -> None:
            source, target = members[k], members[(k + 1) % len(members)]
            envs = [signers[source].envelope([Move(id=f"{tag}-{k}-{i}", asset=USD, source=source, target=target,
                                                   amount=1)]) for i in range(64)]
            try:
                answers.append(set(Client(running.url, signers[source], timeout=20, retry_seconds=0).send(envs).names))
            except Exception as exc:  # noqa: BLE001 - the test reports it
                answers.append(repr(exc))

        threads = [threading.Thread(target=send, args=(k,), daemon=True) for k in range(len(members))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=40)
        return answers

    with Server(db, "--verify-workers", "1", "--group-wait-ms", "200") as running:
        for attempt in range(5):  # until one group gathers 256 signatures or more (on a busy machine it may not)
            assert round_of_requests(f"before-{attempt}") == [{"ok"}] * 6
            workers = _pool_workers(running.proc.pid)
            if workers:
                break
        assert workers, "the pool checked a group's signatures"
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        assert round_of_requests("after") == [{"ok"}] * 6, "the writer checked the signatures without its pool"
        assert httpx.get(f"{running.url}/v1/health").json()["status"] == "ok"


def test_an_unexpected_error_in_the_writer_stops_the_ledger_and_answers_every_request(tmp_path):
    from engine.ledger import Ledger
    from engine.service.wire import Limits

    db = str(tmp_path / "writer-error.db")
    make_ledger(db, ["BANK_X", "BANK_Y"])
    with InProcess(db, Limits()) as running:
        def broken(*_args, **_kwargs):
            raise KeyError("injected: a bug in indexing the entry")

        running.writer.recorder.observe = broken
        x = Client(running.url, signer("BANK_X"), timeout=10, retry_seconds=0)
        with pytest.raises(ServiceError) as refused:
            x.submit([Move(id="indexed-badly", asset=USD, source="BANK_X", target="BANK_Y", amount=1)])
        assert (refused.value.code, refused.value.name) == (503, "ledger_stopped"), "answered, not left hanging"
        assert httpx.get(f"{running.url}/v1/health").json()["status"] == "stopped"
        with pytest.raises(ServiceError) as refused:
            x.submit([Move(id="after-the-error", asset=USD, source="BANK_X", target="BANK_Y", amount=1)])
        assert refused.value.name == "ledger_stopped"
    reopened = Ledger.open(db)  # the entry was durable: restarting rebuilds the indexes from it
    assert reopened.balance("BANK_Y", USD) == CASH_EACH + 1
    reopened.close()


def test_a_journal_whose_path_has_uri_characters_serves_its_entries(tmp_path):
    folder = tmp_path / "we#ird?"
    folder.mkdir()
    db = str(folder / "l%41.db")
    make_ledger(db, ["BANK_X"])
    with Server(db) as running:
        page = Client(running.url, signer("BANK_X")).entries(0, limit=3)
        assert [e.seq for e in page.entries] == [0, 1, 2]


# ------------------------------------------------------------------ client


@pytest.mark.parametrize("trade_id", [
    pytest.param("T 1", id="a trade id with a space"),
    pytest.param("T?1", id="a trade id with a question mark"),
    pytest.param("T#1", id="a trade id with a hash"),
    pytest.param("T%41", id="a trade id with a percent sign"),
    pytest.param("T/../1", id="a trade id with a dot segment"),
    pytest.param("Ünï", id="a trade id that is not ASCII"),
])
def test_the_client_reads_a_trade_whatever_characters_its_id_has(server, trade_id):
    from protocols import dvp

    seller, buyer = client(server), next(_pool)
    fields = dict(trade=trade_id, seller=seller.signer.id, buyer=buyer, security="BOND", quantity=1, cash_asset=USD,
                  amount=1)
    assert seller.submit([dvp.Instruct(id=f"odd-{seller.signer.id}", side="deliver", **fields)]).names == ["ok"]
    (record,) = seller.trade(trade_id)
    assert (record.key, record.status) == (trade_id, "unmatched")


def test_a_member_whose_id_has_a_slash_reads_its_account(server):
    operator = client(server, OPERATOR)
    who = signer("BANK/SLASH")
    assert operator.submit([Admit(id="adm-slash", participant=who.id, public_key=who.public_key)]).names == ["ok"]
    assert Client(server.url, who).account().participant == "BANK/SLASH"


# ------------------------------------------------------------- connections


def _connect(server: Server, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30, source_address=(source, 0))
    return sock


def _closed_by_server(sock: socket.socket, within_seconds: float) -> bool:
    """Wait for the server to answer or close; False if it is still silent after `within_seconds`."""
    sock.settimeout(within_seconds)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def test_a_request_head_past_16_kib_is_refused_not_buffered(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # 64 MiB: all of it was held in memory, the request never answered
                sock.sendall(b"A" * (1 << 20))
        except (ConnectionResetError, BrokenPipeError):
            pass
        assert _closed_by_server(sock, 10), "the server refused the head and closed the connection"


def test_a_connection_that_never_completes_a_request_head_is_closed(server):
    from engine.service.server import REQUEST_HEAD_SECONDS_MAX

    with _connect(server) as silent, _connect(server) as dripping:
        dripping.sendall(b"GET /v1/health HTTP/1.1\r\n")
        started = time.monotonic()
        for _ in range(REQUEST_HEAD_SECONDS_MAX + 2):  # one byte a second kept the connection forever
            time.sleep(1)
            try:
                dripping.sendall(b"X")
            except (ConnectionResetError, BrokenPipeError):
                break
        assert _closed_by_server(dripping, 5) and _closed_by_server(silent, 5)
        assert time.monotonic() - started < REQUEST_HEAD_SECONDS_MAX + 8


def test_one_peer_holding_thousands_of_idle_connections_does_not_shut_others_out(server):
    idle = []
    try:
        for _ in range(2100):  # more than the server's 2,048: every other client got 503 until they closed
            try:
                idle.append(_connect(server))
            except OSError:
                break
        time.sleep(0.5)
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)
        assert other.get(f"{server.url}/v1/health").status_code == 200
        other.close()
    finally:
        for sock in idle:
            sock.close()


def test_a_body_sent_too_slowly_is_refused_naming_the_limit(tmp_path):
    from engine.service.wire import Limits

    db = str(tmp_path / "slow-body.db")
    make_ledger(db, ["BANK_X"])
    with InProcess(db, Limits(body_seconds_max=1.0)) as running:
        port = int(running.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/envelopes HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
                         b"Content-Length: 1000\r\n\r\n" + b"\x81" * 10)  # and the other 990 bytes never come
            answer = sock.recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 408") and "body_too_slow" in answer and "body_seconds_max=1" in answer


# ----------------------------------------------------------- shared keys


def test_a_member_taking_another_pairs_trade_id_reads_nothing_of_it_and_changes_nothing(server):
    from protocols import dvp

    seller, buyer, intruder = client(server), client(server), client(server)
    fields = dict(trade="T-SHARED", seller=seller.signer.id, buyer=buyer.signer.id, security="BOND", quantity=5,
                  cash_asset=USD, amount=CASH_EACH * 2)  # more cash than the buyer has: queued, insufficient_cash
    start = head_seq(server) + 1
    assert seller.submit([dvp.Instruct(id="shared-d", side="deliver", **fields)]).names == ["ok"]
    assert buyer.submit([dvp.Instruct(id="shared-r", side="receive", **fields)]).names == ["ok"]
    own = dict(fields, seller=intruder.signer.id, buyer=seller.signer.id, quantity=1, amount=1)
    assert intruder.submit([dvp.Instruct(id="intruder-d", side="deliver", **own)]).names == ["ok"]
    assert intruder.submit([dvp.Cancel(id="intruder-c", trade="T-SHARED")]).names == ["ok"]
    seen = [(e.kind, e.data) for v in intruder.entries(start).entries for e in v.events]
    assert seen == [("unmatched", {"side": "deliver"}), ("cancelled", {"side": "deliver"})], "its own events only"
    statuses = sorted((r.status, tuple(r.parties)) for r in seller.trade("T-SHARED"))
    assert statuses == [("cancelled", (intruder.signer.id, seller.signer.id)),
                        ("queued", (seller.signer.id, buyer.signer.id))]


def test_an_envelope_refused_for_good_is_answered_again_without_a_new_entry(server):
    c = client(server)
    env = c.signer.envelope([Move(id="expired-replayed", asset=USD, source=c.signer.id, target=BANKS[0], amount=1)],
                            not_after=1_000)  # expired: ledger time only moves on, it can never apply
    first = c.send([env])
    assert first.names == ["expired"]
    head = head_seq(server)
    for _ in range(3):  # a replay by anyone who saw it wrote an entry each time
        again = Client(server.url).send([env])
        assert (again.seq, again.hash, again.names, again.already_applied) == (first.seq, first.hash, ["expired"],
                                                                               False)
    assert head_seq(server) == head


# -------------------------------------------------------------- signatures


def _forged_request(signatures: int, envelopes: int = 1, signer_names=None) -> bytes:
    payload = msgspec.msgpack.encode((Move(id="forged-many", asset=USD, source=BANKS[0], target=BANKS[1], amount=1),))
    names = signer_names or [BANKS[0]] * signatures
    sigs = tuple(Signature(name, k + 1, bytes([1]) * 64) for k, name in enumerate(names[:signatures]))
    return msgspec.msgpack.encode(SubmitRequest([Envelope("svc", payload, sigs) for _ in range(envelopes)]))


@pytest.mark.parametrize("body,status,name", [
    pytest.param(_forged_request(2, signer_names=[BANKS[0], BANKS[0]]), 400, "duplicate_signer",
                 id="an envelope naming one signer twice is refused before any signature is checked"),
    pytest.param(_forged_request(257, signer_names=[f"BANK_{k:03d}" for k in range(257)]), 413, "too_many_signatures",
                 id="an envelope of 257 signatures is refused naming signatures_per_envelope_max"),
])
def test_signature_lists_are_bounded_before_any_is_checked(server, body, status, name):
    response = httpx.post(f"{server.url}/v1/envelopes", content=body, headers={"content-type": MSGPACK}, timeout=30)
    assert (response.status_code, response.json()["name"]) == (status, name)


def _metric(server: Server, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    return next((float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " ")), 0.0)


def test_a_forged_request_costs_the_writer_one_signature_check_not_thousands(server):
    """64 envelopes, each signed 'by' 20 members with forged signatures: the writer stops at the first."""
    body = _forged_request(20, envelopes=64, signer_names=BANKS[:20])
    before = _metric(server, "dvp_signatures_checked_total")
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for _ in range(5):  # 6,400 signatures, each checked: a 14 MiB request of them held the writer 15 s
            response = http.post("/v1/envelopes", content=body, headers={"content-type": MSGPACK})
            assert (response.status_code, response.json()["name"]) == (401, "bad_signature")
    assert _metric(server, "dvp_signatures_checked_total") - before == 5


def test_bodies_in_flight_are_bounded_together_and_released(tmp_path):
    """Every connection may carry a 16 MiB body: 2,048 of them at once held 32 GiB. Their total is bounded."""
    from engine.service.wire import Limits

    db = str(tmp_path / "bodies.db")
    make_ledger(db, ["BANK_X", "BANK_Y"])
    with InProcess(db, Limits(queue_bytes_max=1 << 20)) as running:
        port = int(running.url.rsplit(":", 1)[1])
        holder = socket.create_connection(("127.0.0.1", port), timeout=10)
        holder.sendall(b"POST /v1/envelopes HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
                       b"Content-Length: 900000\r\n\r\n" + b"\x00" * 800_000)  # most of a body, the rest held back
        service = running.app.state.service
        _wait_for(lambda: service.held_bytes >= 800_000, "the server received most of the held body")
        x = Client(running.url, signer("BANK_X"), retry_seconds=0)
        big = [Move(id=f"big-{i}", asset=USD, source="BANK_X", target="BANK_Y", amount=1) for i in range(8_000)]
        with pytest.raises(ServiceError) as refused:
            x.submit(big)  # about 500 KB
        assert (refused.value.code, refused.value.name) == (503, "queue_full")
        assert "queue_bytes_max=1048576" in refused.value.detail
        holder.close()  # its bytes are released when it goes
        _wait_for(lambda: service.held_bytes == 0, "the closed connection's bytes were released")
        x.signer.seq -= 1  # the refused envelope was never judged: sign the same sequence number again
        assert set(x.submit(big).names) == {"ok"}
        again = x.submit([Move(id="small", asset=USD, source="BANK_X", target="BANK_Y", amount=1)])
        assert again.names == ["ok"], "nothing stayed reserved"
