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

import functools
from fractions import Fraction

import msgspec

from engine import codes as C
from engine.protocol import Protocol
from engine.machine import AMOUNT_MAX
from engine.records import ROLE_OPERATOR, Command
from engine.state import State, Timer

from . import collateral, prices
from .dvp import INSUFFICIENT_CASH, INSUFFICIENT_SECURITIES, config_int

NAME = "repo"
SECONDS_PER_MINUTE = 60
SECONDS_PER_DAY = 86_400
GRACE_SECONDS_DEFAULT = 30 * SECONDS_PER_MINUTE
MTA_KEY = "repo.mta"
GRACE_KEY = "repo.grace"

INSUFFICIENT_COLLATERAL = 501
REPO_EXISTS = 502
UNKNOWN_REPO = 503
NO_PRICE = 504
BAD_TERMS = 505
SUBSTITUTE_TOO_SMALL = 506
REPO_CLOSING = 507
CODES = {
    INSUFFICIENT_COLLATERAL: "insufficient_collateral",
    REPO_EXISTS: "repo_exists",
    UNKNOWN_REPO: "unknown_repo",
    NO_PRICE: "no_price",
    BAD_TERMS: "bad_terms",
    SUBSTITUTE_TOO_SMALL: "substitute_too_small",
    REPO_CLOSING: "repo_closing",
}


# ----------------------------------------------------------------- commands


class OpenRepo(Command, tag="repo_open"):
    """Open a repo now (borrower's and lender's authority). mta/grace < 0: the configured default."""

    repo: str
    borrower: str
    lender: str
    collateral: str
    quantity: int
    cash_asset: str
    principal: int
    rate: str
    end: int
    haircut: str = ""
    mta: int = -1
    grace: int = -1


class CloseRepo(Command, tag="repo_close"):
    """Terminate a repo early by agreement (both parties): closing leg now."""

    repo: str


class Substitute(Command, tag="repo_substitute"):
    """Swap all of a repo's collateral for `quantity` of `collateral` (the borrower)."""

    repo: str
    collateral: str
    quantity: int


class Revalue(Command, tag="repo_revalue"):
    """Revalue one repo (a party or the operator) or, with repo "", all (the operator)."""

    repo: str = ""


# ------------------------------------------------------------------ records


class Repo(msgspec.Struct, frozen=True, array_like=True, gc=False):
    borrower: str
    lender: str
    collateral: str
    quantity: int
    cash_asset: str
    principal: int
    rate: str
    start: int
    end: int
    haircut: str  # "" for the schedule's
    mta: int
    grace: int
    margin: int = 0  # M: cash margin the lender holds for this repo
    closing: int = 0  # 1: the closing leg is due and waits for the borrower's cash
    call: int = 0  # amount of the open margin call, 0 if none
    deadline: int = 0  # of the open call
    calls: int = 0  # calls issued so far
    timer: int = 0  # the open call's deadline timer


class RepoBook(msgspec.Struct):
    repos: dict[str, Repo] = {}


def _book(state: State) -> RepoBook:
    return state.protocols[NAME]


def _index(state: State, name: str) -> dict[str, set[str]]:
    """Runtime indexes (by collateral asset, by borrower); rebuilt on load, filtered on use."""
    key = f"{NAME}.{name}"
    index = state.runtime.get(key)
    if index is None:
        index = state.runtime[key] = {}
    return index


def _remember(state: State, repo_id: str, r: Repo) -> None:
    _index(state, "asset").setdefault(r.collateral, set()).add(repo_id)
    _index(state, "borrower").setdefault(r.borrower, set()).add(repo_id)


# ---------------------------------------------------------------- valuation


@functools.lru_cache(maxsize=1 << 14)
def parse_rate(text: str) -> Fraction | None:
    if not isinstance(text, str) or not text.isascii() or not text or text.count(".") > 1:
        return None
    if text.startswith(".") or text.endswith(".") or not text.replace(".", "", 1).isdigit():
        return None
    return Fraction(text)


def interest(state: State, r: Repo, t: int) -> int:
    """I(t) = principal * rate * seconds / (D * 86400), half-up; accrual stops at `end`."""
    seconds = max(0, min(t, r.end) - r.start)
    rate = parse_rate(r.rate)
    assert rate is not None, "rates are checked when the repo opens"
    days = 365 if state.assets[r.cash_asset].day_count == "ACT/365" else 360
    numerator = r.principal * rate.numerator * seconds
    denominator = rate.denominator * days * SECONDS_PER_DAY
    return (2 * numerator + denominator) // (2 * denominator)


def haircut(state: State, r: Repo | OpenRepo, asset_id: str | None = None) -> Fraction | None:
    """The repo's haircut on `asset_id` (default: its collateral), or None if that asset is not eligible.

    Eligibility is the schedule's; an agreement's override changes `h` only.
    """
    scheduled = collateral.haircut_for(state.protocols[collateral.NAME], state.assets[asset_id or r.collateral],
                                       state.now)
    if scheduled is None or not r.haircut:
        return scheduled
    return collateral.parse_haircut(r.haircut)


def _blocked(state: State, r: Repo | OpenRepo, assets: tuple[str, ...],
             parties: tuple[str, ...] | None = None) -> int:
    """Why the repo's parties (or those named) cannot settle in `assets` now (OK if they can)."""
    parties = parties or (r.borrower, r.lender)
    parts = state.participants
    if any(parts[p].status for p in parties):
        return C.PARTICIPANT_INACTIVE
    if state.frozen and any(state.is_frozen(p, a) for p in parties for a in assets):
        return C.ACCOUNT_FROZEN
    return C.OK


def _lender_at_fault(state: State, r: Repo, assets: tuple[str, ...]) -> bool:
    """The lender alone is blocked (suspended, or frozen in `assets`): the borrower must not default for it."""
    return bool(_blocked(state, r, assets, (r.lender,))) and not _blocked(state, r, assets, (r.borrower,))


def values(state: State, asset_id: str, quantity: int, cash_asset: str, h: Fraction | None) -> tuple[int, int] | None:
    """(MV, CV) of a collateral position at the latest price; None without a price."""
    price = prices.latest(state, asset_id)
    if price is None:
        return None
    mv = collateral.market_value(quantity, price, state.assets[asset_id], state.assets[cash_asset])
    return mv, (collateral.collateral_value(mv, h) if h is not None else 0)


def exposure(state: State, r: Repo, t: int) -> int:
    return r.principal + interest(state, r, t) - r.margin


# ----------------------------------------------------------------- opening


def _terms(state: State, cmd: OpenRepo) -> int:
    code = state.check_parties(cmd.borrower, cmd.lender)
    if code:
        return code
    if cmd.borrower == cmd.lender:
        return BAD_TERMS
    security = state.assets.get(cmd.collateral)
    cash = state.assets.get(cmd.cash_asset)
    if security is None or cash is None:
        return C.UNKNOWN_ASSET
    if security.kind != "security" or cash.kind != "cash":
        return BAD_TERMS
    if not 0 < cmd.quantity <= AMOUNT_MAX or not 0 < cmd.principal <= AMOUNT_MAX:
        return C.INVALID_AMOUNT
    if cmd.end <= state.now or parse_rate(cmd.rate) is None or not cmd.repo:
        return BAD_TERMS
    if cmd.haircut and collateral.parse_haircut(cmd.haircut) is None:
        return collateral.BAD_HAIRCUT
    return C.OK


def open_repo(state: State, cmd: OpenRepo, auth) -> int:
    if auth is not None and (cmd.borrower not in auth or cmd.lender not in auth):
        return C.UNAUTHORIZED
    code = _terms(state, cmd)
    if code:
        return code
    book = _book(state)
    if cmd.repo in book.repos:
        return REPO_EXISTS
    if f"repo:{cmd.repo}" in state.encumbrances:
        return C.INVALID_FIELD  # an engine encumbrance took the repo's name: refused before the freeze
    code = _blocked(state, cmd, (cmd.collateral, cmd.cash_asset))
    if code:
        return code
    h = haircut(state, cmd)
    if h is None:
        return collateral.INELIGIBLE
    valued = values(state, cmd.collateral, cmd.quantity, cmd.cash_asset, h)
    if valued is None:
        return NO_PRICE
    if valued[1] < cmd.principal:
        return INSUFFICIENT_COLLATERAL
    short = state.exchange(cmd.collateral, cmd.quantity, cmd.cash_asset, cmd.principal, cmd.borrower, cmd.lender)
    if short:
        return INSUFFICIENT_SECURITIES if short == 1 else INSUFFICIENT_CASH
    code = state.encumber(f"repo:{cmd.repo}", cmd.collateral, cmd.lender, cmd.borrower, cmd.quantity)
    if code:
        return code
    mta = cmd.mta if cmd.mta >= 0 else config_int(state, MTA_KEY, 0)
    grace = cmd.grace if cmd.grace >= 0 else config_int(state, GRACE_KEY, GRACE_SECONDS_DEFAULT)
    r = Repo(cmd.borrower, cmd.lender, cmd.collateral, cmd.quantity, cmd.cash_asset, cmd.principal, cmd.rate,
             state.now, cmd.end, cmd.haircut, mta, grace)
    state.put(book.repos, cmd.repo, r)
    state.schedule(cmd.end, NAME, "close", cmd.repo)
    state.emit(NAME, "repo_opened", cmd.repo, {"mv": str(valued[0]), "cv": str(valued[1])})
    _remember(state, cmd.repo, r)
    return C.OK


# ----------------------------------------------------------------- closing


def _close_now(state: State, repo_id: str, how: str) -> int:
    """The closing leg: borrower pays principal + I - M, lender returns the collateral, or neither."""
    book = _book(state)
    r = book.repos[repo_id]
    code = _blocked(state, r, (r.collateral, r.cash_asset))
    if code:
        return code
    accrued = interest(state, r, state.now)
    due = r.principal + accrued - r.margin
    code = state.unencumber(f"repo:{repo_id}")
    if code:
        return code
    if state.transfer(r.collateral, r.lender, r.borrower, r.quantity):
        return INSUFFICIENT_SECURITIES
    if due > 0 and state.transfer(r.cash_asset, r.borrower, r.lender, due):
        return INSUFFICIENT_CASH
    if due < 0 and state.transfer(r.cash_asset, r.lender, r.borrower, -due):
        return INSUFFICIENT_CASH
    if r.timer:
        state.cancel(r.timer)
    state.pop(book.repos, repo_id)
    state.emit(NAME, "repo_closed", repo_id, {"interest": str(accrued), "paid": str(due), "by": how})
    if r.call:
        state.emit(NAME, "margin_closed", repo_id, {"call": str(r.calls)})
    return C.OK


def _close_or_queue(state: State, repo_id: str) -> None:
    code = state.attempt(_close_now, state, repo_id, "end")
    if code:
        book = _book(state)
        r = book.repos[repo_id]
        if not r.closing:
            if r.call:  # the closing leg now asks for all of E: the call is moot, and must not default it early
                r = _withdraw_call(state, repo_id)
            state.put(book.repos, repo_id, msgspec.structs.replace(r, closing=1))
            state.emit(NAME, "close_queued", repo_id, {"reason": CODES.get(code) or C.name(code)})
        state.watch_account(r.cash_asset, r.borrower)


def close_repo(state: State, cmd: CloseRepo, auth) -> int:
    r = _book(state).repos.get(cmd.repo)
    if r is None:
        return UNKNOWN_REPO
    if auth is not None and (r.borrower not in auth or r.lender not in auth):
        return C.UNAUTHORIZED
    return _close_now(state, cmd.repo, "agreement")


def default(state: State, repo_id: str, reason: str) -> None:
    """Terminate: the lender keeps collateral and margin; record the close-out amount E - MV."""
    book = _book(state)
    r = book.repos[repo_id]
    e = exposure(state, r, state.now)
    valued = values(state, r.collateral, r.quantity, r.cash_asset, None)
    mv = valued[0] if valued else 0
    state.unencumber(f"repo:{repo_id}")
    if r.timer:
        state.cancel(r.timer)
    state.pop(book.repos, repo_id)
    if r.call:
        state.emit(NAME, "margin_default", repo_id, {"call": str(r.calls), "amount": str(r.call)})
    state.emit(NAME, "repo_defaulted", repo_id,
               {"reason": reason, "exposure": str(e), "mv": str(mv), "close_out": str(e - mv),
                "margin": str(r.margin)})


# ------------------------------------------------------------------- margin


def _withdraw_call(state: State, repo_id: str) -> Repo:
    """Withdraw the repo's open call (its deficit is gone, or its closing leg is due); return the repo."""
    book = _book(state)
    r = book.repos[repo_id]
    state.cancel(r.timer)
    r = msgspec.structs.replace(r, call=0, deadline=0, timer=0)
    state.put(book.repos, repo_id, r)
    state.emit(NAME, "margin_call_withdrawn", repo_id, {"call": str(r.calls)})
    return r


def _amend_call(state: State, repo_id: str, r: Repo, amount: int) -> Repo:
    """Set the open call of `r` to `amount` (the new deficit), keeping its deadline; return the repo."""
    r = msgspec.structs.replace(r, call=amount)
    state.put(_book(state).repos, repo_id, r)
    state.emit(NAME, "margin_call_amended", repo_id, {"call": str(r.calls), "amount": str(amount)})
    return r


def revalue(state: State, repo_id: str, meet_now: bool = True) -> None:
    """Compare exposure with collateral value: call margin, or return excess margin.

    With `meet_now=False` an open call is left for the caller to meet, so
    that a price tick meets all its calls in order of deadline, then repo id.
    """
    book = _book(state)
    r = book.repos[repo_id]
    if r.closing:
        return
    valued = values(state, r.collateral, r.quantity, r.cash_asset, haircut(state, r))
    if valued is None:
        return
    cv = valued[1]
    e = exposure(state, r, state.now)  # M holds only what was paid: an open call is part of E - CV
    if r.call:  # one call at a time: it follows the deficit, keeping its deadline
        if e - cv > r.mta:
            if e - cv != r.call:
                _amend_call(state, repo_id, r, e - cv)
                if meet_now:
                    meet(state, repo_id)
            return
        r = _withdraw_call(state, repo_id)
    if e - cv > r.mta:
        deadline = state.now + r.grace
        timer = state.schedule(deadline, NAME, "deadline", repo_id)
        r = msgspec.structs.replace(r, call=e - cv, deadline=deadline, calls=r.calls + 1, timer=timer)
        state.put(book.repos, repo_id, r)
        state.emit(NAME, "margin_call", repo_id,
                   {"call": str(r.calls), "amount": str(r.call), "deadline": str(deadline)})
        if meet_now:
            meet(state, repo_id)
    elif cv - e > r.mta and r.margin > 0 and not _blocked(state, r, (r.cash_asset,)):
        back = min(cv - e, r.margin)
        if state.available(r.lender, r.cash_asset) >= back and not state.transfer(
                r.cash_asset, r.lender, r.borrower, back):
            state.put(book.repos, repo_id, msgspec.structs.replace(r, margin=r.margin - back))
            state.emit(NAME, "margin_return", repo_id, {"amount": str(back)})


def revalue_holders(state: State, asset_id: str, repo_ids: list[str]) -> None:
    """Revalue, in repo-id order, the repos holding `asset_id` after its price changed.

    The same figures as `revalue`, computed inline with the price, the
    schedule's haircut and each cash asset's scale taken once for the tick;
    `revalue` itself runs only for the repos that need a call or a return.
    """
    repos = _book(state).repos
    price = prices.latest(state, asset_id)
    if price is None:
        return
    security = state.assets[asset_id]
    scheduled = collateral.haircut_for(state.protocols[collateral.NAME], security, state.now)
    now = state.now
    cash_scale: dict[str, tuple[int, int]] = {}
    calls: list[tuple[int, str]] = []
    value_denominator = price.denominator * prices.BASIS[security.price_basis] * 10**security.decimals
    for repo_id in repo_ids:
        r = repos.get(repo_id)
        if r is None or r.collateral != asset_id or r.closing:
            continue
        scale = cash_scale.get(r.cash_asset)
        if scale is None:
            cash = state.assets[r.cash_asset]
            scale = cash_scale[r.cash_asset] = (10**cash.decimals, 365 if cash.day_count == "ACT/365" else 360)
        h = collateral.parse_haircut(r.haircut) if r.haircut and scheduled is not None else scheduled
        numerator = r.quantity * price.numerator * scale[0]
        mv = (2 * numerator + value_denominator) // (2 * value_denominator)
        cv = mv * (h.denominator - h.numerator) // h.denominator if h is not None else 0
        rate = parse_rate(r.rate)
        seconds = max(0, min(now, r.end) - r.start)
        per = rate.denominator * scale[1] * SECONDS_PER_DAY
        e = r.principal + (2 * r.principal * rate.numerator * seconds + per) // (2 * per) - r.margin
        if r.call and e - cv > r.mta:  # the open call follows the deficit
            if e - cv != r.call:
                _amend_call(state, repo_id, r, e - cv)
            calls.append((r.deadline, repo_id))
        elif r.call or e - cv > r.mta or (cv - e > r.mta and r.margin > 0):
            revalue(state, repo_id, meet_now=False)
            r = repos[repo_id]
            if r.call:
                calls.append((r.deadline, repo_id))
    for _deadline, repo_id in sorted(calls):  # several calls on one borrower: by deadline, then repo id
        meet(state, repo_id)


def meet(state: State, repo_id: str) -> bool:
    """Pay an open call from the borrower's cash if it can; else wait for cash to arrive."""
    book = _book(state)
    r = book.repos[repo_id]
    if not r.call:
        return False
    if (_blocked(state, r, (r.cash_asset,)) or state.available(r.borrower, r.cash_asset) < r.call
            or state.transfer(r.cash_asset, r.borrower, r.lender, r.call)):
        state.watch_account(r.cash_asset, r.borrower)
        return False
    state.cancel(r.timer)
    state.put(book.repos, repo_id, msgspec.structs.replace(r, margin=r.margin + r.call, call=0, deadline=0, timer=0))
    state.emit(NAME, "margin_met", repo_id, {"call": str(r.calls), "amount": str(r.call)})
    return True


def substitute(state: State, cmd: Substitute, auth) -> int:
    book = _book(state)
    r = book.repos.get(cmd.repo)
    if r is None:
        return UNKNOWN_REPO
    if auth is not None and r.borrower not in auth:
        return C.UNAUTHORIZED
    if r.closing:
        return REPO_CLOSING
    code = _blocked(state, r, ())  # a party inactive; its freezes come after the terms, as in `open_repo`
    if code:
        return code
    new = state.assets.get(cmd.collateral)
    if new is None:
        return C.UNKNOWN_ASSET
    if new.kind != "security":
        return BAD_TERMS
    if cmd.quantity <= 0:
        return C.INVALID_AMOUNT
    code = _blocked(state, r, (r.collateral, cmd.collateral))
    if code:
        return code
    h_new = haircut(state, r, cmd.collateral)
    if h_new is None:
        return collateral.INELIGIBLE
    old = values(state, r.collateral, r.quantity, r.cash_asset, haircut(state, r))
    fresh = values(state, cmd.collateral, cmd.quantity, r.cash_asset, h_new)
    if old is None or fresh is None:
        return NO_PRICE
    if fresh[1] < old[1]:
        return SUBSTITUTE_TOO_SMALL
    code = state.unencumber(f"repo:{cmd.repo}")
    if code:
        return code
    if state.transfer(r.collateral, r.lender, r.borrower, r.quantity):
        return INSUFFICIENT_SECURITIES
    if state.transfer(cmd.collateral, r.borrower, r.lender, cmd.quantity):
        return INSUFFICIENT_SECURITIES
    code = state.encumber(f"repo:{cmd.repo}", cmd.collateral, r.lender, r.borrower, cmd.quantity)
    if code:
        return code
    r = msgspec.structs.replace(r, collateral=cmd.collateral, quantity=cmd.quantity)
    state.put(book.repos, cmd.repo, r)
    state.emit(NAME, "repo_substituted", cmd.repo, {"collateral": cmd.collateral, "quantity": str(cmd.quantity)})
    _remember(state, cmd.repo, r)
    revalue(state, cmd.repo)  # the new collateral may cover an open call's deficit
    return C.OK


def revalue_command(state: State, cmd: Revalue, auth) -> int:
    book = _book(state)
    if not cmd.repo:
        if not state.has_role(auth, ROLE_OPERATOR):
            return C.UNAUTHORIZED
        for repo_id in sorted(book.repos):
            revalue(state, repo_id)
        return C.OK
    r = book.repos.get(cmd.repo)
    if r is None:
        return UNKNOWN_REPO
    if auth is not None and r.borrower not in auth and r.lender not in auth and not state.has_role(
            auth, ROLE_OPERATOR):
        return C.UNAUTHORIZED
    revalue(state, cmd.repo)
    return C.OK


class Repos(Protocol):
    name = NAME
    version = 2  # 2: open calls follow revaluation, freezes stop repo legs, overrides keep eligibility
    state_type = RepoBook
    codes = CODES

    def handlers(self):
        return {OpenRepo: open_repo, CloseRepo: close_repo, Substitute: substitute, Revalue: revalue_command}

    def on_due(self, state: State, timer: Timer) -> int:
        r = _book(state).repos.get(timer.ref)
        if r is None:
            return C.OK
        if timer.kind == "close" and not r.closing and timer.due_at == r.end:
            _close_or_queue(state, timer.ref)
        elif timer.kind == "deadline" and r.call and r.deadline == timer.due_at:
            if meet(state, timer.ref):  # one last try: a freeze lifted or a member reinstated since
                return C.OK
            if _lender_at_fault(state, r, (r.cash_asset,)):  # the call stays open, with no deadline
                state.put(_book(state).repos, timer.ref, msgspec.structs.replace(r, timer=0))
                state.emit(NAME, "margin_call_held", timer.ref, {"call": str(r.calls), "reason": "lender_blocked"})
            else:
                default(state, timer.ref, "margin_call_unmet")
        return C.OK

    def on_notice(self, state: State, topic: str, key: str) -> None:
        book = _book(state)
        if topic == "price":
            ids = _index(state, "asset").get(key)
            if ids:
                revalue_holders(state, key, sorted(ids))
        elif topic == "cutoff":
            for repo_id in sorted(i for i, r in book.repos.items() if r.closing):
                if state.attempt(_close_now, state, repo_id, "cutoff") == C.OK:
                    continue
                r = book.repos[repo_id]
                if _lender_at_fault(state, r, (r.collateral, r.cash_asset)):  # stays open past the cut-off
                    state.emit(NAME, "close_held", repo_id, {"reason": "lender_blocked"})
                else:
                    default(state, repo_id, "closing_leg_unpaid")

    def on_rise(self, state: State, accounts: list[tuple[str, str]]) -> None:
        book = _book(state)
        by_borrower = _index(state, "borrower")
        waiting = []
        for asset, party in accounts:
            for repo_id in by_borrower.get(party, ()):
                r = book.repos.get(repo_id)
                if r is not None and r.borrower == party and r.cash_asset == asset and (r.call or r.closing):
                    waiting.append((r.deadline if r.call else r.end, repo_id))
        for _due, repo_id in sorted(set(waiting)):
            r = book.repos.get(repo_id)
            if r is None:
                continue
            if r.closing:
                if state.attempt(_close_now, state, repo_id, "recycling") == C.OK:
                    continue
            elif r.call:
                meet(state, repo_id)  # checks the borrower's cash before it moves anything

    def loaded(self, state: State) -> None:
        for name in ("asset", "borrower"):
            _index(state, name).clear()
        for repo_id, r in _book(state).repos.items():
            _remember(state, repo_id, r)

    # ------------------------------------------------------------------ reads

    query_kinds = ("repo",)
    record_outcomes = {"repo_closed": "closed", "repo_defaulted": "defaulted"}

    def query(self, state: State, kind: str, key: str) -> list:
        """An open repo with its exposure E, collateral value CV (and MV), open call and cash margin M, now."""
        from engine.protocol import QueryAnswer

        r = _book(state).repos.get(key) if kind == "repo" else None
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

    def record_of(self, command: Command):
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
