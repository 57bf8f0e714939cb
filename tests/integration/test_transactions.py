"""The one transaction helper every write goes through: what it commits is durable, whatever the pooled
connection went through before (the chaos tier once lost accepted orders to a transaction left open)."""

import asyncio
import uuid

import asyncpg
import pytest

from order_service.settings import OrderSettings
from saga_common.db import create_engine, driver_connection, transaction
from saga_common.settings import to_libpq_url

INSERT = "INSERT INTO outbox (id, routing_key, order_id, payload) VALUES ($1, 'order.created', 1, '{}')"


async def committed(database_url: str, row_id: uuid.UUID) -> bool:
    """Seen from another connection: committed, not merely visible inside its own session."""
    conn = await asyncpg.connect(to_libpq_url(database_url))
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM outbox WHERE id = $1", row_id))
    finally:
        await conn.close()


@pytest.fixture
async def one_connection_engine(saga_env):
    engine = create_engine(OrderSettings(database_url=saga_env.databases.order_url, db_pool_size=1))
    try:
        yield engine
    finally:
        await engine.dispose()


async def test_a_transaction_left_open_on_a_pooled_connection_does_not_swallow_the_next_one(
    saga_env, one_connection_engine
):
    # What an interrupted BEGIN leaves behind: the server inside a transaction, asyncpg believing it owns one.
    async with one_connection_engine.connect() as conn:
        db = await driver_connection(conn)
        await db.transaction().start()
    row = uuid.uuid4()
    async with transaction(one_connection_engine) as db:
        await db.execute(INSERT, row)
    assert await committed(saga_env.databases.order_url, row), "the write was nested in a transaction never committed"


async def test_a_cancelled_transaction_commits_nothing_and_the_connection_stays_usable(saga_env, one_connection_engine):
    first, second = uuid.uuid4(), uuid.uuid4()
    inside = asyncio.Event()

    async def interrupted() -> None:
        async with transaction(one_connection_engine) as db:
            await db.execute(INSERT, first)
            inside.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(interrupted())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with transaction(one_connection_engine) as db:
        await db.execute(INSERT, second)
    assert not await committed(saga_env.databases.order_url, first)
    assert await committed(saga_env.databases.order_url, second)


async def test_an_exception_rolls_back(saga_env, one_connection_engine):
    row = uuid.uuid4()
    with pytest.raises(RuntimeError):
        async with transaction(one_connection_engine) as db:
            await db.execute(INSERT, row)
            raise RuntimeError("a business rule says no")
    assert not await committed(saga_env.databases.order_url, row)
