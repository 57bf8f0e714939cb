"""The broker topology of the whole saga, declared idempotently by whichever service starts first.

    exchange saga.events (topic, durable)
      order.created, order.cancelled                    -> queue customer-service.events
      order.fulfilled, order.rejected, credit.released  -> queue order-service.events

Per consuming service, all quorum queues by default:
    <service>.events         the work queue; redelivered too often (a message that crashes its consumer)
                             it is dead-lettered by the broker itself (x-delivery-limit)
    <service>.retry.<N>ms    delay queues: a failed message waits there (x-message-ttl) and is
                             dead-lettered back to <service>.events through the default exchange
    <service>.dead-letter    what can never be processed, with the reason in its headers

    <service>.requeue        a direct exchange of the service's own, bound to its delay queues and its
                             dead-letter queue: the consumer moves a message there (never through the
                             default exchange, which reaches every queue of the vhost)

In development every service declares everything (`SAGA_BROKER_TOPOLOGY=declare`), so a message published
before its consumer ever started is kept. In a cluster the topology is in the broker's definitions
(`definitions()`, rendered by the chart), each service's user holds only `permissions()` (no configure
right at all, writes only to `saga.events` with the routing keys its service owns and to its own requeue
exchange, reads only its own work queue), and the services check what they use with passive declares
(`SAGA_BROKER_TOPOLOGY=passive`).
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel

ORDER_SERVICE = "order-service"
CUSTOMER_SERVICE = "customer-service"

BINDINGS: dict[str, tuple[str, ...]] = {
    CUSTOMER_SERVICE: ("order.created", "order.cancelled"),
    ORDER_SERVICE: ("order.fulfilled", "order.rejected", "credit.released"),
}
# Who may publish what: each service owns the events it emits, which are the ones the other consumes.
PUBLISHES: dict[str, tuple[str, ...]] = {
    ORDER_SERVICE: BINDINGS[CUSTOMER_SERVICE],
    CUSTOMER_SERVICE: BINDINGS[ORDER_SERVICE],
}


@dataclass(frozen=True)
class ServiceQueues:
    service: str
    retry_delays_ms: tuple[int, ...]

    @property
    def work(self) -> str:
        return f"{self.service}.events"

    @property
    def dead_letter(self) -> str:
        return f"{self.service}.dead-letter"

    @property
    def requeue_exchange(self) -> str:
        return f"{self.service}.requeue"

    @property
    def parked(self) -> list[str]:
        """The queues the consumer moves messages to, through its requeue exchange."""
        return [*(self.retry(delay) for delay in self.retry_delays_ms), self.dead_letter]

    def retry(self, delay_ms: int) -> str:
        return f"{self.service}.retry.{delay_ms}ms"

    def retry_for_attempt(self, attempt: int) -> str:
        """Attempt 1 is the first retry; past the last tier the last delay repeats."""
        delays = self.retry_delays_ms
        return self.retry(delays[min(attempt, len(delays)) - 1])


@dataclass(frozen=True)
class Topology:
    exchange: str
    queue_type: str
    delivery_limit: int
    retry_delays_ms: tuple[int, ...]

    def queues(self, service: str) -> ServiceQueues:
        return ServiceQueues(service, self.retry_delays_ms)

    def _queue_arguments(self, **extra: object) -> dict[str, object]:
        arguments: dict[str, object] = {"x-queue-type": self.queue_type}
        if self.queue_type == "quorum":
            # At-least-once dead-lettering: a dead-lettered message is not dropped if its target is busy.
            arguments |= {"x-overflow": "reject-publish", "x-dead-letter-strategy": "at-least-once"}
        return arguments | extra

    def dead_letter_arguments(self) -> dict[str, object]:
        return self._queue_arguments()

    def work_arguments(self, service: str) -> dict[str, object]:
        arguments = self._queue_arguments(
            **{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.queues(service).dead_letter}
        )
        if self.queue_type == "quorum":
            arguments["x-delivery-limit"] = self.delivery_limit
        return arguments

    def retry_arguments(self, service: str, delay_ms: int | str) -> dict[str, object]:
        return self._queue_arguments(
            **{
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.queues(service).work,
            }
        )

    def queue_arguments(self, service: str) -> dict[str, dict[str, object]]:
        """Every queue of `service` with its arguments, as declared and as the broker's definitions carry them."""
        names = self.queues(service)
        queues = {names.dead_letter: self.dead_letter_arguments(), names.work: self.work_arguments(service)}
        for delay in self.retry_delays_ms:
            queues[names.retry(delay)] = self.retry_arguments(service, delay)
        return queues

    async def declare(self, channel: AbstractChannel) -> None:
        """Everything, for every service (development: a user that may configure it all)."""
        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        for service, routing_keys in BINDINGS.items():
            names = self.queues(service)
            requeue = await channel.declare_exchange(names.requeue_exchange, aio_pika.ExchangeType.DIRECT, durable=True)
            declared = {
                name: await channel.declare_queue(name, durable=True, arguments=arguments)
                for name, arguments in self.queue_arguments(service).items()
            }
            for routing_key in routing_keys:
                await declared[names.work].bind(exchange, routing_key)
            for name in names.parked:
                await declared[name].bind(requeue, name)

    async def check(self, channel: AbstractChannel, service: str) -> None:
        """What `service` uses exists (passive declares, which need no permission): the topology comes from
        the broker's definitions and this service may not declare anything."""
        names = self.queues(service)
        await channel.declare_exchange(self.exchange, passive=True)
        await channel.declare_exchange(names.requeue_exchange, passive=True)
        for name in self.queue_arguments(service):
            await channel.declare_queue(name, passive=True)

    def definitions(self, vhost: str = "/") -> dict[str, list[dict[str, object]]]:
        """The whole topology in RabbitMQ's definitions format (the chart renders the same)."""
        exchanges: list[dict[str, object]] = [_exchange(self.exchange, "topic", vhost)]
        queues: list[dict[str, object]] = []
        bindings: list[dict[str, object]] = []
        for service, routing_keys in BINDINGS.items():
            names = self.queues(service)
            exchanges.append(_exchange(names.requeue_exchange, "direct", vhost))
            for name, arguments in self.queue_arguments(service).items():
                queues.append(
                    {"name": name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": arguments}
                )
            bindings += [_binding(self.exchange, names.work, key, vhost) for key in routing_keys]
            bindings += [_binding(names.requeue_exchange, name, name, vhost) for name in names.parked]
        return {"exchanges": exchanges, "queues": queues, "bindings": bindings}

    def permissions(self, service: str, user: str, vhost: str = "/") -> tuple[dict[str, str], dict[str, str]]:
        """The least `service`'s broker user needs with the topology in the definitions: (permissions,
        topic permissions)."""
        names = self.queues(service)
        permission = {
            "user": user,
            "vhost": vhost,
            "configure": "^$",
            "write": f"^({_re(self.exchange)}|{_re(names.requeue_exchange)})$",
            "read": f"^{_re(names.work)}$",
        }
        topic = {
            "user": user,
            "vhost": vhost,
            "exchange": self.exchange,
            "write": "^(" + "|".join(_re(key) for key in PUBLISHES[service]) + ")$",
            "read": "^$",
        }
        return permission, topic


def _re(name: str) -> str:
    return name.replace(".", "\\.")


def _exchange(name: str, kind: str, vhost: str) -> dict[str, object]:
    return {
        "name": name,
        "vhost": vhost,
        "type": kind,
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    }


def _binding(source: str, queue: str, routing_key: str, vhost: str) -> dict[str, object]:
    return {
        "source": source,
        "vhost": vhost,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": routing_key,
        "arguments": {},
    }
