"""Reads and writes of the orders table: asyncpg statements on the caller's connection (every write inside
its unit of work)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from order_service.schemas import OrderCreate, OrderOut
from saga_common.contract.statuses import IN_PROGRESS_STATUSES, TERMINAL_STATUSES, OrderStatus, sql_in
from saga_common.observability.tracing import trace_id_of


@dataclass(frozen=True, slots=True)
class OrderRow:
    id: int
    customer_id: int
    product_id: int
    quantity: int
    total_price: Decimal
    status: str
    rejection_reason: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    trace_parent: str | None
    request_fingerprint: str | None


_COLUMNS = ", ".join(OrderRow.__dataclass_fields__)
# A key is per customer; one an older release wrote (`idempotency_key`, migration 0004) counts for its customer.
_INSERT = f"""
    INSERT INTO orders (customer_id, product_id, quantity, total_price, status, customer_idempotency_key,
                        request_fingerprint, trace_parent)
    SELECT $1::bigint, $2::bigint, $3::integer, $4::numeric, '{OrderStatus.PENDING.value}', $5::text, $6::text, $7::text
    WHERE NOT EXISTS (SELECT 1 FROM orders WHERE idempotency_key = $5 AND customer_id = $1)
    ON CONFLICT (customer_id, customer_idempotency_key) DO NOTHING
    RETURNING {_COLUMNS}
"""
_BY_KEY = f"""
    SELECT {_COLUMNS} FROM orders
    WHERE customer_id = $1 AND (customer_idempotency_key = $2 OR idempotency_key = $2)
"""
_BY_ID = f"SELECT {_COLUMNS} FROM orders WHERE id = $1"
_BY_ID_FOR_UPDATE = f"SELECT {_COLUMNS} FROM orders WHERE id = $1 FOR UPDATE"
# completed_at marks the last terminal transition; a cancelling order keeps the one of its fulfilment.
_SET_STATUS = f"""
    UPDATE orders SET status = $2, rejection_reason = coalesce($3, rejection_reason), updated_at = now(),
                      completed_at = CASE WHEN $4 THEN now() ELSE completed_at END
    WHERE id = $1
    RETURNING {_COLUMNS}
"""


# Sagas past their deadline still waiting for their first answer (pending, or cancelled while pending: never
# fulfilled, so no completed_at), oldest first; rows another replica's sweep holds are skipped.
_OVERDUE_FOR_UPDATE = f"""
    SELECT {_COLUMNS} FROM orders
    WHERE {sql_in(IN_PROGRESS_STATUSES)} AND completed_at IS NULL AND created_at < now() - make_interval(secs => $1)
    ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED
"""


def _row(record: asyncpg.Record | None) -> OrderRow | None:
    return None if record is None else OrderRow(*record)


def to_resource(row: OrderRow) -> OrderOut:
    return OrderOut(
        id=row.id,
        customer_id=row.customer_id,
        product_id=row.product_id,
        quantity=row.quantity,
        total_price=row.total_price,
        status=OrderStatus(row.status),
        rejection_reason=row.rejection_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        completed_at=row.completed_at,
        trace_id=trace_id_of(row.trace_parent),
    )


async def insert_order(
    conn: asyncpg.Connection,
    body: OrderCreate,
    *,
    idempotency_key: str | None,
    fingerprint: str,
    trace_parent: str | None,
) -> OrderRow | None:
    """Insert a pending order; None when the idempotency key is already taken."""
    record = await conn.fetchrow(
        _INSERT,
        body.customer_id,
        body.product_id,
        body.quantity,
        body.total_price,
        idempotency_key,
        fingerprint,
        trace_parent,
    )
    return _row(record)


async def get_by_idempotency_key(conn: asyncpg.Connection, customer_id: int, key: str) -> OrderRow | None:
    return _row(await conn.fetchrow(_BY_KEY, customer_id, key))


async def get(conn: asyncpg.Connection, order_id: int, *, for_update: bool = False) -> OrderRow | None:
    return _row(await conn.fetchrow(_BY_ID_FOR_UPDATE if for_update else _BY_ID, order_id))


async def lock_overdue(conn: asyncpg.Connection, *, older_than_s: float, limit: int) -> list[OrderRow]:
    return [OrderRow(*record) for record in await conn.fetch(_OVERDUE_FOR_UPDATE, float(older_than_s), limit)]


async def set_status(
    conn: asyncpg.Connection, order_id: int, status: OrderStatus, *, reason: str | None = None
) -> OrderRow:
    record = await conn.fetchrow(_SET_STATUS, order_id, status.value, reason, status in TERMINAL_STATUSES)
    assert record is not None, f"order {order_id} vanished inside its own transaction"
    return OrderRow(*record)


async def list_orders(
    conn: asyncpg.Connection,
    *,
    customer_id: int | None,
    status: OrderStatus | None,
    limit: int,
    before_id: int | None,
    created_before: datetime | None = None,
    created_after: datetime | None = None,
) -> list[OrderRow]:
    # Only the filters given, from a fixed list: a few statements, each planned for its own filters
    # (a catch-all "$1 IS NULL OR customer_id = $1" would get one generic plan that cannot use the index).
    filters = (
        ("customer_id =", customer_id),
        ("status =", None if status is None else status.value),
        ("id <", before_id),
        ("created_at <", created_before),
        ("created_at >", created_after),
    )
    conditions: list[str] = []
    args: list[object] = []
    for condition, value in filters:
        if value is not None:
            args.append(value)
            conditions.append(f"{condition} ${len(args)}")
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    args.append(limit)
    query = f"SELECT {_COLUMNS} FROM orders {where}ORDER BY id DESC LIMIT ${len(args)}"
    return [OrderRow(*record) for record in await conn.fetch(query, *args)]


def duration_seconds(row: OrderRow) -> float:
    end = row.completed_at or row.updated_at
    return max(0.0, (end - row.created_at).total_seconds())
