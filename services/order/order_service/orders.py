"""Reads and writes of the orders table; every write runs inside a caller's unit of work."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from order_service.models import TERMINAL_STATUSES, OrderStatus, orders
from order_service.schemas import OrderCreate, OrderOut
from saga_common.tracing import trace_id_of

_COLUMNS = (
    orders.c.id,
    orders.c.customer_id,
    orders.c.product_id,
    orders.c.quantity,
    orders.c.total_price,
    orders.c.status,
    orders.c.rejection_reason,
    orders.c.created_at,
    orders.c.updated_at,
    orders.c.completed_at,
    orders.c.trace_parent,
    orders.c.request_fingerprint,
)


def to_resource(row: Row[Any]) -> OrderOut:
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
    conn: AsyncConnection,
    body: OrderCreate,
    *,
    idempotency_key: str | None,
    fingerprint: str,
    trace_parent: str | None,
) -> Row[Any] | None:
    """Insert a pending order; None when the idempotency key is already taken."""
    values = {
        "customer_id": body.customer_id,
        "product_id": body.product_id,
        "quantity": body.quantity,
        "total_price": body.total_price,
        "status": OrderStatus.PENDING.value,
        "idempotency_key": idempotency_key,
        "request_fingerprint": fingerprint,
        "trace_parent": trace_parent,
    }
    if idempotency_key is None:
        return (await conn.execute(insert(orders).values(values).returning(*_COLUMNS))).one()
    statement = (
        pg_insert(orders).values(values).on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(*_COLUMNS)
    )
    return (await conn.execute(statement)).first()


async def get_by_idempotency_key(conn: AsyncConnection, key: str) -> Row[Any] | None:
    return (await conn.execute(select(*_COLUMNS).where(orders.c.idempotency_key == key))).first()


async def get(conn: AsyncConnection, order_id: int, *, for_update: bool = False) -> Row[Any] | None:
    statement = select(*_COLUMNS).where(orders.c.id == order_id)
    if for_update:
        statement = statement.with_for_update()
    return (await conn.execute(statement)).first()


async def list_orders(
    conn: AsyncConnection, *, customer_id: int | None, status: OrderStatus | None, limit: int, before_id: int | None
) -> list[Row[Any]]:
    statement = select(*_COLUMNS).order_by(orders.c.id.desc()).limit(limit)
    if customer_id is not None:
        statement = statement.where(orders.c.customer_id == customer_id)
    if status is not None:
        statement = statement.where(orders.c.status == status.value)
    if before_id is not None:
        statement = statement.where(orders.c.id < before_id)
    return list((await conn.execute(statement)).all())


async def set_status(
    conn: AsyncConnection, order_id: int, status: OrderStatus, *, reason: str | None = None
) -> Row[Any]:
    values: dict[str, Any] = {"status": status.value, "updated_at": func.now()}
    if reason is not None:
        values["rejection_reason"] = reason
    if status in TERMINAL_STATUSES:
        values["completed_at"] = func.now()
    statement = update(orders).where(orders.c.id == order_id).values(values).returning(*_COLUMNS)
    return (await conn.execute(statement)).one()


def duration_seconds(row: Row[Any]) -> float:
    end = row.completed_at or row.updated_at
    return max(0.0, (end - row.created_at).total_seconds())
