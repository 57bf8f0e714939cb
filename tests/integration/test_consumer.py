"""The idempotent consumer against a real broker: duplicates, poison messages, retries, dead letters."""

import asyncio
import itertools
import uuid
from decimal import Decimal

import pytest

from customer_service.handlers import on_order_created
from saga_common.contract.messages import OrderCreated
from saga_common.contract.topology import CUSTOMER_SERVICE
from saga_common.messaging.consumer import (
    ATTEMPT_HEADER,
    CATEGORY_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    SOURCE_QUEUE_HEADER,
)
from tests.support.broker import broker_tool, default_topology
from tests.support.customer_db import new_customer, reservations_for, wait_for
from tests.support.processes import sql

DEAD_LETTER = "customer-service.dead-letter"


async def test_a_duplicate_order_created_makes_one_reservation_and_one_answer(saga_env, runtimes):
    customer = await new_customer(saga_env, "100.00")
    event = OrderCreated(order_id=41, customer_id=customer, amount=Decimal("30.00"))
    async with (
        broker_tool(saga_env.broker_url) as broker,
        broker.capture("order.fulfilled", "order.rejected") as answers,
    ):
        async with runtimes(CUSTOMER_SERVICE):
            await broker.publish_event(event)
            await broker.publish_event(event)  # the same message id: a redelivery or a relay that published twice
            # And the same order again under a new message id: the business key still allows one decision.
            await broker.publish_event(event.model_copy(update={"message_id": uuid.uuid4()}))
            await answers.collect(1)
            await answers.settle(1.0)
    assert [m.type for m in answers.messages] == ["order.fulfilled"]
    rows = await reservations_for(saga_env, 41)
    assert len(rows) == 1 and rows[0]["status"] == "active" and rows[0]["amount"] == Decimal("30.00")
    (row,) = await sql(saga_env.databases.customer_url, "SELECT balance FROM customers WHERE id = $1", customer)
    assert row["balance"] == Decimal("70.00")


@pytest.mark.parametrize(
    ("body", "routing_key", "category", "says"),
    [
        (b"{this is not json", "order.created", "not_json", "not JSON"),
        (b'{"type": "order.shipped", "version": 1, "order_id": 1}', "order.created", "unknown_type", "order.shipped"),
        (b'{"type": "order.created", "version": 1, "order_id": 1}', "order.created", "malformed", "customer_id"),
        (b'{"type": "order.created", "version": 0, "order_id": 1}', "order.created", "wrong_version", "version 0"),
        (b"[" + b" " * (1024 * 1024) + b"]", "order.created", "too_large", "over the"),
    ],
    ids=["not-json", "unknown-type", "missing-fields", "wrong-version", "1MiB"],
)
async def test_a_poison_message_is_dead_lettered_with_its_reason_and_the_next_one_flows(
    saga_env, runtimes, body, routing_key, category, says
):
    customer = await new_customer(saga_env, "50.00")
    good = OrderCreated(order_id=7, customer_id=customer, amount=Decimal("5.00"))
    async with broker_tool(saga_env.broker_url) as broker:
        async with runtimes(CUSTOMER_SERVICE):
            await broker.publish_raw(body, routing_key, message_id="poison-1")
            await broker.publish_event(good)
            await wait_for(lambda: reservations_for(saga_env, 7))
            dead = await broker.read_queue(DEAD_LETTER, expect=1)
        assert len(dead) == 1, "the poison message is not in the dead-letter queue"
        headers = dead[0].headers
        assert dead[0].message_id == "poison-1"
        assert dead[0].body == body, "the dead letter must keep the original body for inspection"
        assert headers[CATEGORY_HEADER] == category
        assert says in headers[REASON_HEADER]
        assert headers[SOURCE_QUEUE_HEADER] == "customer-service.events"
        assert headers[ROUTING_KEY_HEADER] == routing_key
        assert await broker.queue_depth("customer-service.events") == 0


async def test_a_failing_handler_is_retried_with_back_off_then_succeeds(saga_env, runtimes):
    customer = await new_customer(saga_env, "50.00")
    failures = {"left": 2}
    attempts_seen = []

    async def flaky(tx, event):
        attempts_seen.append(asyncio.get_running_loop().time())
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("downstream hiccup")
        await on_order_created(tx, event)

    async with broker_tool(saga_env.broker_url, default_topology(retry_delays_ms=(200, 400))) as broker:
        async with runtimes(
            CUSTOMER_SERVICE, handlers={"order.created": flaky}, retry_delays_ms=[200, 400], max_attempts=5
        ):
            await broker.publish_event(OrderCreated(order_id=8, customer_id=customer, amount=Decimal("5.00")))
            rows = await wait_for(lambda: reservations_for(saga_env, 8))
    assert len(rows) == 1 and rows[0]["status"] == "active"
    assert len(attempts_seen) == 3
    gaps = [b - a for a, b in itertools.pairwise(attempts_seen)]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.38, f"back-off not respected: {gaps}"


async def test_a_handler_that_always_fails_ends_in_the_dead_letter_queue(saga_env, runtimes):
    calls = []

    async def broken(tx, event):
        calls.append(event.message_id)
        raise ValueError("a bug in the handler")

    async with broker_tool(saga_env.broker_url, default_topology(retry_delays_ms=(100,))) as broker:
        async with runtimes(
            CUSTOMER_SERVICE, handlers={"order.created": broken}, retry_delays_ms=[100], max_attempts=3
        ):
            await broker.publish_event(OrderCreated(order_id=9, customer_id=1, amount=Decimal("5.00")))
            dead = await broker.read_queue(DEAD_LETTER, expect=1, timeout=10)
    assert len(calls) == 3
    assert len(dead) == 1
    assert dead[0].headers[CATEGORY_HEADER] == "max_attempts"
    assert "a bug in the handler" in dead[0].headers[REASON_HEADER]
    assert dead[0].headers[ATTEMPT_HEADER] == 2  # the retries it had before the last failure
    assert dead[0].headers[ROUTING_KEY_HEADER] == "order.created"


async def test_the_broker_dead_letters_a_message_redelivered_past_the_delivery_limit(saga_env):
    # A message that kills its consumer every time is never acked: the quorum queue's delivery limit is what
    # stops it, and it must land in the dead-letter queue rather than vanish.
    async with broker_tool(saga_env.broker_url, default_topology(delivery_limit=2)) as broker:
        await broker.publish_raw(b'{"crash": "me"}', "order.created", message_id="crasher")
        queue = await broker.channel.get_queue("customer-service.events", ensure=False)
        for _ in range(3):
            message = await queue.get(timeout=5)
            await message.nack(requeue=True)
        dead = await broker.read_queue(DEAD_LETTER, expect=1, timeout=5)
    assert [m.message_id for m in dead] == ["crasher"]
    assert dead[0].headers["x-death"][0]["reason"] == "delivery_limit"
