"""Retention of the outbox and the inbox: delete what is old enough, in bounded batches.

Only *sent* outbox rows are ever deleted. Inbox records are the deduplication window: a record is what
makes a late redelivery of its message a no-op, so it is kept at least `INBOX_FLOOR_S` whatever the
setting, and `sagactl dlq replay` refuses (without --force) a dead letter older than the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

INBOX_FLOOR_S = 86400.0
BATCH_SIZE = 1000
MAX_BATCHES = 1000  # one run deletes at most a million rows per table; the next run continues

_COUNT_OUTBOX = "SELECT count(*) FROM outbox WHERE published_at < now() - make_interval(secs => $1)"
_DELETE_OUTBOX = (
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => $1) "
    "LIMIT $2)"
)
_COUNT_INBOX = "SELECT count(*) FROM inbox WHERE processed_at < now() - make_interval(secs => $1)"
_DELETE_INBOX = (
    "DELETE FROM inbox WHERE message_id IN (SELECT message_id FROM inbox "
    "WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)"
)


@dataclass(frozen=True)
class PruneResult:
    outbox_rows: int
    inbox_rows: int
    inbox_window_s: float
    dry_run: bool


def inbox_window(inbox_retention_s: float) -> float:
    return max(inbox_retention_s, INBOX_FLOOR_S)


async def prune(
    conn: asyncpg.Connection, *, outbox_retention_s: float, inbox_retention_s: float, dry_run: bool = False
) -> PruneResult:
    window = inbox_window(inbox_retention_s)
    if dry_run:
        outbox_rows = await conn.fetchval(_COUNT_OUTBOX, float(outbox_retention_s))
        inbox_rows = await conn.fetchval(_COUNT_INBOX, float(window))
        return PruneResult(outbox_rows, inbox_rows, window, dry_run=True)
    outbox_rows = await _delete_in_batches(conn, _DELETE_OUTBOX, outbox_retention_s)
    inbox_rows = await _delete_in_batches(conn, _DELETE_INBOX, window)
    return PruneResult(outbox_rows, inbox_rows, window, dry_run=False)


async def _delete_in_batches(conn: asyncpg.Connection, statement: str, age_s: float) -> int:
    deleted = 0
    for _ in range(MAX_BATCHES):
        # A short transaction per batch: no long lock, no bloat from one huge DELETE.
        async with conn.transaction():
            status = await conn.execute(statement, float(age_s), BATCH_SIZE)
        count = int(status.rsplit(" ", 1)[1])  # "DELETE <n>"
        deleted += count
        if count < BATCH_SIZE:
            break
    return deleted
