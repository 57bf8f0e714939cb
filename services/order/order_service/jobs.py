"""Periodic jobs of the order service: the saga deadline and the saga gauges.

The deadline sweeper rejects orders pending longer than `SAGA_DEADLINE_S` with reason `timeout`. It is one
UPDATE over rows locked with SKIP LOCKED, so several replicas never expire an order twice, and it needs no
state of its own, so it works the same after a restart. A reservation that still arrives later is
compensated by the `order.fulfilled` handler.
"""

from __future__ import annotations

import logging

from order_service.saga import DEADLINE_REASON
from order_service.settings import OrderSettings
from saga_common.observability import metrics
from saga_common.runtime import PeriodicJob, ServiceRuntime

log = logging.getLogger(__name__)

SWEEP_BATCH = 500

_EXPIRE = """
    UPDATE orders SET status = 'rejected', rejection_reason = $1, updated_at = now(), completed_at = now()
    WHERE id IN (
        SELECT id FROM orders
        WHERE status = 'pending' AND created_at < now() - make_interval(secs => $2)
        ORDER BY updated_at LIMIT $3 FOR UPDATE SKIP LOCKED
    ) AND status = 'pending'
    RETURNING id, extract(epoch FROM completed_at - created_at)::float8 AS seconds
"""

_IN_PROGRESS = (
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(updated_at)), 0)::float8 "
    "FROM orders WHERE status IN ('pending', 'cancelling')"
)


async def expire_overdue_orders(runtime: ServiceRuntime, deadline_s: float) -> list[int]:
    async with runtime.db.unit_of_work() as uow:
        rows = await uow.conn.fetch(_EXPIRE, DEADLINE_REASON, float(deadline_s), SWEEP_BATCH)

        def count_finished() -> None:
            for row in rows:
                metrics.SAGAS_FINISHED.labels("rejected", DEADLINE_REASON).inc()
                metrics.SAGA_DURATION.labels("rejected").observe(row["seconds"])

        uow.after_commit(count_finished)
    expired = [row["id"] for row in rows]
    if expired:
        log.warning("rejected %d orders past their %ss deadline: %s", len(expired), deadline_s, expired[:20])
    return expired


async def refresh_saga_gauges(runtime: ServiceRuntime) -> None:
    metrics.SAGA_DEADLINE.set(runtime.settings.deadline_s)  # type: ignore[attr-defined]
    async with runtime.db.connection() as conn:
        count, oldest = await conn.fetchrow(_IN_PROGRESS)
    metrics.SAGAS_IN_PROGRESS.set(count)
    metrics.SAGA_OLDEST_PENDING_AGE.set(float(oldest))


def order_jobs(settings: OrderSettings) -> list[PeriodicJob]:
    async def sweep(runtime: ServiceRuntime) -> None:
        await expire_overdue_orders(runtime, settings.deadline_s)

    return [
        PeriodicJob("deadline-sweeper", settings.deadline_sweep_interval_s, sweep),
        PeriodicJob("saga-gauges", 5.0, refresh_saga_gauges),
    ]
