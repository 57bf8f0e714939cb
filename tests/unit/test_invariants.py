"""The cross-database invariants (saga_tools.invariants), judged on rows written by hand: each broken one is
named, a consistent saga is not."""

from decimal import Decimal

import pytest

from saga_tools.invariants import CHARGES, Kind, Order, Reservation, violations

PRICE = Decimal("10.00")


def order(order_id: int, status: str, price: Decimal = PRICE) -> Order:
    return Order(id=order_id, customer_id=7, status=status, total_price=price)


def reservation(order_id: int, status: str, amount: Decimal = PRICE, reservation_id: int | None = None) -> Reservation:
    return Reservation(id=reservation_id or order_id, order_id=order_id, customer_id=7, amount=amount, status=status)


def test_consistent_sagas_break_nothing() -> None:
    orders = {1: order(1, "fulfilled"), 2: order(2, "cancelled"), 3: order(3, "rejected"), 4: order(4, "pending")}
    reservations = [reservation(1, "active"), reservation(2, "released"), reservation(3, "rejected")]
    assert violations(orders, reservations) == []


@pytest.mark.parametrize(
    ("orders", "reservations", "kind", "problem"),
    [
        (
            {},
            [reservation(9, "active")],
            Kind.CREDIT_FOR_UNKNOWN_ORDER,
            "credit 10.00 held for an order the order database does not know",
        ),
        (
            {1: order(1, "rejected")},
            [reservation(1, "active")],
            Kind.CREDIT_FOR_ENDED_ORDER,
            "credit 10.00 held for a rejected order",
        ),
        (
            {1: order(1, "cancelled")},
            [reservation(1, "active")],
            Kind.CREDIT_FOR_ENDED_ORDER,
            "credit 10.00 held for a cancelled order",
        ),
        ({1: order(1, "fulfilled")}, [], Kind.FULFILLED_WITHOUT_CREDIT, "fulfilled order whose reservation is missing"),
        (
            {1: order(1, "fulfilled")},
            [reservation(1, "released")],
            Kind.FULFILLED_WITHOUT_CREDIT,
            "fulfilled order whose reservation is released",
        ),
        (
            {1: order(1, "fulfilled")},
            [reservation(1, "active", Decimal("9.99"))],
            Kind.FULFILLED_WRONG_AMOUNT,
            "fulfilled order holds 9.99 of credit, its price is 10.00",
        ),
        (
            {1: order(1, "cancelled")},
            [],
            Kind.CANCELLED_NOT_RELEASED,
            "cancelled order whose reservation is missing, not released",
        ),
        (
            {1: order(1, "rejected")},
            [reservation(1, "rejected"), reservation(1, "rejected", reservation_id=2)],
            Kind.SECOND_RESERVATION,
            "2 reservations",
        ),
    ],
)
def test_each_broken_invariant_is_named(orders, reservations, kind, problem) -> None:
    (found,) = violations(orders, reservations)
    assert (found.kind, found.problem, found.order_id) == (kind, problem, next(iter(orders), 9))


def test_in_flight_sagas_are_not_judged() -> None:
    # Credit held for a pending or cancelling order is the saga at work (reconcile's grace and stuck-cancelling
    # check, and the chaos tier's terminal check, cover those).
    orders = {1: order(1, "pending"), 2: order(2, "cancelling")}
    assert violations(orders, [reservation(1, "active"), reservation(2, "active")]) == []


def test_an_order_cancelled_before_any_credit_was_taken_is_settled() -> None:
    # Cancelled while pending: the customer service refused the reservation (or never made it) for good.
    assert violations({1: order(1, "cancelled")}, [reservation(1, "rejected")]) == []


def test_charges_are_the_double_effects() -> None:
    assert CHARGES == {Kind.CREDIT_FOR_UNKNOWN_ORDER, Kind.CREDIT_FOR_ENDED_ORDER, Kind.SECOND_RESERVATION}
