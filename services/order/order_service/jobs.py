"""Periodic jobs of the order service: the saga deadline and the saga gauges.

The deadline sweep is a transition of the saga (`saga.expire_overdue`): pending orders past `SAGA_DEADLINE_S`
are rejected with reason `timeout`. It needs no state of its own, so it works the same after a restart, and
several replicas never expire an order twice.
"""

from __future__ import annotations

from order_service import saga
from order_service.settings import OrderSettings
from saga_common.contract.statuses import IN_PROGRESS_STATUSES, sql_in
from saga_common.observability import metrics
from saga_common.runtime import PeriodicJob, ServiceRuntime

_IN_PROGRESS = (
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(updated_at)), 0)::float8 "
    f"FROM orders WHERE {sql_in(IN_PROGRESS_STATUSES)}"
)


async def expire_overdue_orders(runtime: ServiceRuntime, deadline_s: float) -> list[int]:
    async with runtime.db.unit_of_work() as uow:
        return await saga.expire_overdue(uow, deadline_s)


async def refresh_saga_gauges(runtime: ServiceRuntime, deadline_s: float) -> None:
    metrics.SAGA_DEADLINE.set(deadline_s)
    async with runtime.db.connection() as conn:
        count, oldest = await conn.fetchrow(_IN_PROGRESS)
    metrics.SAGAS_IN_PROGRESS.set(count)
    metrics.SAGA_OLDEST_PENDING_AGE.set(float(oldest))


def order_jobs(settings: OrderSettings) -> list[PeriodicJob]:
    async def sweep(runtime: ServiceRuntime) -> None:
        await expire_overdue_orders(runtime, settings.deadline_s)

    async def gauges(runtime: ServiceRuntime) -> None:
        await refresh_saga_gauges(runtime, settings.deadline_s)

    return [
        PeriodicJob("deadline-sweeper", settings.deadline_sweep_interval_s, sweep),
        PeriodicJob("saga-gauges", 5.0, gauges),
    ]
