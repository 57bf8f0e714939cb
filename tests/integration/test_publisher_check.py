"""The consumers check who published (saga_common.messaging.publishers), against a real broker and database.

The test's broker user is the machine's guest (one shared user, as in development), so the check is configured
with guest as the order service's publisher: what guest publishes with its `user_id` is the order service's,
what carries no `user_id` (or claims another publisher in a header) is not.
"""

from decimal import Decimal

import aio_pika
import aiormq
import pytest

from customer_service.handlers import on_order_created
from saga_common.contract.messages import OrderCreated
from saga_common.contract.topology import CUSTOMER_SERVICE, ORDER_SERVICE
from saga_common.messaging.consumer import CATEGORY_HEADER, REASON_HEADER
from saga_common.messaging.publishers import PUBLISHER_HEADER, PublisherCheck
from saga_tools.dlq import DeadLetterQueues
from tests.support.broker import broker_tool, default_topology
from tests.support.customer_db import new_customer, reservations_for, wait_for

DEAD_LETTER = f"{CUSTOMER_SERVICE}.dead-letter"
CHECKED = {"broker_publishers": {ORDER_SERVICE: "guest"}}


async def dead_letters(broker, count: int) -> bool:
    return await broker.queue_depth(DEAD_LETTER) == count


async def replay_the_dead_letter(saga_env):
    """`sagactl dlq replay` of the one dead letter there is; the letter as it was read."""
    queues = await DeadLetterQueues.connect([saga_env.broker_url], [CUSTOMER_SERVICE])
    try:
        (letter,) = await queues.read()
        await queues.replay(letter)
        return letter
    finally:
        await queues.close()


async def test_an_event_without_its_owners_user_id_is_dead_lettered_and_the_owners_is_applied(saga_env, runtimes):
    customer = await new_customer(saga_env, "100.00")
    unsigned = OrderCreated(order_id=501, customer_id=customer, amount=Decimal("10.00"))
    # A header naming the owner is no proof on a first delivery: only the broker-validated user_id is.
    claims_owner = OrderCreated(order_id=502, customer_id=customer, amount=Decimal("10.00"))
    owned = OrderCreated(order_id=503, customer_id=customer, amount=Decimal("10.00"))
    async with broker_tool(saga_env.broker_url) as broker, runtimes(CUSTOMER_SERVICE, **CHECKED):
        await broker.publish_event(unsigned)
        await broker.publish_event(claims_owner, headers={PUBLISHER_HEADER: "guest"})
        await broker.publish_event(owned, user_id="guest")
        await wait_for(lambda: reservations_for(saga_env, 503))
        dead = await broker.read_queue(DEAD_LETTER, expect=2)
    assert sorted(m.message_id for m in dead) == sorted([str(unsigned.message_id), str(claims_owner.message_id)])
    for letter in dead:
        assert letter.headers[CATEGORY_HEADER] == "wrong_publisher"
        assert "not by its owner 'guest'" in letter.headers[REASON_HEADER]
        assert letter.headers[PUBLISHER_HEADER] == "", "the forged header must not survive into the dead letter"
    assert await reservations_for(saga_env, 501) == [] and await reservations_for(saga_env, 502) == []


async def test_the_broker_refuses_a_user_id_that_is_not_the_connections_user(saga_env):
    async with broker_tool(saga_env.broker_url) as broker:
        channel = await broker.connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("saga.events")
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="user_id"):
            await exchange.publish(aio_pika.Message(b"{}", user_id=ORDER_SERVICE), "order.created", timeout=5)
            await channel.declare_exchange("saga.events", passive=True)  # a round trip surfaces a channel error


async def test_a_retried_copy_and_a_replayed_dead_letter_of_the_owner_still_pass(saga_env, runtimes):
    customer = await new_customer(saga_env, "100.00")
    failures = {"left": 1}

    async def flaky(tx, event):
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("downstream hiccup")
        await on_order_created(tx, event)

    async def broken(tx, event):
        raise RuntimeError("a bug, fixed before the replay")

    retried = OrderCreated(order_id=511, customer_id=customer, amount=Decimal("10.00"))
    replayed = OrderCreated(order_id=512, customer_id=customer, amount=Decimal("10.00"))
    settings = CHECKED | {"retry_delays_ms": [100], "max_attempts": 2}
    async with broker_tool(saga_env.broker_url, default_topology(retry_delays_ms=(100,))) as broker:
        # Back through a delay queue (exchange "", republished under the consumer's user): still the owner's.
        async with runtimes(CUSTOMER_SERVICE, handlers={"order.created": flaky}, **settings):
            await broker.publish_event(retried, user_id="guest")
            await wait_for(lambda: reservations_for(saga_env, 511))
        # Dead-lettered after its attempts, then replayed by sagactl once the handler is fixed.
        async with runtimes(CUSTOMER_SERVICE, handlers={"order.created": broken}, **settings):
            await broker.publish_event(replayed, user_id="guest")
            await wait_for(lambda: dead_letters(broker, 1))
        async with runtimes(CUSTOMER_SERVICE, **settings):
            letter = await replay_the_dead_letter(saga_env)
            assert letter.category == "max_attempts"
            assert letter.headers[PUBLISHER_HEADER] == "guest"
            await wait_for(lambda: reservations_for(saga_env, 512))
        assert await broker.queue_depth(DEAD_LETTER) == 0


async def test_a_dead_letter_of_a_wrong_publisher_stays_refused_when_replayed(saga_env, runtimes):
    customer = await new_customer(saga_env, "100.00")
    forged = OrderCreated(order_id=521, customer_id=customer, amount=Decimal("10.00"))
    async with broker_tool(saga_env.broker_url) as broker, runtimes(CUSTOMER_SERVICE, **CHECKED):
        await broker.publish_event(forged)
        await wait_for(lambda: dead_letters(broker, 1))
        letter = await replay_the_dead_letter(saga_env)
        assert letter.category == "wrong_publisher"
        (again,) = await broker.read_queue(DEAD_LETTER, expect=1, timeout=10)
    assert again.message_id == str(forged.message_id)
    assert again.headers[CATEGORY_HEADER] == "wrong_publisher"
    assert await reservations_for(saga_env, 521) == []


async def test_the_relay_names_its_broker_user_on_every_event(saga_env, runtimes):
    async with (
        broker_tool(saga_env.broker_url) as broker,
        broker.capture("order.created") as published,
        runtimes(ORDER_SERVICE, consume=False) as order,
    ):
        async with order.db.unit_of_work() as uow:
            uow.emit(OrderCreated(order_id=531, customer_id=1, amount=Decimal("1.00")))
        (message,) = await published.collect(1)
    assert message.user_id == "guest"


def test_the_check_needs_the_publisher_of_every_type_the_service_consumes():
    check = PublisherCheck.for_service(CUSTOMER_SERVICE, {ORDER_SERVICE: "order"}, "saga.events")
    assert dict(check.users_by_type) == {"order.created": "order", "order.cancelled": "order"}
    with pytest.raises(ValueError, match="order-service"):
        PublisherCheck.for_service(CUSTOMER_SERVICE, {CUSTOMER_SERVICE: "customer"}, "saga.events")
    with pytest.raises(ValueError, match="unknown services"):
        PublisherCheck.for_service(ORDER_SERVICE, {"billing-service": "x", CUSTOMER_SERVICE: "c"}, "saga.events")
