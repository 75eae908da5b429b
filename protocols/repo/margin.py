"""Margin: revalue repos, call margin, meet calls from the borrower's cash, return excess.

Takes a repo (or every repo holding an asset whose price changed); gives
margin calls for `E - CV` when it exceeds `mta`, met at once from the
borrower's cash or as soon as cash arrives, amended or withdrawn as prices
move, and returns of excess cash margin. `revalue_holders` revalues all
the repos holding one asset on a price tick with the figures computed
inline; its general path (switch `repo.revalue_holders`) calls `revalue`
for each repo and gives the same codes, events and state.
"""

from __future__ import annotations

import msgspec

from engine import codes as C
from engine.fastpath import switches
from engine.records import ROLE_OPERATOR
from engine.state import State

from .. import collateral, prices
from .recycling import wait_for_cash
from .records import NAME, SECONDS_PER_DAY, UNKNOWN_REPO, Repo, Revalue, book_of
from .valuation import blocked, exposure, haircut, parse_rate, values

# ------------------------------------------------------------------- margin


def withdraw_call(state: State, repo_id: str) -> Repo:
    """Withdraw the repo's open call (its deficit is gone, or its closing leg is due); return the repo."""
    book = book_of(state)
    r = book.repos[repo_id]
    state.cancel(r.timer)
    r = msgspec.structs.replace(r, call=0, deadline=0, timer=0)
    state.put(book.repos, repo_id, r)
    state.emit(NAME, "margin_call_withdrawn", repo_id, {"call": str(r.calls)})
    return r


def amend_call(state: State, repo_id: str, r: Repo, amount: int) -> Repo:
    """Set the open call of `r` to `amount` (the new deficit), keeping its deadline; return the repo."""
    r = msgspec.structs.replace(r, call=amount)
    state.put(book_of(state).repos, repo_id, r)
    state.emit(NAME, "margin_call_amended", repo_id, {"call": str(r.calls), "amount": str(amount)})
    wait_for_cash(state, repo_id, r)  # the call waiting for cash now needs the new amount
    return r


def revalue(state: State, repo_id: str, meet_now: bool = True) -> None:
    """Compare exposure with collateral value: call margin, or return excess margin.

    With `meet_now=False` an open call is left for the caller to meet, so
    that a price tick meets all its calls in order of deadline, then repo id.
    """
    book = book_of(state)
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
                amend_call(state, repo_id, r, e - cv)
                if meet_now:
                    meet(state, repo_id)
            return
        r = withdraw_call(state, repo_id)
    if e - cv > r.mta:
        deadline = state.now + r.grace
        timer = state.schedule(deadline, NAME, "deadline", repo_id)
        r = msgspec.structs.replace(r, call=e - cv, deadline=deadline, calls=r.calls + 1, timer=timer)
        state.put(book.repos, repo_id, r)
        state.emit(NAME, "margin_call", repo_id,
                   {"call": str(r.calls), "amount": str(r.call), "deadline": str(deadline)})
        if meet_now:
            meet(state, repo_id)
    elif cv - e > r.mta and r.margin > 0 and not blocked(state, r, (r.cash_asset,)):
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
    The general path (`revalue_holders_general`) runs `revalue` for each.
    """
    if not switches.repo_revalue_holders:
        revalue_holders_general(state, asset_id, repo_ids)
        return
    repos = book_of(state).repos
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
                amend_call(state, repo_id, r, e - cv)
            calls.append((r.deadline, repo_id))
        elif r.call or e - cv > r.mta or (cv - e > r.mta and r.margin > 0):
            revalue(state, repo_id, meet_now=False)
            r = repos[repo_id]
            if r.call:
                calls.append((r.deadline, repo_id))
    for _deadline, repo_id in sorted(calls):  # several calls on one borrower: by deadline, then repo id
        meet(state, repo_id)


def revalue_holders_general(state: State, asset_id: str, repo_ids: list[str]) -> None:
    """The general path of `revalue_holders`: `revalue` each repo, then meet the calls in order."""
    repos = book_of(state).repos
    if prices.latest(state, asset_id) is None:
        return
    calls: list[tuple[int, str]] = []
    for repo_id in repo_ids:
        r = repos.get(repo_id)
        if r is None or r.collateral != asset_id or r.closing:
            continue
        revalue(state, repo_id, meet_now=False)
        r = repos[repo_id]
        if r.call:
            calls.append((r.deadline, repo_id))
    for _deadline, repo_id in sorted(calls):
        meet(state, repo_id)


def meet(state: State, repo_id: str) -> bool:
    """Pay an open call from the borrower's cash if it can; else wait for cash to arrive."""
    book = book_of(state)
    r = book.repos[repo_id]
    if not r.call:
        return False
    if (blocked(state, r, (r.cash_asset,)) or state.available(r.borrower, r.cash_asset) < r.call
            or state.transfer(r.cash_asset, r.borrower, r.lender, r.call)):
        wait_for_cash(state, repo_id, r)
        return False
    state.cancel(r.timer)
    state.put(book.repos, repo_id, msgspec.structs.replace(r, margin=r.margin + r.call, call=0, deadline=0, timer=0))
    state.emit(NAME, "margin_met", repo_id, {"call": str(r.calls), "amount": str(r.call)})
    return True


def revalue_command(state: State, cmd: Revalue, auth) -> int:
    book = book_of(state)
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
