"""The one place that commits: a transaction that also writes the events it emitted to the outbox.

    async with uow.begin() as tx:
        await tx.db.execute(...)            # the state change, on the transaction's asyncpg connection
        tx.emit(OrderCreated(...))          # written to the outbox in the same transaction

Leaving the block normally commits; an exception rolls everything back, events included. Statements run on
the asyncpg connection under SQLAlchemy's pool (see `db.driver_connection`, `db.transaction`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry.trace import Link
from sqlalchemy.ext.asyncio import AsyncEngine

from saga_common.db import driver_connection, transaction
from saga_common.messages import Event
from saga_common.outbox import PendingEvent, write_events


class Transaction:
    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db
        self._pending: list[PendingEvent] = []
        self._after_commit: list[Callable[[], object]] = []

    def emit(self, event: Event, *, parent: otel_context.Context | None = None, links: Sequence[Link] = ()) -> None:
        """Queue an event for the outbox. `parent` overrides the current trace context (compensation
        started by a new request still belongs to the saga's trace; `links` keeps the request reachable)."""
        self._pending.append(PendingEvent(event, parent, links))

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Run `callback` once the transaction committed (metrics, wake-ups): never for a rolled-back one."""
        self._after_commit.append(callback)

    async def _flush(self, exchange: str) -> None:
        await write_events(self.db, self._pending, exchange=exchange)


class UnitOfWork:
    def __init__(self, engine: AsyncEngine, *, exchange: str) -> None:
        self.engine = engine
        self.exchange = exchange
        # Called after a commit that wrote events: the runtime wakes its own relay at once, without waiting
        # for PostgreSQL's NOTIFY to come back (which still wakes the relays of other processes).
        self.on_events_committed: Callable[[], None] | None = None

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[Transaction]:
        async with transaction(self.engine) as db:
            tx = Transaction(db)
            yield tx
            await tx._flush(self.exchange)
        for callback in tx._after_commit:
            callback()
        if tx._pending and self.on_events_committed is not None:
            self.on_events_committed()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled asyncpg connection for reads, outside any transaction."""
        async with self.engine.connect() as conn:
            yield await driver_connection(conn)
