"""A unit of work: one business operation's statements and the events it emits, committed together.

    async with db.unit_of_work() as uow:
        await uow.conn.execute(...)          # the state change, inside the transaction
        uow.emit(OrderCreated(...))          # written to the outbox in the same transaction

Leaving the block normally commits; an exception (or a cancellation) rolls everything back, events included.
`Database.unit_of_work()` (db.py) opens it: a pooled asyncpg connection and its `conn.transaction()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry.trace import Link

from saga_common.contract.messages import Event
from saga_common.observability.tracing import tracing_enabled


class PendingEvent:
    """An event emitted in a transaction, with the trace context it should continue."""

    __slots__ = ("event", "links", "parent")

    def __init__(self, event: Event, parent: otel_context.Context | None, links: Sequence[Link]) -> None:
        self.event = event
        self.parent = parent
        self.links = links


class UnitOfWork:
    __slots__ = ("_after_commit", "conn", "events")

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.events: list[PendingEvent] = []
        self._after_commit: list[Callable[[], object]] = []

    def emit(self, event: Event, *, parent: otel_context.Context | None = None, links: Sequence[Link] = ()) -> None:
        """Queue an event for the outbox. `parent` overrides the current trace context (compensation
        started by a new request still belongs to the saga's trace; `links` keeps the request reachable).
        Without `parent`, the context current now: in a batch, the events are written after every handler ran."""
        if parent is None and tracing_enabled():
            parent = otel_context.get_current()
        self.events.append(PendingEvent(event, parent, links))

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run `callback` once the transaction committed (metrics, wake-ups): never for a rolled-back one."""
        self._after_commit.append(callback)

    def committed(self) -> None:
        for callback in self._after_commit:
            callback()
