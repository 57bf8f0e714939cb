"""The messages the running services really put on a real RabbitMQ fit docs/asyncapi.yaml: every event type
with its headers and AMQP properties, a copy waiting in a delay queue, and dead letters of both services."""

from __future__ import annotations

import json
from collections import defaultdict

import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from saga_common.contract.messages import EVENT_TYPES, OrderFulfilled
from saga_common.contract.topology import CUSTOMER_SERVICE, ORDER_SERVICE
from saga_dev.localstack import SagaEnvironment
from tests.support.broker import broker_tool, default_topology
from tests.support.contract import Contract, plain
from tests.support.processes import both_services
from tests.support.saga_client import TERMINAL, saga_client

RETRY_DELAY_MS = 60_000  # long enough to read the parked copy before it goes back
FAIL_RESERVATIONS = """
    CREATE FUNCTION contract_test_failure() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'injected failure'; END $$;
    CREATE TRIGGER contract_test_failure BEFORE INSERT ON reservations
        FOR EACH ROW WHEN (NEW.amount = 13.13) EXECUTE FUNCTION contract_test_failure();
"""


async def test_real_messages_fit_the_asyncapi_document(saga_env: SagaEnvironment, otlp_receiver) -> None:
    contract = Contract.load()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "SAGA_RETRY_DELAYS_MS": f"[{RETRY_DELAY_MS}]",
    }
    conn = await asyncpg.connect(saga_env.databases.customer_url)
    topology = default_topology(retry_delays_ms=(RETRY_DELAY_MS,))
    async with broker_tool(saga_env.broker_url, topology) as broker, broker.capture() as capture:
        with both_services(saga_env, env) as services:
            async with saga_client(*services) as client:
                await conn.execute(FAIL_RESERVATIONS)
                rich = await client.create_customer("100.00")
                poor = await client.create_customer("1.00")
                fulfilled = await client.create_order(rich, "20.00")
                rejected = await client.create_order(poor, "20.00")
                assert (await client.wait_for_status(fulfilled["id"], TERMINAL))["status"] == "fulfilled"
                assert (await client.wait_for_status(rejected["id"], TERMINAL))["status"] == "rejected"
                assert (await client.cancel(fulfilled["id"])).status_code == 202
                assert (await client.wait_for_status(fulfilled["id"], TERMINAL))["status"] == "cancelled"
                parked = await client.create_order(rich, "13.13")  # its reservation fails: a retry copy

                # Dead letters: an outcome for an order the order service does not know, and a body that is not JSON.
                unknown = OrderFulfilled(order_id=999_999, customer_id=rich, amount="1.00", reservation_id=1)
                await broker.publish_event(unknown)
                customer_queue = topology.queues(CUSTOMER_SERVICE).work
                await broker.publish_raw(b"not json", customer_queue, exchange="", type="order.created")

                retry_queue = topology.queues(CUSTOMER_SERVICE).retry(RETRY_DELAY_MS)
                retries = await broker.read_queue(retry_queue, timeout=15)
                order_letters = await broker.read_queue(topology.queues(ORDER_SERVICE).dead_letter, timeout=15)
                customer_letters = await broker.read_queue(topology.queues(CUSTOMER_SERVICE).dead_letter, timeout=15)
        await capture.settle()
    await conn.close()

    by_type: dict[str, list[AbstractIncomingMessage]] = defaultdict(list)
    for message in capture.messages:
        by_type[message.type or "?"].append(message)
    assert set(EVENT_TYPES) <= set(by_type), f"captured only {sorted(by_type)}"

    problems: list[str] = []
    for routing_key in EVENT_TYPES:
        for message in by_type[routing_key]:
            if message.message_id == str(unknown.message_id):  # the test's own, checked as a dead letter below
                continue
            problems += [
                f"{routing_key} {message.message_id}: {problem}"
                for problem in contract.check_delivery(contract.key_of(routing_key), message)
            ]
            assert "traceparent" in (message.headers or {}), f"{routing_key} published without its trace context"
            assert json.loads(message.body)["message_id"] == message.message_id

    assert len(retries) == 1, "the failing reservation was not parked in its delay queue"
    (retry,) = retries
    assert json.loads(retry.body)["order_id"] == parked["id"]
    problems += [f"retry: {p}" for p in contract.check_delivery("retry", retry)]

    assert len(order_letters) == 1 and len(customer_letters) == 1, (order_letters, customer_letters)
    categories = []
    for letter in order_letters + customer_letters:
        problems += [f"dead letter: {p}" for p in contract.check_delivery("deadLetter", letter)]
        categories.append(plain(letter.headers)["x-saga-dead-letter-category"])
    assert categories == ["unknown_order", "not_json"]
    assert problems == [], "\n".join(problems)
