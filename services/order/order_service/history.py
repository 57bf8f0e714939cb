"""The saga history: one append-only row per step of an order's saga, written inside the step's own unit of
work (so a step and its record commit or roll back together), read by the timeline and `sagactl why`.

Retention (`sagactl prune`) keeps a finished saga's history for `SAGA_HISTORY_RETENTION_S` after its last
transition, far longer than the outbox and inbox rows it outlives.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from saga_common.observability.tracing import current_trace_id, untraced


@dataclass(frozen=True, slots=True)
class Cause:
    """What drives a step: its name, who asked for it, and the message it answers (if any)."""

    step: str  # "created", "order.fulfilled", "cancel", "deadline", "expire", "resend"...
    actor: str  # a service, a token's subject, "deadline"
    message_id: uuid.UUID | None = None
    occurred_at: datetime | None = None  # the message's, by its sender's clock


@dataclass(frozen=True, slots=True)
class HistoryRow:
    id: int
    order_id: int
    at: datetime
    step: str
    from_status: str | None
    to_status: str | None
    reason: str | None
    actor: str
    received_message_id: uuid.UUID | None
    received_occurred_at: datetime | None
    sent_message_id: uuid.UUID | None
    trace_id: str | None


_COLUMNS = ", ".join(HistoryRow.__dataclass_fields__)
_INSERT = """
    INSERT INTO saga_history (order_id, step, from_status, to_status, reason, actor, received_message_id,
                              received_occurred_at, sent_message_id, trace_id)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""
_OF_ORDER = f"SELECT {_COLUMNS} FROM saga_history WHERE order_id = $1 ORDER BY id"


async def record(
    conn: asyncpg.Connection,
    order_id: int,
    cause: Cause,
    *,
    from_status: str | None,
    to_status: str | None,
    reason: str | None = None,
    sent_message_id: uuid.UUID | None = None,
) -> None:
    # No database span: the step's own statement (and its consume or request span) stands for its record, which
    # names the trace anyway; two spans fewer per saga to make and export.
    with untraced():
        await conn.execute(
            _INSERT,
            order_id,
            cause.step,
            from_status,
            to_status,
            reason,
            cause.actor,
            cause.message_id,
            cause.occurred_at,
            sent_message_id,
            current_trace_id(),
        )


async def of_order(conn: asyncpg.Connection, order_id: int) -> list[HistoryRow]:
    return [HistoryRow(*record) for record in await conn.fetch(_OF_ORDER, order_id)]
