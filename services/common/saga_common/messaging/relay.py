"""The outbox relay: publishes the rows units of work wrote (`saga_common.persistence.outbox`).

It wakes when a unit of work of this process committed events, on the NOTIFY of other processes' commits, or
every `poll_interval` as a fallback; locks a batch of unsent rows with `FOR UPDATE SKIP LOCKED` (so replicas
share the work), publishes them all with publisher confirms in flight together, then marks the confirmed ones
sent in one UPDATE and commits. A crash after the publish and before the commit publishes those rows again:
consumers deduplicate by message id (the inbox).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import orjson

from saga_common.messaging.broker import Broker, BrokerUnavailable, Session
from saga_common.observability import metrics, tracing
from saga_common.persistence.db import Database

log = logging.getLogger(__name__)

_SELECT_BATCH = (
    "SELECT id, routing_key, order_id, payload::text AS body, headers::text AS headers, created_at "
    "FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
)
_MARK_SENT = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::uuid[])"
_BACKLOG = (
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox WHERE published_at IS NULL"
)


class OutboxRelay:
    def __init__(
        self, db: Database, broker: Broker, *, wake: asyncio.Event, batch_size: int, poll_interval_s: float
    ) -> None:
        """`wake` is set when there may be rows to publish: by the database after a commit that wrote events,
        and by the runtime on NOTIFY `outbox` (other processes' commits) and after the listener reconnects."""
        self._db = db
        self._broker = broker
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wake = wake
        self._stopping = False
        self.published = 0
        # Readiness: since when every round has failed, and why (None while rounds succeed).
        self.failing_since: float | None = None
        self.last_error: str | None = None

    async def run(self) -> None:
        backoff = 0.05
        while not self._stopping:
            # Clear before reading: a NOTIFY that lands while we publish wakes the next round.
            self._wake.clear()
            try:
                sent = await self.publish_batch()
                backoff = 0.05
                self.failing_since = self.last_error = None
            except BrokerUnavailable as exc:
                self._failed(exc)
                await self._sleep_or_wake(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except Exception as exc:  # noqa: BLE001 - database or broker trouble: keep the rows, retry
                log.warning("outbox relay round failed, will retry: %s", exc or type(exc).__name__)
                self._failed(exc)
                # A plain sleep: NOTIFYs of new rows must not turn the back-off into a hot retry loop.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if sent < self._batch_size:
                await self._sleep_or_wake(self._poll_interval_s)

    def _failed(self, exc: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        self.last_error = str(exc) or type(exc).__name__

    def unready_reason(self, after_s: float) -> str | None:
        """Why the relay cannot do its work, once every round has failed for `after_s`; None while it can."""
        if self.failing_since is None:
            return None
        failing_for = time.monotonic() - self.failing_since
        if failing_for < after_s:
            return None
        return f"every outbox round failed for {failing_for:.0f} s, last: {self.last_error}"

    async def _sleep_or_wake(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def publish_batch(self) -> int:
        """Publish one batch of unsent rows; return how many were confirmed and marked sent."""
        with tracing.untraced():
            return await self._publish_batch()

    async def _publish_batch(self) -> int:
        async with self._db.unit_of_work() as uow:
            rows = await uow.conn.fetch(_SELECT_BATCH, self._batch_size)
            if not rows:
                return 0
            session = self._broker.session
            results = await asyncio.gather(*(self._publish(session, row) for row in rows), return_exceptions=True)
            sent_ids = [row["id"] for row, result in zip(rows, results, strict=True) if result is None]
            if sent_ids:
                await uow.conn.execute(_MARK_SENT, sent_ids)
        failures = [result for result in results if result is not None]
        self.published += len(sent_ids)
        if any(isinstance(failure, aio_pika.exceptions.DeliveryError) for failure in failures):
            await self._broker.renew(session, "the broker nacked publishes")
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(rows)} publishes failed, first: {failures[0]!r}")
        return len(sent_ids)

    async def _publish(self, session: Session, row: asyncpg.Record) -> None:
        headers: dict[str, Any] = orjson.loads(row["headers"])
        routing_key, message_id, order_id = row["routing_key"], str(row["id"]), row["order_id"]
        span = None
        if tracing.tracing_enabled():
            span = tracing.start_publish_span(
                exchange=session.exchange.name,
                routing_key=routing_key,
                message_id=message_id,
                order_id=order_id,
                stored_headers=headers,
            )
            tracing.inject_into(span, headers)
        message = aio_pika.Message(
            row["body"].encode(),
            message_id=message_id,
            type=routing_key,
            correlation_id=str(order_id),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
            timestamp=row["created_at"],
            # Validated by the broker: the consumers check it against the owner of the type (messaging/publishers).
            user_id=session.user,
        )
        try:
            await session.exchange.publish(message, routing_key=routing_key, mandatory=True, timeout=10)
        except Exception as exc:
            metrics.MESSAGES_PUBLISHED.labels(routing_key, "error").inc()
            if span is not None:
                tracing.mark_error(span, exc)
            raise
        finally:
            if span is not None:
                span.end()
        metrics.MESSAGES_PUBLISHED.labels(routing_key, "ok").inc()
        metrics.OUTBOX_PUBLISH_LAG.observe(max(0.0, (datetime.now(UTC) - row["created_at"]).total_seconds()))

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()


async def refresh_backlog_metrics(conn: asyncpg.Connection) -> None:
    count, oldest = await conn.fetchrow(_BACKLOG)
    metrics.OUTBOX_BACKLOG.set(count)
    metrics.OUTBOX_OLDEST_UNSENT_AGE.set(float(oldest))
