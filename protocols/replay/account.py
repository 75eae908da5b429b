"""Account: the ledgers' result codes and events, to one typed outcome per trade.

Takes each applied batch (its instructions, result codes and events, in
the order they happened) and each swap's step codes; gives a
`TradeOutcome` per trade id (a DvP, a delivery, a repo), each margin call
as a `MarginCall`, each net cycle's figures, and the lines the ledger
refused, as `BadLine`s naming the line and the rule that refused it.

A trade's outcome follows its events: `queued`, then `settled` or
`failed` (with the party short of what, and by how much, when the cut-off
fails it for lack of funds); a repo is `open`, then `closed`,
`defaulted` or, if its opening leg failed, `failed`. A line that reuses a
trade id with the same content changes nothing (the ledger says so: the
same command id); a repo id whose opening leg failed may be used again,
for a new repo.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from engine import codes as C
from engine.records import Admit, Mint, Move, RegisterAsset

from .. import collateral, dvp, netting, repo
from ..tradefile import BadLine
from .steps import Instruction, Swap, SwapResult

log = logging.getLogger("dvp.replay")
SETTLED, FAILED, QUEUED = "settled", "failed", "queued"

# A refused opening leg is a repo that failed (reported as a trade), not a bad line.
REPO_FAILURES = {
    repo.INSUFFICIENT_COLLATERAL: "insufficient_collateral",
    collateral.INELIGIBLE: "ineligible_collateral",
    repo.NO_PRICE: "no_price",
    dvp.INSUFFICIENT_SECURITIES: "insufficient_securities",
    dvp.INSUFFICIENT_CASH: "insufficient_cash",
    C.ACCOUNT_FROZEN: "party_frozen",
    C.PARTICIPANT_INACTIVE: "party_inactive",
}
# What a refused line's reason says, beyond the code's name.
REFUSALS = {
    dvp.SAME_PARTY: "seller and buyer are the same participant",
    C.SAME_ACCOUNT: "from and to are the same participant",
    repo.BAD_TERMS: "borrower and lender are the same participant, or the end has passed",
    C.INSUFFICIENT_FUNDS: "insufficient funds",
    C.INVALID_AMOUNT: "the amount is refused (zero, or the asset's supply would pass 2^63-1)",
}
OFFSETS = frozenset({"bilateral_offset", "multilateral_offset"})
KINDS = {dvp.Settle: "dvp", netting.Obligate: "dvp", Move: "deliver", repo.OpenRepo: "repo"}


class Short(msgspec.Struct, frozen=True, gc=False):
    """What a party lacked when its trade failed: `amount` of `asset`, in minor units."""

    party: str
    asset: str
    amount: int


class RepoFigures(msgspec.Struct, gc=False):
    interest: int | None = None  # accrued to the close
    close_out: int | None = None  # E - MV at a default
    ended_at: int | None = None  # closed or defaulted at
    margin_returned: int = 0


class TradeOutcome(msgspec.Struct, kw_only=True, gc=False):
    """What happened to one trade of the file."""

    id: str
    kind: str  # dvp | deliver | repo
    line: int
    queued_at: int  # the line's time: when it reached the ledger
    terms: Any  # the command it became (dvp.Settle, netting.Obligate, Move, repo.OpenRepo) or swap.SwapTerms
    status: str  # dvp and deliver: settled | failed | queued; repo: open | closed | defaulted | failed
    settled_at: int | None = None
    failed_at: int | None = None
    reason: str | None = None
    short: Short | None = None
    accepted: bool = True  # the ledger took its command (a refused repo's id stays free)
    repo: RepoFigures | None = None
    partial: int = 0  # cash already paid by partial settlements


class MarginCall(msgspec.Struct, gc=False):
    repo: str
    at: int
    amount: int
    status: str = "open"  # open | met | defaulted | withdrawn | closed
    met_at: int | None = None


class Position(msgspec.Struct, gc=False):
    """One participant's holding of one cash asset over the replay, in minor units."""

    opening: int = 0  # its deposits
    balance: int = 0  # now
    lowest: int = 0  # the lowest it reached
    sent: int = 0  # paid out in settlements (DvP, deliveries, net cycles, repo legs and margin)
    received: int = 0


class Liquidity:
    """Follow every cash movement the replay's trades make, in the order the ledger made them.

    The ledger keeps balances, not their history; this keeps, per
    participant and cash asset, what the report needs: the opening balance,
    the lowest it reached, the liquidity drawn (opening minus lowest), what
    was sent and received. It is computed from the results and events, so a
    resumed replay gives the same figures.
    """

    def __init__(self) -> None:
        self.cash: set[str] = set()  # the cash assets
        self.positions: dict[tuple[str, str], Position] = {}

    def _at(self, party: str, asset: str) -> Position:
        key = (party, asset)
        position = self.positions.get(key)
        if position is None:
            position = self.positions[key] = Position()
        return position

    def deposit(self, party: str, asset: str, amount: int) -> None:
        if asset in self.cash:
            position = self._at(party, asset)
            position.opening += amount
            position.balance += amount
            position.lowest += amount

    def pay(self, payer: str, payee: str, asset: str, amount: int) -> None:
        """`payer` pays `amount` of cash `asset` to `payee` (negative: the other way)."""
        if amount < 0:
            payer, payee, amount = payee, payer, -amount
        if not amount or asset not in self.cash:
            return
        source = self._at(payer, asset)
        source.balance -= amount
        source.sent += amount
        if source.balance < source.lowest:
            source.lowest = source.balance
        target = self._at(payee, asset)
        target.balance += amount
        target.received += amount

    def net(self, flows: dict[tuple[str, str], int]) -> None:
        """A net cycle's positions, settled in one step: every debit, then every credit."""
        for (party, asset), delta in sorted(flows.items()):
            if delta < 0 and asset in self.cash:
                position = self._at(party, asset)
                position.balance += delta
                position.sent -= delta
                if position.balance < position.lowest:
                    position.lowest = position.balance
        for (party, asset), delta in sorted(flows.items()):
            if delta > 0 and asset in self.cash:
                position = self._at(party, asset)
                position.balance += delta
                position.received += delta

    def drawn(self) -> dict[str, int]:
        """Per cash asset: the liquidity drawn, opening minus lowest, summed over participants."""
        out: dict[str, int] = {}
        for (_party, asset), position in self.positions.items():
            out[asset] = out.get(asset, 0) + position.opening - position.lowest
        return out


class Accounts:
    """Every trade's outcome, margin call and net cycle, and the refused lines."""

    def __init__(self, mode: str, cash_assets: set[str] | None = None):
        self.mode = mode
        self.liquidity = Liquidity()
        self.liquidity.cash = set(cash_assets or ())
        self.opening: dict[tuple[str, str], int] = {}  # (participant, asset) -> its deposits
        self.trades: dict[str, TradeOutcome] = {}
        self.rejected: list[BadLine] = []
        self.margin_calls: dict[str, MarginCall] = {}  # "repo#n", in issue order
        self.cycles: list[dict[str, str]] = []
        self._cycle_members: list[TradeOutcome] = []
        self._offset: tuple | None = None  # an offsetting set being read: (its step, net flows)


    # ------------------------------------------------------------ batches

    def record(self, instructions: list[Instruction | None], results: list[int], events: list) -> None:
        """Take a batch's results and events in the order they happened.

        A command's events follow its result: a DvP whose command returned
        OK settled there and then unless a `queued` event says otherwise, so
        its cash moves only once its events are read.
        """
        pending = iter(events)
        event = next(pending, None)
        while event is not None and event.position < 0:
            self._event(event)
            event = next(pending, None)
        self._offset_flush()
        trades = self.trades
        gross = self.mode == "gross"
        settle = dvp.Settle
        pay = self.liquidity.pay
        for position, (code, inst) in enumerate(zip(results, instructions)):
            outcome = None
            if inst is None or not inst.line:
                if code:
                    name = type(inst.command).__name__ if inst is not None else "Tick"
                    raise RuntimeError(f"the replay's own {name} command was refused: {C.name(code)}")
            elif not code and gross and type(inst.command) is settle and inst.command.trade not in trades:
                cmd = inst.command  # the common case, inline: a new trade settled at once (or queued: an event says)
                outcome = trades[cmd.trade] = TradeOutcome(id=cmd.trade, kind="dvp", line=inst.line,
                                                           queued_at=inst.at, terms=cmd, status=SETTLED,
                                                           settled_at=inst.at)
                if event is None or event.position > position:  # no event: it settled there and then
                    pay(cmd.buyer, cmd.seller, cmd.cash_asset, cmd.amount)
                    continue
            else:
                outcome = self._result(code, inst)
            if outcome is not None and gross and outcome.kind == "dvp" and outcome.status == SETTLED:
                waits = (event is not None and event.position == position and event.kind in ("queued", "failed")
                         and event.protocol == dvp.NAME and event.ref == outcome.id)  # failed: no queue (dvp.queue)
                if not waits:  # it settled at once: its cash moved before what its credits recycled
                    t = outcome.terms
                    pay(t.buyer, t.seller, t.cash_asset, t.amount)
            while event is not None and event.position <= position:
                self._event(event)
                event = next(pending, None)
            self._offset_flush()
        while event is not None:
            self._event(event)
            event = next(pending, None)
        self._offset_flush()

    def _result(self, code: int, inst: Instruction) -> TradeOutcome | None:
        cmd = inst.command
        kind = KINDS.get(type(cmd))
        if kind is None:  # set-up, prices, substitutions, cut-offs from lines: only a refusal matters
            if code:
                self.rejected.append(BadLine(inst.line, f"{_what(cmd)}: refused by the ledger: {_reason(code)}"))
            elif type(cmd) is Mint:
                self.liquidity.deposit(cmd.target, cmd.asset, cmd.amount)
                key = (cmd.target, cmd.asset)
                self.opening[key] = self.opening.get(key, 0) + cmd.amount
            return None
        ref = cmd.repo if kind == "repo" else (cmd.trade if kind == "dvp" else cmd.id.removeprefix("trade:"))
        known = self.trades.get(ref)
        if code == C.OK:
            if known is not None and known.accepted:
                return None  # the same id with the same content: idempotent, nothing changed
            outcome = TradeOutcome(id=ref, kind=kind, line=inst.line, queued_at=inst.at, terms=cmd, status=SETTLED)
            if kind == "dvp" and self.mode == "net":
                outcome.status = QUEUED
                self._cycle_members.append(outcome)
            elif kind == "repo":
                outcome.status = "open"
                outcome.repo = RepoFigures()
                self.liquidity.pay(cmd.lender, cmd.borrower, cmd.cash_asset, cmd.principal)
            else:
                outcome.settled_at = inst.at  # a DvP pays once its events show it was not queued
                if kind == "deliver":
                    self.liquidity.pay(cmd.source, cmd.target, cmd.asset, cmd.amount)
            self.trades[ref] = outcome
            return outcome
        elif kind == "repo" and code in REPO_FAILURES and (known is None or not known.accepted):
            self.trades[ref] = TradeOutcome(id=ref, kind="repo", line=inst.line, queued_at=inst.at, terms=cmd,
                                            status=FAILED, failed_at=inst.at, reason=REPO_FAILURES[code],
                                            accepted=False, repo=RepoFigures())
        elif code == C.ID_CONFLICT:
            self.rejected.append(BadLine(inst.line, f"{kind} {ref}: id reused with different content"))
        else:
            self.rejected.append(BadLine(inst.line, f"{kind} {ref}: refused by the ledger: {_reason(code)}"))
        return None

    def swap(self, step: Swap, result: SwapResult) -> None:
        """A cross-chain trade's outcome from the codes of its steps."""
        t = step.terms
        outcome = TradeOutcome(id=t.trade, kind="dvp", line=step.line, queued_at=step.at, terms=t, status=FAILED)
        if result.follow == C.OK:
            outcome.status = SETTLED
            outcome.settled_at = step.at
            self.liquidity.pay(t.buyer, t.seller, t.cash_asset, t.amount)
        else:
            outcome.failed_at = step.at
            follower = "seller" if t.initiator == "buyer" else "buyer"
            if result.first:  # the initiator could not lock
                failed, code = t.initiator, result.first
            elif result.second:  # the follower never locked
                failed, code = follower, result.second
            else:
                failed, code = t.initiator, result.reveal or result.follow
            if code == C.INSUFFICIENT_FUNDS:
                outcome.reason = "insufficient_cash" if failed == "buyer" else "insufficient_securities"
            else:
                outcome.reason = C.name(code)
        self.trades[t.trade] = outcome

    # ------------------------------------------------------------- events

    def _event(self, event) -> None:
        protocol = event.protocol
        if protocol == dvp.NAME:
            outcome = self.trades.get(event.ref)
            if outcome is None:
                return
            kind = event.kind
            if kind == "queued":
                outcome.status = QUEUED
            elif kind == "settled":
                outcome.status = SETTLED
                outcome.settled_at = event.at
                terms = outcome.terms
                how = event.data.get("by")
                if how in OFFSETS:  # a set settled in one step at its net flows
                    group = self._offset
                    if group is not None and group[0] != (event.at, event.position, how):
                        self._offset_flush()
                        group = None
                    if group is None:
                        group = self._offset = ((event.at, event.position, how), {})
                    flows = group[1]
                    cash = terms.amount - outcome.partial
                    flows[(terms.buyer, terms.cash_asset)] = flows.get((terms.buyer, terms.cash_asset), 0) - cash
                    flows[(terms.seller, terms.cash_asset)] = flows.get((terms.seller, terms.cash_asset), 0) + cash
                else:
                    self._offset_flush()
                    self.liquidity.pay(terms.buyer, terms.seller, terms.cash_asset, terms.amount - outcome.partial)
            elif kind == "partially_settled":
                paid = int(event.data["amount"])
                outcome.partial += paid
                self.liquidity.pay(outcome.terms.buyer, outcome.terms.seller, outcome.terms.cash_asset, paid)
            elif kind == "failed":
                data = event.data
                outcome.status = FAILED
                outcome.settled_at = None
                outcome.failed_at = event.at
                outcome.reason = data.get("reason", "failed")
                if "short" in data:
                    outcome.short = Short(data["party"], data["asset"], int(data["short"]))
        elif protocol == repo.NAME:
            self._repo_event(event)
        elif protocol == netting.NAME and event.kind == "cycle_closed":
            unwound = set(filter(None, event.data.get("unwound", "").split(",")))
            flows: dict[tuple[str, str], int] = {}
            for outcome in self._cycle_members:
                terms = outcome.terms
                if terms.seller in unwound or terms.buyer in unwound:
                    outcome.status = FAILED
                    outcome.failed_at = event.at
                    outcome.reason = "unwound"
                else:
                    outcome.status = SETTLED
                    outcome.settled_at = event.at
                    buyer, seller = (terms.buyer, terms.cash_asset), (terms.seller, terms.cash_asset)
                    flows[buyer] = flows.get(buyer, 0) - terms.amount
                    flows[seller] = flows.get(seller, 0) + terms.amount
            self.liquidity.net(flows)
            self._cycle_members = []
            self.cycles.append(dict(event.data))
            log.info("net cycle %s closed: %s trades, %s movements netted to %s, unwound: %s", event.data["cycle"],
                     event.data["trades"], event.data["gross_movements"], event.data["net_movements"],
                     event.data["unwound"] or "none")

    def _repo_event(self, event) -> None:
        kind, ref, data = event.kind, event.ref, event.data
        if kind == "margin_call":
            self.margin_calls[f"{ref}#{data['call']}"] = MarginCall(ref, event.at, int(data["amount"]))
            return
        if kind.startswith("margin_") and "call" in data:
            call = self.margin_calls.get(f"{ref}#{data['call']}")
            if call is None:
                return
            if kind == "margin_call_amended":  # the open call follows the deficit after another price move
                call.amount = int(data["amount"])
            elif kind in ("margin_met", "margin_default", "margin_closed", "margin_call_withdrawn"):
                call.status = {"margin_met": "met", "margin_default": "defaulted",
                               "margin_call_withdrawn": "withdrawn"}.get(kind, "closed")
                if kind == "margin_met":
                    call.met_at = event.at
                    outcome = self.trades.get(ref)
                    if outcome is not None:
                        terms = outcome.terms
                        self.liquidity.pay(terms.borrower, terms.lender, terms.cash_asset, int(data["amount"]))
            return
        outcome = self.trades.get(ref)
        if outcome is None or outcome.repo is None:
            return
        terms = outcome.terms
        if kind == "repo_closed":
            outcome.status = "closed"
            outcome.repo.ended_at = event.at
            outcome.repo.interest = int(data["interest"])
            self.liquidity.pay(terms.borrower, terms.lender, terms.cash_asset, int(data["paid"]))
        elif kind == "repo_defaulted":
            outcome.status = "defaulted"
            outcome.repo.ended_at = event.at
            outcome.reason = data["reason"]
            outcome.repo.close_out = int(data["close_out"])
        elif kind == "margin_return":
            outcome.repo.margin_returned += int(data["amount"])
            self.liquidity.pay(terms.lender, terms.borrower, terms.cash_asset, int(data["amount"]))

    def _offset_flush(self) -> None:
        if self._offset is not None:
            self.liquidity.net(self._offset[1])
            self._offset = None

    def reject(self, bad: BadLine) -> None:
        self.rejected.append(bad)


def _reason(code: int) -> str:
    phrase = REFUSALS.get(code)
    return f"{C.name(code)} ({phrase})" if phrase else C.name(code)


def _what(cmd) -> str:
    if type(cmd) is Mint:
        return f"deposit {cmd.target} {cmd.asset}"
    if type(cmd) is Admit:
        return f"participant {cmd.participant}"
    if type(cmd) is RegisterAsset:
        return f"asset {cmd.asset.id}"
    return getattr(cmd, "__struct_config__").tag
