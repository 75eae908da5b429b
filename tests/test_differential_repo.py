"""The repo desk's fast paths give exactly what their general paths give, on random days.

`repo.revalue_holders` values every repo holding an asset inline on a
price tick; its general path runs `revalue` for each. `repo.indexed_recycling`
meets only the calls (and settles only the closing legs) the borrower's
cash covers; its general path tries them all. The days use prices on a
grid and minimum transfer amounts equal to the deficits those prices give,
so the boundaries (`E - CV` exactly at `mta`, cash exactly at a call) are
met often, not by luck.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine import codes as C
from engine.fastpath import general_paths
from engine.identity import Signer, derive_key
from engine.ledger import Ledger, ManualClock
from engine.records import Admit, Asset, Freeze, Mint, Move, RegisterAsset, Unfreeze
from protocols import collateral, dvp, prices, repo

T0 = 1_772_443_800
BORROWERS = ("B1", "B2")
EQUITY = Asset(id="EQ", kind="security", decimals=0, issuer="ISS", asset_class="equity", price_basis="per_unit")
NOTE = Asset(id="NOTE", kind="security", decimals=0, issuer="ISS", asset_class="ust_note", maturity="2030-02-15")
USD = Asset(id="USD", kind="cash", decimals=2, issuer="ISS")
QUANTITY = 1_000
PRINCIPAL = 800_000  # cents: with 1,000 EQ at price p, CV = 75,000 p and the deficit E - CV = 800,000 - 75,000 p
PRICES = ("8", "9", "10", "11", "12")
MTAS = (0, 50_000, 125_000, 200_000)  # the deficits at prices 10, 9 and 8 (when no margin is held)


class Desk:
    def __init__(self):
        self.clock = ManualClock(T0)
        self.s = {n: Signer(n, derive_key(f"repo-diff/{n}"), "repo") for n in ("OP", "L", "SINK", "ISS", "ORC", "CMP") + BORROWERS}
        self.ledger = Ledger.create(chain_id="repo", operator="OP", operator_key=self.s["OP"].public_key,
                                    clock=self.clock, snapshot_every=0,
                                    protocols=[collateral.Collateral(), dvp.DvP(), prices.Prices(), repo.Repos()])
        self.n = itertools.count()
        setup = [Admit(id=self.id(), participant=n, public_key=self.s[n].public_key) for n in ("L", "SINK") + BORROWERS]
        setup += [Admit(id=self.id(), participant="ISS", roles=("issuer",), public_key=self.s["ISS"].public_key),
                  Admit(id=self.id(), participant="ORC", roles=("oracle",), public_key=self.s["ORC"].public_key),
                  Admit(id=self.id(), participant="CMP", roles=("compliance",), public_key=self.s["CMP"].public_key)]
        setup += [RegisterAsset(id=self.id(), asset=a) for a in (EQUITY, NOTE, USD)]
        assert self.run("OP", setup) == [C.OK] * len(setup)
        mints = [Mint(id=self.id(), asset="USD", target="L", amount=10**10)]
        mints += [Mint(id=self.id(), asset=a, target=b, amount=10 * QUANTITY) for b in BORROWERS for a in ("EQ", "NOTE")]
        assert self.run("ISS", mints) == [C.OK] * len(mints)
        assert self.run("ORC", [prices.SetPrice(id=self.id(), asset="EQ", price="12"),
                                prices.SetPrice(id=self.id(), asset="NOTE", price="99")]) == [C.OK, C.OK]

    def id(self) -> str:
        return f"d{next(self.n)}"

    def run(self, signers, commands) -> list[int]:
        signers = (signers,) if isinstance(signers, str) else signers
        envelope = self.s[signers[0]].envelope(commands)
        for name in signers[1:]:
            envelope = self.s[name].cosign(envelope)
        return self.ledger.submit([envelope])


def _command(desk: Desk, step):
    kind = step[0]
    if kind == "open":
        _, borrower, k, mta, rate, hours = step
        return (borrower, "L"), repo.OpenRepo(
            id=desk.id(), repo=f"R{k}", borrower=borrower, lender="L", collateral="EQ", quantity=QUANTITY,
            cash_asset="USD", principal=PRINCIPAL, rate=rate, end=desk.clock.now + hours * 3600, mta=mta, grace=1800)
    if kind == "spend":  # the borrower pays its principal away, so its calls wait for cash
        return step[1], Move(id=desk.id(), asset="USD", source=step[1], target="SINK", amount=PRINCIPAL)
    if kind == "price":
        return "ORC", prices.SetPrice(id=desk.id(), asset="EQ", price=step[1])
    if kind == "cash":
        return "ISS", Mint(id=desk.id(), asset="USD", target=step[1], amount=step[2])
    if kind == "substitute":
        return (step[1],), repo.Substitute(id=desk.id(), repo=f"R{step[2]}", collateral="NOTE", quantity=step[3])
    if kind == "revalue":
        return "OP", repo.Revalue(id=desk.id())
    if kind in ("freeze", "unfreeze"):
        cls = Freeze if kind == "freeze" else Unfreeze
        return "CMP", cls(id=desk.id(), participant=step[1], asset="USD")
    raise AssertionError(kind)


def random_day(seed: int) -> list:
    rng = random.Random(seed)
    day = []
    for _ in range(rng.randint(6, 28)):
        roll = rng.random()
        wait = rng.choice((0, 0, 60, 900, 2000, 7200))
        if roll < 0.25:
            step = ("open", rng.choice(BORROWERS), rng.randint(0, 5), rng.choice(MTAS),
                    rng.choice(("0", "0", "0.05")), rng.choice((1, 3, 8)))
        elif roll < 0.6:
            step = ("price", rng.choice(PRICES))
        elif roll < 0.85:
            step = ("cash", rng.choice(BORROWERS), rng.choice((25_000, 50_000, 75_000, 125_000, 300_000)))
        elif roll < 0.9:
            step = ("substitute", rng.choice(BORROWERS), rng.randint(0, 5), rng.choice((5_000, 9_000)))
        elif roll < 0.94:
            step = ("revalue",)
        else:
            step = (rng.choice(("freeze", "unfreeze")), rng.choice(BORROWERS + ("L",)))
        day.append((wait, step))
        if step[0] == "open" and rng.random() < 0.8:
            day.append((0, ("spend", step[1])))
    return day


def run_day(day, *general: str):
    desk = Desk()
    out = []
    switch = general_paths(*general) if general else _Nothing()
    with switch:
        for wait, step in day:
            desk.clock.advance(wait)
            signers, command = _command(desk, step)
            codes = desk.run(signers, [command])
            out.append((codes, list(desk.ledger.last_events), desk.ledger.head_hash))
        desk.clock.advance(86_400)
        desk.ledger.advance()
        out.append(([], list(desk.ledger.last_events), desk.ledger.head_hash))
    return out


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _count(out, kind: str) -> int:
    return sum(1 for _c, events, _h in out for e in events if e.kind == kind)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32))
def test_one_tick_revaluation_gives_the_general_paths_journal(seed):
    day = random_day(seed)
    fast = run_day(day)
    event(f"calls withdrawn: {min(_count(fast, 'margin_call_withdrawn'), 3)}")
    event(f"calls amended: {min(_count(fast, 'margin_call_amended'), 3)}")
    assert fast == run_day(day, "repo.revalue_holders")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32))
def test_indexed_repo_recycling_gives_the_general_paths_journal(seed):
    day = random_day(seed)
    fast = run_day(day)
    event(f"calls met: {min(_count(fast, 'margin_met'), 3)}")
    assert fast == run_day(day, "repo.indexed_recycling")


BOUNDARY = [(0, ("open", "B1", 1, 50_000, "0", 8)), (0, ("spend", "B1")), (0, ("price", "9")), (60, ("price", "10"))]
CASES = [
    ("a call whose deficit falls exactly to the mta is withdrawn", BOUNDARY),
    ("cash exactly equal to a call meets it", [(0, ("open", "B1", 1, 0, "0", 8)), (0, ("spend", "B1")),
                                              (0, ("price", "10")), (60, ("cash", "B1", 50_000))]),
    ("two calls on one borrower are met by deadline", [(0, ("open", "B1", 1, 0, "0", 8)), (0, ("spend", "B1")),
                                                       (0, ("price", "11")), (0, ("open", "B1", 2, 0, "0", 8)),
                                                       (0, ("spend", "B1")), (600, ("price", "10")),
                                                       (60, ("cash", "B1", 75_000))]),
]


@pytest.mark.parametrize("day", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_boundary_days_give_the_same_journal_every_way(day):
    fast = run_day(day)
    assert fast == run_day(day, "repo.revalue_holders")
    assert fast == run_day(day, "repo.indexed_recycling")


def test_the_boundary_is_reached_and_the_call_withdrawn():
    kinds = [e.kind for _c, events, _h in run_day(BOUNDARY) for e in events if e.protocol == repo.NAME]
    assert kinds[:3] == ["repo_opened", "margin_call", "margin_call_withdrawn"]


def test_the_comparison_catches_a_boundary_slip_in_the_inline_arithmetic():
    """Mutation check: `>=` for `>` in the inline call test keeps a call the general path withdraws."""
    import inspect
    import textwrap

    import protocols.repo as repo_package
    from protocols.repo import margin

    source = textwrap.dedent(inspect.getsource(margin.revalue_holders))
    assert "if r.call and e - cv > r.mta:" in source
    mutated = source.replace("if r.call and e - cv > r.mta:", "if r.call and e - cv >= r.mta:")
    namespace = dict(vars(margin))
    exec(compile(mutated, margin.__file__, "exec"), namespace)
    fast = run_day(BOUNDARY)
    original = margin.revalue_holders
    margin.revalue_holders = repo_package.revalue_holders = namespace["revalue_holders"]
    try:
        slipped = run_day(BOUNDARY)
    finally:
        margin.revalue_holders = repo_package.revalue_holders = original
    assert slipped != fast
