"""Batched handling against a real broker and database: many deliveries in one transaction, same guarantees.

The messages are published before the consumer starts, so they are waiting when it does and its workers
take them in batches. Rows written by one transaction share their `xmin` (the id of the transaction that
wrote them), which is how the tests see that batches happened.
"""

import asyncio
import uuid
from decimal import Decimal

import asyncpg

from customer_service.handlers import on_order_created
from saga_common.contract.messages import OrderCreated
from saga_common.contract.topology import CUSTOMER_SERVICE
from saga_common.messaging.consumer import CATEGORY_HEADER, REASON_HEADER
from saga_common.observability import metrics
from tests.support.broker import broker_tool, default_topology
from tests.support.waiting import eventually

DEAD_LETTER = "customer-service.dead-letter"


async def new_customers(conn: asyncpg.Connection, *balances: str) -> list[int]:
    return [
        await conn.fetchval("INSERT INTO customers (name, balance) VALUES ('t', $1) RETURNING id", Decimal(balance))
        for balance in balances
    ]


async def inbox_transactions(conn: asyncpg.Connection) -> tuple[int, int]:
    """(messages recorded, transactions that recorded them)."""
    return tuple(await conn.fetchrow("SELECT count(*), count(DISTINCT xmin::text) FROM inbox"))


async def test_waiting_messages_are_handled_in_batches_with_the_outcome_of_one_at_a_time(saga_env, runtimes):
    conn = await asyncpg.connect(saga_env.databases.customer_url)
    try:
        customers = await new_customers(conn, "100.00", "100.00", "45.00", "0.00")
        orders = []
        for _ in range(4):  # four orders of 30 per customer: three fit in 100, one in 45, none in 0
            for customer in customers:
                orders.append(OrderCreated(order_id=100 + len(orders), customer_id=customer, amount=Decimal("30")))
        async with (
            broker_tool(saga_env.broker_url) as broker,
            broker.capture("order.fulfilled", "order.rejected") as answers,
        ):
            for event in orders:
                await broker.publish_event(event)
            # A redelivered copy and a second message for an order already asked: neither may decide again.
            await broker.publish_event(orders[0])
            await broker.publish_event(orders[1].model_copy(update={"message_id": uuid.uuid4()}))
            async with runtimes(CUSTOMER_SERVICE, consumer_batch_size=8, consumer_concurrency=2):
                await answers.collect(len(orders), timeout=20)
                await answers.settle(1.0)
            recorded, transactions = await inbox_transactions(conn)
        balances = [await conn.fetchval("SELECT balance FROM customers WHERE id = $1", c) for c in customers]
        reserved = await conn.fetchval("SELECT coalesce(sum(amount), 0) FROM reservations WHERE status = 'active'")
    finally:
        await conn.close()

    decided = {}
    for message in answers.messages:
        order_id = int(message.correlation_id)
        assert order_id not in decided, f"order {order_id} was answered twice"
        decided[order_id] = message.type
    customer_of = {event.order_id: event.customer_id for event in orders}
    fulfilled = [customer_of[order_id] for order_id, kind in decided.items() if kind == "order.fulfilled"]
    # As many of each customer's orders reserved as its balance covers, whichever batch took them.
    assert [fulfilled.count(customer) for customer in customers] == [3, 3, 1, 0]
    assert len(decided) == len(orders)
    assert balances == [Decimal("10.00"), Decimal("10.00"), Decimal("15.00"), Decimal("0.00")]
    assert reserved == Decimal("210.00")  # money conserved: 245 in, 35 left, 210 held
    assert recorded == len(orders) + 1  # the duplicate copy is not recorded twice
    assert transactions < recorded / 2, f"{recorded} messages in {transactions} transactions: no batching"


async def test_a_failing_message_does_not_fail_its_batch_neighbours(saga_env, runtimes):
    conn = await asyncpg.connect(saga_env.databases.customer_url)
    calls: dict[int, int] = {}

    async def fails_for_order_7(uow, event):
        calls[event.order_id] = calls.get(event.order_id, 0) + 1
        if not any(n > 1 for n in calls.values()) and sum(calls.values()) == 1:
            # The first message holds the only worker while the rest arrive, so order 7 is in a batch.
            await asyncio.sleep(0.5)
        if event.order_id == 7:
            raise ValueError("order 7 breaks the handler")
        await on_order_created(uow, event)

    fallbacks_before = metrics.CONSUMER_BATCH_FALLBACKS._value.get()
    try:
        (customer,) = await new_customers(conn, "1000.00")
        orders = [OrderCreated(order_id=n, customer_id=customer, amount=Decimal("10")) for n in range(1, 13)]
        async with broker_tool(saga_env.broker_url, default_topology(retry_delays_ms=(100,))) as broker:
            async with broker.capture("order.fulfilled", "order.rejected") as answers:
                for event in orders:
                    await broker.publish_event(event)
                async with runtimes(
                    CUSTOMER_SERVICE,
                    handlers={"order.created": fails_for_order_7},
                    retry_delays_ms=[100],
                    max_attempts=3,
                    consumer_batch_size=16,
                    consumer_concurrency=1,
                ):
                    await answers.collect(len(orders) - 1, timeout=20)
                    dead = await broker.read_queue(DEAD_LETTER, expect=1, timeout=10)
                    await answers.settle(0.5)
        balance = await conn.fetchval("SELECT balance FROM customers WHERE id = $1", customer)
        recorded = await conn.fetchval("SELECT count(*) FROM inbox")
    finally:
        await conn.close()

    assert sorted(int(m.correlation_id) for m in answers.messages) == [n for n in range(1, 13) if n != 7]
    assert balance == Decimal("890.00") and recorded == 11
    assert [m.message_id for m in dead] == [str(orders[6].message_id)]
    assert dead[0].headers[CATEGORY_HEADER] == "max_attempts"
    assert "order 7 breaks the handler" in dead[0].headers[REASON_HEADER]
    assert calls[7] == 3 + 1  # its three attempts, plus the batch it was rolled back in
    assert metrics.CONSUMER_BATCH_FALLBACKS._value.get() > fallbacks_before


async def test_a_lone_message_is_not_held_back(saga_env, runtimes):
    conn = await asyncpg.connect(saga_env.databases.customer_url)
    try:
        (customer,) = await new_customers(conn, "100.00")
        async with broker_tool(saga_env.broker_url) as broker, broker.capture("order.fulfilled") as answers:
            async with runtimes(CUSTOMER_SERVICE, consumer_batch_size=64):
                batches_before = metrics.CONSUMER_BATCH_SIZE._sum.get()
                for order_id in (1, 2, 3):
                    await broker.publish_event(OrderCreated(order_id=order_id, customer_id=customer, amount=1))
                    await eventually(
                        lambda n=order_id: answers.collect(n, timeout=0.1),
                        until=lambda seen, expected=order_id: len(seen) == expected,
                        timeout=5,
                        what=f"the answer to order {order_id}",
                    )
                assert metrics.CONSUMER_BATCH_SIZE._sum.get() == batches_before
        recorded, transactions = await inbox_transactions(conn)
    finally:
        await conn.close()
    assert (recorded, transactions) == (3, 3)
