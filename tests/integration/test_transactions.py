"""The one way the services write: a unit of work, asyncpg's `conn.transaction()` on a connection of the
process's asyncpg pool. What it commits is durable, whatever the pooled connection went through before: the
chaos tier once lost accepted orders to a transaction left open on a pooled connection by a BEGIN that a
cancellation interrupted (under a pool that did not repair it)."""

import asyncio
import time
import uuid
from decimal import Decimal
from urllib.parse import urlsplit

import asyncpg
import pytest

import saga_common.persistence.db
from order_service.settings import OrderSettings
from saga_common.contract.messages import OrderCreated
from saga_common.persistence.db import Database, create_pool
from saga_common.web.app import DATABASE_UNAVAILABLE
from saga_dev.localstack import POSTGRES_URL
from tests.support.customer_db import wait_for
from tests.support.tcp_proxy import TcpProxy

INSERT = "INSERT INTO outbox (id, routing_key, order_id, payload) VALUES ($1, 'order.created', 1, '{}')"


async def committed(database_url: str, row_id: uuid.UUID) -> bool:
    """Seen from another connection: committed, not merely visible inside its own session."""
    conn = await asyncpg.connect(database_url)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM outbox WHERE id = $1", row_id))
    finally:
        await conn.close()


POSTGRES_PORT = urlsplit(POSTGRES_URL).port or 5432  # the tests' PostgreSQL (SAGA_TEST_POSTGRES_URL)


def through(proxy: TcpProxy, database_url: str) -> str:
    return database_url.replace(f"127.0.0.1:{POSTGRES_PORT}", f"127.0.0.1:{proxy.port}", 1)


@pytest.fixture
def proxy():
    proxy = TcpProxy(target_port=POSTGRES_PORT).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
async def one_connection_db(saga_env):
    """The services' own pool and unit of work, with a single connection: every transaction shares it."""
    db = Database(create_pool(OrderSettings(database_url=saga_env.databases.order_url, db_pool_size=1)), exchange="x")
    await db.pool
    try:
        yield db
    finally:
        await db.pool.close()


async def interrupt_inside_begin(proxy: TcpProxy, begin_then_write) -> None:
    """Cancel `begin_then_write()` while its BEGIN is sent and not yet acknowledged: the proxy holds the
    BEGIN back until the cancellation is under way."""
    proxy.partition()
    held = proxy.bytes_held_up
    task = asyncio.create_task(begin_then_write())

    async def begin_held() -> bool:
        return proxy.bytes_held_up > held

    await wait_for(begin_held, timeout=5, interval=0.01)
    task.cancel()
    proxy.restore()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_without_a_reset_an_interrupted_begin_swallows_the_next_transaction(saga_env, proxy):
    # The failure the pool's reset prevents, on a bare connection: asyncpg marks the connection as inside a
    # transaction before BEGIN is acknowledged, so the next `conn.transaction()` is a savepoint in a
    # transaction nobody commits. (Should asyncpg ever change this, this test says so: the one below would
    # then no longer show anything.)
    first, second = uuid.uuid4(), uuid.uuid4()
    conn = await asyncpg.connect(through(proxy, saga_env.databases.order_url))
    try:

        async def begin_then_write() -> None:
            async with conn.transaction():
                await conn.execute(INSERT, first)

        await interrupt_inside_begin(proxy, begin_then_write)
        async with conn.transaction():
            await conn.execute(INSERT, second)
        assert not await committed(saga_env.databases.order_url, second)
    finally:
        await conn.close()


async def test_a_begin_interrupted_by_a_cancellation_is_undone_when_the_connection_returns_to_the_pool(saga_env, proxy):
    url = through(proxy, saga_env.databases.order_url)
    db = Database(create_pool(OrderSettings(database_url=url, db_pool_size=1)), exchange="x")
    await db.pool
    try:
        async with db.connection() as conn:
            backend = conn.get_server_pid()
        first, second = uuid.uuid4(), uuid.uuid4()

        async def begin_then_write() -> None:
            async with db.unit_of_work() as uow:
                await uow.conn.execute(INSERT, first)

        await interrupt_inside_begin(proxy, begin_then_write)
        async with db.unit_of_work() as uow:
            assert uow.conn.get_server_pid() == backend, "the next transaction runs on the same connection"
            await uow.conn.execute(INSERT, second)
    finally:
        await db.pool.close()
    assert await committed(saga_env.databases.order_url, second), (
        "the write was nested in a transaction never committed"
    )
    assert not await committed(saga_env.databases.order_url, first)


async def test_a_transaction_cancelled_mid_statement_commits_nothing_and_its_connection_is_reused(
    saga_env, one_connection_db
):
    first, second = uuid.uuid4(), uuid.uuid4()
    monitor = await asyncpg.connect(saga_env.databases.order_url)

    async def interrupted() -> None:
        async with one_connection_db.unit_of_work() as uow:
            await uow.conn.execute(INSERT, first)
            await uow.conn.execute("SELECT pg_sleep(30)")

    async def sleeping() -> bool:
        return bool(
            await monitor.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'active' AND query LIKE 'SELECT pg_sleep%'"
            )
        )

    try:
        task = asyncio.create_task(interrupted())
        await wait_for(sleeping, timeout=5)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The pool waits for the server to cancel the statement, rolls back, and lends the connection again.
        async with one_connection_db.unit_of_work() as uow:
            await uow.conn.execute(INSERT, second)
        elapsed = time.monotonic() - started
    finally:
        await monitor.close()
    assert elapsed < 5, f"the cancelled statement held the connection for {elapsed:.1f}s"
    assert not await committed(saga_env.databases.order_url, first)
    assert await committed(saga_env.databases.order_url, second)


async def test_an_exception_rolls_back_events_included(saga_env, one_connection_db):
    row = uuid.uuid4()
    event = OrderCreated(order_id=7, customer_id=1, amount=Decimal("1.00"))
    with pytest.raises(RuntimeError):
        async with one_connection_db.unit_of_work() as uow:
            await uow.conn.execute(INSERT, row)
            uow.emit(event)
            raise RuntimeError("a business rule says no")
    assert not await committed(saga_env.databases.order_url, row)
    assert not await committed(saga_env.databases.order_url, event.message_id)


async def test_callbacks_run_after_the_commit_and_never_after_a_rollback(saga_env, one_connection_db):
    ran: list[str] = []
    async with one_connection_db.unit_of_work() as uow:
        uow.after_commit(lambda: ran.append("committed"))
        assert ran == []
    with pytest.raises(RuntimeError):
        async with one_connection_db.unit_of_work() as uow:
            uow.after_commit(lambda: ran.append("rolled back"))
            raise RuntimeError
    assert ran == ["committed"]


async def test_with_every_connection_taken_a_request_waits_at_most_the_acquire_timeout(one_connection_db, monkeypatch):
    # A saturated pool must end in an error the API maps to 503, never in a wait without end.
    monkeypatch.setattr(saga_common.persistence.db, "ACQUIRE_TIMEOUT_S", 0.3)
    async with one_connection_db.connection():
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with one_connection_db.unit_of_work():
                pass
        assert time.monotonic() - started < 3
    async with one_connection_db.unit_of_work() as uow:  # and the pool is fine afterwards
        assert await uow.conn.fetchval("SELECT 1") == 1


@pytest.mark.parametrize("next_step", ["statement", "commit"])
@pytest.mark.parametrize("pause_s", [0, 0.0005, 0.002, 0.01, 0.1])
async def test_a_connection_the_server_drops_mid_transaction_fails_with_an_error_the_api_answers_503(
    saga_env, one_connection_db, pause_s, next_step
):
    # What a PostgreSQL restart does to a transaction in flight: the server ends the session between two
    # statements (SIGTERM, "terminating connection due to administrator command"). Whatever asyncpg raises
    # then, depending on what of the server's farewell it has read, is an outage, not a bug: 503.
    row = uuid.uuid4()
    admin = await asyncpg.connect(saga_env.databases.order_url)
    try:
        with pytest.raises(Exception) as raised:
            async with one_connection_db.unit_of_work() as uow:
                await uow.conn.execute(INSERT, row)
                await admin.execute("SELECT pg_terminate_backend($1)", uow.conn.get_server_pid())
                await asyncio.sleep(pause_s)
                if next_step == "statement":
                    await uow.conn.execute(INSERT, uuid.uuid4())
        assert isinstance(raised.value, DATABASE_UNAVAILABLE), repr(raised.value)
    finally:
        await admin.close()
    assert not await committed(saga_env.databases.order_url, row)
    async with one_connection_db.unit_of_work() as uow:  # the pool replaced the connection
        assert await uow.conn.fetchval("SELECT 1") == 1
