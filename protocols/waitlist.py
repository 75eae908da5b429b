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
again replaces it). Entries arriving in order are appended to a segment
tree of needs; an entry whose order falls before the last one (a trade
that starts waiting on this account after waiting on another) goes to a
short side list, merged into the tree when the list grows past about the
square root of the tree's size. Removed entries leave a gap, and the tree
is compacted when gaps outnumber entries.

Waitlists are runtime indexes, rebuilt from protocol state after a
snapshot load and never part of digests. Callers treat an entry as a
hint: they check it against the state before acting on it, and remove the
entries they find stale.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from math import isqrt
from typing import Any

NEED_NONE = 1 << 64  # larger than any need: an empty slot
CAPACITY_MIN = 16
SIDE_MIN = 32


class Waitlist:
    """Entries waiting on one account, in `order`, indexed by their need."""

    __slots__ = ("orders", "idents", "tree", "cap", "size", "live", "side", "slot")

    def __init__(self) -> None:
        self.orders: list[Any] = []  # order of each slot (kept for gaps too: slots stay sorted)
        self.idents: list[Any] = []  # ident of each slot (None for a gap)
        self.cap = CAPACITY_MIN
        self.tree = [NEED_NONE] * (2 * self.cap)  # min-need segment tree; leaves at cap .. 2 cap - 1
        self.size = 0  # slots in use
        self.live = 0  # entries in the tree (slots that are not gaps)
        self.side: list[tuple[Any, int, Any]] = []  # late arrivals: sorted (order, need, ident)
        self.slot: dict[Any, int] = {}  # ident -> its slot, or -1 when it is on the side list

    def __len__(self) -> int:
        return self.live + len(self.side)

    def least(self) -> int:
        """The smallest need of any entry (NEED_NONE when empty)."""
        low = self.tree[1]
        for _order, need, _ident in self.side:
            if need < low:
                low = need
        return low

    # ------------------------------------------------------------ changing

    def add(self, order: Any, need: int, ident: Any) -> None:
        """Add an entry (replacing the ident's previous one)."""
        if ident in self.slot:
            self.remove(ident)
        size = self.size
        if size and order < self.orders[size - 1]:
            insort(self.side, (order, need, ident))
            self.slot[ident] = -1
            if len(self.side) > SIDE_MIN + isqrt(self.live):
                self._rebuild()
            return
        if size == self.cap:
            self._rebuild(extra=1)
            size = self.size
        self.orders.append(order)
        self.idents.append(ident)
        self.slot[ident] = size
        self.size = size + 1
        self.live += 1
        self._set(size, need)

    def remove(self, ident: Any) -> None:
        """Remove an entry if present."""
        where = self.slot.pop(ident, None)
        if where is None:
            return
        if where < 0:
            for i, entry in enumerate(self.side):
                if entry[2] == ident:
                    del self.side[i]
                    return
            raise AssertionError("waitlist side list lost an entry")
        self.idents[where] = None
        self.live -= 1
        self._set(where, NEED_NONE)
        if self.size > CAPACITY_MIN and self.live * 2 < self.size:
            self._rebuild()

    def _set(self, position: int, need: int) -> None:
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

    def _rebuild(self, extra: int = 0) -> None:
        """Merge the side list into the tree and drop the gaps."""
        entries = [(self.orders[i], self.tree[self.cap + i], self.idents[i])
                   for i in range(self.size) if self.idents[i] is not None]
        if self.side:
            entries = sorted(entries + self.side, key=lambda e: e[0])
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
        self.slot = {e[2]: i for i, e in enumerate(entries)}
        self.tree = tree
        self.cap = cap
        self.size = self.live = len(entries)
        self.side = []

    # -------------------------------------------------------------- asking

    def first(self, after: Any, most: int) -> tuple[Any, int, Any] | None:
        """The first entry (order, need, ident) with order after `after` (None: from
        the start) and need at most `most`, or None."""
        found = None
        start = 0 if after is None else bisect_right(self.orders, after, 0, self.size)
        if start < self.size:
            position = self._first_at_most(start, most)
            if position is not None:
                found = (self.orders[position], self.tree[self.cap + position], self.idents[position])
        side = self.side
        if side:
            i = 0 if after is None else _side_after(side, after)
            for j in range(i, len(side)):
                entry = side[j]
                if found is not None and not entry[0] < found[0]:
                    break
                if entry[1] <= most:
                    found = entry
                    break
        return found

    def _first_at_most(self, start: int, most: int) -> int | None:
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

    def entries(self) -> list[tuple[Any, int, Any]]:
        """Every entry, in order (for the general path and for tests)."""
        main = [(self.orders[i], self.tree[self.cap + i], self.idents[i])
                for i in range(self.size) if self.idents[i] is not None]
        return sorted(main + self.side, key=lambda e: e[0]) if self.side else main


def _side_after(side: list[tuple[Any, int, Any]], after: Any) -> int:
    """The index of the first side entry whose order comes after `after`."""
    lo, hi = 0, len(side)
    while lo < hi:
        mid = (lo + hi) // 2
        if after < side[mid][0]:
            hi = mid
        else:
            lo = mid + 1
    return lo
