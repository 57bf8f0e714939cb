"""Retention of the outbox, the inbox and the saga history: delete what is old enough, in bounded batches.

Only *sent* outbox rows are ever deleted. The saga history (order database) goes only with sagas finished
longer than its own retention ago (90 days by default), whole, so a timeline is complete or gone. Inbox
records are the deduplication window: a record is what makes a late redelivery of its message a no-op, so
it is kept at least `INBOX_FLOOR_S` whatever the setting, and `sagactl dlq replay` refuses (without --force)
a dead letter older than the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from saga_common.contract.statuses import TERMINAL_STATUSES, sql_in

INBOX_FLOOR_S = 86400.0
DEFAULT_HISTORY_RETENTION_S = 90 * 86400.0
BATCH_SIZE = 1000
MAX_BATCHES = 1000  # one run deletes at most a million rows per table; the next run continues

_COUNT_OUTBOX = "SELECT count(*) FROM outbox WHERE published_at < now() - make_interval(secs => $1)"
_DELETE_OUTBOX = (
    "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => $1) "
    "LIMIT $2)"
)
_HAS_HISTORY = "SELECT to_regclass('saga_history') IS NOT NULL"
# An order's history goes whole, once its saga has been over for the whole window.
_FINISHED_BEFORE = (
    f"SELECT id FROM orders WHERE {sql_in(TERMINAL_STATUSES)} "
    "AND coalesce(completed_at, updated_at) < now() - make_interval(secs => $1)"
)
_COUNT_HISTORY = f"SELECT count(*) FROM saga_history WHERE order_id IN ({_FINISHED_BEFORE})"
_DELETE_HISTORY = (
    f"DELETE FROM saga_history WHERE id IN (SELECT id FROM saga_history WHERE order_id IN ({_FINISHED_BEFORE}) "
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
    history_rows: int = 0


def inbox_window(inbox_retention_s: float) -> float:
    return max(inbox_retention_s, INBOX_FLOOR_S)


async def prune(
    conn: asyncpg.Connection,
    *,
    outbox_retention_s: float,
    inbox_retention_s: float,
    history_retention_s: float = DEFAULT_HISTORY_RETENTION_S,
    dry_run: bool = False,
) -> PruneResult:
    window = inbox_window(inbox_retention_s)
    has_history = await conn.fetchval(_HAS_HISTORY)
    if dry_run:
        outbox_rows = await conn.fetchval(_COUNT_OUTBOX, float(outbox_retention_s))
        inbox_rows = await conn.fetchval(_COUNT_INBOX, float(window))
        history_rows = await conn.fetchval(_COUNT_HISTORY, float(history_retention_s)) if has_history else 0
        return PruneResult(outbox_rows, inbox_rows, window, dry_run=True, history_rows=history_rows)
    outbox_rows = await _delete_in_batches(conn, _DELETE_OUTBOX, outbox_retention_s)
    inbox_rows = await _delete_in_batches(conn, _DELETE_INBOX, window)
    history_rows = await _delete_in_batches(conn, _DELETE_HISTORY, history_retention_s) if has_history else 0
    return PruneResult(outbox_rows, inbox_rows, window, dry_run=False, history_rows=history_rows)


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
