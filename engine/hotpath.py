"""The batch hot path: a Move applied with its state in locals, and DvP-shaped pairs of Moves.

Takes a command (or a run of them) and the state's dictionaries; gives a
result code (or the index of the first command not committed), writing
balances directly. `engine.machine` calls these; the general path
(`engine.handlers`) must give the same results and state.
"""

from __future__ import annotations

from . import codes as C
from .records import Move
from .state import MISSING


def _move_unfrozen(cmd: Move, auth, parts, balances, encumbered, undo) -> int:
    """Apply a Move when no account is frozen: the hot path, so it takes its
    state in locals and writes balances directly (with undo records).
    Checks in code order: unauthorized, unknown_participant, participant_inactive,
    unknown_asset, invalid_amount, insufficient_funds, same_account."""
    source = cmd.source
    target = cmd.target
    if auth is not None and source not in auth:
        return C.UNAUTHORIZED
    ps = parts.get(source)
    pt = parts.get(target)
    if ps is None or pt is None:
        return C.UNKNOWN_PARTICIPANT
    if ps.status or pt.status:
        return C.PARTICIPANT_INACTIVE
    asset = cmd.asset
    book = balances.get(asset)
    if book is None:
        return C.UNKNOWN_ASSET
    amount = cmd.amount
    if amount <= 0:
        return C.INVALID_AMOUNT
    have = book.get(source, 0)
    enc = encumbered.get(asset)
    if enc:
        have -= enc.get(source, 0)
    if have < amount:
        return C.INSUFFICIENT_FUNDS
    if source == target:
        return C.SAME_ACCOUNT
    old = book.get(target, MISSING)
    undo.append((book, source, book[source]))
    undo.append((book, target, old))
    book[source] -= amount
    book[target] = amount if old is MISSING else old + amount
    return C.OK


def _move_pairs(flat: list, owner: list[int], i: int, n: int, auth, ids: dict, parts, balances, encumbered,
                watch, rose, base: int) -> int:
    """Commit consecutive DvP-shaped pairs from `i` on; return the index of the first command not committed.

    A pair is a linked Move followed, in the same envelope, by an unlinked
    Move: the shape of a delivery-versus-payment. All pairs run under
    `auth`, the authority of the envelope of command `i`, and so never
    past the end of that envelope. This is the batch hot path:
    it commits a pair only when both legs succeed and neither id is known,
    writing balances directly with no undo records; anything else (a known
    id, a refusal, another command, the end of the envelope) stops it with
    the state exactly as before that pair, and the general path takes over
    there, so results and state are the same as the general path gives.
    Accounts must not be frozen (the caller checks that none is). It stops
    after a pair that credits a watched account, so the caller settles the
    rise before the next command runs.
    """
    setdefault = ids.setdefault
    get_part = parts.get
    get_book = balances.get
    envelope = owner[i]  # `auth` is this envelope's authority: stop where the envelope ends
    while i + 1 < n:
        a = flat[i]
        b = flat[i + 1]
        if type(a) is not Move or type(b) is not Move or not a.linked or b.linked or owner[i + 1] != envelope:
            return i
        la = base + i
        ia = a.id
        if setdefault(ia, la) != la:  # known (an idempotent repeat, or a conflict): the general path decides
            return i
        lb = la + 1
        if setdefault(b.id, lb) != lb:  # known, or the pair shares one id: withdraw a's, just added
            del ids[ia]
            return i
        # leg a
        s = a.source
        t = a.target
        ps = get_part(s)
        pt = get_part(t)
        book = get_book(a.asset)
        amount = a.amount
        if (
            ps is None or pt is None or ps.status or pt.status or book is None or amount <= 0 or s == t
            or (auth is not None and s not in auth)
        ):
            del ids[ia], ids[b.id]
            return i
        old_s = book.get(s, 0)
        have = old_s
        if encumbered:
            enc = encumbered.get(a.asset)
            if enc:
                have -= enc.get(s, 0)
        if have < amount:
            del ids[ia], ids[b.id]
            return i
        old_t = book.get(t, MISSING)
        book[s] = old_s - amount
        book[t] = amount if old_t is MISSING else old_t + amount
        # leg b, seeing leg a's effect; in a DvP it runs between the same two parties, already checked
        s2 = b.source
        t2 = b.target
        book2 = get_book(b.asset)
        amount2 = b.amount
        if s2 == t and t2 == s:
            ok = book2 is not None and amount2 > 0 and (auth is None or s2 in auth)
        else:
            ps = get_part(s2)
            pt = get_part(t2)
            ok = (
                ps is not None and pt is not None and not ps.status and not pt.status and book2 is not None
                and amount2 > 0 and s2 != t2 and (auth is None or s2 in auth)
            )
        if ok:
            old_s2 = book2.get(s2, 0)
            have = old_s2
            if encumbered:
                enc = encumbered.get(b.asset)
                if enc:
                    have -= enc.get(s2, 0)
            ok = have >= amount2
        if not ok:  # put leg a back exactly, then let the general path report the refusal
            book[s] = old_s
            if old_t is MISSING:
                del book[t]
            else:
                book[t] = old_t
            del ids[ia], ids[b.id]
            return i
        old = book2.get(t2, MISSING)
        book2[s2] = old_s2 - amount2
        book2[t2] = amount2 if old is MISSING else old + amount2
        i += 2
        if watch:
            watched = watch.get(a.asset)
            if watched and t in watched:
                rose.append((a.asset, t))
            watched = watch.get(b.asset)
            if watched and t2 in watched:
                rose.append((b.asset, t2))
            if rose:
                return i
    return i

