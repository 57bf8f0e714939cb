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

import asyncpg

from customer_service.models import ReservationStatus


class DecisionRace(Exception):
    """Another transaction decided for the same order first; rolling back and retrying resolves it."""


@dataclass(frozen=True)
class Decision:
    reserved: bool
    reservation_id: int | None = None
    reason: str | None = None


_DEBIT = """
    UPDATE customers SET balance = balance - $3, updated_at = now()
    WHERE id = $2 AND balance >= $3
      AND NOT EXISTS (SELECT 1 FROM reservations WHERE order_id = $1)
    RETURNING id
"""
_RECORD = """
    INSERT INTO reservations (order_id, customer_id, amount, status, reason) VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (order_id) DO NOTHING
    RETURNING id
"""
_CUSTOMER_EXISTS = "SELECT EXISTS (SELECT 1 FROM customers WHERE id = $1)"
# One locked look at the order's reservation: two statements (release what is active, else look again) let a
# reservation commit between them and be answered "nothing to release" while its money stayed held.
_FIND_FOR_RELEASE = "SELECT customer_id, amount, status FROM reservations WHERE order_id = $1 FOR UPDATE"
_MARK_RELEASED = "UPDATE reservations SET status = 'released', released_at = now() WHERE order_id = $1"
_CREDIT_BACK = "UPDATE customers SET balance = balance + $2, updated_at = now() WHERE id = $1"


async def reserve(
    conn: asyncpg.Connection, *, order_id: int, customer_id: int, amount: Decimal, deadline: datetime | None
) -> Decision | None:
    """Take `amount` from the balance for this order, or record why not. None: the order was decided before."""
    if deadline is not None and datetime.now(UTC) > deadline:
        # The order service has stopped waiting; a reservation now would only have to be released again.
        return await _record_rejection(conn, order_id, customer_id, amount, "timeout")
    if await conn.fetchval(_DEBIT, order_id, customer_id, amount) is None:
        exists = await conn.fetchval(_CUSTOMER_EXISTS, customer_id)
        reason = "insufficient_balance" if exists else "unknown_customer"
        return await _record_rejection(conn, order_id, customer_id, amount, reason)
    reservation_id = await conn.fetchval(_RECORD, order_id, customer_id, amount, ReservationStatus.ACTIVE.value, None)
    if reservation_id is None:
        raise DecisionRace(f"order {order_id} was decided by a concurrent delivery")
    return Decision(reserved=True, reservation_id=reservation_id)


async def _record_rejection(
    conn: asyncpg.Connection, order_id: int, customer_id: int, amount: Decimal, reason: str
) -> Decision | None:
    recorded = await conn.fetchval(_RECORD, order_id, customer_id, amount, ReservationStatus.REJECTED.value, reason)
    return None if recorded is None else Decision(reserved=False, reason=reason)


@dataclass(frozen=True)
class Release:
    customer_id: int
    amount: Decimal


async def release(conn: asyncpg.Connection, *, order_id: int, customer_id: int) -> Release:
    """Give back the credit held for this order. Idempotent: releasing twice, or an order that never held
    credit, returns what was released (possibly 0) without moving money again."""
    existing = await conn.fetchrow(_FIND_FOR_RELEASE, order_id)
    if existing is None:
        # Cancelled before any reservation: record it, so a late order.created cannot reserve credit anymore.
        if await _record_rejection(conn, order_id, customer_id, Decimal(0), "cancelled") is None:
            # An order.created handled at the same moment reserved first (its row was not visible above):
            # rolled back and retried, this release finds that reservation and gives the money back.
            raise DecisionRace(f"order {order_id} was reserved by a concurrent delivery while being cancelled")
        return Release(customer_id, Decimal(0))
    if existing["status"] == ReservationStatus.ACTIVE.value:
        await conn.execute(_MARK_RELEASED, order_id)
        await conn.execute(_CREDIT_BACK, existing["customer_id"], existing["amount"])
        return Release(existing["customer_id"], existing["amount"])
    amount = existing["amount"] if existing["status"] == ReservationStatus.RELEASED.value else Decimal(0)
    return Release(existing["customer_id"], amount)
