"""Outcomes out: a finished replay's trades and margin calls as ISO 20022 messages (`dvp replay --iso-out`).

Takes a finished `protocols.replay.Replay` (its outcomes, and its main
ledger still open: a queued trade's book entry says which leg it waits
on) and an output folder; gives, written whole under a temporary name and
then renamed:

- `sese024-NNNNNNNN-<id>.xml`: a sese.024.001.12 status advice for every
  trade (DvP, delivery of a security, repo opening leg): matched;
  accepted and settled; pending and why (lack of securities, of money,
  blocked, awaiting the net cycle); cancelled at the cut-off, failing and
  why (who was short of what, by how much); or rejected and why;
- `sese025-NNNNNNNN-<id>.xml`: a sese.025.001.11 confirmation for every
  trade that settled (a repo: its opening leg);
- `colr003-NNNNNNNN-<repo>-<n>.xml`: a colr.003.001.05 margin call
  request for every margin call (party A the lender, B the borrower);
- `colr004-NNNNNNNN-<repo>-<n>.xml`: a colr.004.001.05 response saying
  how the call ended (met, with the amount; defaulted; open; withdrawn;
  closed with its repo);
- `parties.csv`: the BICs and LEIs the messages use.

Every message is from the delivering side's point of view (DELI), as
`dvp iso export` writes the instructions, and is checked against its
schema's rules before it is written. A trade no message can carry (a
delivery of cash, an id longer than 35 characters, a cash asset that is
not an ISO 4217 code) is counted in `skipped` with the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from engine.records import Move

from .. import dvp as dvp_protocol
from ..replay.read import TradeFile
from ..repo import OpenRepo
from ..tradefile import format_minor, format_time
from . import mapping as M
from .files import check_folder, staged
from .instruct import ExportResult, catalog, file_name
from .messages import COLR003, COLR004, SESE024, SESE025
from .validate import problems
from .xmlio import Writer

REASON_CODES = {"insufficient_securities": "LACK", "insufficient_cash": "MONY", "party_frozen": "BLOC"}
WAITS_CODES = {"securities": "LACK", "cash": "MONY"}
RESPONSES = {"met": "MEET", "defaulted": "DFLT", "open": "OPEN", "withdrawn": "WDRN", "closed": "CLSD"}
TEXT_MAX = 210  # Max210Text


@dataclass
class StatusResult:
    sese024: int = 0
    sese025: int = 0
    colr003: int = 0
    colr004: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class Leg:
    """A trade as one securities movement: who delivers what to whom, against how much cash."""

    ident: str
    payment: str  # APMT | FREE
    deliverer: str
    receiver: str
    security: str
    quantity: int
    cash_asset: str | None
    amount: int | None
    tx_type: str  # TRAD | REPU


def leg_of(outcome: Any) -> Leg:
    t = outcome.terms
    if isinstance(t, Move):
        return Leg(outcome.id, "FREE", t.source, t.target, t.asset, t.amount, None, None, "TRAD")
    if isinstance(t, OpenRepo):
        return Leg(outcome.id, "APMT", t.borrower, t.lender, t.collateral, t.quantity, t.cash_asset, t.principal,
                   "REPU")
    return Leg(outcome.id, "APMT", t.seller, t.buyer, t.security, t.quantity, t.cash_asset, t.amount, "TRAD")


def _text(text: str) -> str:
    return text if len(text) <= TEXT_MAX else text[: TEXT_MAX - 3] + "..."


class Statuses:
    """Build the status, confirmation and margin messages of one replay."""

    def __init__(self, assets: M.Assets, parties, waits: dict[tuple[str, str, str], str], mode: str):
        self.assets = assets
        self.parties = parties
        self.waits = waits
        self.mode = mode

    def _money(self, asset: str, minor: int) -> dict[str, Any]:
        info = self.assets.get(asset)
        return {"value": M.to_decimal(minor, info.decimals), "Ccy": info.currency}

    def currency_of(self, asset: str) -> str:
        info = self.assets.get(asset)
        return info.currency if info is not None else ""

    def _why_not(self, leg: Leg) -> str | None:
        """Why no sese.024/025 can carry this trade, or None."""
        if len(leg.ident) > 35:
            return f"trade {leg.ident[:40]}: its id is longer than 35 characters (TxId is Max35Text)"
        info = self.assets.get(leg.security)
        if info is None or info.kind != "security":
            return f"trade {leg.ident}: a movement of cash, not of a security (no sese message carries it)"
        if leg.cash_asset is not None and not self.currency_of(leg.cash_asset):
            return (f"trade {leg.ident}: cash asset {leg.cash_asset!r} is not an ISO 4217 currency code and its asset "
                    "line names none")
        return None

    def _details(self, leg: Leg) -> dict[str, Any]:
        info = self.assets.get(leg.security)
        quantity = M.quantity_tree(info, M.to_decimal(leg.quantity, info.decimals))
        return {"FinInstrmId": M.security_tree(info), "quantity": quantity,
                "owner": M.party_tree(self.parties, leg.deliverer),
                "receiver": {"Pty1": M.party_tree(self.parties, leg.receiver)},
                "amount": None if leg.cash_asset is None else
                {"Amt": self._money(leg.cash_asset, leg.amount), "CdtDbtInd": "CRDT"}}

    def advice(self, outcome: Any, leg: Leg) -> Any:
        """sese.024: matched, and accepted, pending, cancelled and failing, or rejected; each with why."""
        d = self._details(leg)
        processing: dict[str, Any] = {"AckdAccptd": {"NoSpcfdRsn": "NORE"}}
        settlement = None
        status = outcome.status
        why = outcome.reason or "failed"
        if outcome.short is not None:
            short = outcome.short
            decimals = self.assets.get(short.asset).decimals if self.assets.get(short.asset) else 0
            why += f": {short.party} short of {short.asset} by {format_minor(short.amount, decimals)}"
        if status == "queued":
            if self.mode == "net" and outcome.kind == "dvp":
                code, text = "OTHR", "awaiting the close of the net settlement cycle"
            else:
                waits = self.waits.get((leg.deliverer, leg.receiver, leg.ident), "")
                code = WAITS_CODES.get(waits, "OTHR")
                text = {"LACK": f"queued: {leg.deliverer} lacks {leg.security}",
                        "MONY": f"queued: {leg.receiver} lacks {leg.cash_asset}"}.get(
                    code, "queued: a party is blocked or inactive")
            settlement = {"Pdg": {"Rsn": {"Cd": {"Cd": code}, "AddtlRsnInf": _text(text)}}}
        elif status == "failed" and outcome.kind == "dvp":
            when = f" at {format_time(outcome.failed_at)}" if outcome.failed_at is not None else ""
            processing = {"Canc": {"Rsn": {"Cd": {"Cd": "CANS"}, "AddtlRsnInf": _text(f"{why}{when}")}}}
            settlement = {"Flng": {"Rsn": {"Cd": {"Cd": REASON_CODES.get(outcome.reason, "OTHR")},
                                           "AddtlRsnInf": _text(why)}}}
        elif status == "failed":
            processing = {"Rjctd": {"Rsn": {"Cd": {"Cd": "OTHR"}, "AddtlRsnInf": _text(why)}}}
        extra = None
        if outcome.kind == "repo":
            extra = _text(f"repo {leg.ident}: {status}" + (f" ({outcome.reason})" if outcome.reason else ""))
        tree = {
            "TxId": {"AcctOwnrTxId": leg.ident, "AcctSvcrTxId": leg.ident, "CmonId": leg.ident},
            "PrcgSts": processing,
            "MtchgSts": {"Mtchd": {}},
            "SttlmSts": settlement,
            "TxDtls": {"FinInstrmId": d["FinInstrmId"], "SttlmQty": {"Qty": d["quantity"]},
                       "SttlmAmt": d["amount"], "SttlmDt": {"Dt": {"DtTm": M.xml_time(outcome.queued_at)}},
                       "SctiesMvmntTp": "DELI", "Pmt": leg.payment,
                       "SttlmParams": {"SctiesTxTp": {"Cd": leg.tx_type}},
                       "AcctOwnr": d["owner"], "RcvgSttlmPties": d["receiver"],
                       "SttlmInstrPrcgAddtlDtls": extra},
        }
        return M.build(SESE024.binding, {"SctiesSttlmTxStsAdvc": tree})

    def confirmation(self, outcome: Any, leg: Leg) -> Any:
        """sese.025: the trade settled, when, and what moved."""
        d = self._details(leg)
        settled_at = outcome.settled_at if outcome.settled_at is not None else outcome.queued_at
        tree = {
            "TxIdDtls": {"AcctOwnrTxId": leg.ident, "AcctSvcrTxId": leg.ident, "SctiesMvmntTp": "DELI",
                         "Pmt": leg.payment, "CmonId": leg.ident},
            "TradDtls": {"SttlmDt": {"Dt": {"DtTm": M.xml_time(outcome.queued_at)}},
                         "FctvSttlmDt": {"Dt": {"DtTm": M.xml_time(settled_at)}}},
            "FinInstrmId": d["FinInstrmId"],
            "QtyAndAcctDtls": {"SttldQty": {"Qty": d["quantity"]}, "AcctOwnr": d["owner"]},
            "SttlmParams": {"SctiesTxTp": {"Cd": leg.tx_type}},
            "RcvgSttlmPties": d["receiver"],
            "SttldAmt": d["amount"],
        }
        return M.build(SESE025.binding, {"SctiesSttlmTxConf": tree})

    def _party_choice(self, participant: str) -> dict[str, Any]:
        bic = self.parties.bic.get(participant)
        if bic:
            return {"AnyBIC": bic}
        return {"PrtryId": {"Id": self.parties.lei[participant], "Issr": "GLEIF", "SchmeNm": "LEI"}}

    def _obligation(self, repo: Any, call: Any) -> dict[str, Any]:
        return {"PtyA": self._party_choice(repo.lender), "PtyB": self._party_choice(repo.borrower), "XpsrTp": "REPO",
                "ValtnDt": {"DtTm": M.xml_time(call.at)}}

    def _agreement(self, outcome: Any) -> dict[str, Any]:
        return {"AgrmtDtls": _text(f"intraday repo {outcome.id}"), "AgrmtId": outcome.id,
                "AgrmtDt": M.xml_date(outcome.queued_at), "BaseCcy": self.currency_of(outcome.terms.cash_asset)}

    def request(self, ident: str, outcome: Any, call: Any) -> Any:
        """colr.003: the lender (party A) calls the borrower (party B) for `amount` of margin."""
        repo = outcome.terms
        tree = {"TxId": ident, "Oblgtn": self._obligation(repo, call), "Agrmt": self._agreement(outcome),
                "MrgnCallRslt": {"MrgnCallRslt": {"MrgnCallAmt": {"DueToPtyA": self._money(repo.cash_asset,
                                                                                            call.amount)}}}}
        return M.build(COLR003.binding, {"MrgnCallReq": tree})

    def response(self, ident: str, request_id: str, outcome: Any, call: Any) -> Any:
        """colr.004: how the call ended, and the amount agreed (met: the call's amount; otherwise zero)."""
        repo = outcome.terms
        agreed = call.amount if call.status == "met" else 0
        when = f" at {format_time(call.met_at)}" if call.met_at is not None else ""
        text = {"met": f"met{when} from the borrower's cash",
                "defaulted": "not met by its deadline: the repo defaulted",
                "open": "still open at the end of the file",
                "withdrawn": "withdrawn: the deficit came back within the minimum transfer amount",
                "closed": "closed with its repo (terminated early by agreement)"}.get(call.status, call.status)
        tree = {"TxId": ident, "Oblgtn": self._obligation(repo, call), "Agrmt": self._agreement(outcome),
                "AgrdAmtDueToA": {"AgrdAmtDtls": {"VartnMrgnAmt": {
                    "AgrdAmt": self._money(repo.cash_asset, agreed), "MrgnCallReqId": request_id,
                    "AddtlInf": _text(text)}}},
                "RspnDtls": {"RspnTpDtls": {"Prtry": {"Id": RESPONSES.get(call.status, "OTHR"), "Issr": M.ISSUER}},
                             "Desc": _text(f"margin call {request_id}: {text}")[:140]}}
        return M.build(COLR004.binding, {"MrgnCallRspn": tree})


def _waits(run: Any) -> dict[tuple[str, str, str], str]:
    """Each queued DvP's blocking leg, from the main ledger's book (empty if the book is not there)."""
    try:
        book = run.ledger.state.protocols.get(dvp_protocol.NAME)
    except Exception:  # noqa: BLE001 - a closed ledger: no reasons beyond the code
        return {}
    if book is None:
        return {}
    return {(t.seller, t.buyer, t.trade): t.waits for t in book.queue.values()}


def write_outcomes(run: Any, out_dir: str, *, parties_path: str | None = None, pretty: bool = True) -> StatusResult:
    """Write the ISO 20022 messages of a finished replay's outcomes into `out_dir`."""
    info = ExportResult()
    assets, _participants, parties = catalog(TradeFile(run.path), parties_path, info)
    statuses = Statuses(assets, parties, _waits(run), run.mode)
    writer = Writer(pretty=pretty)
    result = StatusResult()
    with staged(out_dir) as staging:
        def put(kind, n: int, ident: str, message: Any) -> None:
            wrong = problems(message)
            if wrong:  # a value no message may carry: say so, write nothing for it
                first = wrong[0]
                raise ValueError(f"{kind.name} {ident}: {first.path} = {first.value!r}: {first.rule}")
            with open(os.path.join(staging, file_name(kind.folder, n, ident)), "wb") as handle:
                handle.write(writer.write(message))

        n = 0
        for outcome in run.accounts.trades.values():
            leg = leg_of(outcome)
            why = statuses._why_not(leg)
            if why:
                result.skipped.append(why)
                continue
            n += 1
            try:
                put(SESE024, n, leg.ident, statuses.advice(outcome, leg))
                result.sese024 += 1
                if outcome.status in ("settled", "open", "closed", "defaulted"):
                    put(SESE025, n, leg.ident, statuses.confirmation(outcome, leg))
                    result.sese025 += 1
            except ValueError as exc:
                result.skipped.append(str(exc))
        n = 0
        for key, call in run.accounts.margin_calls.items():
            outcome = run.accounts.trades.get(call.repo)
            repo_id, _, number = key.rpartition("#")
            ident = f"{repo_id}-{number}"
            if outcome is None or len(ident) > 35 or not statuses.currency_of(outcome.terms.cash_asset):
                result.skipped.append(f"margin call {key}: no colr message can carry it (id or currency)")
                continue
            n += 1
            try:
                put(COLR003, n, ident, statuses.request(ident, outcome, call))
                result.colr003 += 1
                put(COLR004, n, ident, statuses.response(f"{ident}-R"[:35], ident, outcome, call))
                result.colr004 += 1
            except ValueError as exc:
                result.skipped.append(str(exc))
        with open(os.path.join(staging, "parties.csv"), "w", encoding="utf-8") as handle:
            handle.write(parties.to_csv())
    return result


__all__ = ["StatusResult", "check_folder", "write_outcomes"]
