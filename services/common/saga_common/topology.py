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

Every service declares every queue, so a message published before its consumer ever started is kept.
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

    async def declare(self, channel: AbstractChannel) -> None:
        exchange = await channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        for service, routing_keys in BINDINGS.items():
            names = self.queues(service)
            await channel.declare_queue(names.dead_letter, durable=True, arguments=self.dead_letter_arguments())
            work = await channel.declare_queue(names.work, durable=True, arguments=self.work_arguments(service))
            for routing_key in routing_keys:
                await work.bind(exchange, routing_key)
            for delay in self.retry_delays_ms:
                await channel.declare_queue(
                    names.retry(delay), durable=True, arguments=self.retry_arguments(service, delay)
                )
