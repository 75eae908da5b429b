"""Resolve the set-up: a trade file's config, members, assets and deposits, to the first commands.

Takes the set-up events (`read` decoded them; they take effect before
every timed event); gives a `Catalog` of the file's names (participants,
assets, chains, settings) that the timed events are resolved against, and a
`SetupPlan`: the batches that open each chain's ledger (members first, so
they can sign what follows; then prices, deposits and settings), plus
`BadLine`s for the set-up lines that cannot be used. Pure: no ledger.

The replay's own members sign what no participant does: the operator
(admissions, settings, time, cut-offs), the issuer (deposits), the
oracle (prices). Every key is derived from its member's id.
"""

from __future__ import annotations

from typing import Any

import msgspec

from engine.identity import derive_key, valid_id
from engine.journal import chain_location
from engine.records import ROLE_ISSUER, ROLE_ORACLE, ROLE_PARTICIPANT, ROLES, Admit, Asset, Mint, RegisterAsset
from engine.records import SetConfig

from .. import collateral, dvp, netting, prices
from ..tradefile import AssetEvent, BadLine, ConfigEvent, DepositEvent, ParticipantEvent, parse_duration, parse_time
from ..tradefile import to_minor
from .steps import MAIN, Instruction

OPERATOR = "replay.operator"
ISSUER = "replay.issuer"
ORACLE = "replay.oracle"
RESERVED = frozenset({OPERATOR, ISSUER, ORACLE})


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


class Catalog:
    """The file's names and settings, from its set-up events."""

    def __init__(self, mode: str | None = None):
        self.cli_mode = mode
        self.mode = mode or "gross"
        self.config = ConfigEvent()
        self.cutoff_at: int | None = None
        self.participants: dict[str, str] = {}  # id -> the id (one string object for every line)
        self.roles: dict[str, tuple[str, ...]] = {}
        self.assets: dict[str, Asset] = {}
        self.asset_events: dict[str, AssetEvent] = {}

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
        # The simpler RTGS models of a study: no queue, or a queue without offsetting (default: both on).
        if self.config.queue is False:
            fund.append(_control(SetConfig(id="setup:queue", key=dvp.QUEUE_KEY, value="false")))
        if self.config.offsetting is False:
            fund.append(_control(SetConfig(id="setup:offsetting", key=dvp.OFFSETTING_KEY, value="false")))
        if self.mode == "net":
            period = parse_duration(self.config.netting_cycle, "netting_cycle") if self.config.netting_cycle else 0
            fund.append(_control(netting.ConfigureCycles(id="setup:cycles", period=period,
                                                         bilateral=bool(self.config.bilateral))))
        chains = {chain: self._chain_setup(chain, side.get(chain, [])) for chain in self.side_chains()}
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


def _control(cmd, signer: str = OPERATOR) -> Instruction:
    return Instruction(0, 0, cmd, (signer,))


def key_seed(participant: str) -> str:
    """The text a replay member's key is derived from (the same key on every chain)."""
    return f"replay/{MAIN}/{participant}"


def public_key(participant: str, chain: str = MAIN) -> bytes:
    return bytes(derive_key(key_seed(participant)).verify_key)

