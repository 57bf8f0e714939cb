"""Direct broker access for tests: publish raw bytes, capture what the services publish, read a queue."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from saga_common.contract.messages import Event
from saga_common.contract.topology import Topology
from saga_dev import asyncapi
from tests.support.waiting import TimedOut, eventually, unchanged_for

EXCHANGE = "saga.events"


def default_topology(**changes: Any) -> Topology:
    """The services' topology at their default settings (as docs/asyncapi.yaml describes it), with a test's changes
    (`retry_delays_ms=(100,)`, `delivery_limit=2`)."""
    return replace(asyncapi.default_topology(), **changes)


class Capture:
    """An exclusive queue bound to the saga exchange: sees every message published with the given keys."""

    def __init__(self, queue: AbstractQueue) -> None:
        self.queue = queue
        self.messages: list[AbstractIncomingMessage] = []

    async def collect(self, count: int, timeout: float = 10) -> list[AbstractIncomingMessage]:
        """Until `count` messages were seen in all (or `timeout`): every message seen so far."""
        self.messages += await take_messages(self.queue, count - len(self.messages), timeout=timeout)
        return self.messages

    async def settle(self, quiet_s: float = 0.5, timeout: float = 30) -> list[AbstractIncomingMessage]:
        """Keep collecting until nothing new arrives for `quiet_s`."""

        await eventually(lambda: _take_ready(self.queue, self.messages), until=unchanged_for(quiet_s),
                         timeout=timeout, interval=0.02, what=f"no new message for {quiet_s}s")  # fmt: skip
        return self.messages


class BrokerTool:
    def __init__(self, connection: aio_pika.abc.AbstractConnection, channel: aio_pika.abc.AbstractChannel) -> None:
        self.connection = connection
        self.channel = channel

    async def publish_event(self, event: Event, **properties: Any) -> None:
        await self.publish_raw(event.to_json(), event.routing_key, message_id=str(event.message_id), **properties)

    async def publish_raw(
        self,
        body: bytes,
        routing_key: str,
        *,
        message_id: str | None = None,
        exchange: str = EXCHANGE,
        **properties: Any,
    ) -> None:
        target = await self.channel.get_exchange(exchange) if exchange else self.channel.default_exchange
        message = aio_pika.Message(
            body,
            message_id=message_id or str(uuid.uuid4()),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            **properties,
        )
        await target.publish(message, routing_key=routing_key, mandatory=True)

    @asynccontextmanager
    async def capture(self, *routing_keys: str) -> AsyncIterator[Capture]:
        queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await self.channel.get_exchange(EXCHANGE)
        for key in routing_keys or ("#",):
            await queue.bind(exchange, key)
        try:
            yield Capture(queue)
        finally:
            await queue.delete(if_unused=False, if_empty=False)

    async def read_queue(self, name: str, *, timeout: float = 5, expect: int = 1) -> list[AbstractIncomingMessage]:
        """Take (and ack) up to `expect` messages from a queue, waiting at most `timeout`."""
        return await take_messages(await self.channel.get_queue(name, ensure=False), expect, timeout=timeout)

    async def queue_depth(self, name: str) -> int:
        return await queue_depth(self.connection, name)


async def take_messages(
    queue: AbstractQueue, count: int, *, timeout: float, ack: bool = True
) -> list[AbstractIncomingMessage]:
    """Up to `count` messages from `queue`, waiting at most `timeout` for them (fewer if they do not come).
    `ack=False` only looks: unacked, they go back to the queue when its channel closes."""
    found: list[AbstractIncomingMessage] = []
    with contextlib.suppress(TimedOut):  # fewer than `count`: the caller says what it missed
        await eventually(lambda: _take_ready(queue, found, up_to=count, ack=ack), until=lambda taken: taken >= count,
                         timeout=timeout, interval=0.02)  # fmt: skip
    return found


async def _take_ready(
    queue: AbstractQueue, into: list[AbstractIncomingMessage], *, up_to: int | None = None, ack: bool = True
) -> int:
    """Move what the queue holds now into `into` (until it holds `up_to`); how many `into` holds."""
    while (up_to is None or len(into) < up_to) and (message := await queue.get(fail=False, no_ack=ack)) is not None:
        into.append(message)
    return len(into)


async def queue_depth(connection: aio_pika.abc.AbstractConnection, name: str) -> int:
    """Messages ready in a queue, on a channel of its own (a passive declare of a missing queue closes it)."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


@asynccontextmanager
async def broker_tool(url: str, topology: Topology | None = None) -> AsyncIterator[BrokerTool]:
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await (topology or default_topology()).declare(channel)
        yield BrokerTool(connection, channel)
    finally:
        await connection.close()
