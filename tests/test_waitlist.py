"""The waitlist index answers like a plain sorted list, whatever order entries come and go in."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.waitlist import NEED_NONE, Waitlist

ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 300), st.integers(0, 50), st.integers(0, 40)),
        st.tuples(st.just("remove"), st.integers(0, 40)),
        st.tuples(st.just("first"), st.one_of(st.none(), st.integers(-1, 301)), st.integers(0, 60)),
    ),
    max_size=400,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_a_waitlist_agrees_with_a_sorted_list(operations):
    wl = Waitlist()
    model: dict[int, tuple[int, int]] = {}  # ident -> (order, need)
    for op in operations:
        if op[0] == "add":
            _, order, need, ident = op
            if any(o == order for i, (o, _n) in model.items() if i != ident):
                continue  # orders are unique per waitlist (arrival numbers)
            wl.add(order, need, ident)
            model[ident] = (order, need)
        elif op[0] == "remove":
            wl.remove(op[1])
            model.pop(op[1], None)
        else:
            _, after, most = op
            expected = None
            for ident, (order, need) in sorted(model.items(), key=lambda kv: kv[1][0]):
                if (after is None or order > after) and need <= most:
                    expected = (order, need, ident)
                    break
            assert wl.first(after, most) == expected
        assert len(wl) == len(model)
        assert wl.least() == min((n for _o, n in model.values()), default=NEED_NONE)
        assert wl.entries() == sorted(((o, n, i) for i, (o, n) in model.items()), key=lambda e: e[0])


def test_entries_arriving_out_of_order_join_a_forest_of_logarithmically_many_runs():
    wl = Waitlist()
    for k in range(100):
        wl.add(1000 + k, 50, f"late{k}")
    for k in range(60):  # older arrivals, as trades that start waiting here after waiting elsewhere
        wl.add(k, 10 + k, f"early{k}")
    assert wl.first(None, 10) == (0, 10, "early0")
    assert wl.first(0, 11) == (1, 11, "early1")
    assert wl.first(59, 49) is None
    assert wl.first(59, 50) == (1000, 50, "late0")
    assert len(wl.forest) <= 6  # 60 = 32 + 16 + 8 + 4: a binary counter of runs
    assert sorted(run.live for run in wl.forest) == [4, 8, 16, 32]


def test_a_new_need_at_the_same_order_is_set_in_place():
    wl = Waitlist()
    for k in range(50):
        wl.add(k, 100, k)
    wl.add(10, 5, 10)  # same order, a smaller need: no new slot, no late run
    assert wl.forest == [] and wl.main.size == 50 and wl.first(None, 5) == (10, 5, 10)


def test_a_waitlist_compacts_when_most_entries_are_gone():
    wl = Waitlist()
    for k in range(1000):
        wl.add(k, k, k)
    for k in range(990):
        wl.remove(k)
    assert wl.main.size < 100 and wl.entries() == [(k, k, k) for k in range(990, 1000)]
