"""Reads and writes of customers and reservations for the API (the saga's writes live in credit.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncConnection

from customer_service.schemas import CustomerCreate, CustomerOut, ReservationOut

_WITH_RESERVED = """
    SELECT c.id, c.name, c.balance, c.created_at, c.updated_at,
           coalesce(
               (SELECT sum(r.amount) FROM reservations r WHERE r.customer_id = c.id AND r.status = 'active'), 0
           )::numeric(12, 2) AS reserved
    FROM customers c
"""
_GET = text(_WITH_RESERVED + " WHERE c.id = :id")
_LIST = text(
    _WITH_RESERVED + " WHERE (CAST(:before_id AS bigint) IS NULL OR c.id < :before_id) ORDER BY c.id DESC LIMIT :limit"
)
_INSERT = text(
    "INSERT INTO customers (name, balance) VALUES (:name, :balance) "
    "RETURNING id, name, balance, created_at, updated_at, 0::numeric(12, 2) AS reserved"
)
_RESERVATIONS = text(
    "SELECT id, order_id, customer_id, amount, status, reason, created_at, released_at FROM reservations "
    "WHERE customer_id = :customer_id AND (CAST(:before_id AS bigint) IS NULL OR id < :before_id) "
    "ORDER BY id DESC LIMIT :limit"
)
_SEED = text(
    "INSERT INTO customers (id, name, balance) VALUES (:id, :name, :balance) ON CONFLICT (id) DO NOTHING RETURNING id"
)
_SYNC_ID_SEQUENCE = text(
    "SELECT setval(pg_get_serial_sequence('customers', 'id'), GREATEST((SELECT max(id) FROM customers), 1))"
)

# The demo customers `make run` creates (see README): one rich, one poor, one in between.
DEMO_CUSTOMERS = (
    (1, "Alice (rich)", Decimal("1000000.00")),
    (2, "Bob (poor)", Decimal("10.00")),
    (3, "Carol", Decimal("500.00")),
)


def to_customer(row: Row[Any]) -> CustomerOut:
    return CustomerOut.model_validate(row, from_attributes=True)


def to_reservation(row: Row[Any]) -> ReservationOut:
    return ReservationOut.model_validate(row, from_attributes=True)


async def get(conn: AsyncConnection, customer_id: int) -> Row[Any] | None:
    return (await conn.execute(_GET, {"id": customer_id})).first()


async def list_customers(conn: AsyncConnection, *, limit: int, before_id: int | None) -> list[Row[Any]]:
    return list((await conn.execute(_LIST, {"limit": limit, "before_id": before_id})).all())


async def create(conn: AsyncConnection, body: CustomerCreate) -> Row[Any]:
    return (await conn.execute(_INSERT, {"name": body.name, "balance": body.balance})).one()


async def reservations_of(
    conn: AsyncConnection, customer_id: int, *, limit: int, before_id: int | None
) -> list[Row[Any]]:
    params = {"customer_id": customer_id, "limit": limit, "before_id": before_id}
    return list((await conn.execute(_RESERVATIONS, params)).all())


async def seed_demo_customers(conn: AsyncConnection) -> list[int]:
    """Create the demo customers that are missing; return the ids created."""
    created = []
    for customer_id, name, balance in DEMO_CUSTOMERS:
        if (await conn.execute(_SEED, {"id": customer_id, "name": name, "balance": balance})).first() is not None:
            created.append(customer_id)
    await conn.execute(_SYNC_ID_SEQUENCE)
    return created
