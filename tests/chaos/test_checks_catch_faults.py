"""The checks of the chaos tier must be able to fail: a broken outcome written by hand is reported."""

from __future__ import annotations

import re
import time
import uuid
from decimal import Decimal

import aio_pika

from saga_dev.load import LoadStats, Placed
from tests.chaos.harness import RETRY_DELAYS_MS, ChaosEnvironment
from tests.support.broker import default_topology


async def test_the_checks_report_a_lost_order_a_double_charge_and_leftovers(chaos: ChaosEnvironment) -> None:
    async with chaos.broker() as connection:
        channel = await connection.channel(publisher_confirms=True)
        await default_topology(retry_delays_ms=tuple(RETRY_DELAYS_MS)).declare(channel)
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"type": "order.created"}', message_id=str(uuid.uuid4())),
            routing_key="customer-service.dead-letter",
        )
    rich, other = chaos.rich[0], chaos.rich[1]
    async with chaos.order_db() as orders:
        fulfilled, pending, cancelled = [
            await orders.fetchval(
                "INSERT INTO orders (customer_id, product_id, quantity, total_price, status) "
                "VALUES ($1, 1, 1, $2, $3) RETURNING id",
                customer,
                price,
                status,
            )
            for customer, price, status in (
                (rich, Decimal(10), "fulfilled"),
                (rich, Decimal(5), "pending"),
                (other, Decimal(7), "cancelled"),
            )
        ]
        await orders.execute(
            "INSERT INTO outbox (id, routing_key, order_id, payload, created_at) "
            "VALUES ($1, 'order.created', $2, '{}', now() - interval '2 hours')",
            uuid.uuid4(),
            pending,
        )
    async with chaos.customer_db() as customers:
        # Order `fulfilled` charged twice; order `cancelled` never released.
        await customers.execute(
            "INSERT INTO reservations (order_id, customer_id, amount, status) VALUES ($1, $2, 10, 'active')",
            fulfilled,
            rich,
        )
        await customers.execute("UPDATE customers SET balance = balance - 20 WHERE id = $1", rich)
        await customers.execute(
            "INSERT INTO reservations (order_id, customer_id, amount, status) VALUES ($1, $2, 7, 'active')",
            cancelled,
            other,
        )
        await customers.execute("UPDATE customers SET balance = balance - 7 WHERE id = $1", other)

    stats = LoadStats(attempted=3)
    for order_id, customer, price in ((fulfilled, rich, 10), (pending, rich, 5), (cancelled, other, 7)):
        stats.accepted[order_id] = Placed(order_id, customer, Decimal(price), time.time())
    run = chaos.scenario("self-test of the checks")
    figures = await run._count(stats, converge=None)

    text = "\n".join(figures.problems)
    assert figures.lost == 1 and figures.terminal == 2
    assert figures.duplicated >= 2, text  # the double charge, and the charge of a cancelled order
    assert f"order {pending}" in text or "not terminal" in text
    assert f"customer {rich}: balance moved by 20" in text
    assert f"order {cancelled}: credit 7.00 held for a cancelled order" in text  # saga_tools.invariants
    assert "money" in text or "balances" in text
    assert "customer-service.dead-letter holds 1" in text
    assert re.search(r"outbox rows still unsent at the end, the oldest for 72\d\ds", text), text  # 2 hours
    assert "still in progress" in text  # no convergence measured
