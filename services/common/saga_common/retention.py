"""Retention of the outbox and the inbox: delete what is old enough, in bounded batches.

Only *sent* outbox rows are ever deleted. Inbox records are the deduplication window: a record is what
makes a late redelivery of its message a no-op, so it is kept at least `INBOX_FLOOR_S` whatever the
setting, and `sagactl dlq replay` refuses (without --force) a dead letter older than the window.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

INBOX_FLOOR_S = 86400.0
BATCH_SIZE = 1000
MAX_BATCHES = 1000  # one run deletes at most a million rows per table; the next run continues

_COUNT_OUTBOX = text("SELECT count(*) FROM outbox WHERE published_at < now() - make_interval(secs => :age)")
_DELETE_OUTBOX = text(
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => :age) "
    "LIMIT :batch)"
)
_COUNT_INBOX = text("SELECT count(*) FROM inbox WHERE processed_at < now() - make_interval(secs => :age)")
_DELETE_INBOX = text(
    "DELETE FROM inbox WHERE message_id IN (SELECT message_id FROM inbox "
    "WHERE processed_at < now() - make_interval(secs => :age) LIMIT :batch)"
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
    engine: AsyncEngine, *, outbox_retention_s: float, inbox_retention_s: float, dry_run: bool = False
) -> PruneResult:
    window = inbox_window(inbox_retention_s)
    if dry_run:
        async with engine.connect() as conn:
            outbox_rows = (await conn.execute(_COUNT_OUTBOX, {"age": outbox_retention_s})).scalar_one()
            inbox_rows = (await conn.execute(_COUNT_INBOX, {"age": window})).scalar_one()
        return PruneResult(outbox_rows, inbox_rows, window, dry_run=True)
    outbox_rows = await _delete_in_batches(engine, _DELETE_OUTBOX, outbox_retention_s)
    inbox_rows = await _delete_in_batches(engine, _DELETE_INBOX, window)
    return PruneResult(outbox_rows, inbox_rows, window, dry_run=False)


async def _delete_in_batches(engine: AsyncEngine, statement: object, age_s: float) -> int:
    deleted = 0
    for _ in range(MAX_BATCHES):
        # One statement, so one short transaction, per batch: no long lock, no bloat from one huge DELETE.
        async with engine.connect() as conn:
            count = (await conn.execute(statement, {"age": age_s, "batch": BATCH_SIZE})).rowcount  # type: ignore[call-overload]
        deleted += count
        if count < BATCH_SIZE:
            break
    return deleted
