"""Import: sese.023 settlement instructions to a trade file (`dvp iso import`).

Takes sese.023.001.11 documents (files, or folders of `*.xml`), a set-up
trade file (assets, participants, deposits, config, and any timed lines
to keep) and a parties CSV (default: the codes `dvp iso export` uses,
the participant lines' own `bic`/`lei`, else generated); gives a trade
file: the set-up's lines, then one `dvp` (DVP, RVP) or `deliver` (FOP)
event per trade and the set-up's timed lines, in `at` order. It is
written whole or not at all. Large batches are read and mapped by worker
processes; matching and writing stay in the calling process.

Each document is read through the hardened parser, checked against the
schema's rules, and mapped field by field (docs/iso20022.md). A
delivering (DELI) and a receiving (RECE) instruction of the same trade
match as the engine matches two-sided instructions: on trade id (CmonId,
else TxId), security, quantity, cash asset, amount, counterparties and
settlement time; together they make one event. An instruction marked
already matched (`TradDtls/MtchgSts/Cd` MACH, as `dvp iso export`
writes) makes its event alone. A message that cannot be mapped, a
duplicate, a pair that does not match and an instruction left unmatched
are each refused with the file, message id, element path and value; the
other messages go on.

At equal times, imported trades come before the set-up file's timed
lines, and keep the order of the documents as given (folders sorted by
file name). Events are written in the set-up file's JSON style (compact,
or `json.dumps`'s spacing), so a trade file exported and imported back
is the same file byte for byte.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec

from ..replay.read import TradeFile
from ..tradefile import SETUP_TYPES, AssetEvent, BadLine, ParticipantEvent, format_time, parse_time, to_minor
from . import mapping as M
from . import parties as P
from .instruct import ExportResult, catalog, event_json
from .messages import SESE023
from .files import write_whole
from .validate import problems
from .xmlio import MESSAGE_BYTES_MAX, MessageError, Reader

BASE = "Document/SctiesSttlmTxInstr"
QUANTITY_CHOICES = ("Unit", "FaceAmt", "DgtlTknUnit")


class Instruction(msgspec.Struct, kw_only=True):
    """One side's (or an already matched) instruction, mapped to the ledger's names."""

    file: str
    message: str  # TxId
    position: int  # order of the documents as given
    trade: str
    side: str  # DELI | RECE
    payment: str  # APMT | FREE
    matched: bool
    seller: str
    buyer: str
    security: str
    quantity: int | str
    quantity_minor: int
    cash_asset: str | None
    amount: int | str | None
    amount_minor: int | None
    at: int

    def terms(self) -> tuple:
        return (self.payment, self.security, self.quantity_minor, self.cash_asset, self.amount_minor, self.at)

    def event(self) -> dict[str, Any]:
        if self.payment == "APMT":
            return {"type": "dvp", "at": format_time(self.at), "id": self.trade, "seller": self.seller,
                    "buyer": self.buyer, "security": self.security, "quantity": self.quantity,
                    "cash_asset": self.cash_asset, "amount": self.amount}
        return {"type": "deliver", "at": format_time(self.at), "id": self.trade, "from": self.seller,
                "to": self.buyer, "asset": self.security, "amount": self.quantity}


@dataclass
class ImportResult:
    messages: int = 0  # documents read
    trades: int = 0  # events written
    matched_pairs: int = 0  # trades made of a DELI and a RECE
    errors: list[MessageError] = field(default_factory=list)


class Setup:
    """The set-up trade file: its lines to copy, its names, and its timed lines to merge."""

    def __init__(self, path: str):
        self.path = path
        self.assets = M.Assets()
        self.participants: set[str] = set()
        self.setup_lines: list[str] = []
        self.timed: list[tuple[int, str]] = []  # (at, line)
        trade_file = TradeFile(path)
        for number, _offset, payload in trade_file.lines():
            if isinstance(payload, BadLine):
                raise ValueError(f"{path}: line {payload.line}: {payload.reason}")
            try:
                event = trade_file.decode(payload)
            except ValueError as exc:
                raise ValueError(f"{path}: line {number}: {exc}") from None
            kind = event.__struct_config__.tag
            raw = payload.decode("utf-8") if trade_file.fmt == "jsonl" else _json_line(event)
            if isinstance(event, AssetEvent):
                if event.id in self.assets.by_id:
                    raise ValueError(f"{path}: line {number}: asset {event.id!r} is declared twice")
                self.assets.add(event)
            elif isinstance(event, ParticipantEvent):
                self.participants.add(event.id)
            if kind in SETUP_TYPES:
                self.setup_lines.append(raw)
            else:
                try:
                    self.timed.append((parse_time(event.at), raw))
                except ValueError as exc:
                    raise ValueError(f"{path}: line {number}: {kind}: {exc}") from None


def _json_line(event: Any) -> str:
    return event_json(event)


def _style(lines: list[str]):
    """Write events as the set-up file writes its lines: compact JSON if it does, else `json.dumps`'s spacing."""
    for line in lines:
        try:
            if json.dumps(json.loads(line), separators=(",", ":")) == line:
                return lambda event: json.dumps(event, separators=(",", ":"))
        except ValueError:
            pass
        break
    return json.dumps


class Mapper:
    """sese.023 documents to `Instruction`s, against one set-up and one parties map."""

    def __init__(self, setup: Setup, parties: P.Parties):
        self.setup = setup
        self.parties = parties
        self.reader = Reader(SESE023)

    def read(self, data: bytes, file: str, position: int) -> Instruction:
        message = self.reader.read(data, file)
        ident = M.get(message, "SctiesSttlmTxInstr/TxId")
        wrong = problems(message)
        if wrong:
            first = wrong[0]
            raise MessageError(file, ident, first.path, first.value, first.rule)
        return self.map(message, file, ident, position)

    def map(self, message: Any, file: str, ident: str, position: int) -> Instruction:
        def fail(path: str, value: Any, reason: str) -> MessageError:
            return MessageError(file, ident, f"{BASE}/{path}", value, reason)

        def at(path: str) -> Any:
            return M.get(message, f"SctiesSttlmTxInstr/{path}")

        side = at("SttlmTpAndAddtlParams/SctiesMvmntTp")
        payment = at("SttlmTpAndAddtlParams/Pmt")
        trade = at("SttlmTpAndAddtlParams/CmonId") or ident
        matched = at("TradDtls/MtchgSts/Cd") == "MACH"

        # the settlement date and time
        if at("TradDtls/SttlmDt/DtCd") is not None:
            raise fail("TradDtls/SttlmDt/DtCd", None, "a settlement date code is not supported: give Dt/DtTm")
        when = at("TradDtls/SttlmDt/Dt/DtTm")
        path = "TradDtls/SttlmDt/Dt/DtTm"
        if when is None:
            when, path = at("TradDtls/SttlmDt/Dt/Dt"), "TradDtls/SttlmDt/Dt/Dt"
        try:
            seconds = M.seconds_of(when)
        except ValueError as exc:
            raise fail(path, None if when is None else str(when), str(exc)) from None

        # the security and the quantity
        isin = at("FinInstrmId/ISIN")
        code, path = (isin, "FinInstrmId/ISIN") if isin else (at("FinInstrmId/OthrId/Id"), "FinInstrmId/OthrId/Id")
        if code is None:
            raise fail("FinInstrmId", None, "identify the security by ISIN or OthrId/Id")
        security = self.setup.assets.security(code)
        info = self.setup.assets.get(security) if security else None
        if info is None:
            raise fail(path, code, f"no asset of that {'ISIN' if isin else 'id'} in the set-up file {self.setup.path}")
        if info.kind != "security":
            raise fail(path, security, "that asset is cash, not a security")
        for choice in QUANTITY_CHOICES:
            quantity = at(f"QtyAndAcctDtls/SttlmQty/Qty/{choice}")
            if quantity is not None:
                break
        else:
            raise fail("QtyAndAcctDtls/SttlmQty/Qty", None,
                       f"give the quantity as {', '.join(QUANTITY_CHOICES)} (amortised values are not supported)")
        qpath = f"QtyAndAcctDtls/SttlmQty/Qty/{choice}"
        quantity_value, quantity_minor = self._amount(quantity, info.decimals, f"{security}", fail, qpath)

        # the parties
        owner = self._party(at("QtyAndAcctDtls/AcctOwnr"), "QtyAndAcctDtls/AcctOwnr", fail,
                            "the instructing party (the account owner), by BIC or LEI")
        own, other = ("DlvrgSttlmPties", "RcvgSttlmPties") if side == "DELI" else ("RcvgSttlmPties", "DlvrgSttlmPties")
        counterparty = self._party(at(f"{other}/Pty1"), f"{other}/Pty1", fail,
                                   "the counterparty, by BIC or LEI")
        mine = at(f"{own}/Pty1")
        if mine is not None:
            named = self._party(mine, f"{own}/Pty1", fail, "")
            if named != owner:
                raise fail(f"{own}/Pty1", named, f"names another participant than the account owner ({owner})")
        seller, buyer = (owner, counterparty) if side == "DELI" else (counterparty, owner)
        if seller == buyer:
            raise fail(f"{other}/Pty1", counterparty, "the counterparty is the instructing party itself")

        # the settlement amount
        money = at("SttlmAmt")
        cash_asset = amount_value = amount_minor = None
        if payment == "APMT":
            if money is None:
                raise fail("SttlmAmt", None, "missing mandatory element: a payment instruction (APMT) has an amount")
            currency = M.get(money, "Amt/Ccy")
            named = self.setup.assets.cash(currency)
            if not named:
                raise fail("SttlmAmt/Amt/@Ccy", currency, f"no cash asset {currency} in the set-up file {self.setup.path}")
            if len(named) > 1:
                raise fail("SttlmAmt/Amt/@Ccy", currency, f"ambiguous: {currency} is the currency of the cash assets "
                           f"{', '.join(named)}")
            cash = self.setup.assets.get(named[0])
            direction = M.get(money, "CdtDbtInd")
            wanted = "CRDT" if side == "DELI" else "DBIT"
            if direction != wanted:
                raise fail("SttlmAmt/CdtDbtInd", direction,
                           f"a {'delivery' if side == 'DELI' else 'receipt'} against payment is {wanted} "
                           "(payment against the securities; the engine settles no delivery with payment)")
            cash_asset = cash.id
            amount_value, amount_minor = self._amount(M.get(money, "Amt/value"), cash.decimals, currency, fail,
                                                      "SttlmAmt/Amt")
        elif money is not None:
            raise fail("SttlmAmt", None, "a free-of-payment instruction (FREE) carries no settlement amount")
        return Instruction(file=file, message=ident, position=position, trade=trade, side=side, payment=payment,
                           matched=matched, seller=seller, buyer=buyer, security=security, quantity=quantity_value,
                           quantity_minor=quantity_minor, cash_asset=cash_asset, amount=amount_value,
                           amount_minor=amount_minor, at=seconds)

    def _amount(self, value: Decimal, decimals: int, what: str, fail, path: str) -> tuple[int | str, int]:
        try:
            written = M.trade_file_amount(value, decimals, what)
            return written, to_minor(written, decimals, path.rpartition("/")[2])
        except ValueError as exc:
            raise fail(path, format(value, "f"), str(exc)) from None

    def _party(self, block: Any, path: str, fail, what: str) -> str:
        if block is None:
            raise fail(path, None, f"missing element: {what}")
        bic = M.get(block, "Id/AnyBIC")
        lei = M.get(block, "LEI")
        by_bic = by_lei = None
        if bic:
            by_bic = self.parties.by_bic.get(bic)
            if by_bic is None:
                raise fail(f"{path}/Id/AnyBIC", bic, "this BIC is in no row of the parties file")
        if lei:
            by_lei = self.parties.by_lei.get(lei)
            if by_lei is None:
                raise fail(f"{path}/LEI", lei, "this LEI is in no row of the parties file")
        if by_bic and by_lei and by_bic != by_lei:
            raise fail(f"{path}/LEI", lei, f"names {by_lei}, but the BIC names {by_bic}")
        participant = by_bic or by_lei
        if participant is None:
            raise fail(f"{path}/Id", None, "identify the party by BIC (AnyBIC) or LEI")
        if participant not in self.setup.participants:
            raise fail(f"{path}/Id/AnyBIC" if by_bic else f"{path}/LEI", bic or lei,
                       f"names participant {participant}, who is not in the set-up file")
        return participant


class Matcher:
    """Pair delivering and receiving instructions; one event per trade, in the order given."""

    def __init__(self) -> None:
        self.waiting: dict[tuple[str, str, str], Instruction] = {}  # (trade, seller, buyer) -> its first side
        self.done: dict[tuple[str, str, str], Instruction] = {}
        self.ids: dict[str, tuple[str, str, str]] = {}
        self.events: list[tuple[int, int, dict[str, Any]]] = []  # (at, position, event)
        self.pairs = 0

    def add(self, ins: Instruction) -> list[MessageError]:
        key = (ins.trade, ins.seller, ins.buyer)
        base = f"{BASE}/SttlmTpAndAddtlParams"
        known = self.ids.get(ins.trade)
        if known is not None and known != key:
            return [MessageError(ins.file, ins.message, f"{base}/CmonId", ins.trade,
                                 f"trade id already used for {known[1]} -> {known[2]}; the trade file keys trades by id")]
        first = self.waiting.get(key) or self.done.get(key)
        if first is None:
            self.ids[ins.trade] = key
            if ins.matched:
                self._emit(ins, key)
            else:
                self.waiting[key] = ins
            return []
        if first.side == ins.side:
            return [MessageError(ins.file, ins.message, f"{base}/SctiesMvmntTp", ins.side,
                                 f"a second {ins.side} instruction for trade {ins.trade} (the first: {first.file})")]
        differences = _differences(first, ins)
        if key in self.done:  # the counterpart of an already matched instruction: nothing new
            if differences:
                return [MessageError(ins.file, ins.message, differences[0][0], differences[0][1],
                                     f"does not match the already matched instruction in {first.file}: "
                                     + "; ".join(d[2] for d in differences))]
            return []
        del self.waiting[key]
        if differences:
            del self.ids[ins.trade]
            reason = "; ".join(d[2] for d in differences)
            return [MessageError(first.file, first.message, differences[0][0], differences[0][3],
                                 f"does not match the {ins.side} instruction in {ins.file}: {reason}"),
                    MessageError(ins.file, ins.message, differences[0][0], differences[0][1],
                                 f"does not match the {first.side} instruction in {first.file}: {reason}")]
        self.pairs += 1
        self._emit(first, key)
        return []

    def _emit(self, ins: Instruction, key: tuple[str, str, str]) -> None:
        self.done[key] = ins
        self.events.append((ins.at, ins.position, ins.event()))

    def unmatched(self) -> list[MessageError]:
        out = []
        for ins in sorted(self.waiting.values(), key=lambda i: i.position):
            wanted = "RECE" if ins.side == "DELI" else "DELI"
            who = ins.buyer if ins.side == "DELI" else ins.seller
            out.append(MessageError(ins.file, ins.message, f"{BASE}/SttlmTpAndAddtlParams/SctiesMvmntTp", ins.side,
                                    f"unmatched: no {wanted} instruction from {who} for trade {ins.trade} (the engine "
                                    "fails an unmatched instruction at the cut-off)"))
        return out


_FIELDS = (("SttlmTpAndAddtlParams/Pmt", "payment", lambda i: i.payment),
           ("FinInstrmId", "security", lambda i: i.security),
           ("QtyAndAcctDtls/SttlmQty/Qty", "quantity", lambda i: i.quantity),
           ("SttlmAmt/Amt/@Ccy", "currency", lambda i: i.cash_asset),
           ("SttlmAmt/Amt", "amount", lambda i: i.amount),
           ("TradDtls/SttlmDt", "settlement time", lambda i: format_time(i.at)))


def _differences(a: Instruction, b: Instruction) -> list[tuple[str, Any, str, Any]]:
    """(path, b's value, wording, a's value) for each term on which two sides disagree."""
    out = []
    for (path, name, value), x, y in zip(_FIELDS, a.terms(), b.terms()):
        if x != y:
            out.append((f"{BASE}/{path}", value(b), f"{name} {value(b)} against {value(a)}", value(a)))
    return out


def expand(paths: list[str]) -> list[str]:
    """Files as given; each folder's *.xml files (all levels), sorted by path."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = []
            for root, dirs, names in os.walk(path):
                dirs.sort()
                found.extend(os.path.join(root, n) for n in names if n.lower().endswith(".xml"))
            files.extend(sorted(found))
        else:
            files.append(path)
    return files


JOBS_FILES_MIN = 2_000  # below this, worker processes cost more than they save
JOBS_MAX = 8
_MAPPER: Mapper | None = None  # a worker's mapper (inherited through fork)


def _read_file(mapper: Mapper, position: int, file: str) -> Instruction | MessageError:
    """One document, read and mapped: its `Instruction`, or why not."""
    try:
        size = os.path.getsize(file)
        if size > MESSAGE_BYTES_MAX:
            raise MessageError(file, None, "Document", None,
                               f"the document has {size:,} bytes, more than the {MESSAGE_BYTES_MAX:,} allowed")
        with open(file, "rb") as handle:
            data = handle.read(MESSAGE_BYTES_MAX + 1)
        return mapper.read(data, file, position)
    except MessageError as exc:
        return exc
    except OSError as exc:
        return MessageError(file, None, "Document", None, f"cannot be read ({exc.strerror})")


def _worker_read(item: tuple[int, str]) -> Instruction | MessageError:
    return _read_file(_MAPPER, *item)


def _quiet_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # forked while the parent held it blocked


def default_jobs(files: int) -> int:
    """Worker processes for `files` documents: one per core for large batches (fork only), else none."""
    if files < JOBS_FILES_MIN or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(os.cpu_count() or 1, JOBS_MAX))


def import_files(paths: list[str], setup_path: str, out_path: str, *, parties_path: str | None = None,
                 progress=None, jobs: int | None = None) -> ImportResult:
    """Map the sese.023 documents at `paths` to the trade file `out_path` (written whole or not at all).

    Documents are read and mapped by `jobs` worker processes (default:
    `default_jobs`), in order; matching and writing stay in this process,
    so the result is the same for any number of jobs.
    """
    global _MAPPER
    setup = Setup(setup_path)
    found = ExportResult()
    assets, _participants, parties = catalog(TradeFile(setup_path), parties_path, found)  # as the export finds them
    if found.errors:
        raise ValueError(f"{setup_path}: {found.errors[0]}")
    setup.assets = assets  # with the ISINs and currencies its asset lines name
    mapper = Mapper(setup, parties)
    matcher = Matcher()
    result = ImportResult()
    files = expand(paths)
    jobs = default_jobs(len(files)) if jobs is None else max(1, jobs)
    pool = None
    if jobs > 1:
        _MAPPER = mapper
        # Ctrl-C waits while the workers are forked: caught inside fork's own hooks it would be lost,
        # or leave a half-built pool that nothing stops. It arrives below, where `finally` stops the pool.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            pool = multiprocessing.get_context("fork").Pool(jobs, initializer=_quiet_worker)
            read = pool.imap(_worker_read, enumerate(files), chunksize=64)
        except BaseException:
            if pool is not None:
                pool.terminate()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            raise
    else:
        read = (_read_file(mapper, position, file) for position, file in enumerate(files))
    try:
        if pool is not None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        for position, outcome in enumerate(read):
            if progress is not None:
                progress(position)
            result.messages += 1
            if isinstance(outcome, MessageError):
                result.errors.append(outcome)
            else:
                result.errors.extend(matcher.add(outcome))
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
            _MAPPER = None
    result.errors.extend(matcher.unmatched())
    result.trades = len(matcher.events)
    result.matched_pairs = matcher.pairs
    dumps = _style(setup.setup_lines)
    timed = [(at, 0, position, dumps(event)) for at, position, event in matcher.events]
    timed.extend((at, 1, n, raw) for n, (at, raw) in enumerate(setup.timed))
    timed.sort(key=lambda row: row[:3])
    write_whole(out_path, setup.setup_lines + [row[3] for row in timed])
    return result
