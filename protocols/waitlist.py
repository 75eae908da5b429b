"""Waitlists: what waits on one account, in priority order, found by what it needs.

A settlement queue recycles an instruction when the account it waits on
rises. Trying every waiting instruction on every credit grows with the
queue; this index instead answers one question in O(log n): *the first
entry after a given position whose need is at most a given amount*. So a
credit wakes only the entries it can cover, each retry either settles or
could not have been avoided, and a credit nothing can use costs one
comparison (`least`).

An entry is `(order, need, ident)`: `order` is its priority (a DvP trade's
arrival number, a repo's (deadline, id)), `need` what it needs on the
account, `ident` its name (unique within one waitlist: adding an ident
again replaces it, and a new need at the same order is changed in place).

Entries arriving in order (the common case: a new trade queues behind the
others) are appended to a segment tree of needs (`_Run`). An entry whose
order falls before the last one (a trade that starts waiting on this
account after waiting on another, or a repo's new deadline) joins a forest
of sorted runs kept as a binary counter (Bentley and Saxe's logarithmic
method): a new run of one, and two runs of the same size merged into one,
so each late entry costs O(log n) amortized and a question asks O(log n)
runs. Removed entries leave gaps; a run is compacted when gaps outnumber
its entries.

Waitlists are runtime indexes, rebuilt from protocol state after a
snapshot load and never part of digests. Callers treat an entry as a
hint: they check it against the state before acting on it, and remove the
entries they find stale.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

NEED_NONE = 1 << 64  # larger than any need: an empty slot
CAPACITY_MIN = 16


class _Run:
    """Entries sorted by order, with a min-need segment tree over their slots (gaps hold NEED_NONE)."""

    __slots__ = ("orders", "idents", "tree", "cap", "size", "live")

    def __init__(self, entries: list[tuple[Any, int, Any]] = (), extra: int = 0) -> None:
        cap = CAPACITY_MIN
        while cap < 2 * (len(entries) + extra):
            cap *= 2
        tree = [NEED_NONE] * (2 * cap)
        for i, (_order, need, _ident) in enumerate(entries):
            tree[cap + i] = need
        for i in range(cap - 1, 0, -1):
            left = tree[2 * i]
            right = tree[2 * i + 1]
            tree[i] = left if left < right else right
        self.orders = [e[0] for e in entries]
        self.idents = [e[2] for e in entries]
        self.tree = tree
        self.cap = cap
        self.size = self.live = len(entries)

    def entries(self) -> list[tuple[Any, int, Any]]:
        cap, tree = self.cap, self.tree
        return [(self.orders[i], tree[cap + i], self.idents[i]) for i in range(self.size)
                if self.idents[i] is not None]

    def set(self, position: int, need: int) -> None:
        tree = self.tree
        i = position + self.cap
        tree[i] = need
        i >>= 1
        while i:
            low = tree[2 * i]
            right = tree[2 * i + 1]
            if right < low:
                low = right
            if tree[i] == low:
                break
            tree[i] = low
            i >>= 1

    def first(self, after: Any, most: int) -> int | None:
        """The first slot with order after `after` (None: from the start) and need at most `most`."""
        start = 0 if after is None else bisect_right(self.orders, after, 0, self.size)
        if start >= self.size:
            return None
        tree = self.tree
        cap = self.cap
        i = start + cap
        while True:
            if tree[i] <= most:
                while i < cap:
                    i = 2 * i if tree[2 * i] <= most else 2 * i + 1
                return i - cap
            while i & 1:
                i >>= 1
            if not i:
                return None
            i += 1


class Waitlist:
    """Entries waiting on one account, in `order`, indexed by their need."""

    __slots__ = ("main", "forest", "slot")

    def __init__(self) -> None:
        self.main = _Run()  # entries that came in order: appended
        self.forest: list[_Run] = []  # late entries: sorted runs, sizes decreasing (a binary counter)
        self.slot: dict[Any, tuple[_Run, int]] = {}  # ident -> (its run, its slot)

    def __len__(self) -> int:
        return self.main.live + sum(run.live for run in self.forest)

    def least(self) -> int:
        """The smallest need of any entry (NEED_NONE when empty)."""
        low = self.main.tree[1]
        for run in self.forest:
            if run.tree[1] < low:
                low = run.tree[1]
        return low

    # ------------------------------------------------------------ changing

    def add(self, order: Any, need: int, ident: Any) -> None:
        """Add an entry (replacing the ident's previous one; a new need at the same order is set in place)."""
        where = self.slot.get(ident)
        if where is not None:
            run, position = where
            if run.orders[position] == order:
                run.set(position, need)
                return
            self.remove(ident)
        main = self.main
        size = main.size
        if size and order < main.orders[size - 1]:
            self._add_late(order, need, ident)
            return
        if size == main.cap:
            self._compact_main(extra=1)
            main = self.main
            size = main.size
        main.orders.append(order)
        main.idents.append(ident)
        self.slot[ident] = (main, size)
        main.size = size + 1
        main.live += 1
        main.set(size, need)

    def _add_late(self, order: Any, need: int, ident: Any) -> None:
        """A late entry: a run of one, merged with runs of the same size (a binary counter)."""
        entries = [(order, need, ident)]
        forest = self.forest
        while forest and forest[-1].live <= len(entries):
            entries = _merge(forest.pop().entries(), entries)
        run = _Run(entries)
        forest.append(run)
        for i, entry in enumerate(entries):
            self.slot[entry[2]] = (run, i)

    def remove(self, ident: Any) -> None:
        """Remove an entry if present."""
        where = self.slot.pop(ident, None)
        if where is None:
            return
        run, position = where
        run.idents[position] = None
        run.live -= 1
        run.set(position, NEED_NONE)
        if run.size > CAPACITY_MIN and run.live * 2 < run.size:
            if run is self.main:
                self._compact_main()
            else:
                self._compact(run)

    def _compact_main(self, extra: int = 0) -> None:
        self.main = _Run(self.main.entries(), extra)
        for i, ident in enumerate(self.main.idents):
            self.slot[ident] = (self.main, i)

    def _compact(self, run: _Run) -> None:
        """Rebuild one late run without its gaps."""
        fresh = _Run(run.entries())
        self.forest[self.forest.index(run)] = fresh
        for i, ident in enumerate(fresh.idents):
            self.slot[ident] = (fresh, i)

    # -------------------------------------------------------------- asking

    def first(self, after: Any, most: int) -> tuple[Any, int, Any] | None:
        """The first entry (order, need, ident) with order after `after` (None: from the start) and need at
        most `most`, or None."""
        found = None
        for run in (self.main, *self.forest):
            if run.tree[1] > most:
                continue
            position = run.first(after, most)
            if position is not None and (found is None or run.orders[position] < found[0]):
                found = (run.orders[position], run.tree[run.cap + position], run.idents[position])
        return found

    def entries(self) -> list[tuple[Any, int, Any]]:
        """Every entry, in order (for the general path and for tests)."""
        out = self.main.entries()
        for run in self.forest:
            out = _merge(out, run.entries())
        return out


def _merge(a: list[tuple[Any, int, Any]], b: list[tuple[Any, int, Any]]) -> list[tuple[Any, int, Any]]:
    """Two lists sorted by order, as one."""
    return sorted(a + b, key=lambda e: e[0])  # timsort merges two sorted runs in linear time
