"""The idempotent consumer: decode, deduplicate, handle in one transaction, acknowledge.

Deliveries go to at most `concurrency` workers. A worker takes every delivery already waiting (up to
`batch_size`, never waiting for more) and handles them in one transaction: one inbox statement, each
handler in turn (sorted by the row it locks, so that concurrent batches cannot deadlock), one outbox
statement, one commit, then the acknowledgements (`batch.py`). A lone delivery is a batch of one, handled at
once, so latency at low load is that of one message. If anything in a batch fails, the batch is rolled back and
each of its messages is handled again in a transaction of its own, so one bad message never fails its
neighbours and retries and dead letters behave exactly as for a single message:
  - it cannot be decoded (not JSON, unknown or foreign type, wrong version, missing fields, too large):
    dead-lettered at once, reason in its headers; the messages behind it flow on;
  - its id is already in the inbox: acknowledged, nothing else (a duplicate);
  - its handler fails: if the database does not answer a probe right after, it is an outage and not the
    message's fault, so it waits in the shortest delay queue without using up an attempt; otherwise it
    goes to the delay queue of its attempt, and after `max_attempts` to the dead-letter queue;
  - it crashes the process again and again: the broker dead-letters it after `x-delivery-limit`;
  - it is a version of its type newer than this release knows (a producer already upgraded): held back in the
    longest delay queue without using up an attempt, again and again until this consumer is upgraded; only
    after `newer_version_hold_s` is it parked in the dead-letter queue (`newer_version`, replayable).
A retry or dead-letter copy is acknowledged only after the broker confirmed the copy, so a crash in between
yields a duplicate (deduplicated), never a loss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from saga_common.contract.messages import Event, NewerVersion, PoisonMessage, decode
from saga_common.contract.topology import ServiceQueues
from saga_common.messaging.batch import Delivery, Handler, Outcome, finish, handle_batch
from saga_common.messaging.broker import Broker, Session
from saga_common.messaging.publishers import PUBLISHER_HEADER, PublisherCheck, original_publisher
from saga_common.observability import metrics
from saga_common.observability.logs import current_order_id
from saga_common.persistence.db import Database
from saga_common.timeouts import wait_at_most

log = logging.getLogger(__name__)

# Headers this project adds to retried and dead-lettered copies.
ATTEMPT_HEADER = "x-saga-attempt"
ROUTING_KEY_HEADER = "x-saga-routing-key"
REASON_HEADER = "x-saga-dead-letter-reason"
CATEGORY_HEADER = "x-saga-dead-letter-category"
SOURCE_QUEUE_HEADER = "x-saga-source-queue"
DEAD_LETTERED_AT_HEADER = "x-saga-dead-lettered-at"
HELD_SINCE_HEADER = "x-saga-held-since"  # when a too-new version was first held back (ISO 8601, UTC)


def _by_order(event: Event) -> int:
    return event.order_id


def copy_of(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """The same message (body, id, type, correlation, timestamp), persistent, with other headers. The publisher
    of a message the broker dead-lettered (no header yet) goes into the header (saga_common.messaging.publishers)."""
    if PUBLISHER_HEADER not in headers and message.user_id:
        headers = headers | {PUBLISHER_HEADER: message.user_id}
    return aio_pika.Message(
        message.body,
        headers=headers,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        content_type=message.content_type,
        timestamp=message.timestamp,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


def original_routing_key(message: AbstractIncomingMessage) -> str:
    """Copies coming back from a delay queue carry the queue name as routing key; the header keeps the real one."""
    headers = message.headers or {}
    return str(headers.get(ROUTING_KEY_HEADER) or message.routing_key or "")


class Consumer:
    def __init__(
        self,
        *,
        queues: ServiceQueues,
        handlers: dict[str, Handler],
        db: Database,
        broker: Broker,
        database_reachable: Callable[[], Awaitable[bool]],
        max_attempts: int,
        max_message_bytes: int,
        batch_size: int = 1,
        concurrency: int = 1,
        lock_order: Callable[[Event], Any] = _by_order,
        trace_as_link: bool = False,
        publishers: PublisherCheck | None = None,
        newer_version_hold_s: float = 86400.0,
    ) -> None:
        self._queues = queues
        self._handlers = handlers
        self._db = db
        self._broker = broker
        self._database_reachable = database_reachable
        self._max_attempts = max_attempts
        self._max_message_bytes = max_message_bytes
        self._batch_size = batch_size
        self._concurrency = concurrency
        self._lock_order = lock_order
        self._trace_as_link = trace_as_link
        self._publishers = publishers  # None: any publisher is taken (one shared broker user, development)
        self._newer_version_hold_s = newer_version_hold_s
        self._session: Session | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._waiting: deque[AbstractIncomingMessage] = deque()
        self._running = 0  # workers handling deliveries now
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopped = False

    @property
    def is_consuming(self) -> bool:
        return (
            self._session is not None
            and self._consumer_tag is not None
            and self._broker.current_session is self._session
        )

    async def attach(self, session: Session) -> None:
        """Broker subscriber: start consuming on every new connection."""
        if self._stopped:
            return
        queue = await session.consume_channel.get_queue(self._queues.work, ensure=False)
        self._session, self._queue = session, queue
        self._consumer_tag = await queue.consume(self._on_message)
        log.info("consuming %s", self._queues.work)

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop taking deliveries and wait (bounded) for the ones in hand to finish."""
        self._stopped = True
        queue, tag = self._queue, self._consumer_tag
        self._consumer_tag = None
        if queue is not None and tag is not None:
            try:
                await wait_at_most(queue.cancel(tag), 5)
            except Exception:  # noqa: BLE001 - the channel may be gone already; unacked messages get requeued
                pass
        try:
            await asyncio.wait_for(self._idle.wait(), drain_timeout_s)
        except TimeoutError:
            log.warning("drain timed out with %d messages in flight; the broker will redeliver them", self._inflight)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        """aio-pika's callback, in a task of its own per delivery: queue the delivery; with a worker slot free,
        this task becomes the worker (no hop to another task), else a running worker takes it."""
        self._inflight += 1
        self._idle.clear()
        self._waiting.append(message)
        if self._running < self._concurrency:
            self._running += 1
            await self._work()

    async def _work(self) -> None:
        """Handle what is waiting, a batch at a time, until nothing is."""
        try:
            while self._waiting:
                taken = [self._waiting.popleft() for _ in range(min(len(self._waiting), self._batch_size))]
                try:
                    await self._process_all(taken)
                except Exception:
                    log.exception("unexpected failure handling %d messages", len(taken))
                finally:
                    self._inflight -= len(taken)
                    if self._inflight == 0:
                        self._idle.set()
        finally:
            # Counted down with no await after the last look at the queue: a delivery arriving from now on
            # starts a worker of its own, none is left waiting for a worker that is already leaving.
            self._running -= 1

    async def _process_all(self, messages: list[AbstractIncomingMessage]) -> None:
        deliveries = [delivery for message in messages if (delivery := await self._decode(message)) is not None]
        if len(deliveries) > 1:
            started = time.perf_counter()
            try:
                outcomes = await self._handle_batch(deliveries)
            except Exception as exc:  # noqa: BLE001 - rolled back: each message gets its own transaction
                log.info("a batch of %d messages failed (%r); handling each on its own", len(deliveries), exc)
                metrics.CONSUMER_BATCH_FALLBACKS.inc()
            else:
                for outcome in outcomes:
                    await settle(outcome.delivery.message.ack())
                finish(outcomes, started)
                return
        for delivery in deliveries:
            await self._process(delivery)

    async def _decode(self, message: AbstractIncomingMessage) -> Delivery | None:
        """The delivery's event and handler; None when it was dead-lettered as poison."""
        try:
            event = decode(message.body, max_bytes=self._max_message_bytes)
        except PoisonMessage as poison:
            await self._dead_letter(message, poison, message.type or "unknown")
            return None
        except NewerVersion as newer:
            await self._hold_back(message, newer)
            return None
        handler = self._handlers.get(event.type)
        if handler is None:
            poison = PoisonMessage(f"{event.type} is not a message {self._queues.service} consumes", "unknown_type")
            await self._dead_letter(message, poison, event.type)
            return None
        if self._publishers is not None and (refused := self._publishers.refusal(message, event.type)):
            await self._dead_letter(message, refused, event.type)
            return None
        return Delivery(message, event, handler)

    async def _process(self, delivery: Delivery) -> None:
        """One delivery in a transaction of its own (a batch of one): handled, retried or dead-lettered."""
        message, event, _ = delivery
        started = time.perf_counter()
        token = current_order_id.set(event.order_id)
        try:
            try:
                outcomes = await self._handle_batch([delivery])
            except PoisonMessage as poison:
                await self._dead_letter(message, poison, event.type)
                return
            except Exception as exc:  # noqa: BLE001 - classified there
                await self._retry_or_dead_letter(message, event, exc)
                return
            await settle(message.ack())
            finish(outcomes, started)
        finally:
            current_order_id.reset(token)

    async def _handle_batch(self, deliveries: list[Delivery]) -> list[Outcome]:
        return await handle_batch(
            deliveries,
            db=self._db,
            queue=self._queues.work,
            lock_order=self._lock_order,
            trace_as_link=self._trace_as_link,
        )

    async def _retry_or_dead_letter(self, message: AbstractIncomingMessage, event: Event, exc: Exception) -> None:
        attempt = int((message.headers or {}).get(ATTEMPT_HEADER, 0) or 0)
        if not await self._database_reachable():
            log.warning("database unreachable while handling %s; it waits for the next try: %s", event.type, exc)
            await self._republish(message, self._queues.retry_for_attempt(1), {ATTEMPT_HEADER: attempt}, "retried")
            return
        attempt += 1
        if attempt >= self._max_attempts:
            poison = PoisonMessage(f"failed {attempt} times, last error: {type(exc).__name__}: {exc}", "max_attempts")
            await self._dead_letter(message, poison, event.type)
            return
        log.warning("handling %s failed (attempt %d of %d), retrying: %r", event.type, attempt, self._max_attempts, exc)
        await self._republish(message, self._queues.retry_for_attempt(attempt), {ATTEMPT_HEADER: attempt}, "retried")

    async def _hold_back(self, message: AbstractIncomingMessage, newer: NewerVersion) -> None:
        """Wait in the longest delay queue, attempts untouched: an upgraded consumer will know the version."""
        headers = message.headers or {}
        now = datetime.now(UTC)
        held_since = str(headers.get(HELD_SINCE_HEADER) or now.isoformat())
        try:
            held_s = (now - datetime.fromisoformat(held_since)).total_seconds()
        except ValueError:
            held_since, held_s = now.isoformat(), 0.0
        if held_s > self._newer_version_hold_s:
            reason = f"{newer} (held back {held_s:.0f} s); replay it once the consumer is upgraded"
            await self._dead_letter(message, PoisonMessage(reason, "newer_version"), newer.event_type)
            return
        log.warning("%s; message %s waits", newer, message.message_id)
        delay_queue = self._queues.retry_for_attempt(len(self._queues.retry_delays_ms))
        await self._republish(message, delay_queue, {HELD_SINCE_HEADER: held_since}, "held_back", newer.event_type)

    async def _dead_letter(self, message: AbstractIncomingMessage, poison: PoisonMessage, message_type: str) -> None:
        log.error("dead-lettering message %s (%s): %s", message.message_id, message_type, poison.reason)
        extra = {
            REASON_HEADER: poison.reason[:1000],
            CATEGORY_HEADER: poison.category,
            SOURCE_QUEUE_HEADER: self._queues.work,
            DEAD_LETTERED_AT_HEADER: datetime.now(UTC).isoformat(),
        }
        if await self._republish(message, self._queues.dead_letter, extra, "dead_lettered", message_type):
            metrics.MESSAGES_DEAD_LETTERED.labels(message_type, poison.category).inc()

    async def _republish(
        self,
        message: AbstractIncomingMessage,
        queue: str,
        extra_headers: dict[str, Any],
        result: str,
        message_type: str | None = None,
    ) -> bool:
        """Copy the message to `queue` (through the service's requeue exchange), then ack the original."""
        headers = dict(message.headers or {})
        headers[ROUTING_KEY_HEADER] = original_routing_key(message)
        headers.update(extra_headers)
        try:
            session = self._broker.session
            # Whatever the publisher wrote there is replaced by what the broker vouches for.
            headers[PUBLISHER_HEADER] = original_publisher(message, session.exchange.name)
            copy = copy_of(message, headers)
            await session.requeue_exchange.publish(copy, routing_key=queue, mandatory=True, timeout=10)
        except Exception as exc:  # noqa: BLE001 - cannot park it: give it back to the broker
            log.warning("could not move message %s to %s (%s); requeueing it", message.message_id, queue, exc)
            if isinstance(exc, aio_pika.exceptions.DeliveryError):
                await self._broker.renew(self._broker.current_session, f"the broker nacked a copy to {queue}")
            await settle(message.nack(requeue=True))
            return False
        await settle(message.ack())
        metrics.MESSAGES_CONSUMED.labels(message_type or message.type or "unknown", result).inc()
        return True


async def settle(operation: Awaitable[None]) -> None:
    """Ack/nack on a channel that died meanwhile fails; the broker redelivers and the inbox deduplicates."""
    try:
        await operation
    except Exception as exc:  # noqa: BLE001
        log.info("could not settle a delivery (%s); it will be redelivered", exc)
