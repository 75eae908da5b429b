"""Export: a trade file's trades as sese.023 settlement instructions (`dvp iso export`).

Takes a trade file (JSON Lines or CSV) and an output folder; gives, in
that folder (written whole under a temporary name, then renamed):

- `sese023-NNNNNNNN-<id>.xml`: one sese.023.001.11 per `dvp` (DVP) and
  per `deliver` of a security (FOP), numbered in file order, each the
  delivering side's instruction marked already matched (`MtchgSts` MACH),
  so it imports alone as the trade it came from;
- `setup.jsonl`: the file's set-up lines (assets, participants, deposits,
  config) and the timed lines no sese.023 carries (cut-offs, prices,
  repos, substitutions, deliveries of cash), in file order;
- `parties.csv`: participant id -> BIC and LEI (from `--parties`, else the
  participant lines' own `bic`/`lei` fields, else generated, see
  `parties.py`).

Lines the replay would reject (unknown names, bad amounts, ...) are
reported with their line number and left out. Importing the folder
(`dvp iso import DIR --setup DIR/setup.jsonl --parties DIR/parties.csv`,
which reads its `*.xml` files in name order) gives back the trade file.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..replay.read import TradeFile
from ..tradefile import SETUP_TYPES, AssetEvent, BadLine, DeliverEvent, DvpEvent, ParticipantEvent, parse_time, to_minor
from . import mapping as M
from . import parties as P
from .messages import SESE023
from .files import staged
from .validate import problems
from .xmlio import Writer

TX_ID_LENGTH_MAX = 35  # Max35Text: TxId and CmonId
FILE_ID_LENGTH_MAX = 80


@dataclass
class ExportResult:
    """What an export wrote, and what it could not."""

    messages: int = 0
    setup_lines: int = 0
    carried: dict[str, int] = field(default_factory=dict)  # timed lines kept in setup.jsonl, by type
    errors: list[str] = field(default_factory=list)  # "line N: ...": lines not exported
    notes: list[str] = field(default_factory=list)
    generated: int = 0  # participants given generated BICs and LEIs


class _Codes(msgspec.Struct):
    """A participant's or an asset's optional ISO 20022 identifiers on its line (the replay ignores them)."""

    bic: str = ""
    lei: str = ""
    isin: str = ""
    currency: str = ""


_codes = msgspec.json.Decoder(_Codes)


def file_name(kind: str, ordinal: int, ident: str) -> str:
    """<kind>-NNNNNNNN-<id>.xml (sese023-00000001-T1.xml), the id percent-encoded so any id is a safe file name."""
    return f"{kind}-{ordinal:08d}-{urllib.parse.quote(ident, safe='')[:FILE_ID_LENGTH_MAX]}.xml"


def event_json(event: Any) -> str:
    """A typed event as a JSON line with its set fields only, in the format's field order."""
    values = msgspec.to_builtins(event)
    for info in msgspec.structs.fields(type(event)):
        if info.encode_name in values and values[info.encode_name] == info.default:
            del values[info.encode_name]
    return json.dumps(values)


class Instructions:
    """Build sese.023 messages for the trades of one trade file's set-up."""

    def __init__(self, assets: M.Assets, participants: set[str], parties: P.Parties):
        self.assets = assets
        self.participants = participants
        self.parties = parties

    def _party(self, participant: str, field_name: str) -> None:
        if participant not in self.participants:
            raise ValueError(f"field '{field_name}': unknown participant {participant!r}")

    def _security(self, asset: str, field_name: str) -> M.AssetInfo:
        info = self.assets.get(asset)
        if info is None:
            raise ValueError(f"field '{field_name}': unknown asset {asset!r}")
        if info.kind != "security":
            raise ValueError(f"field '{field_name}': {asset} is not a security")
        return info

    def _amount(self, value: Any, decimals: int, field_name: str) -> M.Decimal:
        to_minor(value, decimals, field_name)  # the trade file's own rules: decimals, sign, size
        amount = M.written(value)
        why = M.fits(amount)
        if why:
            raise ValueError(f"field '{field_name}': {value!r} {why}")
        return amount

    def _ident(self, ident: str) -> None:
        if not ident or len(ident) > TX_ID_LENGTH_MAX:
            raise ValueError(f"field 'id': {ident!r:.60} must have 1 to {TX_ID_LENGTH_MAX} characters "
                             "(sese.023 TxId is Max35Text)")

    def dvp(self, event: DvpEvent) -> Any:
        """A DvP as the seller's delivery against payment, already matched."""
        self._ident(event.id)
        self._party(event.seller, "seller")
        self._party(event.buyer, "buyer")
        if event.seller == event.buyer:
            raise ValueError("seller and buyer are the same participant")
        security = self._security(event.security, "security")
        cash = self.assets.get(event.cash_asset)
        if cash is None:
            raise ValueError(f"field 'cash_asset': unknown asset {event.cash_asset!r}")
        if cash.kind != "cash":
            raise ValueError(f"field 'cash_asset': {event.cash_asset} is not a cash asset")
        if not cash.currency:
            raise ValueError(f"field 'cash_asset': {event.cash_asset!r} is not an ISO 4217 currency code and its "
                             "asset line names none (\"currency\": \"USD\"): sese.023 names the currency")
        quantity = self._amount(event.quantity, security.decimals, "quantity")
        amount = self._amount(event.amount, cash.decimals, "amount")
        at = parse_time(event.at)
        return self._message(event.id, "APMT", at, security, quantity, event.seller, event.buyer,
                             {"Amt": {"value": amount, "Ccy": cash.currency}, "CdtDbtInd": "CRDT"})

    def deliver(self, event: DeliverEvent) -> Any:
        """A delivery of a security free of payment."""
        self._ident(event.id)
        self._party(event.source, "from")
        self._party(event.target, "to")
        if event.source == event.target:
            raise ValueError("from and to are the same participant")
        security = self._security(event.asset, "asset")
        quantity = self._amount(event.amount, security.decimals, "amount")
        at = parse_time(event.at)
        return self._message(event.id, "FREE", at, security, quantity, event.source, event.target, None)

    def _message(self, ident: str, payment: str, at: int, security: M.AssetInfo, quantity: M.Decimal,
                 deliverer: str, receiver: str, amount: dict | None) -> Any:
        tree = {
            "TxId": ident,
            "SttlmTpAndAddtlParams": {"SctiesMvmntTp": "DELI", "Pmt": payment, "CmonId": ident},
            "TradDtls": {"TradDt": {"Dt": {"Dt": M.xml_date(at)}}, "SttlmDt": {"Dt": {"DtTm": M.xml_time(at)}},
                         "MtchgSts": {"Cd": "MACH"}},
            "FinInstrmId": M.security_tree(security),
            "QtyAndAcctDtls": {"SttlmQty": {"Qty": M.quantity_tree(security, quantity)},
                               "AcctOwnr": M.party_tree(self.parties, deliverer)},
            "SttlmParams": {"SctiesTxTp": {"Cd": "TRAD"}},
            "RcvgSttlmPties": {"Pty1": M.party_tree(self.parties, receiver)},
            "SttlmAmt": amount,
        }
        return M.build(SESE023.binding, {"SctiesSttlmTxInstr": tree})


def _setup_of(trade_file: TradeFile, result: ExportResult):
    """The file's assets, participants and their codes, from its set-up lines."""
    assets = M.Assets()
    participants: set[str] = set()
    codes: dict[str, _Codes] = {}
    for number, _offset, payload in trade_file.lines():
        if isinstance(payload, BadLine):
            continue
        try:
            kind, _ = trade_file.head(payload)
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
            continue
        if kind not in ("asset", "participant"):
            continue
        try:
            event = trade_file.decode(payload)
        except ValueError:
            continue  # reported in the second pass
        try:
            if trade_file.fmt == "jsonl":
                code = _codes.decode(payload)
            else:
                row = dict(zip(trade_file.header or [], payload))
                code = _Codes(**{k: row.get(k, "") for k in ("bic", "lei", "isin", "currency")})
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            result.errors.append(f"line {number}: {kind}: bic, lei, isin or currency unreadable ({exc})")
            code = _Codes()
        if isinstance(event, AssetEvent):
            if event.id not in assets.by_id:
                why = assets.add(event, code.isin.upper(), code.currency.upper())
                if why:
                    result.errors.append(f"line {number}: asset {event.id}: {why}")
                    assets.add_plain(event)
        elif isinstance(event, ParticipantEvent):
            participants.add(event.id)
            codes[event.id] = code
    return assets, participants, codes


def catalog(trade_file: TradeFile, parties_path: str | None, result: ExportResult):
    """The file's assets, participants, and each participant's BIC and LEI.

    Codes come from the parties file if given, else from the participant
    lines' own `bic` and `lei` fields, else they are generated.
    """
    assets, participants, codes = _setup_of(trade_file, result)
    parties = P.read(parties_path) if parties_path else P.Parties()
    for participant in sorted(participants):
        code = codes.get(participant)
        if code is None or parties.knows(participant) or not (code.bic or code.lei):
            continue
        why = parties.add(participant, code.bic.upper(), code.lei.upper())
        if why:
            result.errors.append(f"participant {participant}: {why}")
    result.generated = len(parties.complete(participants))
    return assets, participants, parties


def export(path: str, out_dir: str, *, fmt: str | None = None, parties_path: str | None = None,
           pretty: bool = True, progress=None) -> ExportResult:
    """Write the sese.023 instructions, set-up and parties of trade file `path` into `out_dir`."""
    trade_file = TradeFile(path, fmt)
    result = ExportResult()
    assets, participants, parties = catalog(trade_file, parties_path, result)
    builder = Instructions(assets, participants, parties)
    writer = Writer(pretty=pretty)

    with staged(out_dir) as staging:
        carried_times: dict[int, int] = {}  # at -> line of a timed line kept in setup.jsonl
        reordered = []
        with open(os.path.join(staging, "setup.jsonl"), "w", encoding="utf-8") as setup:
            for number, _offset, payload in trade_file.lines():
                if progress is not None:
                    progress(result.messages)
                if isinstance(payload, BadLine):
                    result.errors.append(f"line {payload.line}: {payload.reason}")
                    continue
                try:
                    event = trade_file.decode(payload)
                except ValueError as exc:
                    result.errors.append(f"line {number}: {exc}")
                    continue
                kind = event.__struct_config__.tag
                raw = payload.decode("utf-8") if trade_file.fmt == "jsonl" else event_json(event)
                if kind in SETUP_TYPES:
                    setup.write(raw + "\n")
                    result.setup_lines += 1
                    continue
                is_trade = kind == "dvp" or (kind == "deliver" and _is_security(assets, event.asset))
                if not is_trade:
                    try:
                        at = parse_time(event.at)
                    except ValueError as exc:
                        result.errors.append(f"line {number}: {kind}: {exc}")
                        continue
                    setup.write(raw + "\n")
                    result.carried[kind] = result.carried.get(kind, 0) + 1
                    carried_times.setdefault(at, number)
                    continue
                try:
                    message = builder.dvp(event) if kind == "dvp" else builder.deliver(event)
                except ValueError as exc:
                    result.errors.append(f"line {number}: {kind} {event.id}: {exc}")
                    continue
                wrong = problems(message)
                if wrong:
                    first = wrong[0]
                    result.errors.append(f"line {number}: {kind} {event.id}: {first.path} = {first.value!r}: "
                                         f"{first.rule}")
                    continue
                if kind == "dvp" and (event.timeout is not None or event.initiator is not None):
                    result.notes.append(f"line {number}: dvp {event.id}: sese.023 has no element for timeout "
                                        "or initiator; imported back, the trade takes the defaults")
                at = parse_time(event.at)
                if at in carried_times:
                    reordered.append((carried_times[at], number))
                result.messages += 1
                with open(os.path.join(staging, file_name(SESE023.folder, result.messages, event.id)), "wb") as handle:
                    handle.write(writer.write(message))
        for carried_line, trade_line in reordered[:20]:
            result.notes.append(f"line {carried_line} is kept in setup.jsonl and shares its time with the trade of "
                                f"line {trade_line}: on import, trades come first at equal times")
        with open(os.path.join(staging, "parties.csv"), "w", encoding="utf-8") as handle:
            handle.write(parties.to_csv())
    return result


def _is_security(assets: M.Assets, asset: str) -> bool:
    info = assets.get(asset)
    return info is None or info.kind == "security"  # an unknown asset: reported by the builder
