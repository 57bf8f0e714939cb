"""The database of a service: one asyncpg pool per process, and the one way to write.

    async with db.connection() as conn:          # a read: a pooled connection, no transaction of ours
        row = await conn.fetchrow("SELECT ... WHERE id = $1", order_id)

    async with db.unit_of_work() as uow:         # a write: asyncpg's `conn.transaction()`, plus the outbox
        await uow.conn.execute("UPDATE ...", ...)
        uow.emit(OrderCreated(...))

asyncpg's own pool, because of what it does when a connection is released: it waits for a cancellation
still in flight, rolls back a transaction left open (a BEGIN interrupted by a cancellation included) and
terminates a connection it cannot reset; the next user always starts clean. SQLAlchemy describes the
tables and runs the Alembic migrations; it never connects for the services.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolAcquireContext
from asyncpg.transaction import Transaction

from saga_common.observability.tracing import tracing_enabled, untraced
from saga_common.persistence.outbox import write_events
from saga_common.persistence.traced import TracedConnection
from saga_common.persistence.unit_of_work import UnitOfWork
from saga_common.settings import ServiceSettings

CONNECT_TIMEOUT_S = 5.0
# How long a request or a message waits for a free connection before it is told the database is saturated.
ACQUIRE_TIMEOUT_S = 10.0


def create_pool(settings: ServiceSettings) -> asyncpg.Pool:
    """The process's pool, to be initialised with `await pool`: up to `SAGA_DB_POOL_SIZE` connections, opened
    on first use (a service starts while its database is down), closed after 5 minutes idle (asyncpg's
    default)."""
    return asyncpg.create_pool(
        settings.database_url,
        min_size=0,
        max_size=settings.db_pool_size,
        timeout=CONNECT_TIMEOUT_S,
        server_settings={
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "application_name": settings.service_name,
        },
        reset=_keep_session,
        # With tracing on, a database span per statement (traced.py); without it, asyncpg's own class.
        connection_class=TracedConnection if tracing_enabled() else asyncpg.Connection,
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release, after its own repair (wait for a pending cancellation, roll back an open
    transaction). The default would also run `pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`, a
    round trip per release to undo session state the services never create: no SET, no advisory lock, no
    cursor outside a transaction, and LISTEN lives on a connection of its own (`notifications.py`)."""


class ConnectionLost(ConnectionError):
    """The server ended the session while a unit of work was using it."""


class Database:
    """A service's database: the pool, reads on a pooled connection, writes in a unit of work."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        exchange: str,
        publish_versions: Mapping[str, int] | None = None,
        on_events_committed: Callable[[], None] | None = None,
    ) -> None:
        """`on_events_committed` runs after a commit that wrote events: the runtime wakes its own relay at once,
        without waiting for PostgreSQL's NOTIFY to come back (which still wakes the relays of other processes).
        `publish_versions`: the version each type is written in, the newest when not named (None: each event
        in the version it was built in)."""
        self.pool = pool
        self.exchange = exchange
        self.publish_versions = publish_versions
        self._on_events_committed = on_events_committed

    def connection(self) -> PoolAcquireContext:
        """A pooled connection for reads: each statement is atomic on its own."""
        pool = self.pool
        # asyncpg runs a timed acquire as a task of its own (about 30 µs of CPU here, a few times per saga):
        # the timeout is only worth it when every connection is taken and the wait could be long.
        if pool.get_idle_size() or pool.get_size() < pool.get_max_size():
            return pool.acquire()
        return pool.acquire(timeout=ACQUIRE_TIMEOUT_S)

    @asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[UnitOfWork]:
        """One transaction on a pooled connection: committed with the events the block emitted when it
        ends, rolled back (events included) when it raises or is cancelled."""
        try:
            async with self.connection() as conn, _UntracedBoundaries(conn.transaction()):
                uow = UnitOfWork(conn)
                yield uow
                await write_events(conn, uow.events, exchange=self.exchange, versions=self.publish_versions)
        except asyncpg.exceptions.InternalClientError as exc:
            # A COMMIT (or BEGIN, ROLLBACK) sent after the server ended the session, before asyncpg read
            # that it did (a PostgreSQL restart): asyncpg's protocol refuses to switch state. The pool
            # discards such a connection; for the caller it is a lost connection, not a bug.
            raise ConnectionLost(f"the database session ended under the transaction ({exc})") from exc
        uow.committed()
        if uow.events and self._on_events_committed is not None:
            self._on_events_committed()


class _UntracedBoundaries:
    """`async with transaction`, except that BEGIN and COMMIT (or ROLLBACK) make no database span: a third of
    a saga's spans would say nothing. The statements inside are traced as usual."""

    __slots__ = ("_transaction",)

    def __init__(self, transaction: Transaction) -> None:
        self._transaction = transaction

    async def __aenter__(self) -> None:
        with untraced():
            await self._transaction.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with untraced():
            await self._transaction.__aexit__(exc_type, exc, tb)


def _server_and_name(url: str) -> tuple[str, str]:
    """('postgresql://…/postgres?…', the database name): the maintenance database creates and drops the other,
    reached with the same query (TLS: sslmode, sslrootcert=/a/path, ...)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/postgres")), _identifier(parts.path.removeprefix("/"))


async def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist; True when it was created."""
    server, name = _server_and_name(url)
    admin = await asyncpg.connect(server, timeout=CONNECT_TIMEOUT_S)
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await admin.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await admin.close()


async def drop_database(url: str) -> None:
    server, name = _server_and_name(url)
    admin = await asyncpg.connect(server, timeout=CONNECT_TIMEOUT_S)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _identifier(name: str) -> str:
    if not name or '"' in name or "\x00" in name:
        raise ValueError(f"unusable database name {name!r}")
    return name
