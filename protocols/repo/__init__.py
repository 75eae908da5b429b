"""Intraday repo: opening and closing legs as DvP, interest by the second, margin.

The borrower (cash taker) delivers collateral and receives the principal;
the lender (cash provider) takes the collateral, which stays encumbered at
the lender for the repo's life (title transfer without re-use).

- Opening leg (`OpenRepo`, signed by both): the collateral must be eligible
  and priced, and `CV = floor(MV * (1 - h)) >= principal`; then collateral
  borrower -> lender and principal lender -> borrower in one step.
- Interest: `I(t) = principal * rate * seconds(start, t) / (D * 86400)`,
  half-up, `D` 360 or 365 by the cash asset's day count.
- Closing leg at `end` (a timer): the borrower pays `principal + I(end) - M`
  (`M`: cash margin the lender holds) and the lender returns the collateral,
  in one step. A borrower short of cash queues the leg, retried whenever
  its cash rises; at the cut-off the repo defaults. `CloseRepo` (both
  parties) terminates early, with interest to that second.
- Margin: whenever the collateral's price changes (and on `Revalue`),
  exposure `E = principal + I(t) - M` is compared with `CV`. If
  `E - CV > mta` a call for `E - CV` is issued with a deadline (`grace`,
  default 30 minutes) and met at once from the borrower's cash (moving to the
  lender and adding to `M`), or as soon as cash arrives. A call still open at
  its deadline defaults the repo: the lender keeps collateral and `M`, and
  the close-out amount `E - MV` is recorded. If `CV - E > mta` and `M > 0`,
  `min(CV - E, M)` returns to the borrower. An open call follows later
  revaluations: amended to the new `E - CV` (same deadline), or withdrawn
  once `E - CV <= mta`.
- Eligibility is the schedule's; an agreement's haircut override changes
  `h` only. A suspended party, or one frozen on the collateral or the cash,
  settles no leg: opening and substitution are refused, the closing leg
  queues (tried once more at the cut-off), calls go unmet. A borrower never
  defaults for its lender's block: a call the lender alone blocks is held
  open past its deadline (`margin_call_held`), a closing leg past the
  cut-off (`close_held`).
- Substitution (`Substitute`, the borrower): all old collateral returns and
  new eligible collateral of at least the same haircut-adjusted value goes
  to the lender, in one step.

When several calls wait on the same borrower's cash they are met in order
of deadline, then repo id; a price shock revalues repos in repo-id order.
Every open, call, payment, return, default and close-out is an event in the
journal entry.
"""

from __future__ import annotations

import msgspec

from engine import codes as C
from engine.protocol import Handler, Protocol, QueryAnswer
from engine.records import Command
from engine.state import State, Timer

from .lifecycle import (
    close_now,
    close_or_queue,
    close_repo,
    default,
    open_repo,
    substitute,
)
from .margin import meet, revalue, revalue_command, revalue_holders
from .records import (
    BAD_TERMS,
    CODES,
    GRACE_KEY,
    GRACE_SECONDS_DEFAULT,
    INSUFFICIENT_COLLATERAL,
    MTA_KEY,
    NAME,
    NO_PRICE,
    REPO_CLOSING,
    REPO_EXISTS,
    SUBSTITUTE_TOO_SMALL,
    UNKNOWN_REPO,
    CloseRepo,
    OpenRepo,
    Repo,
    RepoBook,
    Revalue,
    Substitute,
    book_of,
    index_of,
    remember,
)
from .recycling import on_rise, rebuild_waitlists, sweep_waitlists
from .valuation import exposure, haircut, interest, lender_at_fault, parse_rate, values

__all__ = [
    "BAD_TERMS", "CODES", "GRACE_KEY", "GRACE_SECONDS_DEFAULT", "INSUFFICIENT_COLLATERAL", "MTA_KEY", "NAME",
    "NO_PRICE", "REPO_CLOSING", "REPO_EXISTS", "SUBSTITUTE_TOO_SMALL", "UNKNOWN_REPO", "CloseRepo", "OpenRepo",
    "Repo", "RepoBook", "Repos", "Revalue", "Substitute", "close_repo", "default", "exposure", "haircut",
    "interest", "meet", "open_repo", "parse_rate", "revalue", "revalue_command", "revalue_holders",
    "substitute", "values",
]


class Repos(Protocol):
    name = NAME
    reserved_prefixes = ("repo:",)  # its escrow names: the engine refuses them in Hold, Release, ...
    version = 2  # 2: open calls follow revaluation, freezes stop repo legs, overrides keep eligibility
    state_type = RepoBook
    codes = CODES

    def handlers(self) -> dict[type[Command], Handler]:
        return {OpenRepo: open_repo, CloseRepo: close_repo, Substitute: substitute, Revalue: revalue_command}

    def on_due(self, state: State, timer: Timer) -> int:
        r = book_of(state).repos.get(timer.ref)
        if r is None:
            return C.OK
        if timer.kind == "close" and not r.closing and timer.due_at == r.end:
            close_or_queue(state, timer.ref)
        elif timer.kind == "deadline" and r.call and r.deadline == timer.due_at:
            if meet(state, timer.ref):  # one last try: a freeze lifted or a member reinstated since
                return C.OK
            if lender_at_fault(state, r, (r.cash_asset,)):  # the call stays open, with no deadline
                state.put(book_of(state).repos, timer.ref, msgspec.structs.replace(r, timer=0))
                state.emit(NAME, "margin_call_held", timer.ref, {"call": str(r.calls), "reason": "lender_blocked"})
            else:
                default(state, timer.ref, "margin_call_unmet")
        return C.OK

    def on_notice(self, state: State, topic: str, key: str) -> None:
        book = book_of(state)
        if topic == "price":
            ids = index_of(state, "asset").get(key)
            if ids:
                revalue_holders(state, key, sorted(ids))
        elif topic == "cutoff":
            for repo_id in sorted(i for i, r in book.repos.items() if r.closing):
                if state.attempt(close_now, state, repo_id, "cutoff") == C.OK:
                    continue
                r = book.repos[repo_id]
                if lender_at_fault(state, r, (r.collateral, r.cash_asset)):  # stays open past the cut-off
                    state.emit(NAME, "close_held", repo_id, {"reason": "lender_blocked"})
                else:
                    default(state, repo_id, "closing_leg_unpaid")

    def after_batch(self, state: State) -> None:
        sweep_waitlists(state)

    def on_rise(self, state: State, accounts: list[tuple[str, str]]) -> None:
        """Meet the calls and settle the closing legs the risen cash now covers (`recycling`)."""
        on_rise(state, accounts)

    def loaded(self, state: State) -> None:
        for name in ("asset", "borrower"):
            index_of(state, name).clear()
        for repo_id, r in book_of(state).repos.items():
            remember(state, repo_id, r)
        rebuild_waitlists(state)

    # ------------------------------------------------------------------ reads

    query_kinds = ("repo",)
    record_outcomes = {"repo_closed": "closed", "repo_defaulted": "defaulted"}

    def query(self, state: State, kind: str, key: str) -> list[QueryAnswer]:
        """An open repo with its exposure E, collateral value CV (and MV), open call and cash margin M, now."""
        from engine.protocol import QueryAnswer

        r = book_of(state).repos.get(key) if kind == "repo" else None
        if r is None:
            return []
        h = haircut(state, r)
        valued = values(state, r.collateral, r.quantity, r.cash_asset, h)
        record = {**msgspec.structs.asdict(r), "at": state.now, "interest": interest(state, r, state.now),
                  "exposure": exposure(state, r, state.now),
                  "market_value": valued[0] if valued else None,
                  "collateral_value": valued[1] if valued and h is not None else None,
                  "haircut_applied": "" if h is None else str(h)}
        return [QueryAnswer(kind="repo", key=key, status="closing" if r.closing else "open",
                            parties=(r.borrower, r.lender), record=record)]

    def record_of(self, command: Command) -> QueryAnswer | None:
        """An OpenRepo names its repo and both parties; the other repo commands their repo alone."""
        from engine.protocol import QueryAnswer

        if isinstance(command, OpenRepo):
            fields = msgspec.structs.asdict(command)
            del fields["id"], fields["linked"]
            return QueryAnswer(kind="repo", key=command.repo, status="closed",
                               parties=(command.borrower, command.lender), record=fields)
        if isinstance(command, (CloseRepo, Substitute, Revalue)) and command.repo:
            return QueryAnswer(kind="repo", key=command.repo, status="", parties=())
        return None
