"""Many deliveries in one transaction: what lets a consumer go past one commit per message.

    outcomes = await handle_batch(deliveries, db=db, queue=..., lock_order=..., trace_as_link=...)

One inbox statement records every message id and tells the duplicates apart; each new message's handler
then runs on the same connection, under its own consume span (so every saga stays one trace); the events
the handlers emitted are written by one outbox statement; one commit. The caller acknowledges after the
commit. Any exception rolls the whole batch back and propagates: the caller then handles each message in
a transaction of its own, which is where retries and dead letters are decided.

Handlers run sorted by the row they lock (stable, so one order's messages keep their order): two batches
that lock the same rows lock them in the same order and cannot deadlock each other.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry.trace import Span

from saga_common.contract.messages import Event
from saga_common.observability import metrics, tracing
from saga_common.observability.logs import current_order_id
from saga_common.persistence import inbox
from saga_common.persistence.db import Database
from saga_common.persistence.unit_of_work import UnitOfWork

Handler = Callable[[UnitOfWork, Any], Awaitable[None]]


class Delivery(NamedTuple):
    message: AbstractIncomingMessage
    event: Event
    handler: Handler


class Outcome(NamedTuple):
    delivery: Delivery
    result: str  # "processed" or "duplicate"
    span: Span


def consume_span_of(delivery: Delivery, *, exchange: str, queue: str, as_link: bool) -> Span:
    """The span of one delivery's processing, in a batch or alone (not yet current, not yet ended)."""
    event = delivery.event
    return tracing.start_consume_span(
        exchange=exchange,
        routing_key=event.routing_key,
        message_id=str(event.message_id),
        order_id=event.order_id,
        queue=queue,
        headers=delivery.message.headers,
        as_link=as_link,
    )


async def handle_batch(
    deliveries: Sequence[Delivery],
    *,
    db: Database,
    queue: str,
    lock_order: Callable[[Event], Any],
    trace_as_link: bool,
) -> list[Outcome]:
    """Handle `deliveries` in one committed transaction; raises (everything rolled back) if any part fails."""
    ordered = sorted(deliveries, key=lambda delivery: lock_order(delivery.event))
    outcomes: list[Outcome] = []
    try:
        # The batch's own statements (inbox, outbox) belong to no single saga's trace.
        with tracing.untraced():
            async with db.unit_of_work() as uow:
                new_ids = await inbox.record_many(uow.conn, [delivery.event for delivery in ordered])
                for delivery in ordered:
                    event = delivery.event
                    span = consume_span_of(delivery, exchange=db.exchange, queue=queue, as_link=trace_as_link)
                    if event.message_id not in new_ids:
                        outcomes.append(Outcome(delivery, "duplicate", span))
                        continue
                    new_ids.discard(event.message_id)  # a second copy in this batch is a duplicate
                    outcomes.append(Outcome(delivery, "processed", span))
                    token = current_order_id.set(event.order_id)
                    try:
                        with tracing.only_span(span):
                            await delivery.handler(uow, event)
                    finally:
                        current_order_id.reset(token)
    except BaseException as exc:
        # Alone, the message is retried or dead-lettered next; in a batch, each is handled again on its own.
        result = "failed" if len(deliveries) == 1 else "batch_rolled_back"
        for outcome in outcomes:
            tracing.mark_error(outcome.span, exc)
            outcome.span.set_attribute("saga.consume_result", result)
            outcome.span.end()
        raise
    if len(deliveries) > 1:  # a batch of one is a lone message: counted by the consumer's other metrics
        metrics.CONSUMER_BATCH_SIZE.observe(len(deliveries))
    return outcomes


def finish(outcomes: Sequence[Outcome], started: float) -> None:
    """After the acknowledgements: count each message and end its span."""
    elapsed = time.perf_counter() - started
    for delivery, result, span in outcomes:
        span.set_attribute("saga.consume_result", result)
        span.end()
        metrics.MESSAGES_CONSUMED.labels(delivery.event.type, result).inc()
        metrics.MESSAGE_HANDLING.labels(delivery.event.type).observe(elapsed)
