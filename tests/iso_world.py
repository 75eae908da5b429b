"""A small world for the ISO 20022 tests: a set-up, parties, and sese.023 documents built as members send them.

Takes nothing; gives the set-up (`SETUP`: USD, a note, an ISIN-named
bond, a fund quoted per unit; participants A, B, C), a parties file (A and
B by BIC, C by LEI alone), `dvp` events, `instruction` (a sese.023 tree by
element name, one side or already matched) and `xml` (its document, through
the bindings and xsdata), and helpers to write files, import and run `dvp`.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

from xsdata.models.datatype import XmlDateTime

from protocols.iso20022 import mapping as M
from protocols.iso20022.importing import import_files
from protocols.iso20022.messages import SESE023
from protocols.iso20022.xmlio import Writer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden" / "iso20022"

SETUP = [
    {"type": "config", "mode": "gross"},
    {"type": "asset", "id": "USD", "kind": "cash", "decimals": 2},
    {"type": "asset", "id": "UST", "kind": "security", "decimals": 0, "class": "ust_note", "price": "99.5"},
    {"type": "asset", "id": "US912828XG50", "kind": "security", "decimals": 0, "price": "100"},
    {"type": "asset", "id": "FUND", "kind": "security", "decimals": 3, "price_basis": "per_unit", "price": "10"},
    {"type": "participant", "id": "A"},
    {"type": "participant", "id": "B"},
    {"type": "participant", "id": "C"},
    {"type": "deposit", "participant": "A", "asset": "UST", "amount": 1000},
    {"type": "deposit", "participant": "A", "asset": "US912828XG50", "amount": 1000},
    {"type": "deposit", "participant": "A", "asset": "FUND", "amount": "100.000"},
    {"type": "deposit", "participant": "B", "asset": "USD", "amount": "5000.00"},
    {"type": "deposit", "participant": "C", "asset": "USD", "amount": "5000.00"},
]
PARTIES_CSV = "participant,bic,lei\nA,AAAAUS33,\nB,BBBBGB2LXXX,\nC,,5493001KJTIIGC8Y1R12\n"
BIC_A, BIC_B, LEI_C = "AAAAUS33", "BBBBGB2LXXX", "5493001KJTIIGC8Y1R12"


def dvp(n: int, at: str = "2026-03-02T10:00:00Z", **over) -> dict:
    event = {"type": "dvp", "at": at, "id": f"T{n}", "seller": "A", "buyer": "B", "security": "UST",
             "quantity": 10, "cash_asset": "USD", "amount": "99.50"}
    event.update(over)
    return event


def write(path: Path, events: list) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def setup_files(tmp_path: Path) -> tuple[Path, Path]:
    setup = write(tmp_path / "setup.jsonl", SETUP)
    parties = tmp_path / "parties.csv"
    parties.write_text(PARTIES_CSV)
    return setup, parties


# ---------------------------------------------------------- building sese.023 by hand, for import tests


def party(bic: str | None = None, lei: str | None = None) -> dict:
    return {"Id": {"AnyBIC": bic} if bic else {"PrtryId": {"Id": "X", "Issr": "test"}}, "LEI": lei}


def instruction(trade: str = "T1", side: str = "DELI", payment: str = "APMT", owner: dict | None = None,
                counterparty: dict | None = None, quantity: str = "10", amount: str | None = "99.50",
                currency: str = "USD", when: str = "2026-03-02T10:00:00Z", matched: bool = False,
                security: dict | None = None, tx_id: str | None = None) -> dict:
    """A sese.023 tree (element names), as a member would send it."""
    owner = owner or party(BIC_A if side == "DELI" else BIC_B)
    counterparty = counterparty or party(BIC_B if side == "DELI" else BIC_A)
    other = "RcvgSttlmPties" if side == "DELI" else "DlvrgSttlmPties"
    tree = {
        "TxId": tx_id or f"{trade}-{side}",
        "SttlmTpAndAddtlParams": {"SctiesMvmntTp": side, "Pmt": payment, "CmonId": trade},
        "TradDtls": {"SttlmDt": {"Dt": {"DtTm": XmlDateTime.from_string(when)}},
                     "MtchgSts": {"Cd": "MACH"} if matched else None},
        "FinInstrmId": security or {"OthrId": {"Id": "UST", "Tp": {"Prtry": "LEDGER-ASSET"}}},
        "QtyAndAcctDtls": {"SttlmQty": {"Qty": {"FaceAmt": M.Decimal(quantity)}}, "AcctOwnr": owner},
        "SttlmParams": {"SctiesTxTp": {"Cd": "TRAD"}},
        other: {"Pty1": counterparty},
        "SttlmAmt": None if amount is None else {"Amt": {"value": M.Decimal(amount), "Ccy": currency},
                                                 "CdtDbtInd": "CRDT" if side == "DELI" else "DBIT"},
    }
    return tree


def xml(tree: dict) -> bytes:
    return Writer().write(M.build(SESE023.binding, {"SctiesSttlmTxInstr": tree}))


def save(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def run_import(tmp_path: Path, files: list[Path], out: str = "out.jsonl"):
    setup, parties = setup_files(tmp_path)
    result = import_files([str(f) for f in files], str(setup), str(tmp_path / out), parties_path=str(parties))
    lines = (tmp_path / out).read_text().splitlines()
    return result, [json.loads(line) for line in lines[len(SETUP):]]


def cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def fix(tree: dict, path: str, value) -> dict:
    tree = copy.deepcopy(tree)
    node = tree
    *steps, last = path.split("/")
    for step in steps:
        node = node[step]
    node[last] = value
    return tree
