"""Versioned events against a real broker and databases: v1 and v2 of order.created apply alike, a producer
writes the version its setting names, and a version newer than the consumer knows is held back, not poison."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from order_service import saga
from order_service.schemas import OrderCreate
from saga_common.contract.messages import Amount, OrderCreated, OrderCreatedV2
from saga_common.contract.topology import CUSTOMER_SERVICE, ORDER_SERVICE
from saga_common.messaging.consumer import ATTEMPT_HEADER, CATEGORY_HEADER, HELD_SINCE_HEADER, REASON_HEADER
from saga_common.observability import metrics
from tests.support.broker import broker_tool, default_topology
from tests.support.customer_db import new_customer, reservations_for, wait_for
from tests.support.waiting import eventually

DEAD_LETTER = "customer-service.dead-letter"
CORPUS = Path(__file__).resolve().parents[1] / "unit" / "data" / "contract-v1"


async def test_v1_and_v2_order_created_reserve_alike(saga_env, runtimes):
    customer = await new_customer(saga_env, "100.00")
    v1 = OrderCreated(order_id=51, customer_id=customer, amount=Decimal("30.00"))
    v2 = OrderCreatedV2(order_id=52, customer_id=customer, amount=Amount(value="20.00", currency="EUR"))
    async with broker_tool(saga_env.broker_url) as broker, broker.capture("order.fulfilled") as answers:
        async with runtimes(CUSTOMER_SERVICE):
            await broker.publish_event(v1)
            await broker.publish_event(v2)
            await answers.collect(2)
    fulfilled = {body["order_id"]: body["amount"] for body in (json.loads(m.body) for m in answers.messages)}
    assert fulfilled == {51: "30.00", 52: "20.00"}
    for order_id, amount in ((51, Decimal("30.00")), (52, Decimal("20.00"))):
        (row,) = await reservations_for(saga_env, order_id)
        assert row["amount"] == amount and row["status"] == "active"


async def test_a_foreign_currency_is_dead_lettered_and_reserves_nothing(saga_env, runtimes):
    customer = await new_customer(saga_env, "100.00")
    usd = OrderCreatedV2(order_id=53, customer_id=customer, amount=Amount(value="5.00", currency="USD"))
    async with broker_tool(saga_env.broker_url) as broker:
        async with runtimes(CUSTOMER_SERVICE):
            await broker.publish_event(usd)
            (dead,) = await broker.read_queue(DEAD_LETTER, expect=1, timeout=10)
    assert dead.headers[CATEGORY_HEADER] == "malformed"
    assert "USD" in dead.headers[REASON_HEADER]
    assert await reservations_for(saga_env, 53) == []


async def test_a_newer_version_is_held_back_without_an_attempt_and_blocks_nothing(saga_env, runtimes):
    customer = await new_customer(saga_env, "50.00")
    v3 = json.loads(
        OrderCreatedV2(order_id=61, customer_id=customer, amount=Amount(value="1.00", currency="EUR")).to_json()
    )
    v3 |= {"version": 3, "amount": {"value": "1.00", "currency": "EUR", "tax": "0.19"}}
    held = metrics.MESSAGES_CONSUMED.labels("order.created", "held_back")
    held_before = held._value.get()
    async with broker_tool(saga_env.broker_url, default_topology(retry_delays_ms=(100, 300))) as broker:
        # max_attempts=1: a message that used up an attempt would be dead-lettered at its first failure.
        async with runtimes(CUSTOMER_SERVICE, retry_delays_ms=[100, 300], max_attempts=1, newer_version_hold_s=1.5):
            await broker.publish_raw(json.dumps(v3).encode(), "order.created", message_id="v3-1")
            await broker.publish_event(OrderCreated(order_id=62, customer_id=customer, amount=Decimal("5.00")))
            await wait_for(lambda: reservations_for(saga_env, 62))
            assert await broker.queue_depth(DEAD_LETTER) == 0, "a newer version is not poison"
            # Parked only once it waited longer than newer_version_hold_s, never dropped.
            (dead,) = await broker.read_queue(DEAD_LETTER, expect=1, timeout=10)
    assert dead.message_id == "v3-1" and json.loads(dead.body) == v3
    assert dead.headers[CATEGORY_HEADER] == "newer_version"
    assert "version 3 of order.created is newer than this release knows (1..2)" in dead.headers[REASON_HEADER]
    assert HELD_SINCE_HEADER in dead.headers and ATTEMPT_HEADER not in dead.headers
    # Held back again and again in the longest delay queue (0.3 s) over the 1.5 s.
    assert held._value.get() - held_before >= 3
    assert await reservations_for(saga_env, 61) == []


async def test_the_order_service_writes_the_version_its_setting_names(saga_env, runtimes):
    event = OrderCreatedV2(order_id=71, customer_id=1, amount=Amount(value="9.99", currency="EUR"))
    async with broker_tool(saga_env.broker_url) as broker, broker.capture("order.created") as published:
        async with runtimes(ORDER_SERVICE, consume=False, publish_versions={"order.created": 1}) as pinned:
            async with pinned.db.unit_of_work() as uow:
                uow.emit(event)
            await published.collect(1)
        async with runtimes(ORDER_SERVICE, consume=False) as newest:
            async with newest.db.unit_of_work() as uow:
                uow.emit(event.model_copy(update={"order_id": 72, "message_id": uuid.uuid4()}))
            await published.collect(2)
    bodies = {body["order_id"]: body for body in (json.loads(m.body) for m in published.messages)}
    assert (bodies[71]["version"], bodies[71]["amount"]) == (1, "9.99")
    assert (bodies[72]["version"], bodies[72]["amount"]) == (2, {"value": "9.99", "currency": "EUR"})


def recorded(event_type: str, **ids: object) -> bytes:
    """A body of the v1 corpus (recorded from release N), pointed at this test's own order and customer."""
    body = json.loads((CORPUS / f"{event_type}.json").read_bytes())
    return json.dumps(body | ids | {"message_id": str(uuid.uuid4())}).encode()


async def test_recorded_v1_bodies_of_release_n_still_apply(saga_env, runtimes):
    customer = await new_customer(saga_env, "100.00")
    created = json.loads((CORPUS / "order.created.json").read_bytes())
    deadline = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    async with broker_tool(saga_env.broker_url) as broker, broker.capture("order.fulfilled", "credit.released") as out:
        async with runtimes(CUSTOMER_SERVICE):
            await broker.publish_raw(
                recorded("order.created", order_id=81, customer_id=customer, deadline=deadline), "order.created"
            )
            await out.collect(1)
            await broker.publish_raw(recorded("order.cancelled", order_id=81, customer_id=customer), "order.cancelled")
            await out.collect(2)
    assert [m.type for m in out.messages] == ["order.fulfilled", "credit.released"]
    (row,) = await reservations_for(saga_env, 81)
    assert row["amount"] == Decimal(created["amount"]) and row["status"] == "released"
    assert await broker_dead_letters(saga_env) == 0


async def broker_dead_letters(saga_env) -> int:
    async with broker_tool(saga_env.broker_url) as broker:
        return await broker.queue_depth(DEAD_LETTER)


async def test_recorded_v1_answers_of_release_n_still_apply_on_the_order_side(saga_env, runtimes):
    """order.fulfilled, order.rejected and credit.released as release N's customer service wrote them, applied by
    this release's order service: each saga ends where the answer says, nothing dead-lettered."""
    fulfilled = json.loads((CORPUS / "order.fulfilled.json").read_bytes())
    async with broker_tool(saga_env.broker_url) as broker, runtimes(ORDER_SERVICE) as order:

        async def place() -> int:
            body = OrderCreate(customer_id=7, product_id=1, quantity=1, total_price=Decimal(fulfilled["amount"]))
            async with order.db.unit_of_work() as uow:
                row, _ = await saga.create(
                    uow,
                    body,
                    idempotency_key=None,
                    fingerprint="f" * 64,
                    trace_parent=None,
                    deadline=timedelta(minutes=5),
                    actor="test",
                )
            return row.id

        async def reaches(order_id: int, status: str) -> None:
            async def there() -> bool:
                async with order.db.connection() as conn:
                    return await conn.fetchval("SELECT status FROM orders WHERE id = $1", order_id) == status

            await eventually(there, timeout=10, what=f"order {order_id} {status}")

        paid, refused, withdrawn = await place(), await place(), await place()
        for order_id in (paid, withdrawn):
            await broker.publish_raw(recorded("order.fulfilled", order_id=order_id, customer_id=7), "order.fulfilled")
        await broker.publish_raw(recorded("order.rejected", order_id=refused, customer_id=7), "order.rejected")
        await reaches(paid, "fulfilled")
        await reaches(refused, "rejected")
        await reaches(withdrawn, "fulfilled")
        async with order.db.unit_of_work() as uow:
            await saga.cancel(uow, withdrawn, may_act_for=lambda _: True, actor="test")
        await broker.publish_raw(recorded("credit.released", order_id=withdrawn, customer_id=7), "credit.released")
        await reaches(withdrawn, "cancelled")
        async with order.db.connection() as conn:
            reason = await conn.fetchval("SELECT rejection_reason FROM orders WHERE id = $1", refused)
        dead = await broker.queue_depth("order-service.dead-letter")
    assert reason == "insufficient_balance"
    assert dead == 0
