"""Scheduled payments: the smallest protocol, showing the engine's extension point.

A payer schedules a payment of `amount` to a payee at ledger time `pay_at`.
The amount is escrowed at once in an engine hold (so it cannot be spent
twice); when ledger time reaches `pay_at` the engine's due work releases the
hold to the payee. Before then the payer may cancel, and the hold returns.
Protocol state (the book of scheduled payments) lives in the ledger state,
so journal replay, digests and snapshots cover it.
"""

from __future__ import annotations

import msgspec

from engine import codes as C
from engine.protocol import Protocol
from engine.records import Command
from engine.state import State, Timer

NAME = "scheduled"
CODE_PAY_AT_NOT_FUTURE = 900
CODE_UNKNOWN_PAYMENT = 901


class SchedulePayment(Command, tag="schedule_payment"):
    asset: str
    payer: str
    payee: str
    amount: int
    pay_at: int


class CancelPayment(Command, tag="cancel_payment"):
    payment: str


class Payment(msgspec.Struct, frozen=True, array_like=True):
    payer: str
    payee: str
    asset: str
    amount: int
    pay_at: int
    timer: int


class Book(msgspec.Struct):
    pending: dict[str, Payment] = {}
    stats: dict[str, int] = {}


def schedule(state: State, cmd: SchedulePayment, auth) -> int:
    code = state.check_payment(auth, cmd.payer, cmd.payee, cmd.asset, cmd.amount)
    if code:
        return code
    if cmd.pay_at <= state.now:
        return CODE_PAY_AT_NOT_FUTURE
    if state.frozen and (state.is_frozen(cmd.payer, cmd.asset) or state.is_frozen(cmd.payee, cmd.asset)):
        return C.ACCOUNT_FROZEN
    code = state.hold(cmd.id, cmd.asset, cmd.payer, cmd.payee, cmd.amount)
    if code:
        return code
    timer = state.schedule(cmd.pay_at, NAME, "pay", cmd.id)
    book: Book = state.protocol_state(NAME)
    state.put(book.pending, cmd.id, Payment(cmd.payer, cmd.payee, cmd.asset, cmd.amount, cmd.pay_at, timer))
    return C.OK


def cancel(state: State, cmd: CancelPayment, auth) -> int:
    book: Book = state.protocol_state(NAME)
    payment = book.pending.get(cmd.payment)
    if payment is None:
        return CODE_UNKNOWN_PAYMENT
    if auth is not None and payment.payer not in auth:
        return C.UNAUTHORIZED
    state.pop(book.pending, cmd.payment)
    state.cancel(payment.timer)
    return state.release(cmd.payment, to_beneficiary=False)


class ScheduledPayments(Protocol):
    name = NAME
    state_type = Book
    codes = {CODE_PAY_AT_NOT_FUTURE: "pay_at_not_future", CODE_UNKNOWN_PAYMENT: "unknown_payment"}

    def handlers(self):
        return {SchedulePayment: schedule, CancelPayment: cancel}

    def on_due(self, state: State, timer: Timer) -> int:
        book: Book = state.protocol_state(NAME)
        if timer.ref not in book.pending:
            return C.OK
        payment = state.pop(book.pending, timer.ref)
        blocked = state.check_party(payment.payee) or (state.frozen and (
            state.is_frozen(payment.payer, payment.asset) or state.is_frozen(payment.payee, payment.asset)))
        if blocked:  # a frozen or inactive party cannot be paid: the amount goes back to the payer
            state.emit(NAME, "refunded", timer.ref)
            return state.release(timer.ref, to_beneficiary=False)
        state.put(book.stats, "paid", book.stats.get("paid", 0) + 1)
        state.emit(NAME, "paid", timer.ref)
        return state.release(timer.ref, to_beneficiary=True)
