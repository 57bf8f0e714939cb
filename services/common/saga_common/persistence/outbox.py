"""Transactional outbox, the writing half: events are rows written in the business transaction.

`write_events()` inserts the rows, each with the W3C trace context of its "create" span, inside the caller's
transaction (a unit of work's events, when it commits). A statement-level trigger NOTIFYs channel `outbox` on
commit; the relay (`saga_common.messaging.relay`) publishes the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from saga_common.contract.messages import encode, newest_version
from saga_common.observability import tracing
from saga_common.persistence.unit_of_work import PendingEvent

NOTIFY_CHANNEL = "outbox"


# Run by each service's first migration, after the table exists.
NOTIFY_TRIGGER_DDL = (
    f"""
    CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('{NOTIFY_CHANNEL}', '');
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()",
)
DROP_NOTIFY_TRIGGER_DDL = (
    "DROP TRIGGER IF EXISTS outbox_notify ON outbox",
    "DROP FUNCTION IF EXISTS outbox_notify()",
)

_INSERT = "INSERT INTO outbox (id, routing_key, order_id, payload, headers) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)"
# A batch's events in one statement (one execution, one NOTIFY), in the order they were emitted.
_INSERT_MANY = (
    "INSERT INTO outbox (id, routing_key, order_id, payload, headers) "
    "SELECT id, routing_key, order_id, payload::jsonb, headers::jsonb "
    "FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[]) "
    "WITH ORDINALITY AS row (id, routing_key, order_id, payload, headers, position) ORDER BY position"
)


async def write_events(
    conn: asyncpg.Connection,
    pending: Sequence[PendingEvent],
    *,
    exchange: str,
    versions: Mapping[str, int] | None = None,
) -> None:
    """`versions`: the version each type is written in (the newest when not named); None: as built."""
    if not pending:
        return
    spans = []
    rows = []
    for item in pending:
        event = item.event
        headers: dict[str, str] = {}
        if tracing.tracing_enabled():
            span = tracing.start_create_span(
                exchange=exchange,
                routing_key=event.routing_key,
                message_id=str(event.message_id),
                order_id=event.order_id,
                parent=item.parent,
                links=item.links,
            )
            tracing.inject_into(span, headers)
            spans.append(span)
        rows.append(
            (
                event.message_id,
                event.routing_key,
                event.order_id,
                encode(event, _version_to_write(event.type, versions)).decode(),
                orjson.dumps(headers).decode(),
            )
        )
    try:
        # Untraced: each event's "create" span already stands for its row.
        with tracing.untraced():
            await _insert(conn, rows)
    finally:
        for span in spans:
            span.end()


def _version_to_write(event_type: str, versions: Mapping[str, int] | None) -> int | None:
    return None if versions is None else versions.get(event_type, newest_version(event_type))


async def _insert(conn: asyncpg.Connection, rows: list[tuple[Any, ...]]) -> None:
    if len(rows) == 1:
        await conn.execute(_INSERT, *rows[0])
    else:
        await conn.execute(_INSERT_MANY, *(list(column) for column in zip(*rows, strict=True)))


_PUBLISH_AGAIN = "UPDATE outbox SET published_at = NULL WHERE id = $1"


async def publish_again(conn: asyncpg.Connection, message_id: Any) -> bool:
    """Mark a written event unsent, so the relay publishes it again with its id (an operator's resend); False
    if retention already removed its row. The NOTIFY wakes the relay as an insert would."""
    status = await conn.execute(_PUBLISH_AGAIN, message_id)
    if status == "UPDATE 0":
        return False
    await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return True
