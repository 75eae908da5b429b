"""Resolve: typed trade-file events to engine commands, or why a line cannot be one.

Takes the events `read` decoded; gives `Instruction`s (an engine command,
who signs it, its line and time), `Swap`s for cross-chain trades,
`ChainTime`s, and `BadLine`s. Pure: it looks at nothing but the file. It
resolves the file's names (participants, assets, chains) and converts
amounts to integer minor units with each asset's decimals; the rules of
settlement (funds, freezes, matching, idempotency of a reused id) are the
ledger's, and its result codes come back to the `account` stage.

Every participant signs for itself with a key derived from its id, so
replaying a file twice gives the same journal. The replay's own members
sign the rest: the operator (time, set-up, cut-offs), the issuer
(deposits), the oracle (prices).
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.identity import valid_id
from engine.records import ID_LENGTH_MAX
from engine.journal import chain_location
from engine.machine import AMOUNT_MAX
from engine.records import ROLE_ISSUER, ROLE_ORACLE, ROLE_PARTICIPANT, ROLES, Admit, Asset, Mint, Move, RegisterAsset
from engine.records import SetConfig

from .. import collateral, dvp, netting, prices, repo, swap
from ..tradefile import (
    AssetEvent,
    BadLine,
    ConfigEvent,
    CutoffEvent,
    DeliverEvent,
    DepositEvent,
    DvpEvent,
    ParticipantEvent,
    PriceEvent,
    RepoEvent,
    SubstituteEvent,
    parse_duration,
    parse_time,
    to_minor,
)
from .steps import MAIN, ChainTime, Instruction, Swap

OPERATOR = "replay.operator"
ISSUER = "replay.issuer"
ORACLE = "replay.oracle"
RESERVED = frozenset({OPERATOR, ISSUER, ORACLE})
SWAP_TIMEOUT_DEFAULT = 3600  # seconds: a participant's timeout for a cross-chain swap (T1 = 2 x timeout)
QUANTITY_FAST_MAX = 1 << 62  # a whole-unit quantity up to this needs no conversion for 0-decimal securities
TRADE_ID_LENGTH_MAX = ID_LENGTH_MAX - len("trade:")  # a trade's command id is trade:<id>


class SetupPlan(msgspec.Struct):
    """What the set-up events give: the ledgers to make and what to put in them first."""

    mode: str
    cutoff_at: int | None
    main: list[list[Instruction]]  # batches for the main chain, in order
    chains: dict[str, list[list[Instruction]]]  # side chain -> its set-up batches
    declared: list[tuple[str, str]]  # (participant, asset) accounts declared with a zero deposit


def label(ev: Any) -> str:
    """How a rejected line names its event: 'dvp T17', 'config'."""
    tag = ev.__struct_config__.tag
    ref = getattr(ev, "id", None) or getattr(ev, "repo", None)
    return f"{tag} {ref}" if ref else tag


def check_decimal(value: Any, field: str) -> None:
    """A non-negative decimal string or integer, whatever the asset (its decimals are checked where used)."""
    if type(value) is int and value >= 0:
        return
    if isinstance(value, str) and len(value) <= 40:
        whole, dot, frac = value.partition(".")
        if whole.isascii() and whole.isdigit() and (not dot or (frac.isascii() and frac.isdigit())):
            return
    raise ValueError(f"field '{field}': {value!r:.60} is not a non-negative decimal number")


class Resolver:
    """The file's names and settings, and the commands its events become."""

    def __init__(self, mode: str | None = None):
        self.cli_mode = mode
        self.mode = mode or "gross"
        self.config = ConfigEvent()
        self.cutoff_at: int | None = None
        self.participants: dict[str, str] = {}  # id -> the id (one string object for every line)
        self.roles: dict[str, tuple[str, ...]] = {}
        self.assets: dict[str, Asset] = {}
        self.asset_events: dict[str, AssetEvent] = {}
        self.seen: dict[str, str] = {}  # trade id -> "ledger" (a command on the main chain) or "swap"
        self.repo_borrowers: dict[str, str] = {}
        self.pending_cutoff: int | None = None
        self.now = 0
        self.cross_chain = False  # the file has assets on other chains: trade ids are remembered

    # ------------------------------------------------------------- set-up

    def setup(self, events: list[tuple[int, Any]]) -> tuple[SetupPlan, list[BadLine]]:
        """Resolve the set-up events: config first, then members and assets, then deposits."""
        bad: list[BadLine] = []
        for line, ev in events:
            if type(ev) is ConfigEvent:
                try:
                    self._config(ev)
                except ValueError as exc:
                    bad.append(BadLine(line, f"config: {exc}"))
        if self.cli_mode is None and self.config.mode:
            self.mode = self.config.mode
        admit: list[Instruction] = []
        for name, role in ((ISSUER, ROLE_ISSUER), (ORACLE, ROLE_ORACLE)):
            admit.append(_control(Admit(id=f"setup:{name.split('.')[1]}", participant=name, roles=(role,),
                                        public_key=public_key(name))))
        for line, ev in events:
            try:
                if type(ev) is ParticipantEvent:
                    cmd = self._participant(ev)
                    if cmd is not None:
                        admit.append(Instruction(line, 0, cmd, (OPERATOR,)))
                elif type(ev) is AssetEvent:
                    cmd = self._asset_event(ev)
                    if cmd is not None and self.assets[ev.id].chain == MAIN:
                        admit.append(Instruction(line, 0, cmd, (OPERATOR,)))
            except ValueError as exc:
                bad.append(BadLine(line, f"{label(ev)}: {exc}"))
        fund: list[Instruction] = []
        for asset_id, ev in self.asset_events.items():
            if ev.price is not None and self.assets[asset_id].chain == MAIN:
                fund.append(_control(prices.SetPrice(id=f"price:{asset_id}:initial", asset=asset_id,
                                                     price=str(ev.price)), ORACLE))
        side: dict[str, list[Instruction]] = {}
        declared: list[tuple[str, str]] = []
        for line, ev in events:
            if type(ev) is not DepositEvent:
                continue
            try:
                asset = self._asset(ev.asset, "asset")
                party = self._party(ev.participant, "participant")
                amount = to_minor(ev.amount, asset.decimals, "amount", positive=False)
            except ValueError as exc:
                bad.append(BadLine(line, f"deposit: {exc}"))
                continue
            if not amount:  # declares the account: it appears in the report, at zero
                declared.append((party, asset.id))
                continue
            mint = Instruction(line, 0, Mint(id=f"deposit:{line}", asset=asset.id, target=party, amount=amount),
                               (ISSUER,), chain=asset.chain)
            (fund if asset.chain == MAIN else side.setdefault(asset.chain, [])).append(mint)
        if self.config.haircuts:
            fund.append(_control(collateral.SetHaircuts(id="setup:haircuts", haircuts={
                cls: str(h) for cls, h in sorted(self.config.haircuts.items())})))
        if self.config.partial_settlement:
            fund.append(_control(SetConfig(id="setup:partial", key=dvp.PARTIAL_KEY, value="true")))
        if self.mode == "net":
            period = parse_duration(self.config.netting_cycle, "netting_cycle") if self.config.netting_cycle else 0
            fund.append(_control(netting.ConfigureCycles(id="setup:cycles", period=period,
                                                         bilateral=bool(self.config.bilateral))))
        chains = {chain: self._chain_setup(chain, side.get(chain, [])) for chain in self.side_chains()}
        self.cross_chain = bool(chains)
        self.pending_cutoff = self.cutoff_at
        return SetupPlan(mode=self.mode, cutoff_at=self.cutoff_at, main=[admit, fund], chains=chains,
                         declared=declared), bad

    def side_chains(self) -> list[str]:
        return sorted({a.chain for a in self.assets.values()} - {MAIN})

    def _chain_setup(self, chain: str, deposits: list[Instruction]) -> list[list[Instruction]]:
        """A side chain's ledger gets the issuer, every member, its own assets, then its deposits."""
        admit = [Instruction(0, 0, Admit(id="setup:issuer", participant=ISSUER, roles=(ROLE_ISSUER,),
                                         public_key=public_key(ISSUER, chain)), (OPERATOR,), chain=chain)]
        admit += [Instruction(0, 0, Admit(id=f"participant:{p}", participant=p,
                                          roles=self.roles[p] or (ROLE_PARTICIPANT,),
                                          public_key=public_key(p, chain)), (OPERATOR,), chain=chain)
                  for p in sorted(self.participants)]
        admit += [Instruction(0, 0, RegisterAsset(id=f"asset:{a.id}", asset=a), (OPERATOR,), chain=chain)
                  for a in self.assets.values() if a.chain == chain]
        return [admit, deposits] if deposits else [admit]

    def _config(self, ev: ConfigEvent) -> None:
        if ev.mode is not None and ev.mode not in ("gross", "net"):
            raise ValueError(f"field 'mode': {ev.mode!r:.40} is not gross or net")
        for field in ("netting_cycle", "grace"):
            if getattr(ev, field) is not None:
                parse_duration(getattr(ev, field), field)
        if ev.mta is not None:
            check_decimal(ev.mta, "mta")  # in the cash asset's decimals, repo by repo
        for cls, h in (ev.haircuts or {}).items():
            if collateral.parse_haircut(str(h)) is None:
                raise ValueError(f"field 'haircuts': {cls:.40}: {h!r:.40} is not a fraction from 0 up to "
                                 "(not including) 1")
        cutoff = parse_time(ev.cutoff, "cutoff") if ev.cutoff is not None else None
        if cutoff is not None:
            self.cutoff_at = cutoff
        merged = {f: getattr(ev, f) for f in ev.__struct_fields__ if getattr(ev, f) is not None}
        self.config = msgspec.structs.replace(self.config, **merged)

    def _participant(self, ev: ParticipantEvent) -> Admit | None:
        if ev.id in RESERVED:
            raise ValueError(f"id {ev.id!r} is reserved by the replay")
        if not valid_id(ev.id):
            raise ValueError(f"field 'id': {ev.id!r:.140} is not a valid id (1 to 128 of letters, digits, _.:-/)")
        roles = tuple(ev.roles)
        bad = [r for r in roles if r not in ROLES or r == "operator"]
        if bad:
            raise ValueError(f"field 'roles': unknown or reserved role {bad[0]!r:.40}")
        if len(set(roles)) != len(roles):
            raise ValueError(f"field 'roles': a role appears twice in {list(roles)}")
        if ev.id in self.participants:
            if self.roles.get(ev.id) == roles:
                return None
            raise ValueError("id reused with different content")
        self.roles[ev.id] = roles
        self.participants[ev.id] = ev.id
        return Admit(id=f"participant:{ev.id}", participant=ev.id, roles=roles or (ROLE_PARTICIPANT,),
                     public_key=public_key(ev.id))

    def _asset_event(self, ev: AssetEvent) -> RegisterAsset | None:
        if not valid_id(ev.id):
            raise ValueError(f"field 'id': {ev.id!r:.140} is not a valid id")
        if ev.kind not in ("cash", "security"):
            raise ValueError(f"field 'kind': {ev.kind!r:.40} is not cash or security")
        if not 0 <= ev.decimals <= 18:
            raise ValueError(f"field 'decimals': {ev.decimals} is not between 0 and 18")
        if ev.price_basis not in (None, "per_100", "per_unit"):
            raise ValueError(f"field 'price_basis': {ev.price_basis!r:.40} is not per_100 or per_unit")
        if ev.day_count not in (None, "ACT/360", "ACT/365"):
            raise ValueError(f"field 'day_count': {ev.day_count!r:.40} is not ACT/360 or ACT/365")
        if ev.price is not None and prices.parse_price(str(ev.price)) is None:
            raise ValueError(f"field 'price': {ev.price!r:.40} is not a positive decimal")
        if ev.chain != MAIN:
            try:
                chain_location("journal", ev.chain)  # the same names wherever the journal lives
            except ValueError:
                raise ValueError(f"field 'chain': {ev.chain!r:.140} cannot name a chain (1 to 128 of letters, "
                                 "digits, _.:-, and not wal, shm or journal)") from None
        if ev.id in self.asset_events:
            if self.asset_events[ev.id] == ev:
                return None
            raise ValueError("id reused with different content")
        asset = Asset(
            id=ev.id, kind=ev.kind, decimals=ev.decimals, issuer=ISSUER, chain=ev.chain, asset_class=ev.asset_class,
            maturity=ev.maturity, price_basis=ev.price_basis or ("per_100" if ev.kind == "security" else "per_unit"),
            day_count=ev.day_count or "ACT/360",
        )
        self.asset_events[ev.id] = ev
        self.assets[ev.id] = asset
        return RegisterAsset(id=f"asset:{ev.id}", asset=asset)

    # -------------------------------------------------------------- names

    def _asset(self, ref: str, field: str, kind: str | None = None) -> Asset:
        asset = self.assets.get(ref)
        if asset is None:
            raise ValueError(f"unknown asset {ref!r:.140} in field '{field}'")
        if kind is not None and asset.kind != kind:
            raise ValueError(f"field '{field}': asset {ref!r} is not a {kind} asset")
        return asset

    def _party(self, ref: str, field: str) -> str:
        party = self.participants.get(ref)
        if party is None:
            raise ValueError(f"unknown participant {ref!r:.140} in field '{field}'")
        return party

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


def _control(cmd, signer: str = OPERATOR) -> Instruction:
    return Instruction(0, 0, cmd, (signer,))


def key_seed(participant: str) -> str:
    """The text a replay member's key is derived from (the same key on every chain)."""
    return f"replay/{MAIN}/{participant}"


def public_key(participant: str, chain: str = MAIN) -> bytes:
    from engine.identity import derive_key

    return bytes(derive_key(key_seed(participant)).verify_key)
