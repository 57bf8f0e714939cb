"""Inbox: the ids of consumed messages, recorded in the same transaction as their effect.

`record()` returns False for a message id already recorded: the consumer then acknowledges the duplicate
and changes nothing. The rows also give the saga timeline its "received" steps.
"""

from __future__ import annotations

import asyncpg
from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, Table, Text, func
from sqlalchemy.dialects.postgresql import UUID

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


_RECORD = (
    "INSERT INTO inbox (message_id, message_type, order_id, occurred_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (message_id) DO NOTHING RETURNING true"
)


async def record(db: asyncpg.Connection, event: Event) -> bool:
    """Record the message as consumed; False when it already was (a duplicate delivery)."""
    recorded = await db.fetchval(_RECORD, event.message_id, event.type, event.order_id, event.occurred_at)
    return recorded is not None
