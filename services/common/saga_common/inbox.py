"""Inbox: the ids of consumed messages, recorded in the same transaction as their effect.

`record()` returns False for a message id already recorded: the consumer then acknowledges the duplicate
and changes nothing. The rows also give the saga timeline its "received" steps.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, Table, Text, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection

from saga_common.messages import Event


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("message_id", UUID(as_uuid=True), primary_key=True),
        Column("message_type", Text, nullable=False),
        Column("order_id", BigInteger, nullable=False),
        Column("occurred_at", DateTime(timezone=True), nullable=False, comment="when the sender wrote it"),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index("ix_inbox_order_id", "order_id"),
        Index("ix_inbox_processed_at", "processed_at"),
    )


_RECORD = text(
    "INSERT INTO inbox (message_id, message_type, order_id, occurred_at) "
    "VALUES (:message_id, :message_type, :order_id, :occurred_at) "
    "ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
)


async def record(conn: AsyncConnection, event: Event) -> bool:
    """Record the message as consumed; False when it already was (a duplicate delivery)."""
    result = await conn.execute(
        _RECORD,
        {
            "message_id": event.message_id,
            "message_type": event.type,
            "order_id": event.order_id,
            "occurred_at": event.occurred_at,
        },
    )
    return result.first() is not None
