"""The saga of one order, step by step, from the order database alone.

The order row gives its creation and deadline; the outbox gives what the order service wrote and when the
relay published it; the inbox gives what the customer service answered (`occurred_at`, its clock) and when
the order service recorded it (`processed_at`). Message ids tie each step to the broker and to the trace.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import orjson
from pydantic import BaseModel, Field

from order_service.orders import OrderRow
from order_service.saga import DEADLINE_REASON
from saga_common.contract.topology import CUSTOMER_SERVICE, ORDER_SERVICE
from saga_common.observability.tracing import trace_id_of

_OUTBOX = (
    "SELECT id, routing_key, payload::text AS payload, created_at, published_at FROM outbox "
    "WHERE order_id = $1 ORDER BY seq"
)
_INBOX = (
    "SELECT message_id, message_type, occurred_at, processed_at FROM inbox WHERE order_id = $1 ORDER BY processed_at"
)

# What a received answer means, and what recording it did.
_ANSWERS = {
    "order.fulfilled": ("credit reserved", "outcome recorded: fulfilled"),
    "order.rejected": ("credit refused", "outcome recorded: rejected"),
    "credit.released": ("credit released", "release recorded"),
}


class SagaStep(BaseModel):
    step: str
    at: datetime | None = Field(description="null: not happened yet (e.g. not yet published)")
    service: str
    message_id: uuid.UUID | None = None
    detail: str | None = None


class SagaTimeline(BaseModel):
    order_id: int
    status: str
    rejection_reason: str | None
    trace_id: str | None
    steps: list[SagaStep]


async def timeline_of(conn: asyncpg.Connection, order: OrderRow) -> SagaTimeline:
    steps = [
        SagaStep(
            step="created",
            at=order.created_at,
            service=ORDER_SERVICE,
            detail=f"customer {order.customer_id}, {order.total_price}",
        )
    ]
    for row in await conn.fetch(_OUTBOX, order.id):
        steps += _sent_steps(row)
    for row in await conn.fetch(_INBOX, order.id):
        answered, recorded = _ANSWERS[row["message_type"]]
        message_id = row["message_id"]
        steps.append(SagaStep(step=answered, at=row["occurred_at"], service=CUSTOMER_SERVICE, message_id=message_id))
        steps.append(SagaStep(step=recorded, at=row["processed_at"], service=ORDER_SERVICE, message_id=message_id))
    if order.rejection_reason == DEADLINE_REASON and order.completed_at is not None:
        steps.append(SagaStep(step="deadline passed: rejected", at=order.completed_at, service=ORDER_SERVICE))
    steps.sort(key=lambda step: (step.at is None, step.at or order.created_at))
    return SagaTimeline(
        order_id=order.id,
        status=order.status,
        rejection_reason=order.rejection_reason,
        trace_id=trace_id_of(order.trace_parent),
        steps=steps,
    )


def _sent_steps(row: asyncpg.Record) -> list[SagaStep]:
    payload = orjson.loads(row["payload"])
    routing_key, message_id = row["routing_key"], row["id"]
    if routing_key == "order.cancelled":
        reason = payload.get("reason")
        written = "cancel requested" if reason == "cancelled_by_client" else "compensation requested"
        detail = reason
    else:
        written, detail = f"{routing_key} written", None
    return [
        SagaStep(step=written, at=row["created_at"], service=ORDER_SERVICE, message_id=message_id, detail=detail),
        SagaStep(step=f"{routing_key} published", at=row["published_at"], service=ORDER_SERVICE, message_id=message_id),
    ]
