"""One supervised AMQP connection that fails over between the cluster's nodes.

aio-pika's robust connection reconnects to a single URL; a cluster needs a rotation over all node URLs.
`Broker.run()` connects to the next URL, declares the topology, hands the channels to whoever subscribed
(`on_connected`), waits until the connection or a channel dies, and starts again with back-off.

Two channels per connection: one with publisher confirms for publishing (the outbox relay, retries and
dead-letters) and one for consuming, so a slow consumer never delays a confirm.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from yarl import URL

from saga_common.contract.topology import Topology
from saga_common.observability import metrics
from saga_common.settings import redact_url
from saga_common.timeouts import wait_at_most

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """Raised by publish when no connection is up; the caller keeps its data and tries again later."""


@dataclass
class Session:
    """The channels of one live connection; replaced as a whole on reconnect."""

    connection: aio_pika.abc.AbstractConnection
    publish_channel: AbstractChannel
    consume_channel: AbstractChannel
    exchange: AbstractExchange
    requeue_exchange: AbstractExchange
    url: str
    # The broker user of this connection, which every publish names as its `user_id` (the broker checks it).
    user: str = "guest"


Subscriber = Callable[[Session], Awaitable[None]]


class Broker:
    def __init__(
        self,
        urls: list[str],
        topology: Topology,
        *,
        prefetch: int,
        heartbeat_s: int = 10,
        max_backoff_s: float = 5.0,
        connection_name: str = "saga",
        service: str | None = None,
        declare_topology: bool = True,
    ) -> None:
        if not urls:
            raise ValueError("at least one broker URL is needed")
        self._urls = urls
        self._topology = topology
        self._prefetch = prefetch
        self._heartbeat_s = heartbeat_s
        self._max_backoff_s = max_backoff_s
        self._connection_name = connection_name
        self._service = service or connection_name
        self._declare_topology = declare_topology
        self._subscribers: list[Subscriber] = []
        self._session: Session | None = None
        self._stopping = False

    def on_connected(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    @property
    def session(self) -> Session:
        if self._session is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return self._session

    @property
    def current_session(self) -> Session | None:
        return self._session

    @property
    def is_connected(self) -> bool:
        return self._session is not None

    async def run(self) -> None:
        backoff = 0.1
        for url in itertools.cycle(self._urls):
            if self._stopping:
                return
            lost = asyncio.Event()
            try:
                session = await self._open(url, lost)
            except Exception as exc:  # noqa: BLE001 - any failure to connect means: try the next node
                log.warning("cannot reach RabbitMQ at %s: %s", redact_url(url), exc or type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            backoff = 0.1
            self._session = session
            metrics.BROKER_CONNECTED.set(1)
            log.info("connected to RabbitMQ at %s", redact_url(url))
            try:
                for subscriber in self._subscribers:
                    await subscriber(session)
                await lost.wait()
            except Exception:
                log.exception("broker session failed")
            finally:
                self._session = None
                metrics.BROKER_CONNECTED.set(0)
                await _close_quietly(session.connection)
            if not self._stopping:
                metrics.BROKER_RECONNECTS.inc()
                log.warning("lost the RabbitMQ connection to %s; reconnecting", redact_url(url))

    async def _open(self, url: str, lost: asyncio.Event) -> Session:
        # aio_pika.connect() would drop the Connection of a failed attempt unclosed (its __del__ then schedules
        # the close on whatever loop is current); built here, a failed attempt is closed like any other.
        connection = aio_pika.Connection(URL(url).update_query(heartbeat=self._heartbeat_s, name=self._connection_name))
        try:
            await connection.connect(timeout=5)

            def mark_lost(*_: object) -> None:
                lost.set()

            connection.close_callbacks.add(mark_lost)
            publish_channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            consume_channel = await connection.channel(publisher_confirms=False)
            await consume_channel.set_qos(prefetch_count=self._prefetch)
            # A channel error (e.g. a queue declared with other arguments) kills only the channel: treat it
            # as a lost connection so everything is rebuilt in a known state.
            publish_channel.close_callbacks.add(mark_lost)
            consume_channel.close_callbacks.add(mark_lost)
            if self._declare_topology:
                await self._topology.declare(publish_channel)
            else:
                await self._topology.check(publish_channel, self._service)
            exchange = await publish_channel.get_exchange(self._topology.exchange, ensure=False)
            requeue = await publish_channel.get_exchange(
                self._topology.queues(self._service).requeue_exchange, ensure=False
            )
            return Session(
                connection=connection,
                publish_channel=publish_channel,
                consume_channel=consume_channel,
                exchange=exchange,
                requeue_exchange=requeue,
                url=url,
                user=broker_user(url),
            )
        except BaseException:
            await _close_quietly(connection)
            raise

    async def renew(self, session: Session | None, reason: str) -> None:
        """Drop `session` if it is still the current one; `run()` reconnects with fresh channels.

        For a channel whose publishes the broker keeps nacking: RabbitMQ 3.10 pins a quorum queue's dead leader
        in a channel that first published to it during the election, and nacks every later publish on that
        channel until the old leader returns; a fresh channel publishes fine (seen in the chaos tier)."""
        if session is None or self._session is not session:
            return
        log.warning("renewing the RabbitMQ session to %s: %s", redact_url(session.url), reason)
        try:
            # Its close callback marks the session lost: the whole session is rebuilt in a known state.
            await wait_at_most(session.publish_channel.close(), 5)
        except Exception:  # noqa: BLE001 - a channel that cannot even close: the connection goes too
            await _close_quietly(session.connection)

    async def close(self) -> None:
        self._stopping = True
        session, self._session = self._session, None
        if session is not None:
            await _close_quietly(session.connection)


def broker_user(url: str) -> str:
    """The user an AMQP URL logs in as (aio-pika's default, guest, when it names none)."""
    return URL(url).user or "guest"


async def _close_quietly(connection: aio_pika.abc.AbstractConnection | AbstractRobustConnection) -> None:
    try:
        await wait_at_most(connection.close(), 5)
    except Exception:  # noqa: BLE001 - closing a dead connection may fail in many ways; nothing to do
        pass
