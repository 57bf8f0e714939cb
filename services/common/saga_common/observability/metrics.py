"""Every Prometheus metric the services expose, in one place (docs/observability.md's metrics table mirrors it).

Both services import this module, so both expose every name; a metric that belongs to the other side of
the saga simply stays at zero. Prometheus adds the `service`/`pod` labels when it scrapes.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

SAGAS_STARTED = Counter("saga_started", "Sagas started: orders accepted by the order API.")
SAGAS_FINISHED = Counter(
    "saga_finished", "Sagas that reached a terminal state, by outcome and rejection reason.", ["outcome", "reason"]
)
SAGA_DURATION = Histogram(
    "saga_duration_seconds", "Time from order creation to its terminal state.", ["outcome"], buckets=_LATENCY_BUCKETS
)
SAGAS_IN_PROGRESS = Gauge("saga_in_progress", "Orders not yet in a terminal state (pending or cancelling).")
SAGA_OLDEST_PENDING_AGE = Gauge(
    "saga_oldest_pending_age_seconds", "Age of the oldest order still pending or cancelling (0 when none)."
)

OUTBOX_BACKLOG = Gauge("saga_outbox_backlog", "Outbox rows written but not yet published.")
OUTBOX_OLDEST_UNSENT_AGE = Gauge("saga_outbox_oldest_unsent_age_seconds", "Age of the oldest unpublished outbox row.")
OUTBOX_PUBLISH_LAG = Histogram(
    "saga_outbox_publish_lag_seconds",
    "Time from the outbox write to the broker's publish confirm.",
    buckets=_LATENCY_BUCKETS,
)

MESSAGES_PUBLISHED = Counter(
    "saga_messages_published",
    "Messages published by the outbox relay, by type and result (ok, error).",
    ["type", "result"],
)
MESSAGES_CONSUMED = Counter(
    "saga_messages_consumed",
    "Messages consumed, by type and result (processed, duplicate, retried, dead_lettered).",
    ["type", "result"],
)
MESSAGE_HANDLING = Histogram(
    "saga_message_handling_seconds",
    "Time to handle one message, transaction included.",
    ["type"],
    buckets=_LATENCY_BUCKETS,
)
CONSUMER_BATCH_SIZE = Histogram(
    "saga_consumer_batch_size",
    "Messages handled together in one transaction (batches of two or more).",
    buckets=(2, 4, 8, 16, 32, 64, 128, 256),
)
CONSUMER_BATCH_FALLBACKS = Counter(
    "saga_consumer_batch_fallbacks",
    "Batches rolled back because one part failed; their messages were then handled one by one.",
)
MESSAGES_DEAD_LETTERED = Counter(
    "saga_messages_dead_lettered",
    "Messages this service sent to its dead-letter queue, by type and reason.",
    ["type", "reason"],
)
DEAD_LETTER_QUEUE_DEPTH = Gauge(
    "saga_dead_letter_queue_messages", "Messages waiting in a dead-letter queue.", ["queue"]
)
QUEUE_DEPTH = Gauge(
    "saga_queue_messages", "Messages ready in the service's work queue (consumer lag), by queue.", ["queue"]
)
SAGA_DEADLINE = Gauge("saga_deadline_seconds", "The saga deadline: a pending order older than this is rejected.")
BROKER_CONNECTED = Gauge("saga_broker_connected", "1 while the service holds a RabbitMQ connection.")
BROKER_RECONNECTS = Counter("saga_broker_reconnects", "RabbitMQ connections lost and re-established.")

HTTP_REQUESTS = Counter(
    "http_requests", "HTTP requests by method, route template and status.", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by method and route template.",
    ["method", "route"],
    buckets=_LATENCY_BUCKETS,
)


# Every label value the code can produce, so each series exists (at 0) from the first scrape: a counter that
# appears only at its first increment makes rate() and increase() miss that increment.
OUTCOMES = {"fulfilled": ("",), "rejected": ("insufficient_balance", "unknown_customer", "timeout"), "cancelled": ("",)}
CONSUME_RESULTS = ("processed", "duplicate", "retried", "held_back", "dead_lettered")
DEAD_LETTER_CATEGORIES = (
    "not_json",
    "malformed",
    "unknown_type",
    "wrong_version",
    "newer_version",
    "too_large",
    "max_attempts",
    "unknown_order",
)


def initialize_series(*, consumes: tuple[str, ...], publishes: tuple[str, ...], queues: tuple[str, str]) -> None:
    """Create the labelled series a service will use; `queues` is (work queue, dead-letter queue)."""
    for outcome, reasons in OUTCOMES.items():
        SAGA_DURATION.labels(outcome)
        for reason in reasons:
            SAGAS_FINISHED.labels(outcome, reason)
    for message_type in consumes:
        MESSAGE_HANDLING.labels(message_type)
        for result in CONSUME_RESULTS:
            MESSAGES_CONSUMED.labels(message_type, result)
        for category in DEAD_LETTER_CATEGORIES:
            MESSAGES_DEAD_LETTERED.labels(message_type, category)
    for message_type in publishes:
        for result in ("ok", "error"):
            MESSAGES_PUBLISHED.labels(message_type, result)
    work, dead_letter = queues
    QUEUE_DEPTH.labels(work)
    DEAD_LETTER_QUEUE_DEPTH.labels(dead_letter)


class HttpMetricsMiddleware:
    """Counts requests by route *template* (`/orders/{order_id}`), so ids never become label values."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_DURATION.labels(method, template).observe(time.perf_counter() - start)
