"""Group commit against a real PostgreSQL: concurrent units of work share a transaction, and one failing part
never fails the others. Rows written by one transaction share their `xmin`: that is how the tests see groups."""

import asyncio
import uuid

import asyncpg
import pytest

from order_service.settings import OrderSettings
from saga_common.contract.messages import OrderCreated
from saga_common.observability import metrics
from saga_common.persistence.db import Database, create_pool

INSERT = "INSERT INTO outbox (id, routing_key, order_id, payload) VALUES ($1, 'test', $2, '{}') RETURNING order_id"


@pytest.fixture
async def grouped_db(saga_env):
    settings = OrderSettings(database_url=saga_env.databases.order_url, db_pool_size=4)
    db = Database(create_pool(settings), exchange="saga.events", group_commit_size=16, group_commit_concurrency=1)
    await db.pool
    try:
        yield db
    finally:
        await db.pool.close()


async def transactions_of(database_url: str) -> dict[int, str]:
    """order_id -> the transaction that wrote its row."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT order_id, xmin::text AS tx FROM outbox WHERE routing_key = 'test'")
        return {row["order_id"]: row["tx"] for row in rows}
    finally:
        await conn.close()


async def test_concurrent_units_of_work_commit_together_and_each_gets_its_own_result(saga_env, grouped_db):
    async def write(order_id: int):
        async def work(uow):
            uow.emit(OrderCreated(order_id=order_id, customer_id=1, amount=1))
            return await uow.conn.fetchval(INSERT, uuid.uuid4(), order_id)

        return await grouped_db.group.run(work)

    results = await asyncio.gather(*(write(n) for n in range(1, 41)))

    assert results == list(range(1, 41))
    written = await transactions_of(saga_env.databases.order_url)
    assert sorted(written) == list(range(1, 41))
    assert len(set(written.values())) < 20, f"40 units of work in {len(set(written.values()))} transactions"
    conn = await asyncpg.connect(saga_env.databases.order_url)
    try:  # each unit's event is in the outbox, committed with its unit's row
        events = await conn.fetch("SELECT order_id, xmin::text AS tx FROM outbox WHERE routing_key = 'order.created'")
    finally:
        await conn.close()
    assert {row["order_id"]: row["tx"] for row in events} == written


async def test_a_failing_part_is_rolled_back_alone_and_gets_its_exception(saga_env, grouped_db):
    fallbacks = metrics.GROUP_COMMIT_FALLBACKS._value.get()
    runs: dict[int, int] = {}

    async def write(order_id: int):
        async def work(uow):
            runs[order_id] = runs.get(order_id, 0) + 1
            await uow.conn.execute(INSERT, uuid.uuid4(), order_id)
            if order_id == 13:
                raise LookupError("part 13 fails")
            return order_id

        return await grouped_db.group.run(work)

    # The first part holds the worker for a moment, so the others wait and go together, 13 among them.
    first = asyncio.create_task(write(1))
    await asyncio.sleep(0)
    results = await asyncio.gather(*(write(n) for n in range(2, 30)), return_exceptions=True)
    await first

    failed = [(n, r) for n, r in zip(range(2, 30), results, strict=True) if isinstance(r, BaseException)]
    assert [(n, str(r)) for n, r in failed] == [(13, "part 13 fails")]
    written = await transactions_of(saga_env.databases.order_url)
    assert sorted(written) == [n for n in range(1, 30) if n != 13]  # nothing of 13, everything of the others
    assert runs[13] == 2  # in its group, then alone
    assert metrics.GROUP_COMMIT_FALLBACKS._value.get() == fallbacks + 1


async def test_a_lone_unit_of_work_runs_at_once_in_its_own_transaction(saga_env, grouped_db):
    sizes = metrics.GROUP_COMMIT_SIZE._sum.get()
    for order_id in (1, 2, 3):
        await grouped_db.group.run(lambda uow, n=order_id: uow.conn.fetchval(INSERT, uuid.uuid4(), n))
    assert metrics.GROUP_COMMIT_SIZE._sum.get() == sizes
    assert len(set((await transactions_of(saga_env.databases.order_url)).values())) == 3
