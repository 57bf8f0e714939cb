"""Inbox: the ids of consumed messages, recorded in the same transaction as their effect.

`record()` returns False for a message id already recorded: the consumer then acknowledges the duplicate
and changes nothing. `record_many()` does the same for a batch in one statement. The rows also give the
saga timeline its "received" steps.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from saga_common.contract.messages import Event

# DO NOTHING also skips a second copy of an id inside the same statement: only the first is returned.
_RECORD_MANY = (
    "INSERT INTO inbox (message_id, message_type, order_id, occurred_at) "
    "SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[]) "
    "ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
)


async def record_many(conn: asyncpg.Connection, events: Sequence[Event]) -> set[uuid.UUID]:
    """Record a batch of messages as consumed; the ids that were new (the others are duplicates)."""
    rows = await conn.fetch(
        _RECORD_MANY,
        [event.message_id for event in events],
        [event.type for event in events],
        [event.order_id for event in events],
        [event.occurred_at for event in events],
    )
    return {row[0] for row in rows}
