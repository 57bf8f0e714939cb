"""Saga deadlines: an order nobody answers is rejected with `timeout`, and credit reserved too late is
released; never a charged customer with a rejected order, even with several sweeping replicas."""

import asyncio
import hashlib
from datetime import timedelta
from decimal import Decimal

import asyncpg

from order_service import orders
from order_service.jobs import expire_overdue_orders
from order_service.schemas import OrderCreate
from order_service.timeline import timeline_of
from saga_common.contract.messages import OrderCreated
from saga_common.contract.topology import CUSTOMER_SERVICE, ORDER_SERVICE
from tests.support.customer_db import new_customer, reservations_for, wait_for
from tests.support.waiting import eventually


async def place_order(runtime, customer_id: int, price: str, deadline_s: float) -> int:
    """What POST /orders/ does, without HTTP: the order and its order.created in one transaction."""
    body = OrderCreate(customer_id=customer_id, product_id=1, quantity=1, total_price=Decimal(price))
    async with runtime.db.unit_of_work() as uow:
        row = await orders.insert_order(
            uow.conn, body, idempotency_key=None, fingerprint=hashlib.sha256(b"x").hexdigest(), trace_parent=None
        )
        uow.emit(
            OrderCreated(
                order_id=row.id,
                customer_id=customer_id,
                amount=row.total_price,
                deadline=row.created_at + timedelta(seconds=deadline_s),
            )
        )
    return row.id


async def order_row(runtime, order_id: int):
    async with runtime.db.connection() as conn:
        return await orders.get(conn, order_id)


async def answers_taken_in(runtime, order_id: int, message_type: str) -> int:
    """How many messages of that type the order service's inbox holds for the order (processed, whatever they did)."""
    async with runtime.db.connection() as conn:
        return await conn.fetchval(
            "SELECT count(*) FROM inbox WHERE order_id = $1 AND message_type = $2", order_id, message_type
        )


async def balance_of(saga_env, customer_id: int) -> Decimal:
    conn = await asyncpg.connect(saga_env.databases.customer_url)
    try:
        return await conn.fetchval("SELECT balance FROM customers WHERE id = $1", customer_id)
    finally:
        await conn.close()


async def test_an_unanswered_order_times_out_and_a_late_request_reserves_nothing(saga_env, runtimes):
    customer = await new_customer(saga_env, "100.00")
    deadline = 1.0
    # The customer service is down: order.created waits in its queue.
    async with runtimes(ORDER_SERVICE, jobs=True, deadline_s=deadline, deadline_sweep_interval_s=0.2) as order:
        order_id = await place_order(order, customer, "40.00", deadline)

        async def expired():
            row = await order_row(order, order_id)
            return row if row.status == "rejected" else None

        row = await wait_for(expired, timeout=5)
        assert row.rejection_reason == "timeout"
        # The customer service comes back and finds a request whose deadline has passed.
        async with runtimes(CUSTOMER_SERVICE):
            (reservation,) = await wait_for(lambda: reservations_for(saga_env, order_id))
            await eventually(
                lambda: answers_taken_in(order, order_id, "order.rejected"),
                what="the late order.rejected taken in by the order service",
            )
        assert (reservation["status"], reservation["reason"]) == ("rejected", "timeout")
        assert await balance_of(saga_env, customer) == Decimal("100.00")
        row = await order_row(order, order_id)
        assert (row.status, row.rejection_reason) == ("rejected", "timeout")


async def test_credit_reserved_after_the_deadline_is_released(saga_env, runtimes):
    customer = await new_customer(saga_env, "100.00")
    deadline = 1.0
    async with runtimes(CUSTOMER_SERVICE):
        # The order service publishes but does not consume: the customer's answer waits in the queue.
        async with runtimes(
            ORDER_SERVICE, consume=False, jobs=True, deadline_s=deadline, deadline_sweep_interval_s=0.2
        ) as order:
            order_id = await place_order(order, customer, "40.00", deadline)
            (reservation,) = await wait_for(lambda: reservations_for(saga_env, order_id))
            assert reservation["status"] == "active"
            assert await balance_of(saga_env, customer) == Decimal("60.00")

            async def expired():
                return (await order_row(order, order_id)).status == "rejected"

            await wait_for(expired, timeout=5)

        # Its consumer comes back: the late reservation is compensated, the order stays rejected.
        async with runtimes(ORDER_SERVICE) as order:

            async def released():
                rows = await reservations_for(saga_env, order_id)
                return rows if rows[0]["status"] == "released" else None

            await wait_for(released, timeout=10)

            async def timeline():
                row = await order_row(order, order_id)
                async with order.db.connection() as conn:
                    return row, [step.step for step in (await timeline_of(conn, row)).steps]

            # The order service records the release when the customer service's answer reaches it.
            row, steps = await eventually(
                timeline, until=lambda found: "credit released" in found[1], what="'credit released' in the timeline"
            )
    assert (row.status, row.rejection_reason) == ("rejected", "timeout")
    assert await balance_of(saga_env, customer) == Decimal("100.00")
    assert "deadline passed: rejected" in steps
    assert "compensation requested" in steps and "credit released" in steps
    assert steps.index("deadline passed: rejected") < steps.index("compensation requested")


async def test_sweeping_replicas_never_expire_an_order_twice(saga_env, runtimes):
    async with (
        runtimes(ORDER_SERVICE, consume=False, relay=False) as first,
        runtimes(ORDER_SERVICE, consume=False, relay=False) as second,
    ):
        ids = [await place_order(first, 1, "1.00", 0.0) for _ in range(60)]
        await asyncio.sleep(0.1)  # time passing, not a wait: the orders grow older than the 0.05 s deadline
        expired = await asyncio.gather(
            *(expire_overdue_orders(runtime, 0.05) for runtime in (first, second, first, second))
        )
        swept = [order_id for batch in expired for order_id in batch]
        assert sorted(swept) == sorted(ids), "every overdue order expired exactly once"
        assert await expire_overdue_orders(first, 0.05) == []
