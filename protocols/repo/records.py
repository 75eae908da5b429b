"""Repo records: result codes, commands, the book of open repos, and its runtime indexes.

Takes nothing; gives the vocabulary of the repo modules: codes 500-599, the
commands (`OpenRepo`, `CloseRepo`, `Substitute`, `Revalue`), the `Repo`
record kept in the ledger's state, and the indexes (by collateral asset, by
borrower) rebuilt after a snapshot load.
"""

from __future__ import annotations

import msgspec

from engine.records import Command
from engine.state import State

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


class OpenRepo(Command, tag="repo_open", frozen=True):
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


class CloseRepo(Command, tag="repo_close", frozen=True):
    """Terminate a repo early by agreement (both parties): closing leg now."""

    repo: str


class Substitute(Command, tag="repo_substitute", frozen=True):
    """Swap all of a repo's collateral for `quantity` of `collateral` (the borrower)."""

    repo: str
    collateral: str
    quantity: int


class Revalue(Command, tag="repo_revalue", frozen=True):
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


def book_of(state: State) -> RepoBook:
    book: RepoBook = state.protocols[NAME]
    return book


def index_of(state: State, name: str) -> dict[str, set[str]]:
    """Runtime indexes (by collateral asset, by borrower); rebuilt on load, filtered on use."""
    key = f"{NAME}.{name}"
    index = state.runtime.get(key)
    if index is None:
        index = state.runtime[key] = {}
    return index


def remember(state: State, repo_id: str, r: Repo) -> None:
    index_of(state, "asset").setdefault(r.collateral, set()).add(repo_id)
    index_of(state, "borrower").setdefault(r.borrower, set()).add(repo_id)
