"""The service against a hostile user, on a real `dvp serve` on 127.0.0.1: each test is one probe that once broke it.

One server per module (`--clock ledger`, time at T0); each test takes its
own banks, so tests do not depend on one another. Probes that need a
server of their own (limits, faults) start one.
"""

from __future__ import annotations

import base64

import pytest

pytest.importorskip("starlette")  # the service extra: pip install -e '.[service]'
pytest.importorskip("uvicorn")

import httpx  # noqa: E402
import msgspec  # noqa: E402

from engine.client import Client  # noqa: E402
from engine.records import Move  # noqa: E402
from engine.service.auth import sign_request  # noqa: E402
from service_world import USD, Server, banks, make_ledger, signer  # noqa: E402

BANKS = banks(24)


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
