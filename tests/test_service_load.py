"""The service under load and faults: 50 concurrent clients, a SIGKILL mid-load, the event stream, mutual TLS.

Every test runs a real `dvp serve` on 127.0.0.1 and bounds its work in
count and time. Each client owns its own two banks, so the sequence
numbers of its envelopes never race another client's.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

pytest.importorskip("starlette")  # the service extra: pip install -e '.[service]'
pytest.importorskip("uvicorn")

import httpx  # noqa: E402
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.client import Client, tls_context
from engine.ledger import Ledger
from engine.records import Envelope, Move
from service_world import AUDITOR, BOND, BONDS_EACH, CASH_EACH, ROOT, USD, Server, banks, make_ledger, signer

LOAD_SECONDS = 3.0
REQUESTS_PER_CLIENT_MAX = 400


def dvp_envelope(k: int, i: int, seller: str, buyer: str, seq_owner: dict) -> Envelope:
    """Client k's i-th DvP between its two banks, direction alternating, signed by both."""
    s, b = (seller, buyer) if i % 2 == 0 else (buyer, seller)
    env = seq_owner[s].envelope([
        Move(id=f"c{k}-{i}-sec", asset=BOND, source=s, target=b, amount=10 + i % 7, linked=True),
        Move(id=f"c{k}-{i}-cash", asset=USD, source=b, target=s, amount=1_000 + i % 13)])
    return seq_owner[b].cosign(env)


def expected_balances(members: list[str], applied: list[tuple[str, str, int, int]]) -> dict[tuple[str, str], int]:
    out = {(m, a): q for m in members for a, q in ((USD, CASH_EACH), (BOND, BONDS_EACH))}
    for seller, buyer, quantity, amount in applied:
        out[seller, BOND] -= quantity
        out[buyer, BOND] += quantity
        out[buyer, USD] -= amount
        out[seller, USD] += amount
    return out


def journal_commands(db: str) -> tuple[Ledger, Counter]:
    """Open the journal and count, per command id, the entries where it succeeded."""
    ledger = Ledger.open(db)
    ok = Counter()
    for entry in ledger.entries(1):
        for cmd, code in zip(ledger.commands(entry), entry.results):
            if code == 0:
                ok[cmd.id] += 1
    return ledger, ok


class Worker(threading.Thread):
    """One client submitting its own DvPs in order, each until it is acknowledged."""

    def __init__(self, k: int, url: str, until: float, retry_seconds: float = 30.0):
        super().__init__(daemon=True)
        self.k = k
        self.seller, self.buyer = f"BANK_{2 * k:02d}", f"BANK_{2 * k + 1:02d}"
        self.signers = {self.seller: signer(self.seller), self.buyer: signer(self.buyer)}
        self.client = Client(url, self.signers[self.seller], retry_seconds=retry_seconds)
        self.until = until
        self.acked: list = []  # (envelope, Submitted)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for i in range(REQUESTS_PER_CLIENT_MAX):
                if time.monotonic() > self.until:
                    break
                env = dvp_envelope(self.k, i, self.seller, self.buyer, self.signers)
                self.acked.append((env, i, self.client.submit(env)))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.client.close()

    def pairs(self) -> list[tuple[str, str, int, int]]:
        out = []
        for _env, i, _done in self.acked:
            s, b = (self.seller, self.buyer) if i % 2 == 0 else (self.buyer, self.seller)
            out.append((s, b, 10 + i % 7, 1_000 + i % 13))
        return out


def run_workers(workers: list[Worker]) -> None:
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=LOAD_SECONDS + 120)
        assert not w.is_alive(), f"client {w.k} did not finish"
        assert w.error is None, f"client {w.k}: {w.error!r}"


def check_journal(db: str, members: list[str], workers: list[Worker]) -> Ledger:
    """Every acknowledged envelope is in the entry it was acknowledged with, applied once; value is conserved."""
    ledger, ok = journal_commands(db)
    hashes = {seq: digest.hex() for seq, digest, _body in ledger.journal.rows(0)}
    acked_ids = set()
    for w in workers:
        for env, i, done in w.acked:
            assert done.names == ["ok", "ok"], (w.k, i, done.names)
            assert hashes[done.seq] == done.hash, "the acknowledged entry is in the journal, unchanged"
            assert env in ledger.entry(done.seq).envelopes
            acked_ids.update((f"c{w.k}-{i}-sec", f"c{w.k}-{i}-cash"))
    moved = {cid for cid in ok if cid.startswith("c")}
    assert moved == acked_ids, "nothing applied that was not acknowledged, nothing acknowledged that is missing"
    assert all(ok[cid] == 1 for cid in acked_ids), "no command applied twice"
    want = expected_balances(members, [p for w in workers for p in w.pairs()])
    for (member, asset), amount in want.items():
        assert ledger.balance(member, asset) == amount, (member, asset)
    for asset in (USD, BOND):
        held = sum(book for book in ledger.state.balances[asset].values())
        assert held == ledger.state.supply[asset], "value is conserved"
    return ledger


# ------------------------------------------------------------------ load


def test_fifty_clients_under_load_lose_nothing_and_double_nothing(tmp_path):
    members = banks(100)
    db = str(tmp_path / "load.db")
    make_ledger(db, members)
    with Server(db) as server:
        workers = [Worker(k, server.url, time.monotonic() + LOAD_SECONDS) for k in range(50)]
        run_workers(workers)
        metrics = httpx.get(f"{server.url}/metrics").text
    requests = sum(len(w.acked) for w in workers)
    assert requests >= 50
    entries = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("dvp_entries_total")))
    assert entries < requests, "concurrent requests were grouped into fewer journal entries"
    check_journal(db, members, workers).close()


# ----------------------------------------------------------------- crash


def test_a_server_killed_mid_load_keeps_every_acknowledged_entry_and_applies_none_twice(tmp_path):
    members = banks(40)
    db = str(tmp_path / "crash.db")
    make_ledger(db, members)
    server = Server(db).start()
    try:
        workers = [Worker(k, server.url, time.monotonic() + LOAD_SECONDS + 2, retry_seconds=60) for k in range(20)]
        for w in workers:
            w.start()
        deadline = time.monotonic() + 30
        while sum(len(w.acked) for w in workers) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        acked_before = sum(len(w.acked) for w in workers)
        assert acked_before >= 100, "the load started"
        server.kill()
        time.sleep(0.3)  # clients meet a closed port and retry the same envelopes
        server = Server(db, port=server.port).start()
        for w in workers:
            w.join(timeout=120)
            assert not w.is_alive() and w.error is None, (w.k, w.error)
        assert sum(len(w.acked) for w in workers) > acked_before, "clients carried on after the restart"
    finally:
        server.stop()
    check_journal(db, members, workers).close()
    verify = subprocess.run([sys.executable, "-m", "engine.cli", "verify", db], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert verify.returncode == 0, verify.stderr
    assert "dvp verify: OK" in verify.stdout


# ---------------------------------------------------------------- stream


def test_the_event_stream_delivers_every_entry_once_in_order_across_a_reconnect(tmp_path):
    members = banks(4)
    db = str(tmp_path / "stream.db")
    make_ledger(db, members)
    server = Server(db).start()
    seen: list = []
    mine: list = []
    target = {"seq": None}

    def follow(name: str, into: list) -> None:
        with Client(server.url, signer(name), retry_seconds=60) as reader:
            for view in reader.subscribe(0):
                into.append(view)
                if target["seq"] is not None and view.seq >= target["seq"]:
                    return

    readers = [threading.Thread(target=follow, args=(AUDITOR, seen), daemon=True),
               threading.Thread(target=follow, args=(members[2], mine), daemon=True)]
    try:
        for t in readers:
            t.start()
        s = {m: signer(m) for m in members}
        c = Client(server.url, s[members[0]], retry_seconds=60)
        for i in range(10):
            c.submit(dvp_envelope(0, i, members[0], members[1], s))
        time.sleep(0.5)
        server.kill()  # both streams break mid-way
        server = Server(db, port=server.port).start()
        for i in range(10, 20):
            last = c.submit(dvp_envelope(0, i, members[0], members[1], s))
        other = Client(server.url, s[members[2]], retry_seconds=60)
        target["seq"] = other.health().head_seq + 1  # before the submit: a stream may deliver it before it answers
        last = other.submit(dvp_envelope(1, 0, members[2], members[3], s))
        assert last.seq == target["seq"]
        for t in readers:
            t.join(timeout=90)
            assert not t.is_alive(), "the stream resumed and reached the last entry"
        c.close()
        other.close()
    finally:
        server.stop()
    ledger = Ledger.open(db)
    hashes = [digest.hex() for _seq, digest, _body in ledger.journal.rows(0)]
    ledger.close()
    assert [v.seq for v in seen] == list(range(len(hashes))), "every entry once, in order"
    assert [v.hash for v in seen] == hashes
    assert all(v.complete for v in seen), "the auditor sees everything"
    assert [v.seq for v in mine] == list(range(len(hashes)))
    shown = [c.command["id"] for v in mine for c in v.commands if c.command["type"] == "move"]
    assert shown == ["c1-0-sec", "c1-0-cash"], "a bank sees its own moves, not others'"


# ------------------------------------------------------------------- TLS


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer_name: str, key, issuer_key, ca: bool = False, ip: str | None = None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer_name))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                                        critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path, cert, key) -> tuple[str, str]:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return str(path.with_suffix(".crt")), str(path.with_suffix(".key"))


@pytest.fixture
def pki(tmp_path):
    keys = {n: ec.generate_private_key(ec.SECP256R1()) for n in ("ca", "server", "client", "rogue_ca", "rogue")}
    ca = _cert("dvp test CA", "dvp test CA", keys["ca"], keys["ca"], ca=True)
    rogue_ca = _cert("rogue CA", "rogue CA", keys["rogue_ca"], keys["rogue_ca"], ca=True)
    files = {
        "ca": _write(tmp_path / "ca", ca, keys["ca"])[0],
        "server": _write(tmp_path / "server", _cert("127.0.0.1", "dvp test CA", keys["server"], keys["ca"],
                                                    ip="127.0.0.1"), keys["server"]),
        "client": _write(tmp_path / "client", _cert("BANK_00", "dvp test CA", keys["client"], keys["ca"]),
                         keys["client"]),
        "rogue": _write(tmp_path / "rogue", _cert("BANK_00", "rogue CA", keys["rogue"], keys["rogue_ca"]),
                        keys["rogue"]),
    }
    _write(tmp_path / "rogue_ca", rogue_ca, keys["rogue_ca"])
    return files


def _probe(port: int, context: ssl.SSLContext, raise_handshake: bool = False) -> str:
    """Handshake, send a plain health request, and say what came back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
        except ssl.SSLError:
            if raise_handshake:
                raise
            return "refused by TLS"
        with tls:
            try:
                tls.sendall(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                data = tls.recv(65536)
            except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
                return "refused by TLS"
            return data.decode("latin-1") if data else "refused by TLS"


def test_mutual_tls_refuses_a_client_without_a_certificate_signed_by_the_ca(tmp_path, pki):
    db = str(tmp_path / "tls.db")
    make_ledger(db, banks(2))
    cert, key = pki["server"]
    with Server(db, "--tls-cert", cert, "--tls-key", key, "--client-ca", pki["ca"]) as server:
        assert server.url.startswith("https://")
        good = Client(server.url, signer("BANK_00"), tls=tls_context(pki["ca"], *pki["client"]))
        assert good.health().status == "ok" and good.balances()[USD] == CASH_EACH
        good.close()
        for context in (tls_context(pki["ca"]), tls_context(pki["ca"], *pki["rogue"])):
            refused = Client(server.url, signer("BANK_00"), tls=context, retry_seconds=0)
            with pytest.raises(httpx.TransportError):
                refused.health()
            refused.close()
            assert _probe(server.port, context) == "refused by TLS", "no HTTP byte ever comes back"
            context.maximum_version = ssl.TLSVersion.TLSv1_2  # TLS 1.2: the handshake itself fails
            with pytest.raises(ssl.SSLError):
                _probe(server.port, context, raise_handshake=True)
        assert _probe(server.port, tls_context(pki["ca"], *pki["client"])).startswith("HTTP/1.1 200")
        with pytest.raises(httpx.TransportError):  # plain HTTP to a TLS port gets no answer either
            httpx.get(server.url.replace("https://", "http://") + "/v1/health", timeout=5)
