"""A ledger on disk and a real `dvp serve` on 127.0.0.1 (a random port), for the service tests.

`make_ledger` creates a journal with `Ledger.create`: an operator, an
issuer, compliance, an auditor and banks, USD and a bond, every bank
funded. `Server` runs `dvp serve` in a subprocess, reads the address it
prints, and stops it (gracefully, or with SIGKILL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.identity import Signer, derive_key
from engine.ledger import Ledger, ManualClock
from engine.records import Admit, Asset, Mint, RegisterAsset

CHAIN = "svc"
T0 = 1_772_443_800
OPERATOR, ISSUER, COMPLIANCE, AUDITOR, ORACLE = "OP", "ISSUER", "COMPLIANCE", "AUDITOR", "ORACLE"
USD, BOND = "USD", "BOND"
CASH_EACH = 1_000_000_000  # USD 10,000,000.00 per bank
BONDS_EACH = 1_000_000
STARTUP_SECONDS_MAX = 30
ROOT = Path(__file__).resolve().parent.parent


def signer(name: str, seq: int = 0) -> Signer:
    return Signer(name, derive_key(f"service-test/{name}"), CHAIN, seq)


def banks(n: int) -> list[str]:
    return [f"BANK_{i:02d}" for i in range(n)]


def make_ledger(path: str, members: list[str], protocols=None) -> dict[str, Signer]:
    """Create a funded ledger at `path`; return every member's signer (sequence numbers as the ledger has them)."""
    names = [OPERATOR, ISSUER, COMPLIANCE, AUDITOR, ORACLE, *members]
    s = {n: signer(n) for n in names}
    ledger = Ledger.create(path, chain_id=CHAIN, operator=OPERATOR, operator_key=s[OPERATOR].public_key,
                           clock=ManualClock(T0), protocols=protocols)
    setup = [Admit(id="adm-issuer", participant=ISSUER, roles=("issuer",), public_key=s[ISSUER].public_key),
             Admit(id="adm-compliance", participant=COMPLIANCE, roles=("compliance",),
                   public_key=s[COMPLIANCE].public_key),
             Admit(id="adm-auditor", participant=AUDITOR, roles=("auditor",), public_key=s[AUDITOR].public_key),
             Admit(id="adm-oracle", participant=ORACLE, roles=("oracle",), public_key=s[ORACLE].public_key)]
    setup += [Admit(id=f"adm-{m}", participant=m, public_key=s[m].public_key) for m in members]
    setup += [RegisterAsset(id="reg-usd", asset=Asset(id=USD, kind="cash", decimals=2, issuer=ISSUER)),
              RegisterAsset(id="reg-bond", asset=Asset(id=BOND, kind="security", decimals=0, issuer=ISSUER,
                                                        asset_class="ust_note", maturity="2030-02-15"))]
    mints = [Mint(id=f"mint-{a}-{m}", asset=a, target=m, amount=q)
             for m in members for a, q in ((USD, CASH_EACH), (BOND, BONDS_EACH))]
    try:
        for who, commands in ((OPERATOR, setup), (ISSUER, mints)):
            results = ledger.submit([s[who].envelope(commands)])
            assert results == [0] * len(commands), results
    finally:
        ledger.close()
    return s


class Server:
    """`dvp serve` in a subprocess on 127.0.0.1; `url` once it listens."""

    def __init__(self, db: str, *extra: str, port: int = 0):
        self.db = db
        self.extra = extra
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> Server:
        command = [sys.executable, "-m", "engine.cli", "serve", "--db", self.db,
                   "--listen", f"127.0.0.1:{self.port}", *self.extra]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                     env=env)
        deadline = time.monotonic() + STARTUP_SECONDS_MAX
        line = self.proc.stdout.readline()
        if "listening on" not in line or time.monotonic() > deadline:
            self.proc.kill()
            raise RuntimeError(f"dvp serve did not start: {line!r} {self.proc.stderr.read()}")
        self.url = line.split("listening on ")[1].split()[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed but what was committed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
