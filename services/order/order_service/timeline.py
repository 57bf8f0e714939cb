"""The saga of one order, step by step, from its history (`history.py`) and, while they are kept, its outbox rows.

Each history row is one step the order service took, with who asked for it and the messages it received and
sent. A received answer shows twice: when the customer service decided (`occurred_at`, its clock) and when the
order service recorded it. The outbox adds when the relay published each message it sent; once retention has
removed those rows the timeline has every step but those publications. Message ids tie each step to the broker
and to the trace.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
from pydantic import BaseModel, Field

from order_service import history
from order_service.history import HistoryRow
from order_service.orders import OrderRow
from saga_common.contract.topology import CUSTOMER_SERVICE, ORDER_SERVICE
from saga_common.observability.tracing import trace_id_of

_PUBLISHED = "SELECT id, routing_key, published_at FROM outbox WHERE order_id = $1"

# A received answer: what it means, and what recording it did when it changed the status.
_ANSWERS = {
    "order.fulfilled": ("credit reserved", "outcome recorded: fulfilled"),
    "order.rejected": ("credit refused", "outcome recorded: rejected"),
    "credit.released": ("credit released", "release recorded"),
}


class SagaStep(BaseModel):
    step: str
    at: datetime | None = Field(description="null: not happened yet (e.g. not yet published)")
    service: str
    actor: str | None = Field(None, description="who asked for it: a service, a token's subject, the deadline")
    message_id: uuid.UUID | None = None
    detail: str | None = None


class SagaTimeline(BaseModel):
    order_id: int
    status: str
    rejection_reason: str | None
    trace_id: str | None
    steps: list[SagaStep]


async def timeline_of(conn: asyncpg.Connection, order: OrderRow) -> SagaTimeline:
    published = {row["id"]: row for row in await conn.fetch(_PUBLISHED, order.id)}
    steps: list[SagaStep] = []
    for row in await history.of_order(conn, order.id):
        steps += _steps_of(row, order)
        sent = published.get(row.sent_message_id)
        if sent is not None:
            steps.append(
                SagaStep(
                    step=f"{sent['routing_key']} published",
                    at=sent["published_at"],
                    service=ORDER_SERVICE,
                    message_id=row.sent_message_id,
                )
            )
    steps.sort(key=lambda step: (step.at is None, step.at or order.created_at))  # stable: history order on ties
    return SagaTimeline(
        order_id=order.id,
        status=order.status,
        rejection_reason=order.rejection_reason,
        trace_id=trace_id_of(order.trace_parent),
        steps=steps,
    )


def _steps_of(row: HistoryRow, order: OrderRow) -> list[SagaStep]:
    def step(name: str, *, service: str = ORDER_SERVICE, at: datetime | None = None, **fields: object) -> SagaStep:
        return SagaStep(step=name, at=at or row.at, service=service, actor=row.actor, **fields)  # type: ignore[arg-type]

    sent = row.sent_message_id
    if row.step == "created":
        return [
            step("created", detail=f"customer {order.customer_id}, {order.total_price}"),
            step("order.created written", message_id=sent),
        ]
    if row.step in _ANSWERS:
        answered, recorded = _ANSWERS[row.step]
        received = row.received_message_id
        steps = [step(answered, service=CUSTOMER_SERVICE, at=row.received_occurred_at, message_id=received)]
        if row.to_status is not None or row.step == "credit.released":
            steps.append(step(recorded, message_id=received))
        elif sent is not None:
            steps.append(step("compensation requested", message_id=sent, detail=row.reason))
        else:
            steps.append(
                step("answer recorded: changes nothing", message_id=received, detail=f"order {row.from_status}")
            )
        return steps
    if row.step == "cancel":
        return [step("cancel requested", message_id=sent, detail=f"by {row.actor}, while {row.from_status}")]
    if row.step == "deadline":
        return [step(f"deadline passed: {row.to_status}", detail=row.reason)]
    if row.step == "expire":
        return [step("expired by operator", message_id=sent, detail=f"by {row.actor}")]
    if row.step == "resend":
        return [step("resent", message_id=sent, detail=f"by {row.actor}")]
    return [step(row.step, detail=f"{row.from_status} -> {row.to_status}")]
