"""Credit reservation and release: the customer service's side of the saga, in SQL that cannot overdraw.

Reserving is one conditional UPDATE (`... WHERE balance >= amount`): concurrent orders of one customer
queue on the row lock and each sees the balance the previous one left. The reservation row is unique per
order, so a second decision for the same order is impossible; if two deliveries with different message
ids race, the loser hits that constraint, rolls back and, retried, finds the decision already taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from customer_service.models import ReservationStatus


class DecisionRace(Exception):
    """Another transaction decided for the same order first; rolling back and retrying resolves it."""


@dataclass(frozen=True)
class Decision:
    reserved: bool
    reservation_id: int | None = None
    reason: str | None = None


_DEBIT = text(
    """
    UPDATE customers SET balance = balance - :amount, updated_at = now()
    WHERE id = :customer_id AND balance >= :amount
      AND NOT EXISTS (SELECT 1 FROM reservations WHERE order_id = :order_id)
    RETURNING id
    """
)
_RECORD = text(
    """
    INSERT INTO reservations (order_id, customer_id, amount, status, reason)
    VALUES (:order_id, :customer_id, :amount, :status, :reason)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING id
    """
)
_CUSTOMER_EXISTS = text("SELECT EXISTS (SELECT 1 FROM customers WHERE id = :customer_id)")
_RELEASE = text(
    """
    UPDATE reservations SET status = 'released', released_at = now()
    WHERE order_id = :order_id AND status = 'active'
    RETURNING customer_id, amount
    """
)
_CREDIT_BACK = text("UPDATE customers SET balance = balance + :amount, updated_at = now() WHERE id = :customer_id")
_FIND = text("SELECT customer_id, amount, status FROM reservations WHERE order_id = :order_id")


async def reserve(
    conn: AsyncConnection, *, order_id: int, customer_id: int, amount: Decimal, deadline: datetime | None
) -> Decision | None:
    """Take `amount` from the balance for this order, or record why not. None: the order was decided before."""
    params = {"order_id": order_id, "customer_id": customer_id, "amount": amount}
    if deadline is not None and datetime.now(UTC) > deadline:
        # The order service has stopped waiting; a reservation now would only have to be released again.
        return await _record_rejection(conn, params, "timeout")
    debited = (await conn.execute(_DEBIT, params)).first() is not None
    if not debited:
        exists = (await conn.execute(_CUSTOMER_EXISTS, params)).scalar_one()
        return await _record_rejection(conn, params, "insufficient_balance" if exists else "unknown_customer")
    recorded = (
        await conn.execute(_RECORD, params | {"status": ReservationStatus.ACTIVE.value, "reason": None})
    ).first()
    if recorded is None:
        raise DecisionRace(f"order {order_id} was decided by a concurrent delivery")
    return Decision(reserved=True, reservation_id=recorded.id)


async def _record_rejection(conn: AsyncConnection, params: dict[str, object], reason: str) -> Decision | None:
    recorded = (
        await conn.execute(_RECORD, params | {"status": ReservationStatus.REJECTED.value, "reason": reason})
    ).first()
    return None if recorded is None else Decision(reserved=False, reason=reason)


@dataclass(frozen=True)
class Release:
    customer_id: int
    amount: Decimal


async def release(conn: AsyncConnection, *, order_id: int, customer_id: int) -> Release:
    """Give back the credit held for this order. Idempotent: releasing twice, or an order that never held
    credit, returns what was released (possibly 0) without moving money again."""
    released = (await conn.execute(_RELEASE, {"order_id": order_id})).first()
    if released is not None:
        await conn.execute(_CREDIT_BACK, {"amount": released.amount, "customer_id": released.customer_id})
        return Release(released.customer_id, released.amount)
    existing = (await conn.execute(_FIND, {"order_id": order_id})).first()
    if existing is None:
        # Cancelled before any reservation: record it, so a late order.created cannot reserve credit anymore.
        await _record_rejection(
            conn, {"order_id": order_id, "customer_id": customer_id, "amount": Decimal(0)}, "cancelled"
        )
        return Release(customer_id, Decimal(0))
    amount = existing.amount if existing.status == ReservationStatus.RELEASED.value else Decimal(0)
    return Release(existing.customer_id, amount)
