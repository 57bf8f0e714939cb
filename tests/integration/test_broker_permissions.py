"""Least privilege on the broker: the chart's RabbitMQ definitions, applied to the machine's RabbitMQ.

The definitions come from the chart rendered by the real Helm engine (users, permissions, topic permissions,
exchanges, queues, bindings), moved into a vhost of the test's own with users of its own. Then each service's
user tries what it must not do (publish another service's routing keys, reach another service's queues, declare
or delete anything) and is refused by the broker, does what it must, and the services run a whole saga with
these users, the topology coming from the definitions alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import quote, urlsplit

import aio_pika
import aiormq
import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from saga_common.contract.messages import OrderCreated
from saga_common.contract.topology import BINDINGS, CUSTOMER_SERVICE, ORDER_SERVICE, PUBLISHES
from saga_common.messaging.consumer import CATEGORY_HEADER
from saga_dev.localstack import Databases, Vhost, rabbitmqctl, unique_name
from tests.support.chart import render
from tests.support.processes import ServiceProcess
from tests.support.waiting import eventually

SERVICES = (ORDER_SERVICE, CUSTOMER_SERVICE)
OTHER = {ORDER_SERVICE: CUSTOMER_SERVICE, CUSTOMER_SERVICE: ORDER_SERVICE}


def rabbit_hash(password: str) -> str:
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def chart_definitions() -> dict:
    rendered = render()
    config = next(c for c in rendered.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-rabbitmq"))
    return json.loads(config["data"]["definitions.template.json"])


@dataclass
class Broker:
    vhost: Vhost
    users: dict[str, str]  # service -> user name
    passwords: dict[str, str]
    definitions: dict

    def url(self, service: str) -> str:
        # The same broker as the vhost's (SAGA_TEST_RABBITMQ_URL), as this service's own user.
        address = urlsplit(self.vhost.base_url)
        user = self.users[service]
        vhost = quote(self.vhost.name, safe="")
        return f"amqp://{quote(user)}:{self.passwords[service]}@{address.hostname}:{address.port or 5672}/{vhost}"

    async def connect(self, service: str) -> AbstractConnection:
        return await aio_pika.connect(self.url(service), timeout=5)

    async def admin(self) -> AbstractConnection:
        return await aio_pika.connect(self.vhost.url, timeout=5)

    async def depth(self, queue: str) -> int:
        connection = await self.admin()
        try:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.message_count or 0
        finally:
            await connection.close()


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    """The chart's definitions in a vhost and with users of this test's own."""
    definitions = chart_definitions()
    vhost = Vhost(unique_name("saga-perm")).create()
    prefix = uuid.uuid4().hex[:8]
    users = {service: f"{prefix}-{service}" for service in SERVICES}
    passwords = {service: secrets.token_urlsafe(16) for service in SERVICES}
    moved: dict[str, list] = {}
    for section in ("permissions", "topic_permissions", "exchanges", "queues", "bindings"):
        entries = []
        for entry in definitions[section]:
            if section.endswith("permissions") and entry["user"] not in users:
                continue  # the chart's administrator: the test's own admin is the machine's guest user
            entry = entry | {"vhost": vhost.name}
            if "user" in entry:
                entry["user"] = users[entry["user"]]
            entries.append(entry)
        moved[section] = entries
    moved["users"] = [
        {
            "name": users[user["name"]],
            "password_hash": rabbit_hash(passwords[user["name"]]),
            "hashing_algorithm": user["hashing_algorithm"],
            "tags": user["tags"],
        }
        for user in definitions["users"]
        if user["name"] in users
    ]
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
            json.dump(moved, file)
        os.chmod(file.name, 0o644)  # rabbitmqctl reads it as the rabbitmq user
        rabbitmqctl("import_definitions", file.name)
        os.unlink(file.name)
        yield Broker(vhost, users, passwords, definitions)
    finally:
        for user in users.values():
            try:
                rabbitmqctl("delete_user", user)
            except RuntimeError:
                pass
        vhost.delete()


def test_the_chart_grants_no_service_user_anything_beyond_its_own_names():
    definitions = chart_definitions()
    permissions = {p["user"]: p for p in definitions["permissions"]}
    topics = {p["user"]: p for p in definitions["topic_permissions"]}
    for service in SERVICES:
        assert permissions[service]["configure"] == "^$"
        assert OTHER[service] not in permissions[service]["write"] + permissions[service]["read"]
        assert ".*" not in permissions[service]["write"] + permissions[service]["read"]
        assert "amq" not in permissions[service]["write"], "the default exchange reaches every queue"
        assert topics[service]["exchange"] == "saga.events"
        assert set(topics[service]["write"].strip("^$()").replace("\\", "").split("|")) == set(PUBLISHES[service])


async def refused(operation: Callable[[AbstractChannel], Awaitable[object]], connection: AbstractConnection) -> str:
    channel = await connection.channel(publisher_confirms=True)
    try:
        await operation(channel)
        # A round trip: the broker answers a channel's frames in order, so a refusal of the operation (a
        # publish's comes asynchronously) closes the channel before this is answered, and fails it.
        await channel.declare_exchange("saga.events", passive=True)
    except aiormq.exceptions.ChannelAccessRefused as exc:
        return str(exc)
    finally:
        if not channel.is_closed:
            await channel.close()
    raise AssertionError("the broker allowed it")


async def allowed(operation: Callable[[AbstractChannel], Awaitable[object]], connection: AbstractConnection) -> None:
    channel = await connection.channel(publisher_confirms=True)
    try:
        await operation(channel)
        await channel.declare_exchange("saga.events", passive=True)
    finally:
        await channel.close()


def publish(exchange: str, routing_key: str, body: bytes = b"{}") -> Callable[[AbstractChannel], Awaitable[object]]:
    async def run(channel: AbstractChannel) -> object:
        target = channel.default_exchange if exchange == "" else await channel.get_exchange(exchange, ensure=False)
        return await target.publish(aio_pika.Message(body, message_id=uuid.uuid4().hex), routing_key, timeout=5)

    return run


def consume(queue: str) -> Callable[[AbstractChannel], Awaitable[object]]:
    async def run(channel: AbstractChannel) -> object:
        declared = await channel.get_queue(queue, ensure=False)

        async def give_back(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.nack(requeue=True)

        tag = await declared.consume(give_back)
        return await declared.cancel(tag)

    return run


@pytest.fixture
async def connections(broker: Broker) -> AsyncIterator[dict[str, AbstractConnection]]:
    opened = {service: await broker.connect(service) for service in SERVICES}
    try:
        yield opened
    finally:
        for connection in opened.values():
            await connection.close()


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_cannot_publish_the_routing_keys_the_other_owns(broker, connections, service):
    for routing_key in BINDINGS[OTHER[service]] + BINDINGS[service]:
        if routing_key in PUBLISHES[service]:
            continue
        before = await broker.depth(f"{service}.events")
        error = await refused(publish("saga.events", routing_key), connections[service])
        assert f"access to topic '{routing_key}'" in error, error
        assert await broker.depth(f"{service}.events") == before


async def test_a_forged_order_created_never_reaches_the_customer_service(broker, connections):
    forged = json.dumps({"type": "order.created", "order_id": 999_999, "customer_id": 1, "amount": "50.00"}).encode()
    queue = f"{CUSTOMER_SERVICE}.events"
    before = await broker.depth(queue)
    # From the customer service's own user: through the saga's exchange or the default exchange. (Its own
    # requeue exchange reaches only its delay and dead-letter queues: see docs/security.md.)
    for route in (publish("saga.events", "order.created", forged), publish("", queue, forged)):
        await refused(route, connections[CUSTOMER_SERVICE])
    # From the order service's user, straight into the customer's queues.
    for route in (
        publish("", queue, forged),
        publish(f"{CUSTOMER_SERVICE}.requeue", f"{CUSTOMER_SERVICE}.retry.500ms", forged),
    ):
        await refused(route, connections[ORDER_SERVICE])
    assert await broker.depth(queue) == before


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_cannot_reach_the_other_services_queues_nor_declare_anything(broker, connections, service):
    other = OTHER[service]
    connection = connections[service]
    assert "access to queue" in await refused(consume(f"{other}.events"), connection)
    assert "access to queue" in await refused(consume(f"{other}.dead-letter"), connection)
    assert "access to exchange" in await refused(publish(f"{other}.requeue", f"{other}.dead-letter"), connection)
    assert "amq.default" in await refused(publish("", f"{other}.events"), connection)
    assert "amq.default" in await refused(publish("", f"{service}.events"), connection)
    # Nothing to configure: not another service's queue, not even one named as its own.
    for name in (f"{other}.events", f"{service}.events", f"{service}.extra"):
        assert "access to queue" in await refused(lambda ch, n=name: ch.declare_queue(n, durable=True), connection)
    assert "access to queue" in await refused(lambda ch: ch.queue_delete(f"{other}.events"), connection)
    assert "access to queue" in await refused(lambda ch: ch.queue_delete(f"{service}.events"), connection)
    assert "access to exchange" in await refused(
        lambda ch: ch.declare_exchange("saga.events", aio_pika.ExchangeType.TOPIC, durable=True), connection
    )

    async def bind(channel: AbstractChannel) -> None:
        queue = await channel.declare_queue(f"{service}.events", passive=True)
        await queue.bind("saga.events", BINDINGS[other][0])

    assert "access to" in await refused(bind, connection)


@pytest.mark.parametrize("service", SERVICES)
async def test_what_a_service_needs_is_allowed(broker, connections, service):
    other = OTHER[service]
    connection = connections[service]
    before = await broker.depth(f"{other}.events")
    await allowed(publish("saga.events", PUBLISHES[service][0]), connection)
    assert await broker.depth(f"{other}.events") == before + 1
    retry = f"{service}.retry.10000ms"
    before_retry = await broker.depth(retry)
    await allowed(publish(f"{service}.requeue", retry), connection)
    assert await broker.depth(retry) == before_retry + 1
    await allowed(consume(f"{service}.events"), connection)
    # Passive declares need no permission: the services check the topology this way.
    await allowed(lambda ch: ch.declare_queue(f"{service}.dead-letter", passive=True), connection)
    # Clean up what this test published, as the broker's guest.
    admin = await broker.admin()
    try:
        channel = await admin.channel()
        for queue in (f"{other}.events", retry):
            await (await channel.declare_queue(queue, passive=True)).purge()
    finally:
        await admin.close()


async def cc_publish(broker: Broker, event: OrderCreated, header: str) -> str:
    """Publish `event` as the customer service's user, on a routing key it owns, with a `header` (CC or BCC)
    naming the event's own routing key: 'refused' when the broker refuses it, 'routed' when it took it."""
    connection = await broker.connect(CUSTOMER_SERVICE)
    try:
        message = aio_pika.Message(
            event.to_json(),
            message_id=str(event.message_id),
            type=event.routing_key,
            headers={header: [event.routing_key]},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await allowed(publish_message("saga.events", PUBLISHES[CUSTOMER_SERVICE][0], message), connection)
        except aiormq.exceptions.ChannelAccessRefused:
            return "refused"
        return "routed"
    finally:
        await connection.close()


def publish_message(
    exchange: str, routing_key: str, message: aio_pika.Message
) -> Callable[[AbstractChannel], Awaitable[object]]:
    async def run(channel: AbstractChannel) -> object:
        target = await channel.get_exchange(exchange, ensure=False)
        return await target.publish(message, routing_key, timeout=5)

    return run


async def dead_letter_of(broker: Broker, message_id: str) -> aio_pika.abc.AbstractIncomingMessage | None:
    """The customer service's dead letter with this id, taken out of the queue (the others are given back)."""
    connection = await broker.admin()
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(f"{CUSTOMER_SERVICE}.dead-letter", ensure=False)
        found = None
        while (message := await queue.get(no_ack=False, fail=False, timeout=5)) is not None:
            if message.message_id == message_id:
                await message.ack()
                found = message
        return found  # closing the channel gives back every message not acked
    finally:
        await connection.close()


async def test_the_saga_runs_with_the_least_privileged_users(broker):
    databases = Databases.fresh("sagaperm").create()
    # As the chart runs them: the topology from the definitions, and each service checks that the owner of an
    # event's type published it.
    env = {"SAGA_BROKER_TOPOLOGY": "passive", "SAGA_BROKER_PUBLISHERS": json.dumps(broker.users)}
    customer = ServiceProcess("customer_service", databases.customer_url, broker.url(CUSTOMER_SERVICE), extra_env=env)
    order = ServiceProcess("order_service", databases.order_url, broker.url(ORDER_SERVICE), extra_env=env)
    try:
        # The order service first: with the topology in the definitions, no order.created is lost meanwhile.
        order.start()
        async with httpx.AsyncClient(timeout=20) as http:
            customer.start()
            created = await http.post(f"{customer.base_url}/customers", json={"name": "least", "balance": "100.00"})
            customer_id = created.json()["id"]
            placed = await http.post(
                f"{order.base_url}/orders/",
                json={"customer_id": customer_id, "product_id": 1, "quantity": 1, "total_price": "40.00"},
            )
            order_id = placed.json()["id"]
            done = (await http.get(f"{order.base_url}/orders/{order_id}?wait=20")).json()
            assert done["status"] == "fulfilled", done
            assert (await http.post(f"{order.base_url}/orders/{order_id}/cancel")).status_code == 202
            await eventually(
                lambda: http.get(f"{order.base_url}/orders/{order_id}"),
                until=lambda answer: answer.json()["status"] == "cancelled",
                interval=0.1,
                what="the cancelled order compensated",
            )
            balance = (await http.get(f"{customer.base_url}/customers/{customer_id}")).json()["balance"]
            assert Decimal(balance) == Decimal("100.00")

            # A message the customer service cannot read goes to its dead-letter queue through its own requeue
            # exchange (published here by the test's admin: no service user may publish it).
            admin = await broker.admin()
            try:
                channel = await admin.channel(publisher_confirms=True)
                exchange = await channel.get_exchange("saga.events", ensure=False)
                await exchange.publish(aio_pika.Message(b"not json", message_id=uuid.uuid4().hex), "order.created")
            finally:
                await admin.close()
            await eventually(
                lambda: broker.depth(f"{CUSTOMER_SERVICE}.dead-letter"),
                until=lambda depth: depth == 1,
                interval=0.1,
                what="the unreadable message dead-lettered",
            )

            # The CC/BCC bypass: the customer service's user publishes a routing key it owns with a CC (or BCC)
            # header naming order.created. A fixed broker refuses it; one without the fix (RabbitMQ 3.x, early
            # 4.0) routes it to the customer service, whose consumer dead-letters it for its publisher. Either
            # way the forged order takes no credit.
            for number, header in enumerate(("CC", "BCC")):
                forged = OrderCreated(order_id=999_990 + number, customer_id=customer_id, amount=Decimal("60.00"))
                dead_before = await broker.depth(f"{CUSTOMER_SERVICE}.dead-letter")
                if await cc_publish(broker, forged, header) == "refused":
                    continue
                letter = await eventually(
                    lambda f=forged: dead_letter_of(broker, str(f.message_id)), timeout=10, what="the forged event"
                )
                assert letter.headers[CATEGORY_HEADER] == "wrong_publisher", letter.headers
                assert await broker.depth(f"{CUSTOMER_SERVICE}.dead-letter") == dead_before
            balance = (await http.get(f"{customer.base_url}/customers/{customer_id}")).json()["balance"]
            assert Decimal(balance) == Decimal("100.00"), "a forged order.created took credit"
        assert "ACCESS_REFUSED" not in order.log_text() + customer.log_text()
        # No broker password in the logs (URLs are logged redacted).
        for password in broker.passwords.values():
            assert password not in order.log_text() + customer.log_text()
    finally:
        order.stop()
        customer.stop()
        databases.drop()
