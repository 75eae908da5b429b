"""The repo's life: open (the opening leg), close (the closing leg, queued if the borrower is short),
default, and substitution of collateral.

Takes repo commands and due timers; gives result codes and moves cash and
collateral as one step each: the opening leg is collateral to the lender
(encumbered there) against principal to the borrower; the closing leg is
`principal + I(end) - M` back against all the collateral.
"""

from __future__ import annotations

import msgspec

from engine import codes as C
from engine.machine import AMOUNT_MAX, TIME_MAX
from engine.records import ID_LENGTH_MAX
from engine.state import State

from .. import collateral
from ..dvp import INSUFFICIENT_CASH, INSUFFICIENT_SECURITIES, config_int
from .margin import revalue, withdraw_call
from .recycling import wait_for_cash
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
    SECONDS_PER_DAY,
    SUBSTITUTE_TOO_SMALL,
    UNKNOWN_REPO,
    CloseRepo,
    OpenRepo,
    Repo,
    Substitute,
    book_of,
    remember,
)
from .valuation import blocked, exposure, haircut, interest, parse_rate, values

# ----------------------------------------------------------------- opening


def check_terms(state: State, cmd: OpenRepo) -> int:
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
    if cmd.end <= state.now or parse_rate(cmd.rate) is None or not cmd.repo or len(cmd.repo) > ID_LENGTH_MAX:
        return BAD_TERMS
    if cmd.haircut and collateral.parse_haircut(cmd.haircut) is None:
        return collateral.BAD_HAIRCUT
    if cmd.grace > AMOUNT_MAX or cmd.mta > AMOUNT_MAX:  # a call's deadline, now + grace, must stay encodable
        return BAD_TERMS
    if cmd.principal + interest_bound(cmd.principal, cmd.rate, min(cmd.end, TIME_MAX) - state.now) > AMOUNT_MAX:
        return BAD_TERMS  # its exposure (a margin call's amount) must stay encodable until it ends
    return C.OK


def interest_bound(principal: int, rate: str, seconds: int) -> int:
    """At least the interest `principal` accrues at `rate` over `seconds` (ACT/360 gives the most)."""
    r = parse_rate(rate)
    assert r is not None
    return -(-principal * r.numerator * seconds // (r.denominator * 360 * SECONDS_PER_DAY))


def open_repo(state: State, cmd: OpenRepo, auth) -> int:
    if auth is not None and (cmd.borrower not in auth or cmd.lender not in auth):
        return C.UNAUTHORIZED
    code = check_terms(state, cmd)
    if code:
        return code
    book = book_of(state)
    if cmd.repo in book.repos:
        return REPO_EXISTS
    if f"repo:{cmd.repo}" in state.encumbrances:
        return C.INVALID_FIELD  # an engine encumbrance took the repo's name: refused before the freeze
    code = blocked(state, cmd, (cmd.collateral, cmd.cash_asset))
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
    remember(state, cmd.repo, r)
    return C.OK


# ----------------------------------------------------------------- closing


def close_now(state: State, repo_id: str, how: str) -> int:
    """The closing leg: borrower pays principal + I - M, lender returns the collateral, or neither."""
    book = book_of(state)
    r = book.repos[repo_id]
    code = blocked(state, r, (r.collateral, r.cash_asset))
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


def close_or_queue(state: State, repo_id: str) -> None:
    code = state.attempt(close_now, state, repo_id, "end")
    if code:
        book = book_of(state)
        r = book.repos[repo_id]
        if not r.closing:
            if r.call:  # the closing leg now asks for all of E: the call is moot, and must not default it early
                r = withdraw_call(state, repo_id)
            state.put(book.repos, repo_id, msgspec.structs.replace(r, closing=1))
            state.emit(NAME, "close_queued", repo_id, {"reason": CODES.get(code) or C.name(code)})
        wait_for_cash(state, repo_id, book.repos[repo_id])


def close_repo(state: State, cmd: CloseRepo, auth) -> int:
    r = book_of(state).repos.get(cmd.repo)
    if r is None:
        return UNKNOWN_REPO
    if auth is not None and (r.borrower not in auth or r.lender not in auth):
        return C.UNAUTHORIZED
    return close_now(state, cmd.repo, "agreement")


def default(state: State, repo_id: str, reason: str) -> None:
    """Terminate: the lender keeps collateral and margin; record the close-out amount E - MV."""
    book = book_of(state)
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


def substitute(state: State, cmd: Substitute, auth) -> int:
    book = book_of(state)
    r = book.repos.get(cmd.repo)
    if r is None:
        return UNKNOWN_REPO
    if auth is not None and r.borrower not in auth:
        return C.UNAUTHORIZED
    if r.closing:
        return REPO_CLOSING
    code = blocked(state, r, ())  # a party inactive; its freezes come after the terms, as in `open_repo`
    if code:
        return code
    new = state.assets.get(cmd.collateral)
    if new is None:
        return C.UNKNOWN_ASSET
    if new.kind != "security":
        return BAD_TERMS
    if cmd.quantity <= 0:
        return C.INVALID_AMOUNT
    code = blocked(state, r, (r.collateral, cmd.collateral))
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
    remember(state, cmd.repo, r)
    revalue(state, cmd.repo)  # the new collateral may cover an open call's deficit
    return C.OK
