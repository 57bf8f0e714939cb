"""Reads and writes of customers and reservations for the API (the saga's writes live in credit.py)."""

from __future__ import annotations

from decimal import Decimal

import asyncpg

from customer_service.schemas import CustomerCreate, CustomerOut, ReservationOut

_WITH_RESERVED = """
    SELECT c.id, c.name, c.balance, c.created_at, c.updated_at,
           coalesce(
               (SELECT sum(r.amount) FROM reservations r WHERE r.customer_id = c.id AND r.status = 'active'), 0
           )::numeric(12, 2) AS reserved
    FROM customers c
"""
_GET = _WITH_RESERVED + " WHERE c.id = $1"
_LIST = _WITH_RESERVED + " WHERE ($1::bigint IS NULL OR c.id < $1) ORDER BY c.id DESC LIMIT $2"
_INSERT = (
    "INSERT INTO customers (name, balance) VALUES ($1, $2) "
    "RETURNING id, name, balance, created_at, updated_at, 0::numeric(12, 2) AS reserved"
)
_RESERVATIONS = (
    "SELECT id, order_id, customer_id, amount, status, reason, created_at, released_at FROM reservations "
    "WHERE customer_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
)
_SEED = "INSERT INTO customers (id, name, balance) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING RETURNING id"
_SYNC_ID_SEQUENCE = (
    "SELECT setval(pg_get_serial_sequence('customers', 'id'), GREATEST((SELECT max(id) FROM customers), 1))"
)

# The demo customers `make run` creates (see README): one rich, one poor, one in between.
DEMO_CUSTOMERS = (
    (1, "Alice (rich)", Decimal("1000000.00")),
    (2, "Bob (poor)", Decimal("10.00")),
    (3, "Carol", Decimal("500.00")),
)


def to_customer(row: asyncpg.Record) -> CustomerOut:
    return CustomerOut.model_validate(dict(row))


def to_reservation(row: asyncpg.Record) -> ReservationOut:
    return ReservationOut.model_validate(dict(row))


async def get(conn: asyncpg.Connection, customer_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(_GET, customer_id)


async def list_customers(conn: asyncpg.Connection, *, limit: int, before_id: int | None) -> list[asyncpg.Record]:
    return await conn.fetch(_LIST, before_id, limit)


async def create(conn: asyncpg.Connection, body: CustomerCreate) -> asyncpg.Record:
    row = await conn.fetchrow(_INSERT, body.name, body.balance)
    assert row is not None
    return row


async def reservations_of(
    conn: asyncpg.Connection, customer_id: int, *, limit: int, before_id: int | None
) -> list[asyncpg.Record]:
    return await conn.fetch(_RESERVATIONS, customer_id, before_id, limit)


async def seed_demo_customers(conn: asyncpg.Connection) -> list[int]:
    """Create the demo customers that are missing, in one transaction; return the ids created."""
    created = []
    async with conn.transaction():
        for customer_id, name, balance in DEMO_CUSTOMERS:
            if await conn.fetchval(_SEED, customer_id, name, balance) is not None:
                created.append(customer_id)
        await conn.execute(_SYNC_ID_SEQUENCE)
    return created
