"""The two DvP settings for the simpler RTGS models: `dvp.queue` and `dvp.offsetting`.

By default both are on (queue, recycling, liquidity-saving), so a ledger
that never sets them behaves as before. `dvp.queue` = "false": a trade that
cannot settle when due fails at once, with the reason and the shortfall.
`dvp.offsetting` = "false": no liquidity-saving pass, neither periodic nor
at the cut-off.
"""

from __future__ import annotations

import pytest

from engine import codes as C
from protocols import dvp

from dvp_world import T0, World, fresh


def _failed(w: World) -> dict[str, dict]:
    return {e.ref: dict(e.data) for e in w.events() if e.protocol == dvp.NAME and e.kind == "failed"}


@pytest.mark.parametrize("short, reason, party, asset, amount", [
    ("cash", "insufficient_cash", "B", "USD", "40000"),
    ("securities", "insufficient_securities", "A", "BOND", "7"),
], ids=["a buyer short of cash fails at once, saying by how much",
        "a seller short of securities fails at once, saying by how much"])
def test_without_a_queue_a_trade_short_of_funds_fails_at_once(short, reason, party, asset, amount):
    w = World(cash={"B": 60_000 if short == "cash" else 1_000_000}, bonds={"A": 3 if short == "securities" else 10})
    w.config(dvp.QUEUE_KEY, "false")
    code = w.settle("T1", "A", "B", 10, 100_000)
    assert code == C.OK  # the instruction was taken; it failed (an event says so)
    assert _failed(w) == {"T1": {"reason": reason, "party": party, "asset": asset, "short": amount}}
    assert w.queue() == {}
    assert (w.bal("A"), w.bal("B", "BOND")) == (0, 0)  # nothing moved


def test_without_a_queue_a_funded_trade_still_settles_and_a_failed_id_is_free_again():
    w = World(cash={"B": 100_000}, bonds={"A": 10})
    w.config(dvp.QUEUE_KEY, "false")
    assert w.settle("T1", "A", "B", 10, 200_000) == C.OK
    assert "T1" in _failed(w)
    assert w.settle("T2", "A", "B", 10, 100_000) == C.OK
    assert _failed(w) == {}
    assert (w.bal("A"), w.bal("B", "BOND")) == (100_000, 10)


def test_without_a_queue_a_credit_later_recycles_nothing():
    w = World(cash={}, bonds={"A": 10})
    w.config(dvp.QUEUE_KEY, "false")
    w.settle("T1", "A", "B", 10, 100_000)
    w.mint("B", 100_000)
    w.advance(1)
    assert (w.bal("A"), w.bal("B")) == (0, 100_000)


def test_without_a_queue_matched_instructions_short_of_cash_fail_and_are_not_reported_settled():
    w = World(cash={}, bonds={"A": 10})
    w.config(dvp.QUEUE_KEY, "false")
    terms = dict(trade="M1", seller="A", buyer="B", security="BOND", quantity=10, cash_asset="USD", amount=5)
    assert w.run("A", [dvp.Instruct(id=fresh(), side="deliver", **terms)]) == [C.OK]
    assert w.run("B", [dvp.Instruct(id=fresh(), side="receive", **terms)]) == [C.OK]
    kinds = [e.kind for e in w.events() if e.protocol == dvp.NAME]
    assert kinds == ["matched", "failed"]
    assert w.queue() == {}


def test_without_a_queue_a_trade_due_later_fails_when_due_if_it_cannot_settle():
    w = World(cash={}, bonds={"A": 10})
    w.config(dvp.QUEUE_KEY, "false")
    assert w.settle("L1", "A", "B", 10, 100, settle_at=T0 + 60) == C.OK
    assert "L1" in w.queue()  # waiting for its settlement time, not for funds
    w.advance(60)
    assert _failed(w)["L1"]["reason"] == "insufficient_cash"
    assert w.queue() == {}


def _gridlock(w: World) -> None:
    """A and B each owe the other the same: neither can pay alone, offsetting settles both."""
    w.settle("G1", "A", "B", 1, 50_000)
    w.settle("G2", "B", "A", 1, 50_000)


def test_offsetting_on_by_default_settles_a_gridlock():
    w = World(cash={}, bonds={"A": 1, "B": 1})
    _gridlock(w)
    w.advance(1)
    assert w.queue() == {}


def test_without_offsetting_a_gridlock_stays_queued_and_fails_at_the_cutoff():
    w = World(cash={}, bonds={"A": 1, "B": 1})
    w.config(dvp.OFFSETTING_KEY, "false")
    _gridlock(w)
    for _ in range(3):
        w.advance(400)  # past the offset interval, several times: no pass runs
    assert sorted(w.queue()) == ["G1", "G2"]
    assert w.run("OP", [dvp.Cutoff(id=fresh())]) == [C.OK]
    assert sorted(_failed(w)) == ["G1", "G2"]
    assert {f["reason"] for f in _failed(w).values()} == {"insufficient_cash"}


def test_without_offsetting_recycling_still_settles_a_queued_trade_when_cash_arrives():
    w = World(cash={}, bonds={"A": 1})
    w.config(dvp.OFFSETTING_KEY, "false")
    w.settle("Q1", "A", "B", 1, 50_000)
    assert "Q1" in w.queue()
    w.mint("B", 50_000)
    assert w.queue() == {}
    assert w.bal("A") == 50_000


@pytest.mark.parametrize("value", ["true", "yes", "0", ""], ids=["true", "yes", "zero", "empty"])
def test_any_value_but_false_leaves_the_queue_and_offsetting_on(value):
    w = World(cash={}, bonds={"A": 1, "B": 1})
    if value:
        w.config(dvp.QUEUE_KEY, value)
        w.config(dvp.OFFSETTING_KEY, value)
    _gridlock(w)
    assert sorted(w.queue()) == ["G1", "G2"]
    w.advance(1)
    assert w.queue() == {}


# ------------------------------------------------------------------ trade files

def _day(tmp_path, config: dict, fmt: str = "jsonl") -> str:
    import json

    lines = [dict(type="config", cutoff="2026-03-02T17:00:00Z", **config),
             dict(type="asset", id="USD", kind="cash", decimals=2),
             dict(type="asset", id="BOND", kind="security", decimals=0),
             *(dict(type="participant", id=p) for p in ("A", "B")),
             dict(type="deposit", participant="A", asset="BOND", amount=2),
             dict(type="deposit", participant="B", asset="BOND", amount=2),
             dict(type="deposit", participant="A", asset="USD", amount="10.00"),
             dict(type="dvp", at="2026-03-02T09:00:00Z", id="G1", seller="A", buyer="B", security="BOND",
                  quantity=1, cash_asset="USD", amount="50.00"),
             dict(type="dvp", at="2026-03-02T09:00:00Z", id="G2", seller="B", buyer="A", security="BOND",
                  quantity=1, cash_asset="USD", amount="50.00"),
             dict(type="dvp", at="2026-03-02T10:00:00Z", id="S1", seller="B", buyer="A", security="BOND",
                  quantity=1, cash_asset="USD", amount="5.00")]
    path = tmp_path / f"day.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    else:
        import csv

        columns = sorted({k for x in lines for k in x}, key=lambda k: (k != "type", k))
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for x in lines:
                writer.writerow(["true" if x.get(c) is True else "false" if x.get(c) is False else x.get(c, "")
                                 for c in columns])
    return str(path)


@pytest.mark.parametrize("config, g1, g2", [
    ({}, "settled", "settled"),
    ({"offsetting": False}, "failed", "failed"),
    ({"queue": False}, "failed", "failed"),
], ids=["by default the gridlock is offset", "without offsetting it fails at the cut-off",
        "without a queue both trades fail at once"])
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_trade_file_config_chooses_the_model(tmp_path, config, g1, g2, fmt):
    from protocols.replay import replay

    run = replay(_day(tmp_path, config, fmt))
    try:
        report = run.report()
    finally:
        run.close()
    assert report["rejected"] == []
    trades = report["trades"]
    assert (trades["G1"]["status"], trades["G2"]["status"], trades["S1"]["status"]) == (g1, g2, "settled")
    if config.get("queue") is False:
        assert trades["G1"]["short"] == {"party": "B", "asset": "USD", "amount": "50.00"}
    balances = report["balances"]
    cash = {p: balances[p]["USD"] for p in ("A", "B")}
    paid = {"settled": 50_00, "failed": 0}
    assert cash == {"A": f"{(10_00 + paid[g1] - paid[g2] - 5_00) / 100:.2f}",
                    "B": f"{(- paid[g1] + paid[g2] + 5_00) / 100:.2f}"}
    # The liquidity tracker follows the ledger: a trade that failed moved no cash.
    for (party, asset), position in run.accounts.liquidity.positions.items():
        assert f"{position.balance / 100:.2f}" == balances[party][asset]
