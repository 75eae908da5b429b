"""Resolve: timed trade-file events to engine commands, or why a line cannot be one.

Takes the timed events `read` decoded, in `at` order, and the `Catalog` the
set-up built (`setup.py`); gives `Instruction`s (an engine command, who
signs it, its line and time), `Swap`s for cross-chain trades, `ChainTime`s
and `BadLine`s. Pure: it looks at nothing but the file. It resolves the
file's names (participants, assets, chains) and converts amounts to integer
minor units with each asset's decimals; the rules of settlement (funds,
freezes, matching, idempotency of a reused id) are the ledger's, and its
result codes come back to the `account` stage.
"""

from __future__ import annotations

from typing import Any

from engine.machine import AMOUNT_MAX
from engine.records import ID_LENGTH_MAX, Asset, Move

from .. import collateral, dvp, netting, prices, repo, swap
from ..tradefile import (
    BadLine,
    CutoffEvent,
    DeliverEvent,
    DvpEvent,
    PriceEvent,
    RepoEvent,
    SubstituteEvent,
    parse_duration,
    parse_time,
    to_minor,
)
from .setup import ISSUER, OPERATOR, ORACLE, RESERVED, Catalog, key_seed, label, public_key
from .steps import MAIN, ChainTime, Instruction, Swap

SWAP_TIMEOUT_DEFAULT = 3600  # seconds: a participant's timeout for a cross-chain swap (T1 = 2 x timeout)
QUANTITY_FAST_MAX = 1 << 62  # a whole-unit quantity up to this needs no conversion for 0-decimal securities
TRADE_ID_LENGTH_MAX = ID_LENGTH_MAX - len("trade:")  # a trade's command id is trade:<id>

__all__ = ["ISSUER", "OPERATOR", "ORACLE", "RESERVED", "Resolver", "key_seed", "public_key"]


class Resolver:
    """The commands a file's timed events become, against the names its set-up gave."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.mode = catalog.mode
        self.config = catalog.config
        self.participants = catalog.participants
        self.assets = catalog.assets
        self.cross_chain = bool(catalog.side_chains())  # trade ids are remembered only then
        self.seen: dict[str, str] = {}  # trade id -> "ledger" (a command on the main chain) or "swap"
        self.repo_borrowers: dict[str, str] = {}
        self.pending_cutoff: int | None = catalog.cutoff_at
        self.now = 0

    _asset = Catalog._asset
    _party = Catalog._party

    def _trade_id(self, ref: str, how: str) -> None:
        """A trade id names one trade in the file: a cross-chain trade's id is its own.

        Ids are remembered only in files with cross-chain trades (a main-chain
        id used again is the ledger's to judge: the same command id)."""
        if not ref or len(ref) > TRADE_ID_LENGTH_MAX:
            raise ValueError(f"field 'id': {ref!r:.60} must have 1 to {TRADE_ID_LENGTH_MAX} characters")
        if not self.cross_chain:
            return
        before = self.seen.get(ref)
        if before is None:
            self.seen[ref] = how
        elif before != how or how == "swap":
            raise ValueError("id reused (a cross-chain trade's id is its own)")

    # -------------------------------------------------------------- timed

    def before(self, at: int) -> list[Instruction | ChainTime]:
        """What comes before an event at `at`: the config's cut-off, once its time has passed."""
        pending = self.pending_cutoff
        if pending is None or at <= pending:
            return []
        self.pending_cutoff = None
        return self.cutoff(0, pending, "cutoff:config")

    def finish(self, last_at: int) -> list[Instruction | ChainTime]:
        """The end of the file: the config's cut-off if still to come, then every chain brought to the end."""
        steps: list[Instruction | ChainTime] = []
        if self.pending_cutoff is not None:
            steps += self.cutoff(0, max(self.pending_cutoff, last_at), "cutoff:config")
            self.pending_cutoff = None
        steps.append(ChainTime(max(last_at, self.now)))
        return steps

    def cutoff(self, line: int, at: int, ref: str) -> list[Instruction | ChainTime]:
        self.now = max(self.now, at)
        steps: list[Instruction | ChainTime] = []
        if self.mode == "net":
            steps.append(Instruction(line, at, netting.CloseCycle(id=f"{ref}:net"), (OPERATOR,), True))
        steps.append(Instruction(line, at, dvp.Cutoff(id=ref), (OPERATOR,), True))
        steps.append(ChainTime(at))
        return steps

    def timed(self, line: int, ev: Any, at: int) -> Any:
        """One timed event: an Instruction, a Swap, a list of steps, or a BadLine."""
        try:
            return self._timed(line, ev, at)
        except ValueError as exc:
            return BadLine(line, f"{label(ev)}: {exc}")

    def _timed(self, line: int, ev: Any, at: int) -> Any:
        if at > self.now:
            self.now = at
        if type(ev) is DvpEvent:
            assets = self.assets
            security = assets.get(ev.security)
            if security is None or security.kind != "security":
                security = self._asset(ev.security, "security", "security")  # raises the reason
            cash = assets.get(ev.cash_asset)
            if cash is None or cash.kind != "cash":
                cash = self._asset(ev.cash_asset, "cash_asset", "cash")
            participants = self.participants
            seller = participants.get(ev.seller) or self._party(ev.seller, "seller")
            buyer = participants.get(ev.buyer) or self._party(ev.buyer, "buyer")
            if security.chain != cash.chain:
                return self._swap(line, ev, at, security, cash, seller, buyer)
            if security.chain != MAIN:
                raise ValueError(f"a DvP within chain {security.chain!r} is not supported (only cross-chain there)")
            if ev.initiator is not None and ev.initiator not in ("buyer", "seller"):
                raise ValueError(f"field 'initiator': {ev.initiator!r:.40} is not buyer or seller")
            if ev.timeout is not None:
                parse_duration(ev.timeout, "timeout")  # checked, though only a cross-chain trade uses it
            quantity = ev.quantity
            if type(quantity) is not int or not 0 < quantity <= QUANTITY_FAST_MAX or security.decimals:
                quantity = to_minor(quantity, security.decimals, "quantity")  # the general case, with its checks
            amount = to_minor(ev.amount, cash.decimals, "amount")
            self._trade_id(ev.id, "ledger")
            kind = dvp.Settle if self.mode == "gross" else netting.Obligate
            cmd = kind(id=f"trade:{ev.id}", trade=ev.id, seller=seller, buyer=buyer, security=security.id,
                       quantity=quantity, cash_asset=cash.id, amount=amount)
            return Instruction(line, at, cmd, (seller, buyer), True)
        if type(ev) is DeliverEvent:
            asset = self._asset(ev.asset, "asset")
            if asset.chain != MAIN:
                raise ValueError(f"a delivery on chain {asset.chain!r} is not supported (main chain only)")
            source = self._party(ev.source, "from")
            target = self._party(ev.target, "to")
            amount = to_minor(ev.amount, asset.decimals, "amount")
            self._trade_id(ev.id, "ledger")
            return Instruction(line, at, Move(id=f"trade:{ev.id}", asset=asset.id, source=source, target=target,
                                              amount=amount), (source,), True)
        if type(ev) is PriceEvent:
            asset = self._asset(ev.asset, "asset")
            if asset.chain != MAIN:
                raise ValueError(f"asset {ev.asset!r} is on chain {asset.chain!r}: prices are kept on the main chain")
            if prices.parse_price(str(ev.price)) is None:
                raise ValueError(f"field 'price': {ev.price!r:.40} is not a positive decimal")
            return Instruction(line, at, prices.SetPrice(id=f"price:{line}", asset=ev.asset, price=str(ev.price)),
                               (ORACLE,), True)
        if type(ev) is CutoffEvent:
            return self.cutoff(line, at, f"cutoff:{line}")
        if type(ev) is RepoEvent:
            return self._repo(line, ev, at)
        if type(ev) is SubstituteEvent:
            security = self._asset(ev.collateral, "collateral", "security")
            borrower = self.repo_borrowers.get(ev.repo)
            if borrower is None:
                raise ValueError(f"unknown repo {ev.repo!r:.140} in field 'repo'")
            quantity = to_minor(ev.quantity, security.decimals, "quantity")
            return Instruction(line, at, repo.Substitute(id=f"substitute:{line}", repo=ev.repo, collateral=security.id,
                                                         quantity=quantity), (borrower,), True)
        raise ValueError(f"{ev.__struct_config__.tag} events cannot be timed")

    def _swap(self, line: int, ev: DvpEvent, at: int, security: Asset, cash: Asset, seller: str, buyer: str) -> Swap:
        initiator = ev.initiator or "buyer"
        if initiator not in ("buyer", "seller"):
            raise ValueError(f"field 'initiator': {ev.initiator!r:.40} is not buyer or seller")
        timeout = parse_duration(ev.timeout, "timeout") if ev.timeout is not None else SWAP_TIMEOUT_DEFAULT
        quantity = to_minor(ev.quantity, security.decimals, "quantity")
        amount = to_minor(ev.amount, cash.decimals, "amount")
        if at + 2 * timeout > AMOUNT_MAX:
            raise ValueError(f"field 'timeout': {ev.timeout!r} runs past the end of ledger time")
        self._trade_id(ev.id, "swap")
        terms = swap.SwapTerms(trade=ev.id, seller=seller, buyer=buyer, security=security.id, quantity=quantity,
                               cash_asset=cash.id, amount=amount, timeout=timeout, initiator=initiator)
        return Swap(line, at, terms, security.chain, cash.chain)

    def _repo(self, line: int, ev: RepoEvent, at: int) -> Instruction:
        security = self._asset(ev.collateral, "collateral", "security")
        cash = self._asset(ev.cash_asset, "cash_asset", "cash")
        if security.chain != MAIN or cash.chain != MAIN:
            raise ValueError("repos are settled on the main chain only")
        borrower = self._party(ev.borrower, "borrower")
        lender = self._party(ev.lender, "lender")
        quantity = to_minor(ev.quantity, security.decimals, "quantity")
        principal = to_minor(ev.principal, cash.decimals, "principal")
        rate = str(ev.rate)
        if repo.parse_rate(rate) is None:
            raise ValueError(f"field 'rate': {ev.rate!r:.40} is not a non-negative decimal (annual, e.g. \"0.0531\")")
        end = parse_time(ev.end, "end")
        if end <= at:
            raise ValueError(f"field 'end': {ev.end!r} is not after the start")
        haircut = ""
        if ev.haircut is not None:
            haircut = str(ev.haircut)
            if collateral.parse_haircut(haircut) is None:
                raise ValueError(f"field 'haircut': {ev.haircut!r:.40} is not a fraction from 0 up to (not including) 1")
        mta_text = ev.mta if ev.mta is not None else self.config.mta
        mta = to_minor(mta_text, cash.decimals, "mta", positive=False) if mta_text is not None else -1
        grace_text = ev.grace if ev.grace is not None else self.config.grace
        grace = parse_duration(grace_text, "grace") if grace_text is not None else -1
        self._trade_id(ev.id, "ledger")
        self.repo_borrowers.setdefault(ev.id, borrower)
        cmd = repo.OpenRepo(id=f"trade:{ev.id}", repo=ev.id, borrower=borrower, lender=lender, collateral=security.id,
                            quantity=quantity, cash_asset=cash.id, principal=principal, rate=rate, end=end,
                            haircut=haircut, mta=mta, grace=grace)
        return Instruction(line, at, cmd, (borrower, lender), True)


