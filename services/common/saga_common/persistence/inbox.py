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
from saga_common.observability.tracing import untraced

_RECORD = (
    "INSERT INTO inbox (message_id, message_type, order_id, occurred_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (message_id) DO NOTHING RETURNING true"
)
# DO NOTHING also skips a second copy of an id inside the same statement: only the first is returned.
_RECORD_MANY = (
    "INSERT INTO inbox (message_id, message_type, order_id, occurred_at) "
    "SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[]) "
    "ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
)


async def record(conn: asyncpg.Connection, event: Event) -> bool:
    """Record the message as consumed; False when it already was (a duplicate delivery)."""
    with untraced():  # the consume span stands for it; a span per inbox row would say nothing more
        recorded = await conn.fetchval(_RECORD, event.message_id, event.type, event.order_id, event.occurred_at)
    return recorded is not None


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
