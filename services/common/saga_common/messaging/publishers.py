"""Who published a delivery, as the broker vouches for it, and whether that was the owner of its type.

RabbitMQ refuses a publish whose AMQP `user_id` property differs from the publishing connection's user, so a
`user_id` is trustworthy; the outbox relay sets it on every event (`Session.user`). The body's `type` is not:
on a broker without the fix for CC/BCC routing headers (RabbitMQ 3.x and early 4.0), a service user can route
an event past its topic permissions. So a consumer holds the publisher against the owner of the event's type
(`topology.PUBLISHES`) and dead-letters what someone else published (`wrong_publisher`).

Only a first delivery, straight from the saga's exchange, is judged by its `user_id`. A retried or dead-lettered
copy is republished by the consumer under its own user and comes back through a delay queue (or `sagactl dlq
replay`, through the default exchange): its original publisher travels in the `x-saga-publisher` header, which
the consumer writes from the first delivery's `user_id` (overwriting whatever the publisher put there). That
header is trusted only on deliveries that did not come from the saga's exchange: the paths that lead there (the
service's own requeue exchange, the default exchange) are writable by the service's own user and an operator
only, never by another service's user (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage

from saga_common.contract.messages import PoisonMessage
from saga_common.contract.topology import BINDINGS, PUBLISHES

PUBLISHER_HEADER = "x-saga-publisher"


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def original_publisher(message: AbstractIncomingMessage, source_exchange: str) -> str:
    """The broker user that first published `message` ('' when unknown)."""
    if message.exchange != source_exchange:
        headers = message.headers or {}
        if PUBLISHER_HEADER in headers:
            return _text(headers[PUBLISHER_HEADER])
    return message.user_id or ""


@dataclass(frozen=True)
class PublisherCheck:
    """The broker user allowed to publish each event type a service consumes."""

    source_exchange: str
    users_by_type: Mapping[str, str]

    @classmethod
    def for_service(cls, service: str, users: Mapping[str, str], source_exchange: str) -> PublisherCheck:
        """`users`: producing service -> its broker user (SAGA_BROKER_PUBLISHERS)."""
        unknown = sorted(set(users) - set(PUBLISHES))
        if unknown:
            raise ValueError(f"SAGA_BROKER_PUBLISHERS names unknown services {unknown}; they are {sorted(PUBLISHES)}")
        owners = {event_type: producer for producer, types in PUBLISHES.items() for event_type in types}
        consumed = BINDINGS[service]
        missing = sorted({owners[event_type] for event_type in consumed} - set(users))
        if missing:
            raise ValueError(f"SAGA_BROKER_PUBLISHERS must name the broker user of {missing} ({service} consumes it)")
        return cls(source_exchange, {event_type: users[owners[event_type]] for event_type in consumed})

    def refusal(self, message: AbstractIncomingMessage, event_type: str) -> PoisonMessage | None:
        """Why `message` (decoded as `event_type`) must not be applied; None when its owner published it."""
        expected = self.users_by_type.get(event_type)
        publisher = original_publisher(message, self.source_exchange)
        if expected is not None and publisher == expected:
            return None
        return PoisonMessage(
            f"{event_type} published by broker user {publisher or '(none)'!r}, not by its owner {expected!r}",
            "wrong_publisher",
        )
