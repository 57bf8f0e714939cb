"""The outbox relay publishes exactly what was committed, once, with the envelope's AMQP properties."""

import asyncio
import time
from decimal import Decimal

import asyncpg
import orjson
import pytest

from saga_common.contract.messages import OrderCreated
from saga_common.contract.topology import ORDER_SERVICE
from saga_common.persistence.db import Database
from tests.support.broker import broker_tool


def order_created(order_id: int) -> OrderCreated:
    return OrderCreated(order_id=order_id, customer_id=1, amount=Decimal("10.00"))


async def unsent_and_sent(database_url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE published_at IS NULL) AS unsent,"
            " count(*) FILTER (WHERE published_at IS NOT NULL) AS sent FROM outbox"
        )
        return row["unsent"], row["sent"]
    finally:
        await conn.close()


async def test_committed_events_are_published_and_rolled_back_ones_never(saga_env, runtimes):
    async with broker_tool(saga_env.broker_url) as broker, broker.capture("order.*") as capture:
        # A poll interval far longer than the test, and rows written by another unit of work (as another
        # process would): only PostgreSQL's NOTIFY can wake the relay in time.
        async with runtimes(ORDER_SERVICE, consume=False, outbox_poll_interval_s=60) as runtime:
            writer = Database(runtime.pool, exchange="saga.events")
            committed = [order_created(n) for n in range(1, 6)]
            rolled_back = [order_created(n) for n in range(100, 103)]
            await asyncio.wait_for(runtime.listener.connected.wait(), timeout=5)  # NOTIFY reaches the relay
            started = time.monotonic()
            async with writer.unit_of_work() as uow:
                for event in committed:
                    uow.emit(event)
            with pytest.raises(RuntimeError, match="business rule failed"):
                async with writer.unit_of_work() as uow:
                    for event in rolled_back:
                        uow.emit(event)
                    raise RuntimeError("business rule failed")
            await capture.collect(len(committed), timeout=5)
            elapsed = time.monotonic() - started
            await capture.settle(0.5)

        received = {message.message_id: message for message in capture.messages}
        assert len(capture.messages) == len(committed), "a message was published twice or a rolled back one leaked"
        assert set(received) == {str(event.message_id) for event in committed}
        assert elapsed < 3, f"NOTIFY should wake the relay at once, took {elapsed:.2f}s"
        for event in committed:
            message = received[str(event.message_id)]
            assert message.routing_key == "order.created"
            assert message.type == "order.created"
            assert message.correlation_id == str(event.order_id)
            assert message.content_type == "application/json"
            assert message.delivery_mode == 2  # persistent
            assert OrderCreated.model_validate(orjson.loads(message.body)) == event
    assert await unsent_and_sent(saga_env.databases.order_url) == (0, len(committed))


async def test_rows_written_while_the_broker_is_unreachable_are_published_later(saga_env, runtimes):
    # The order API keeps accepting orders without a broker: the outbox holds them until it is back.
    async with runtimes(ORDER_SERVICE, consume=False, rabbitmq_broker_url="amqp://guest:guest@127.0.0.1:1/") as offline:
        async with offline.db.unit_of_work() as uow:
            uow.emit(order_created(1))
        await asyncio.sleep(0.5)
        assert await unsent_and_sent(saga_env.databases.order_url) == (1, 0)
    async with broker_tool(saga_env.broker_url) as broker, broker.capture("order.created") as capture:
        async with runtimes(ORDER_SERVICE, consume=False):
            await capture.collect(1, timeout=5)
    assert len(capture.messages) == 1
    assert await unsent_and_sent(saga_env.databases.order_url) == (0, 1)


async def test_two_relays_share_the_outbox_without_publishing_a_row_twice(saga_env, runtimes):
    total = 400
    async with broker_tool(saga_env.broker_url) as broker, broker.capture("order.created") as capture:
        async with (
            runtimes(ORDER_SERVICE, consume=False, outbox_batch_size=20) as first,
            runtimes(ORDER_SERVICE, consume=False, outbox_batch_size=20) as second,
        ):

            async def write(offset: int) -> None:
                for start in range(offset, offset + total // 2, 10):
                    async with first.db.unit_of_work() as uow:
                        for n in range(start, start + 10):
                            uow.emit(order_created(n + 1))

            await asyncio.gather(write(0), write(total // 2))
            await capture.collect(total, timeout=20)
            await capture.settle(0.5)
            published_by = (first.relay.published, second.relay.published)

    ids = [message.message_id for message in capture.messages]
    assert len(ids) == total and len(set(ids)) == total
    assert sum(published_by) == total, published_by
    assert await unsent_and_sent(saga_env.databases.order_url) == (0, total)
