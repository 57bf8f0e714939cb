"""Inbox: the ids of consumed messages, recorded in the same transaction as their effect.

`record()` returns False for a message id already recorded: the consumer then acknowledges the duplicate
and changes nothing. The rows also give the saga timeline its "received" steps.
"""

from __future__ import annotations

import asyncpg

from saga_common.messages import Event

_RECORD = (
    "INSERT INTO inbox (message_id, message_type, order_id, occurred_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (message_id) DO NOTHING RETURNING true"
)


async def record(conn: asyncpg.Connection, event: Event) -> bool:
    """Record the message as consumed; False when it already was (a duplicate delivery)."""
    recorded = await conn.fetchval(_RECORD, event.message_id, event.type, event.order_id, event.occurred_at)
    return recorded is not None
