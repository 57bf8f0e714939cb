"""The machine's own limit: the saga's database transactions and publishes, without the services.

Per saga, exactly what the services do in PostgreSQL and RabbitMQ, and nothing else: order insert +
outbox row; inbox + conditional credit update + reservation + outbox row; inbox + order update; and two
persistent messages published with confirms into a quorum queue that an acking consumer drains. Prepared
statements through asyncpg pools and one aio-pika channel: the fastest honest way to do the same work.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal

import aio_pika
import asyncpg

_INSERT_ORDER = (
    "INSERT INTO orders (customer_id, product_id, quantity, total_price, status) "
    "VALUES ($1, 1, 1, $2, 'pending') RETURNING id"
)
_INSERT_OUTBOX = (
    'INSERT INTO outbox (id, routing_key, order_id, payload) VALUES ($1, $2, $3, \'{"type": "baseline"}\'::jsonb)'
)
_INSERT_INBOX = (
    "INSERT INTO inbox (message_id, message_type, order_id, occurred_at) VALUES ($1, $2, $3, now()) "
    "ON CONFLICT DO NOTHING RETURNING message_id"
)
_DEBIT = (
    "UPDATE customers SET balance = balance - $2 WHERE id = $1 AND balance >= $2 "
    "AND NOT EXISTS (SELECT 1 FROM reservations WHERE order_id = $3) RETURNING id"
)
_RESERVE = (
    "INSERT INTO reservations (order_id, customer_id, amount, status) VALUES ($1, $2, $3, 'active') "
    "ON CONFLICT (order_id) DO NOTHING RETURNING id"
)
_RECORD = "UPDATE orders SET status = 'fulfilled', updated_at = now(), completed_at = now() WHERE id = $1"
QUEUE = "saga-bench.baseline"


async def run_baseline(
    order_url: str, customer_url: str, broker_url: str, *, customers: list[int], duration_s: float, concurrency: int
) -> dict[str, float]:
    orders = await asyncpg.create_pool(order_url, min_size=4, max_size=8)
    credit = await asyncpg.create_pool(customer_url, min_size=4, max_size=8)
    connection = await aio_pika.connect(broker_url)
    try:
        publisher = await connection.channel(publisher_confirms=True)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=64)
        queue = await consumer.declare_queue(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        consumed = 0

        async def ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal consumed
            await message.ack()
            consumed += 1

        await queue.consume(ack)
        price = Decimal("1.00")

        async def publish(body: bytes) -> None:
            message = aio_pika.Message(
                body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=str(uuid.uuid4())
            )
            await publisher.default_exchange.publish(message, routing_key=QUEUE)

        async def saga(customer_id: int) -> None:
            async with orders.acquire() as conn, conn.transaction():
                order_id = await conn.fetchval(_INSERT_ORDER, customer_id, price)
                await conn.execute(_INSERT_OUTBOX, uuid.uuid4(), "order.created", order_id)
            await publish(b'{"type": "order.created"}')
            async with credit.acquire() as conn, conn.transaction():
                await conn.fetchval(_INSERT_INBOX, uuid.uuid4(), "order.created", order_id)
                if await conn.fetchval(_DEBIT, customer_id, price, order_id):
                    await conn.fetchval(_RESERVE, order_id, customer_id, price)
                await conn.execute(_INSERT_OUTBOX, uuid.uuid4(), "order.fulfilled", order_id)
            await publish(b'{"type": "order.fulfilled"}')
            async with orders.acquire() as conn, conn.transaction():
                await conn.fetchval(_INSERT_INBOX, uuid.uuid4(), "order.fulfilled", order_id)
                await conn.execute(_RECORD, order_id)

        done = 0
        deadline = time.monotonic() + duration_s

        async def worker(n: int) -> None:
            nonlocal done
            while time.monotonic() < deadline:
                await saga(customers[(done + n) % len(customers)])
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.monotonic() - started
        await queue.delete(if_unused=False, if_empty=False)
        return {"sagas": done, "seconds": elapsed, "sagas_per_s": done / elapsed, "messages_consumed": consumed}
    finally:
        await connection.close()
        await orders.close()
        await credit.close()
