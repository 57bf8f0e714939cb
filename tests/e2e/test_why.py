"""`sagactl why ORDER` against real processes, databases and broker: one test per cause it names (relay
stopped, consumer stopped, poison message, unknown customer, past deadline, broker unreachable) and a
finished saga, each put in place the way it happens (signals, a broken URL, a failing trigger), never faked."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import httpx

from saga_dev.localstack import SagaEnvironment
from tests.support.customer_db import FAIL_RESERVATIONS, FIX_RESERVATIONS
from tests.support.saga_client import SagaClient, saga_client
from tests.support.sagactl import sagactl
from tests.support.waiting import eventually

UNREACHABLE_BROKER = "amqp://guest:guest@127.0.0.1:1/"


class Stack:
    def __init__(self, env: SagaEnvironment, order_env: dict | None = None, customer_env: dict | None = None):
        self.env = env
        self.order = env.order_service(extra_env=order_env or {})
        self.customer = env.customer_service(extra_env=customer_env or {})

    def why(self, order_id: int, expect_code: int = 3, **extra_env: str) -> dict:
        """The real `sagactl why --json`, pointed at this stack's services."""
        environ = {"CUSTOMER_SERVICE_URL": self.customer.base_url} | extra_env
        result = sagactl(self.env, "why", str(order_id), "--json", order_url=self.order.base_url, extra_env=environ)
        assert result.returncode == expect_code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)

    def why_text(self, order_id: int, **extra_env: str) -> str:
        environ = {"CUSTOMER_SERVICE_URL": self.customer.base_url} | extra_env
        return sagactl(self.env, "why", str(order_id), order_url=self.order.base_url, extra_env=environ).stdout


@asynccontextmanager
async def stack(env: SagaEnvironment, **settings: dict) -> AsyncIterator[tuple[Stack, SagaClient]]:
    s = Stack(env, **settings)
    await asyncio.to_thread(s.customer.start)
    try:
        await asyncio.to_thread(s.order.start)
        try:
            async with saga_client(s.order, s.customer) as client:
                yield s, client
        finally:
            s.order.kill()
    finally:
        s.customer.kill()


async def test_a_finished_saga_is_healthy_and_needs_nothing(saga_env):
    async with stack(saga_env) as (s, client):
        customer = await client.create_customer("100.00")
        order = await client.create_order(customer, "10.00")
        await client.wait_for_status(order["id"], {"fulfilled"})
        seen = await eventually(
            lambda: s.why(order["id"], expect_code=0),
            until=lambda seen: seen["diagnosis"]["code"] == "finished",
            what="the saga diagnosed finished",
        )
        text = s.why_text(order["id"])
    assert seen["diagnosis"]["fix"] is None and "is fulfilled" in seen["diagnosis"]["cause"]
    assert [m["type"] for m in seen["facts"]["messages"]] == ["order.created", "order.fulfilled"]
    assert all(m["received_at"] for m in seen["facts"]["messages"])
    assert seen["facts"]["services"]["customer-service"]["ready"] is True
    assert f"order {order['id']}: fulfilled" in text and "fix:   nothing to do" in text


async def test_unknown_customer(saga_env):
    async with stack(saga_env) as (s, client):
        order = await client.create_order(424242, "10.00")
        await client.wait_for_status(order["id"], {"rejected"})
        seen = s.why(order["id"])
    assert seen["diagnosis"]["code"] == "unknown_customer"
    assert "customer 424242 does not exist" in seen["diagnosis"]["cause"]
    assert "POST /customers" in seen["diagnosis"]["fix"]
    assert seen["facts"]["customer_exists"] is False


async def test_relay_failing_then_stopped(saga_env):
    """The order service cannot reach the broker: its relay keeps the row; then the process stops answering."""
    async with stack(saga_env) as (s, client):
        customer = await client.create_customer("100.00")
        s.order.kill()
        s.order.broker_url = UNREACHABLE_BROKER
        s.order.start(wait_ready=False)
        async with httpx.AsyncClient(timeout=5) as http:
            await eventually(
                lambda: http.get(f"{s.order.base_url}/healthz"),
                until=lambda r: r.status_code == 200,
                timeout=30,
                ignoring=(httpx.HTTPError,),
                what="the order service alive without its broker",
            )
        order = await client.create_order(customer, "10.00")
        failing = s.why(order["id"])
        assert failing["diagnosis"]["code"] == "relay_failing", failing["diagnosis"]
        assert "order.created has waited unsent in the order-service outbox" in failing["diagnosis"]["cause"]
        assert "not connected to the broker" in failing["diagnosis"]["cause"]
        s.order.signal(signal.SIGSTOP)
        try:
            stopped = s.why(order["id"])
        finally:
            s.order.signal(signal.SIGCONT)
    assert stopped["diagnosis"]["code"] == "relay_stopped", stopped["diagnosis"]
    assert (
        f"order-service, whose relay publishes it, does not answer at {s.order.base_url}"
        in stopped["diagnosis"]["cause"]
    )
    assert (
        "kubectl rollout restart deployment -l app.kubernetes.io/component=order-service" in stopped["diagnosis"]["fix"]
    )
    (message,) = stopped["facts"]["messages"]
    assert message["published_at"] is None


async def test_consumer_killed_then_hung(saga_env):
    async with stack(saga_env) as (s, client):
        customer = await client.create_customer("100.00")
        s.customer.kill()
        order = await client.create_order(customer, "10.00")
        killed = await eventually(
            lambda: s.why(order["id"]),
            until=lambda seen: seen["facts"]["messages"][0]["published_at"] is not None,
            what="order.created published",
        )
        assert killed["diagnosis"]["code"] == "consumer_stopped", killed["diagnosis"]
        assert "Nobody consumes customer-service.events: order.created waits there" in killed["diagnosis"]["cause"]
        assert killed["facts"]["queues"]["customer-service"]["consumers"] == 0
        assert killed["facts"]["queues"]["customer-service"]["messages"] == 1

        # Hung: still attached (the broker has not noticed), answering nothing.
        s.customer.start()
        await client.wait_for_status(order["id"], {"fulfilled"})
        s.customer.signal(signal.SIGSTOP)
        try:
            other = await client.create_order(customer, "5.00")
            hung = await eventually(
                lambda: s.why(other["id"]),
                until=lambda seen: seen["facts"]["messages"][0]["published_at"] is not None,
                what="the second order.created published",
            )
        finally:
            s.customer.signal(signal.SIGCONT)
    assert hung["diagnosis"]["code"] == "consumer_stopped", hung["diagnosis"]
    assert (
        f"customer-service, which consumes order.created, does not answer at {s.customer.base_url}"
        in hung["diagnosis"]["cause"]
    )
    assert hung["facts"]["queues"]["customer-service"]["consumers"] >= 1


async def poison_order(s: Stack, client: SagaClient, conn: asyncpg.Connection) -> dict:
    customer = await client.create_customer("100.00")
    await conn.execute(FAIL_RESERVATIONS)
    order = await client.create_order(customer, "10.00")
    await eventually(
        lambda: s.why(order["id"]),
        until=lambda seen: seen["diagnosis"]["code"] == "poison",
        timeout=20,
        interval=0.3,
        what="order.created dead-lettered",
    )
    return order


FAILING = {"SAGA_MAX_ATTEMPTS": "2", "SAGA_RETRY_DELAYS_MS": "[100]"}


async def test_poison_message_then_the_fix_it_prints(saga_env):
    async with stack(saga_env, customer_env=FAILING) as (s, client):
        conn = await asyncpg.connect(saga_env.databases.customer_url)
        try:
            order = await poison_order(s, client, conn)
            seen = s.why(order["id"], SAGA_RETRY_DELAYS_MS="[100]")
            message_id = seen["facts"]["messages"][0]["id"]
            assert "order.created was dead-lettered by customer-service" in seen["diagnosis"]["cause"]
            assert "injected failure" in seen["diagnosis"]["cause"]
            assert "customer-service.dead-letter" in seen["diagnosis"]["cause"]
            assert f"`sagactl dlq replay {message_id}`" in seen["diagnosis"]["fix"]
            await conn.execute(FIX_RESERVATIONS)
        finally:
            await conn.close()
        replayed = sagactl(saga_env, "dlq", "replay", message_id)
        assert replayed.returncode == 0, replayed.stderr
        await client.wait_for_status(order["id"], {"fulfilled"})
        after = await eventually(
            lambda: s.why(order["id"], expect_code=0),
            until=lambda seen: seen["diagnosis"]["code"] == "finished",
            what="the replayed saga finished",
        )
    assert after["facts"]["parked"] == []


async def test_broker_unreachable_for_sagactl(saga_env):
    async with stack(saga_env, customer_env=FAILING) as (s, client):
        conn = await asyncpg.connect(saga_env.databases.customer_url)
        try:
            order = await poison_order(s, client, conn)
        finally:
            await conn.close()
        seen = s.why(order["id"], RABBITMQ_BROKER_URL=UNREACHABLE_BROKER)
    assert seen["diagnosis"]["code"] == "broker_unreachable", seen["diagnosis"]
    assert "sagactl cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/" in seen["diagnosis"]["cause"]
    assert "set RABBITMQ_BROKER_URL" in seen["diagnosis"]["fix"]
    assert seen["facts"]["services"]["customer-service"]["ready"] is True, "the services reach their broker"


async def test_past_deadline(saga_env):
    deadline = {"SAGA_DEADLINE_S": "2", "SAGA_DEADLINE_SWEEP_INTERVAL_S": "0.2"}
    async with stack(saga_env, order_env=deadline) as (s, client):
        customer = await client.create_customer("100.00")
        s.customer.kill()
        order = await client.create_order(customer, "10.00")
        rejected = await client.wait_for_status(order["id"], {"rejected"})
        assert rejected["rejection_reason"] == "timeout"
        late = s.why(order["id"], SAGA_DEADLINE_S="2")
        assert late["diagnosis"]["code"] == "past_deadline", late["diagnosis"]
        assert (
            f"Order {order['id']} was rejected at its 2 s deadline because nobody consumes"
            in late["diagnosis"]["cause"]
        )
        assert "place the order again" in late["diagnosis"]["fix"]

        s.customer.start()  # order.created arrives past its deadline: nothing is reserved for it
        settled = await eventually(
            lambda: s.why(order["id"], SAGA_DEADLINE_S="2"),
            until=lambda seen: all(m["received_at"] for m in seen["facts"]["messages"]),
            timeout=20,
            interval=0.3,
            what="the late order.created handled",
        )
    assert settled["diagnosis"]["code"] == "past_deadline"
    assert settled["facts"]["reservation"]["status"] == "rejected"
    assert "customer-service took order.created" in settled["diagnosis"]["cause"]
    assert "too late, and reserved nothing (timeout)" in settled["diagnosis"]["cause"]


async def test_a_failed_message_waiting_for_its_retry(saga_env):
    slow_retry = {"SAGA_MAX_ATTEMPTS": "5", "SAGA_RETRY_DELAYS_MS": "[30000]"}
    async with stack(saga_env, customer_env=slow_retry) as (s, client):
        customer = await client.create_customer("100.00")
        conn = await asyncpg.connect(saga_env.databases.customer_url)
        try:
            await conn.execute(FAIL_RESERVATIONS)
            order = await client.create_order(customer, "10.00")
            seen = await eventually(
                lambda: s.why(order["id"], SAGA_RETRY_DELAYS_MS="[30000]"),
                until=lambda seen: seen["diagnosis"]["code"] == "retrying",
                timeout=15,
                interval=0.3,
                what="order.created in the 30 s delay queue",
            )
        finally:
            await conn.close()
    assert "order.created failed in customer-service after 1 failed attempt(s)" in seen["diagnosis"]["cause"]
    assert "customer-service.retry.30000ms" in seen["diagnosis"]["cause"]
    (parked,) = seen["facts"]["parked"]
    assert parked["message_id"] == seen["facts"]["messages"][0]["id"] and parked["kind"] == "delay"
