"""What a service runs besides its HTTP API: broker connection, consumer, outbox relay, periodic jobs.

Built and started inside FastAPI's lifespan (nothing at import time); tests build it with their own
settings. `stop()` is the SIGTERM path: stop consuming, let in-flight messages finish, publish what they
wrote, then close the broker and the database pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from saga_common.contract.messages import Event, check_publish_versions
from saga_common.contract.topology import BINDINGS, Topology
from saga_common.messaging.broker import Broker, Session
from saga_common.messaging.consumer import Consumer, Handler
from saga_common.messaging.publishers import PublisherCheck
from saga_common.messaging.relay import OutboxRelay, refresh_backlog_metrics
from saga_common.observability import metrics
from saga_common.observability.tracing import untraced
from saga_common.persistence.db import Database, create_pool
from saga_common.persistence.migrations import SchemaHistory, current_revision
from saga_common.persistence.notifications import PgListener
from saga_common.persistence.outbox import NOTIFY_CHANNEL
from saga_common.settings import ServiceSettings
from saga_common.timeouts import wait_at_most

log = logging.getLogger(__name__)

GAUGE_REFRESH_S = 5.0


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval_s: float
    run: Callable[[ServiceRuntime], Awaitable[None]]


@dataclass
class ServiceSpec:
    """What differs between the services: their name, their handlers and their periodic jobs."""

    name: str
    handlers: dict[str, Handler]
    jobs: list[PeriodicJob] = field(default_factory=list)
    # PostgreSQL NOTIFY channel -> callback(payload), on the process's one LISTEN connection.
    notifications: dict[str, Callable[[str], None]] = field(default_factory=dict)
    # The key of the row a message's handler locks: a batch runs its handlers in this order (batch.py).
    lock_order: Callable[[Event], Any] = lambda event: event.order_id
    # The migrations this release ships: /readyz waits until the database has them (the chart's migration Job
    # runs beside the rollout, not before it). None: no check.
    schema: SchemaHistory | None = None


def topology_from(settings: ServiceSettings) -> Topology:
    return Topology(
        exchange=settings.exchange,
        queue_type=settings.queue_type,
        delivery_limit=settings.delivery_limit,
        retry_delays_ms=tuple(settings.retry_delays_ms),
    )


class ServiceRuntime:
    def __init__(
        self,
        settings: ServiceSettings,
        spec: ServiceSpec,
        *,
        consume: bool = True,
        relay: bool = True,
    ) -> None:
        if spec.name not in BINDINGS:
            raise ValueError(f"unknown service {spec.name!r}; the topology knows {sorted(BINDINGS)}")
        check_publish_versions(settings.publish_versions)
        self.settings = settings
        self.spec = spec
        self.pool = create_pool(settings)
        # Set when there may be outbox rows to publish: by our own commits at once, by NOTIFY for other processes'.
        outbox_written = asyncio.Event()
        self.db = Database(
            self.pool,
            exchange=settings.exchange,
            publish_versions=settings.publish_versions,
            on_events_committed=outbox_written.set if relay else None,
        )
        self.topology = topology_from(settings)
        self.queues = self.topology.queues(spec.name)
        self.broker = Broker(
            settings.broker_urls,
            self.topology,
            prefetch=settings.consumer_prefetch,
            heartbeat_s=settings.broker_heartbeat_s,
            max_backoff_s=settings.broker_reconnect_max_delay_s,
            connection_name=spec.name,
            service=spec.name,
            declare_topology=settings.broker_topology == "declare",
        )
        self.relay = (
            OutboxRelay(
                self.db,
                self.broker,
                wake=outbox_written,
                batch_size=settings.outbox_batch_size,
                poll_interval_s=settings.outbox_poll_interval_s,
            )
            if relay
            else None
        )
        self.consumer = (
            Consumer(
                queues=self.queues,
                handlers=spec.handlers,
                db=self.db,
                broker=self.broker,
                database_reachable=self.database_reachable,
                max_attempts=settings.max_attempts,
                max_message_bytes=settings.max_message_bytes,
                batch_size=settings.consumer_batch_size,
                concurrency=settings.consumer_concurrency,
                lock_order=spec.lock_order,
                trace_as_link=settings.trace_consumer_parent == "link",
                publishers=(
                    PublisherCheck.for_service(spec.name, settings.broker_publishers, settings.exchange)
                    if settings.broker_publishers
                    else None
                ),
                newer_version_hold_s=settings.newer_version_hold_s,
            )
            if consume
            else None
        )
        if self.consumer is not None:
            self.broker.on_connected(self.consumer.attach)
        self.listener = PgListener(settings.database_url)
        if self.relay is not None:
            self.listener.subscribe(NOTIFY_CHANNEL, lambda _payload: outbox_written.set())
            # Rows written while nobody listened (start-up, a PostgreSQL restart) are picked up at once.
            self.listener.on_reconnect(outbox_written.set)
        for channel, callback in spec.notifications.items():
            self.listener.subscribe(channel, callback)
        self.database_ok = False
        self.schema_problem: str | None = None
        self._pool_started = False
        self._tasks: list[asyncio.Task[None]] = []
        self._relay_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        metrics.initialize_series(
            consumes=BINDINGS[self.spec.name],
            publishes=tuple(key for service, keys in BINDINGS.items() if service != self.spec.name for key in keys),
            queues=(self.queues.work, self.queues.dead_letter),
        )
        await self.pool  # opens no connection yet: the service starts while its database is down
        self._pool_started = True
        self.database_ok = await self.database_reachable()
        self._spawn(self.broker.run(), "broker")
        self._spawn(self.listener.run(), "pg-listener")
        if self.relay is not None:
            self._relay_task = asyncio.create_task(self.relay.run(), name="outbox-relay")
        self._spawn(self._every(self.settings.health_probe_interval_s, self._probe_database), "health")
        self._spawn(self._every(GAUGE_REFRESH_S, self._refresh_gauges), "gauges")
        for job in self.spec.jobs:
            self._spawn(self._every(job.interval_s, lambda job=job: job.run(self)), job.name)
        log.info("%s started", self.spec.name)

    async def stop(self) -> None:
        """Drain, publish what the drain produced, close. Every step is bounded with `wait_at_most`, so SIGTERM
        ends within the pod's grace period even when a library's close never returns."""
        began = time.monotonic()
        if self.consumer is not None:
            await self.consumer.stop(self.settings.drain_timeout_s)
        if self.relay is not None and self._relay_task is not None:
            await self.relay.stop()
            try:
                await wait_at_most(self._relay_task, 10)  # cancelled past that
            except TimeoutError:
                log.warning("the outbox relay did not stop within 10 s")
            except Exception:
                log.exception("the outbox relay failed")
            # One last round, so the outcomes of the messages just drained leave with us.
            try:
                await wait_at_most(self.relay.publish_batch(), 5)
            except Exception as exc:  # noqa: BLE001 - another replica or our next start publishes them
                log.info("final outbox round skipped: %s", exc)
        await _cancel_all(self._tasks, within_s=5)
        await self.broker.close()
        if self._pool_started:
            try:
                await wait_at_most(self.pool.close(), 10)
            except TimeoutError:
                self.pool.terminate()
        log.info("%s stopped in %.1f s", self.spec.name, time.monotonic() - began)

    def readiness(self) -> dict[str, str | None]:
        """Each check's problem, None when it passes: the service is ready when every value is None."""
        checks: dict[str, str | None] = {
            "database": None if self.database_ok else "the database does not answer",
            "broker": None if self.broker.is_connected else "not connected to the broker",
        }
        if self.spec.schema is not None:
            checks["schema"] = self.schema_problem
        if self.consumer is not None:
            checks["consumer"] = None if self.consumer.is_consuming else f"not consuming {self.queues.work}"
        if self.relay is not None:
            checks["outbox_relay"] = self.relay.unready_reason(self.settings.relay_unready_after_s)
        return checks

    async def database_reachable(self) -> bool:
        try:
            async with asyncio.timeout(2):
                async with self.db.connection() as conn:
                    revision = await current_revision(conn)
            if self.spec.schema is not None:
                self.schema_problem = self.spec.schema.problem(revision)
            return True
        except Exception:  # noqa: BLE001 - any failure means: not reachable now
            return False

    async def _probe_database(self) -> None:
        self.database_ok = await self.database_reachable()

    async def _refresh_gauges(self) -> None:
        async with self.db.connection() as conn:
            await refresh_backlog_metrics(conn)
        session = self.broker.current_session
        if session is not None:
            await _refresh_queue_depths(session, self.queues.work, self.queues.dead_letter)

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))  # type: ignore[arg-type]

    async def _every(self, interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                with untraced():
                    await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a periodic job must survive outages
                log.debug("periodic job failed: %s", exc)
            await asyncio.sleep(interval_s)


async def _refresh_queue_depths(session: Session, work_queue: str, dead_letter_queue: str) -> None:
    # A passive declare of a missing queue closes the channel, so it gets a throwaway channel of its own.
    channel = await session.connection.channel(publisher_confirms=False)
    try:
        for name, gauge in ((work_queue, metrics.QUEUE_DEPTH), (dead_letter_queue, metrics.DEAD_LETTER_QUEUE_DEPTH)):
            queue = await channel.declare_queue(name, passive=True)
            gauge.labels(name).set(queue.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def _cancel_all(tasks: list[asyncio.Task[None]], within_s: float) -> None:
    """Cancel the background tasks and wait for them at most `within_s`; name the ones that did not end."""
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    done, stuck = await asyncio.wait(tasks, timeout=within_s)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task %s had failed: %r", task.get_name(), task.exception())
    for task in stuck:
        log.warning("background task %s still running %g s after its cancellation", task.get_name(), within_s)
