"""Intraday repo: haircuts, valuation, interest, margin calls, default, substitution.

Worked examples are computed by hand in the comments, to the cent.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from engine import codes as C
from engine.identity import Signer, derive_key
from engine.ledger import Ledger, ManualClock
from engine.records import Admit, Asset, Freeze, Mint, Move, RegisterAsset, Unfreeze
from protocols import collateral, dvp, prices, repo

T0 = 1_772_443_800  # 2026-03-02T09:30:00Z
HOUR = 3600
_ids = itertools.count(1)


def fresh() -> str:
    return f"r{next(_ids)}"


NOTE = Asset(id="NOTE", kind="security", decimals=0, issuer="ISS", asset_class="ust_note", maturity="2030-02-15")  # ~4 years: 2%
BILL = Asset(id="BILL", kind="security", decimals=0, issuer="ISS", asset_class="ust_bill", maturity="2026-08-01")
STOCK = Asset(id="STOCK", kind="security", decimals=0, issuer="ISS", asset_class="crypto", price_basis="per_unit")
USD = Asset(id="USD", kind="cash", decimals=2, issuer="ISS")


class Desk:
    """A ledger with a borrower B, a lender L, an issuer and an oracle."""

    def __init__(self, cash_b: int = 0, cash_l: int = 2_000_000_000, note_b: int = 20_000_000):
        self.clock = ManualClock(T0)
        self.s = {n: Signer(n, derive_key(f"repo-test/{n}"), "repo") for n in ("OP", "B", "L", "ISS", "ORC", "CMP")}
        self.ledger = Ledger.create(chain_id="repo", operator="OP", operator_key=self.s["OP"].public_key,
                                    clock=self.clock, protocols=[collateral.Collateral(), dvp.DvP(),
                                                                 prices.Prices(), repo.Repos()])
        setup = [Admit(id=fresh(), participant=n, public_key=self.s[n].public_key) for n in ("B", "L")]
        setup += [Admit(id=fresh(), participant="ISS", roles=("issuer",), public_key=self.s["ISS"].public_key),
                  Admit(id=fresh(), participant="ORC", roles=("oracle",), public_key=self.s["ORC"].public_key),
                  Admit(id=fresh(), participant="CMP", roles=("compliance",), public_key=self.s["CMP"].public_key)]
        setup += [RegisterAsset(id=fresh(), asset=a) for a in (NOTE, BILL, STOCK, USD)]
        assert self.run("OP", setup) == [C.OK] * len(setup)
        mints = [Mint(id=fresh(), asset="USD", target="L", amount=cash_l),
                 Mint(id=fresh(), asset="NOTE", target="B", amount=note_b),
                 Mint(id=fresh(), asset="BILL", target="B", amount=note_b),
                 Mint(id=fresh(), asset="STOCK", target="B", amount=1_000)]
        if cash_b:
            mints.append(Mint(id=fresh(), asset="USD", target="B", amount=cash_b))
        assert self.run("ISS", mints) == [C.OK] * len(mints)
        for asset, price in (("NOTE", "99.00"), ("BILL", "99.50"), ("STOCK", "10")):
            self.price(asset, price)

    def run(self, signers, commands) -> list[int]:
        signers = (signers,) if isinstance(signers, str) else signers
        envelope = self.s[signers[0]].envelope(commands)
        for name in signers[1:]:
            envelope = self.s[name].cosign(envelope)
        return self.ledger.submit([envelope])

    def price(self, asset: str, price: str) -> list:
        assert self.run("ORC", [prices.SetPrice(id=fresh(), asset=asset, price=price)]) == [C.OK]
        return self.ledger.last_events

    def open(self, repo_id="R1", quantity=10_000_000, principal=970_000_000, rate="0.0531", end=T0 + 6 * HOUR,
             **over) -> int:
        cmd = repo.OpenRepo(id=fresh(), repo=repo_id, borrower="B", lender="L", collateral=over.pop("collateral", "NOTE"),
                            quantity=quantity, cash_asset="USD", principal=principal, rate=rate, end=end, **over)
        return self.run(("B", "L"), [cmd])[0]

    def bal(self, who, asset="USD") -> int:
        return self.ledger.balance(who, asset)

    def repo(self, repo_id="R1"):
        return self.ledger.protocol_state(repo.NAME).repos.get(repo_id)

    def kinds(self):
        return [(e.kind, e.data) for e in self.ledger.last_events if e.protocol == repo.NAME]

    def advance(self, seconds):
        self.clock.advance(seconds)
        return self.ledger.advance()


# ------------------------------------------------------------- valuation


def test_market_and_collateral_values_round_half_up_then_down():
    note = NOTE
    cash = USD
    # 10,000,000 face at 99.875 per 100: MV = 9,987,500.00; with a 2% haircut CV = 9,787,750.00
    mv = collateral.market_value(10_000_000, Fraction("99.875"), note, cash)
    assert mv == 998_750_000
    assert collateral.collateral_value(mv, Fraction("0.02")) == 978_775_000
    # 3 units at 0.335 per unit = 1.005 -> 1.01 (half-up); 1% haircut: 0.9999 -> 0.99 (down)
    stock = Asset(id="X", kind="security", decimals=0, issuer="I", price_basis="per_unit")
    mv = collateral.market_value(3, Fraction("0.335"), stock, cash)
    assert mv == 101
    assert collateral.collateral_value(mv, Fraction("0.01")) == 99


@pytest.mark.parametrize("asset,days_left,expected", [
    (BILL, 150, Fraction("0.005")),
    (NOTE, 200, Fraction("0.01")),
    (NOTE, 900, Fraction("0.015")),
    (NOTE, 3 * 365 + 1, Fraction("0.015")),  # 2029-03-02 from 2026-03-02 (2028 is a leap year)
    (NOTE, 3 * 365 + 2, Fraction("0.02")),
    (NOTE, 10 * 365 + 3, Fraction("0.03")),  # 2036-03-02
    (NOTE, 10 * 365 + 4, None),
    (Asset(id="C", kind="security", decimals=0, issuer="I", asset_class="corporate"), None, Fraction("0.12")),
    (STOCK, None, None),
    (NOTE, 0, None),
], ids=["a bill", "a note within a year", "a note of two and a half years",
        "a note maturing exactly three calendar years out is in the three-year bucket",
        "a note one day past three years", "a note maturing exactly ten years out",
        "a note one day past the last bucket is ineligible",
        "a corporate without maturity takes the longest bucket", "an unlisted class is ineligible",
        "a matured note is ineligible"])
def test_the_default_schedule_by_class_and_residual_maturity(asset, days_left, expected):
    import datetime

    now = T0
    if days_left is not None:
        day = datetime.datetime.fromtimestamp(now, tz=datetime.timezone.utc).date()
        import msgspec

        asset = msgspec.structs.replace(asset, maturity=(day + datetime.timedelta(days=days_left)).isoformat())
    assert collateral.haircut_for(collateral.default_schedule(), asset, now) == expected


# ------------------------------------------------------------- lifecycle


def test_interest_over_six_hours_at_5_31_percent_on_9_8_million():
    # I = 9,800,000.00 * 0.0531 * 21,600 / (360 * 86,400) = 361.375 -> 361.38 (half-up)
    d = Desk(cash_b=50_000)
    assert d.open(quantity=10_000_000, principal=970_000_000, rate="0.0531") == C.OK
    r = d.repo()
    r980 = type(r)(**{**{f: getattr(r, f) for f in r.__struct_fields__}, "principal": 980_000_000})
    assert repo.interest(d.ledger.state, r980, T0 + 6 * HOUR) == 36_138


def test_open_then_close_at_end_pays_principal_plus_interest_and_returns_the_collateral():
    d = Desk(cash_b=100_000)
    # 10,000,000 NOTE at 99.00 -> MV 9,900,000.00; a note of ~4 years: 2% -> CV 9,702,000.00 >= 9,700,000.00
    assert d.open(principal=970_000_000) == C.OK
    assert d.bal("B") == 970_100_000 and d.bal("L", "NOTE") == 10_000_000
    assert d.ledger.state.available("L", "NOTE") == 0  # encumbered at the lender: no re-use
    d.advance(6 * HOUR)
    # I = 9,700,000.00 * 0.0531 * 6h = 357.6875 -> 357.69
    closed = [data for kind, data in d.kinds() if kind == "repo_closed"]
    assert closed == [{"interest": "35769", "paid": "970035769", "by": "end"}]
    assert d.bal("B") == 100_000 - 35_769 and d.bal("L") == 2_000_000_000 + 35_769
    assert d.bal("B", "NOTE") == 20_000_000 and d.repo() is None


def test_a_two_point_price_drop_calls_margin_met_at_once_and_a_recovery_returns_it():
    d = Desk(cash_b=500_000_000)
    assert d.open(principal=970_000_000) == C.OK
    d.price("NOTE", "97.00")
    # MV 9,700,000.00; CV = floor(9,700,000.00 * 0.98) = 9,506,000.00; E = 9,700,000.00 (no time passed)
    assert d.kinds() == [("margin_call", {"call": "1", "amount": "19400000", "deadline": str(T0 + 1800)}),
                         ("margin_met", {"call": "1", "amount": "19400000"})]
    assert d.repo().margin == 19_400_000 and d.bal("B") == 500_000_000 + 970_000_000 - 19_400_000
    d.price("NOTE", "99.00")
    # CV 9,702,000.00 - E (9,700,000.00 - 194,000.00) = 196,000.00 > 0: return min(196,000.00, M)
    assert d.kinds() == [("margin_return", {"amount": "19400000"})]
    assert d.repo().margin == 0


def test_a_call_above_the_borrowers_cash_waits_and_is_met_when_cash_arrives():
    d = Desk(cash_b=0)
    assert d.open(principal=970_000_000) == C.OK
    assert d.run("B", [Move(id=fresh(), asset="USD", source="B", target="L", amount=970_000_000)]) == [C.OK]
    d.price("NOTE", "97.00")
    assert [k for k, _ in d.kinds()] == ["margin_call"]
    assert d.repo().call == 19_400_000
    d.run("ISS", [Mint(id=fresh(), asset="USD", target="B", amount=20_000_000)])
    assert [k for k, _ in d.kinds()] == ["margin_met"]
    assert d.repo().margin == 19_400_000 and d.repo().call == 0


def test_a_call_still_open_at_its_deadline_defaults_the_repo_with_a_close_out():
    d = Desk(cash_b=0)
    assert d.open(principal=970_000_000) == C.OK
    d.run("B", [Move(id=fresh(), asset="USD", source="B", target="L", amount=970_000_000)])
    d.price("NOTE", "97.00")
    d.advance(1799)
    assert d.repo() is not None
    d.advance(1)
    events = dict(d.kinds())
    # At the deadline: I(30 min) = 9,700,000.00 * 0.0531 * 1800 / 31,104,000 = 29.8069 -> 29.81
    # E = 9,700,029.81; MV = 9,700,000.00; close-out = 29.81 owed by the borrower
    assert events["margin_default"] == {"call": "1", "amount": "19400000"}
    assert events["repo_defaulted"] == {"reason": "margin_call_unmet", "exposure": "970002981", "mv": "970000000",
                                        "close_out": "2981", "margin": "0"}
    assert d.repo() is None
    assert d.bal("L", "NOTE") == 10_000_000 and d.ledger.state.available("L", "NOTE") == 10_000_000


def _called_at_97(d: Desk) -> None:
    """Open 9,700,000.00 on NOTE at 99.00 (h 2%), take the borrower's cash away, drop NOTE to 97.00: a call."""
    assert d.open(principal=970_000_000) == C.OK
    assert d.run("B", [Move(id=fresh(), asset="USD", source="B", target="L", amount=970_000_000)]) == [C.OK]
    d.price("NOTE", "97.00")
    assert d.kinds() == [("margin_call", {"call": "1", "amount": "19400000", "deadline": str(T0 + 1800)})]


def test_an_open_call_grows_with_a_further_drop_and_is_met_in_full():
    d = Desk(cash_b=0)
    _called_at_97(d)
    d.price("NOTE", "90.00")  # MV 9,000,000.00, CV 8,820,000.00: E - CV = 880,000.00
    assert d.kinds() == [("margin_call_amended", {"call": "1", "amount": "88000000"})]
    d.run("ISS", [Mint(id=fresh(), asset="USD", target="B", amount=100_000_000)])
    assert d.kinds() == [("margin_met", {"call": "1", "amount": "88000000"})]
    r = d.repo()
    assert (r.margin, r.call, r.deadline) == (88_000_000, 0, 0)
    state = d.ledger.state
    cv = repo.values(state, "NOTE", r.quantity, "USD", repo.haircut(state, r))[1]
    assert repo.exposure(state, r, state.now) - cv == 0


def test_an_open_call_shrinks_with_a_partial_recovery_and_keeps_its_deadline():
    d = Desk(cash_b=0)
    _called_at_97(d)
    d.advance(600)
    d.price("NOTE", "98.00")  # CV 9,604,000.00; E = 9,700,000.00 + I(10 min) 9.94: the call is 96,009.94
    assert d.kinds() == [("margin_call_amended", {"call": "1", "amount": "9600994"})]
    assert d.repo().deadline == T0 + 1800
    d.advance(1200)
    assert dict(d.kinds())["margin_default"] == {"call": "1", "amount": "9600994"}


def test_a_recovery_withdraws_the_open_call_and_nothing_defaults_at_its_deadline():
    d = Desk(cash_b=0)
    _called_at_97(d)
    d.price("NOTE", "99.00")  # CV 9,702,000.00 >= E 9,700,000.00
    assert d.kinds() == [("margin_call_withdrawn", {"call": "1"})]
    d.advance(1800)
    assert d.kinds() == [] and d.repo() is not None and d.repo().call == 0


def _freeze(d: Desk, who: str, asset: str = "*") -> None:
    assert d.run("CMP", [Freeze(id=fresh(), participant=who, asset=asset)]) == [C.OK]


@pytest.mark.parametrize("who,asset", [("B", "*"), ("L", "USD"), ("B", "NOTE")],
                         ids=["the borrower frozen", "the lender frozen on the cash", "the borrower frozen on the note"])
def test_a_frozen_party_cannot_open_a_repo(who, asset):
    d = Desk()
    _freeze(d, who, asset)
    before = d.ledger.balances()
    assert d.open() == C.ACCOUNT_FROZEN
    assert d.ledger.balances() == before and d.repo() is None


def test_a_frozen_borrower_cannot_meet_a_call_and_defaults_at_its_deadline():
    d = Desk(cash_b=50_000_000)
    assert d.open(principal=970_000_000) == C.OK
    _freeze(d, "B", "USD")
    d.price("NOTE", "97.00")
    assert [k for k, _ in d.kinds()] == ["margin_call"]  # not met, although B holds the cash
    d.advance(1800)
    assert [k for k, _ in d.kinds()] == ["margin_default", "repo_defaulted"]


def test_a_closing_leg_waits_while_a_party_is_frozen_and_settles_at_the_cutoff_once_unfrozen():
    d = Desk(cash_b=10_000_000)
    assert d.open(principal=970_000_000) == C.OK
    _freeze(d, "L", "NOTE")
    d.advance(6 * HOUR)
    assert d.kinds() == [("close_queued", {"reason": "account_frozen"})]
    assert d.bal("B", "NOTE") == 10_000_000  # the collateral stays with the lender
    assert d.run("CMP", [Unfreeze(id=fresh(), participant="L", asset="NOTE")]) == [C.OK]
    assert d.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]
    closed = dict(d.kinds())
    assert closed["repo_closed"]["by"] == "cutoff" and d.repo() is None and d.bal("B", "NOTE") == 20_000_000


def test_a_call_blocked_by_a_freeze_is_met_at_its_deadline_once_the_freeze_is_lifted():
    d = Desk(cash_b=50_000_000)
    assert d.open(principal=970_000_000) == C.OK
    _freeze(d, "B", "USD")
    d.price("NOTE", "97.00")
    assert [k for k, _ in d.kinds()] == ["margin_call"]
    assert d.run("CMP", [Unfreeze(id=fresh(), participant="B", asset="USD")]) == [C.OK]
    d.advance(1800)
    assert d.kinds() == [("margin_met", {"call": "1", "amount": "19400000"})] and d.repo().margin == 19_400_000


def test_calls_a_tick_makes_payable_are_met_by_deadline_then_repo_id():
    d = Desk(cash_b=0)
    assert d.open("R2", quantity=1_000_000, principal=97_000_000) == C.OK  # tight: called first
    assert d.open("R1", quantity=10_000_000, principal=940_000_000) == C.OK  # ample: called later
    d.run("B", [Move(id=fresh(), asset="USD", source="B", target="L", amount=d.bal("B"))])
    d.price("NOTE", "97.00")  # R2 called, deadline T0 + 1800
    d.advance(600)
    d.price("NOTE", "93.00")  # R1 called, deadline T0 + 2400; R2 amended
    d.run("ISS", [Mint(id=fresh(), asset="USD", target="B", amount=5_000_000)])  # 50,000.00: pays neither
    d.price("NOTE", "95.50")  # both shrink below 50,000.00, but the cash pays one: the earlier deadline's
    events = [(e.ref, e.kind) for e in d.ledger.last_events if e.protocol == repo.NAME]
    assert events == [("R1", "margin_call_amended"), ("R2", "margin_call_amended"), ("R2", "margin_met")]
    d.advance(1200)
    assert d.repo("R2") is not None and d.repo("R1").call  # nothing defaulted at R2's deadline


def test_a_queued_closing_leg_withdraws_the_open_call_so_only_the_cutoff_can_default_the_repo():
    d = Desk(cash_b=0)
    assert d.open(principal=970_000_000, end=T0 + HOUR) == C.OK
    d.run("B", [Move(id=fresh(), asset="USD", source="B", target="L", amount=d.bal("B"))])
    d.advance(3000)
    d.price("NOTE", "97.00")
    assert [k for k, _ in d.kinds()] == ["margin_call"]
    d.advance(600)  # the end: B cannot pay, the leg queues and asks for all of E
    assert d.kinds() == [("margin_call_withdrawn", {"call": "1"}), ("close_queued", {"reason": "insufficient_cash"})]
    d.advance(1800)  # past the call's deadline: nothing happens
    assert d.kinds() == [] and d.repo() is not None
    assert d.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]
    assert dict(d.kinds())["repo_defaulted"]["reason"] == "closing_leg_unpaid"


def test_a_substitution_that_covers_the_deficit_withdraws_the_open_call():
    d = Desk(cash_b=0)
    _called_at_97(d)
    assert d.run("B", [repo.Substitute(id=fresh(), repo="R1", collateral="BILL", quantity=10_000_000)]) == [C.OK]
    assert [k for k, _ in d.kinds()] == ["repo_substituted", "margin_call_withdrawn"]
    d.advance(1800)
    assert d.kinds() == [] and d.repo().collateral == "BILL"


def test_a_borrower_never_defaults_for_its_lenders_freeze():
    d = Desk(cash_b=50_000_000)
    assert d.open(principal=970_000_000, end=T0 + HOUR) == C.OK
    _freeze(d, "L", "USD")
    d.price("NOTE", "97.00")
    assert [k for k, _ in d.kinds()] == ["margin_call"]  # B has the cash; L cannot receive it
    d.advance(1800)
    assert d.kinds() == [("margin_call_held", {"call": "1", "reason": "lender_blocked"})]
    assert d.repo().call == 19_400_000
    d.advance(1800)  # the end: the closing leg cannot settle either, and queues (its call withdrawn)
    assert [k for k, _ in d.kinds()] == ["margin_call_withdrawn", "close_queued"]
    assert d.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]
    assert d.kinds() == [("close_held", {"reason": "lender_blocked"})]
    assert d.repo() is not None and d.bal("B") == 1_020_000_000  # nothing defaulted, nothing moved
    assert d.run("CMP", [Unfreeze(id=fresh(), participant="L", asset="*")]) == [C.INVALID_FIELD]
    assert d.run("CMP", [Unfreeze(id=fresh(), participant="L", asset="USD")]) == [C.OK]
    assert d.run(("B", "L"), [repo.CloseRepo(id=fresh(), repo="R1")]) == [C.OK]


def test_a_default_leaves_no_close_timer_behind_for_a_repo_that_reuses_its_id():
    d = Desk(cash_b=0)
    _called_at_97(d)
    d.advance(1800)  # R1 defaults at its call's deadline; its close timer (T0 + 6 h) is now stale
    assert dict(d.kinds())["repo_defaulted"]["reason"] == "margin_call_unmet"
    d.price("NOTE", "99.00")
    d.run("ISS", [Mint(id=fresh(), asset="NOTE", target="B", amount=10_000_000),
                  Mint(id=fresh(), asset="USD", target="B", amount=1_000_000)])  # for the interest
    assert d.open(principal=100_000_000, end=T0 + 11 * HOUR) == C.OK  # a new R1
    d.advance(6 * HOUR - 1800)
    assert d.repo() is not None and d.kinds() == []
    d.advance(5 * HOUR)
    assert dict(d.kinds())["repo_closed"]["by"] == "end"


def test_a_closing_leg_the_borrower_cannot_pay_waits_then_settles_when_cash_arrives():
    d = Desk(cash_b=0)
    assert d.open(principal=970_000_000, end=T0 + HOUR) == C.OK
    d.run("B", [Move(id=fresh(), asset="USD", source="B", target="L", amount=970_000_000)])
    d.advance(HOUR)
    assert [k for k, _ in d.kinds()] == ["close_queued"] and d.repo().closing == 1
    d.run("L", [Move(id=fresh(), asset="USD", source="L", target="B", amount=980_000_000)])
    closed = [data for kind, data in d.kinds() if kind == "repo_closed"]
    # interest stops at the end: 9,700,000.00 * 0.0531 * 3,600 / 31,104,000 = 59.6146 -> 59.61
    assert closed == [{"interest": "5961", "paid": "970005961", "by": "recycling"}]


def test_an_unpaid_closing_leg_defaults_at_the_cutoff():
    d = Desk(cash_b=0)
    d.open(principal=970_000_000, end=T0 + HOUR)
    d.run("B", [Move(id=fresh(), asset="USD", source="B", target="L", amount=970_000_000)])
    d.advance(HOUR)
    d.run("OP", [dvp.Cutoff(id=fresh())])
    assert dict(d.kinds())["repo_defaulted"]["reason"] == "closing_leg_unpaid"


def test_early_termination_by_agreement_pays_interest_to_that_second():
    d = Desk(cash_b=100_000)
    d.open(principal=970_000_000)
    d.clock.advance(HOUR)
    assert d.run(("B", "L"), [repo.CloseRepo(id=fresh(), repo="R1")]) == [C.OK]
    assert [data["interest"] for kind, data in d.kinds() if kind == "repo_closed"] == ["5961"]  # 59.6146
    assert d.run("B", [repo.CloseRepo(id=fresh(), repo="R1")]) == [repo.UNKNOWN_REPO]


def test_substitution_swaps_all_collateral_for_at_least_the_same_adjusted_value():
    d = Desk(cash_b=100_000)
    d.open(principal=970_000_000)
    # BILL at 99.50, 0.5%: 10,000,000 face -> MV 9,950,000.00, CV 9,900,250.00 >= 9,702,000.00
    assert d.run("B", [repo.Substitute(id=fresh(), repo="R1", collateral="BILL", quantity=10_000_000)]) == [C.OK]
    assert d.bal("B", "NOTE") == 20_000_000 and d.bal("L", "BILL") == 10_000_000
    assert d.ledger.state.available("L", "BILL") == 0 and d.ledger.state.available("L", "NOTE") == 0
    assert d.run("B", [repo.Substitute(id=fresh(), repo="R1", collateral="NOTE", quantity=1_000)]) == [
        repo.SUBSTITUTE_TOO_SMALL]
    assert d.run("L", [repo.Substitute(id=fresh(), repo="R1", collateral="NOTE", quantity=10_000_000)]) == [
        C.UNAUTHORIZED]


REFUSED = [
    ("collateral of an ineligible class", dict(collateral="STOCK", quantity=1_000, principal=100),
     collateral.INELIGIBLE),
    ("collateral worth less than the principal after haircut", dict(principal=970_200_001),
     repo.INSUFFICIENT_COLLATERAL),
    ("a haircut of 100%", dict(haircut="1"), collateral.BAD_HAIRCUT),
    ("a negative haircut", dict(haircut="-0.01"), collateral.BAD_HAIRCUT),
    ("an end in the past", dict(end=T0 - 1), repo.BAD_TERMS),
    ("a rate that is not a decimal", dict(rate="5%"), repo.BAD_TERMS),
    ("a zero principal", dict(principal=0), C.INVALID_AMOUNT),
    ("an override does not make an ineligible class eligible",
     dict(collateral="STOCK", quantity=1_000, principal=100, haircut="0"), collateral.INELIGIBLE),
    ("more collateral than the borrower holds", dict(quantity=30_000_000, principal=100), dvp.INSUFFICIENT_SECURITIES),
    ("more cash than the lender holds", dict(quantity=20_000_000, principal=1_900_000_000, haircut="0.0"),
     dvp.INSUFFICIENT_CASH),
]


@pytest.mark.parametrize("terms,code", [(r[1], r[2]) for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_openings_change_nothing(terms, code):
    d = Desk(cash_l=1_000_000_000)
    before = d.ledger.balances()
    assert d.open(**terms) == code
    assert d.ledger.balances() == before and d.repo() is None


def test_an_override_haircut_applies_to_its_agreement():
    d = Desk()
    # 0% haircut: CV = MV = 9,900,000.00, so a principal of 9,900,000.00 is covered
    assert d.open(principal=990_000_000, haircut="0") == C.OK


def test_opening_needs_both_parties():
    d = Desk()
    cmd = repo.OpenRepo(id=fresh(), repo="R1", borrower="B", lender="L", collateral="NOTE", quantity=1,
                        cash_asset="USD", principal=1, rate="0.05", end=T0 + HOUR)
    assert d.run("B", [cmd]) == [C.UNAUTHORIZED]


def test_a_margin_storm_meets_calls_in_repo_id_order_with_no_negative_balance():
    d = Desk(cash_b=0, cash_l=3_000_000_000, note_b=30_000_000)
    for n in range(3):
        assert d.open(repo_id=f"S{n}", quantity=10_000_000, principal=970_000_000) == C.OK
    d.run("B", [Move(id=fresh(), asset="USD", source="B", target="L", amount=2_910_000_000)])
    d.run("ISS", [Mint(id=fresh(), asset="USD", target="B", amount=40_000_000)])  # enough for two calls only
    d.price("NOTE", "97.00")
    met = [e.ref for e in d.ledger.last_events if e.kind == "margin_met"]
    assert met == ["S0", "S1"]
    assert d.repo("S2").call == 19_400_000
    assert all(v >= 0 for held in d.ledger.balances().values() for v in held.values())


# ------------------------------------------------------------- stateful


from hypothesis import settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule  # noqa: E402


class RepoDesk(RuleBasedStateMachine):
    """Random repos, prices, cash movements and substitutions against the invariants of docs/rules.md."""

    @initialize()
    def start(self):
        self.d = Desk(cash_b=300_000_000, cash_l=5_000_000_000, note_b=60_000_000)
        self.minted = 300_000_000 + 5_000_000_000
        self.n = 0

    @rule(quantity=st.integers(1_000_000, 10_000_000), cover=st.integers(50, 100),
          haircut=st.sampled_from(["", "0", "0.05"]))
    def open_repo(self, quantity, cover, haircut):
        self.n += 1
        # principal up to the collateral value: some open, some are refused for collateral
        principal = quantity * 99 * cover // 100
        self.d.open(repo_id=f"H{self.n}", quantity=quantity, principal=principal, haircut=haircut)

    @rule(price=st.sampled_from(["90", "94.5", "97", "99", "101.25", "104"]), asset=st.sampled_from(["NOTE", "BILL"]))
    def set_price(self, price, asset):
        self.d.price(asset, price)

    @rule(amount=st.integers(1, 200_000_000))
    def borrower_pays_away(self, amount):
        if self.d.ledger.state.available("B", "USD") >= amount:
            assert self.d.run("B", [Move(id=fresh(), asset="USD", source="B", target="L", amount=amount)]) == [C.OK]

    @rule(amount=st.integers(1, 200_000_000))
    def cash_arrives(self, amount):
        self.d.run("ISS", [Mint(id=fresh(), asset="USD", target="B", amount=amount)])
        self.minted += amount

    @rule(data=st.data())
    def substitute(self, data):
        repos = sorted(self.d.ledger.protocol_state(repo.NAME).repos)
        if repos:
            repo_id = data.draw(st.sampled_from(repos))
            self.d.run("B", [repo.Substitute(id=fresh(), repo=repo_id, collateral="BILL",
                                             quantity=data.draw(st.integers(1_000_000, 12_000_000)))])

    @invariant()
    def collateral_of_each_open_repo_is_encumbered_at_the_lender(self):
        state = self.d.ledger.state
        book = self.d.ledger.protocol_state(repo.NAME)
        for repo_id, r in book.repos.items():
            record = state.encumbrances[f"repo:{repo_id}"]
            assert (record.owner, record.beneficiary, record.asset, record.amount) == ("L", "B", r.collateral,
                                                                                      r.quantity)
        for asset in ("NOTE", "BILL"):
            held = sum(r.quantity for r in book.repos.values() if r.collateral == asset)
            assert state.encumbered.get(asset, {}).get("L", 0) == held

    @invariant()
    def no_balance_is_negative(self):
        assert all(v >= 0 for held in self.d.ledger.balances().values() for v in held.values())

    @invariant()
    def every_open_repo_is_covered_or_has_an_open_call(self):
        state = self.d.ledger.state
        for r in self.d.ledger.protocol_state(repo.NAME).repos.values():
            valued = repo.values(state, r.collateral, r.quantity, r.cash_asset, repo.haircut(state, r))
            e = repo.exposure(state, r, state.now)
            assert e - valued[1] <= r.mta or r.call > 0

    @invariant()
    def cash_is_conserved(self):
        assert sum(h.get("USD", 0) for h in self.d.ledger.balances().values()) == self.minted


RepoDesk.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestRepoDesk = RepoDesk.TestCase


def test_prices_that_are_zero_negative_not_decimal_or_for_unknown_assets_are_refused():
    d = Desk()
    for asset, price, code in (("NOTE", "0", prices.BAD_PRICE), ("NOTE", "-1", prices.BAD_PRICE),
                               ("NOTE", "1e2", prices.BAD_PRICE), ("NOTE", "99.5.1", prices.BAD_PRICE),
                               ("NOTE", "\u00b2", prices.BAD_PRICE), ("NOTE", "\u0663", prices.BAD_PRICE),
                               ("NOPE", "99", C.UNKNOWN_ASSET)):
        assert d.run("ORC", [prices.SetPrice(id=fresh(), asset=asset, price=price)]) == [code]
    assert d.run("B", [prices.SetPrice(id=fresh(), asset="NOTE", price="98")]) == [C.UNAUTHORIZED]
