"""An intraday repo with a margin call: open, a price drop, the call met from cash, the close.

Run: `python repo_margin.py` (an in-memory ledger; every figure is exact,
in integers of cents).

1. BANK_B (the borrower) delivers 10,000,000 face of a Treasury note to
   BANK_L (the lender) against USD 9,500,000.00, at 5.31% (ACT/360), for six
   hours. The note is worth 99.00: MV 9,900,000.00; its haircut (a note of
   about four years: 2%) gives CV 9,702,000.00 >= the principal, so the
   opening leg runs, and the note stays encumbered at the lender.
2. An hour later the oracle prices the note at 96.00: MV 9,600,000.00, CV
   9,408,000.00. Exposure E = principal + interest - margin, where one
   hour's interest is 950,000,000 * 0.0531 * 3,600 / (360 * 86,400) =
   5,838.54 cents, half-up 5,839 (USD 58.39): E = 9,500,058.39, so
   E - CV = 92,058.39 is called, and met at once from the borrower's cash:
   the lender now holds it as cash margin M.
3. At the end the closing leg runs by itself: the borrower pays principal
   + interest (six hours: 350.31) - M, and the note returns.
"""

from __future__ import annotations

import sys

from engine import Admit, Asset, Ledger, ManualClock, Mint, RegisterAsset, Signer, codes
from engine.identity import derive_key
from protocols import collateral, prices, repo

CHAIN = "repo-desk"
START = 1_772_443_800  # 2026-03-02T09:30:00Z
HOUR = 3_600
PROTOCOLS = [collateral.Collateral(), prices.Prices(), repo.Repos()]


def usd(minor: int | None) -> str:
    if minor is None:
        return "-"
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    return f"{sign}USD {minor // 100:,}.{minor % 100:02d}"


def show(ledger: Ledger, what: str) -> None:
    r = ledger.repo("R1")
    call = f"call {usd(r.call.amount)} due by +{(r.call.deadline - START) // 60} min" if r.call else "no open call"
    print(f"{what}\n   {r.status}: E {usd(r.exposure)}, MV {usd(r.market_value)}, CV {usd(r.collateral_value)} "
          f"(haircut {r.haircut}), margin held {usd(r.margin)}, {call}")


def main() -> int:
    clock = ManualClock(START)
    s = {n: Signer(n, derive_key(f"example/{n}"), CHAIN) for n in ("OP", "ISSUER", "ORACLE", "BANK_B", "BANK_L")}
    ledger = Ledger.create(chain_id=CHAIN, operator="OP", operator_key=s["OP"].public_key, clock=clock,
                           protocols=PROTOCOLS)
    ledger.submit([s["OP"].envelope([
        Admit(id="adm-b", participant="BANK_B", public_key=s["BANK_B"].public_key),
        Admit(id="adm-l", participant="BANK_L", public_key=s["BANK_L"].public_key),
        Admit(id="adm-i", participant="ISSUER", roles=("issuer",), public_key=s["ISSUER"].public_key),
        Admit(id="adm-o", participant="ORACLE", roles=("oracle",), public_key=s["ORACLE"].public_key),
        RegisterAsset(id="reg-usd", asset=Asset(id="USD", kind="cash", decimals=2, issuer="ISSUER")),
        RegisterAsset(id="reg-note", asset=Asset(id="UST4Y", kind="security", decimals=0, issuer="ISSUER",
                                                  asset_class="ust_note", maturity="2030-02-15")),
    ])])
    ledger.submit([s["ISSUER"].envelope([
        Mint(id="m-note", asset="UST4Y", target="BANK_B", amount=10_000_000),
        Mint(id="m-cash-b", asset="USD", target="BANK_B", amount=20_000_000),  # USD 200,000.00 for margin
        Mint(id="m-cash-l", asset="USD", target="BANK_L", amount=1_000_000_000),
    ])])
    ledger.submit([s["ORACLE"].envelope([prices.SetPrice(id="px-1", asset="UST4Y", price="99.00")])])

    # 1. Open: both parties sign the repo's terms.
    terms = repo.OpenRepo(id="open-R1", repo="R1", borrower="BANK_B", lender="BANK_L", collateral="UST4Y",
                          quantity=10_000_000, cash_asset="USD", principal=950_000_000, rate="0.0531",
                          end=START + 6 * HOUR)
    result = ledger.submit([s["BANK_L"].cosign(s["BANK_B"].envelope([terms]))])[0]
    show(ledger, f"1. R1 opened: {codes.name(result)}; BANK_L holds {ledger.balance('BANK_L', 'UST4Y'):,} UST4Y "
                 f"(encumbered), BANK_B {usd(ledger.balance('BANK_B', 'USD'))}")

    # 2. The price drops: the revaluation calls margin, met from the borrower's cash in the same step.
    clock.advance(HOUR)
    ledger.submit([s["ORACLE"].envelope([prices.SetPrice(id="px-2", asset="UST4Y", price="96.00")])])
    events = [(e.kind, e.data.get("amount", "")) for e in ledger.last_events if e.protocol == repo.NAME]
    print(f"2. the note falls to 96.00 an hour later: {', '.join(f'{k} {usd(int(a))}' if a else k for k, a in events)}")
    show(ledger, "   after the call")

    # 3. The end: the closing leg runs when ledger time reaches it.
    clock.set(START + 6 * HOUR)
    ledger.advance()
    r = ledger.repo("R1")
    paid = r.principal + (r.interest or 0) - (r.margin or 0)
    print(f"3. at the end: {r.status}, interest {usd(r.interest)}, the borrower paid {usd(paid)} "
          f"(principal + interest - margin {usd(r.margin)}); the note is back with BANK_B: "
          f"{ledger.balance('BANK_B', 'UST4Y'):,}")
    print("   the repo's events: " + ", ".join(e.kind for e in r.events))
    print(f"   BANK_B ends with {usd(ledger.balance('BANK_B', 'USD'))}, BANK_L with "
          f"{usd(ledger.balance('BANK_L', 'USD'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
