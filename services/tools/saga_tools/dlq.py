"""Dead-letter queues: read them without losing anything, replay after a fix, purge on purpose.

Reading: every message is taken unacknowledged, and the channel is closed at the end, which gives them all
back to the queue; only a replayed message is acknowledged, and only after the broker confirmed its copy
in the service's work queue. A replay that dies half-way therefore duplicates (deduplicated by the inbox),
never loses.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from saga_common.contract.topology import BINDINGS, ServiceQueues
from saga_common.messaging.consumer import (
    ATTEMPT_HEADER,
    CATEGORY_HEADER,
    DEAD_LETTERED_AT_HEADER,
    REASON_HEADER,
    ROUTING_KEY_HEADER,
    SOURCE_QUEUE_HEADER,
    copy_of,
)

MAX_READ = 10_000  # a dead-letter queue longer than this is a fire; read it in parts after a purge or replay
REPLAYED_AT_HEADER = "x-saga-replayed-at"
# How many times this message was sent back from a dead-letter queue; kept through retries and dead-lettering
# (the consumer copies every header), so a message that fails again and again can be refused.
REPLAYS_HEADER = "x-saga-replays"
_DROPPED_ON_REPLAY = {
    ATTEMPT_HEADER,
    CATEGORY_HEADER,
    DEAD_LETTERED_AT_HEADER,
    REASON_HEADER,
    SOURCE_QUEUE_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-delivery-count",
}


@dataclass
class DeadLetter:
    service: str
    queue: str
    position: int
    message_id: str | None
    type: str | None
    order_id: str | None
    routing_key: str | None
    reason: str
    category: str
    dead_lettered_at: str | None
    attempts: int | None
    sent_at: datetime | None
    headers: dict[str, Any]
    body: bytes

    @property
    def replays(self) -> int:
        try:
            return int(_plain(self.headers.get(REPLAYS_HEADER, 0)) or 0)
        except ValueError:
            return 0

    @property
    def dead_lettered(self) -> datetime | None:
        """When it reached the dead-letter queue: our header, else the broker's own record (x-death)."""
        if self.dead_lettered_at:
            try:
                return datetime.fromisoformat(self.dead_lettered_at)
            except ValueError:
                pass
        deaths = self.headers.get("x-death") or []
        at = deaths[0].get("time") if deaths else None
        return at.replace(tzinfo=at.tzinfo or UTC) if isinstance(at, datetime) else None

    @property
    def key(self) -> str:
        """How a user names it: its message id, or its position when it has none."""
        return self.message_id or f"#{self.position}"

    def summary(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "id": self.key,
            "type": self.type,
            "order_id": self.order_id,
            "category": self.category,
            "reason": self.reason,
            "dead_lettered_at": self.dead_lettered_at,
            "attempts": self.attempts,
            "replays": self.replays,
        }

    def details(self) -> dict[str, Any]:
        try:
            body: Any = json.loads(self.body)
        except ValueError:
            body = self.body[:2000].decode(errors="replace") + (" ..." if len(self.body) > 2000 else "")
        return self.summary() | {
            "queue": self.queue,
            "routing_key": self.routing_key,
            "sent_at": self.sent_at.isoformat() if self.sent_at else None,
            "size_bytes": len(self.body),
            "headers": {k: _plain(v) for k, v in self.headers.items()},
            "body": body,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _why(headers: dict[str, Any]) -> tuple[str, str]:
    if REASON_HEADER in headers:
        return str(_plain(headers[REASON_HEADER])), str(_plain(headers.get(CATEGORY_HEADER, "unknown")))
    deaths = headers.get("x-death") or []
    if deaths:
        death = deaths[0]
        reason = _plain(death.get("reason"))
        if reason == "delivery_limit":
            return (
                f"redelivered {death.get('count', '?')} times without an ack: it crashed or stalled its consumer",
                "delivery_limit",
            )
        return f"dead-lettered by the broker ({reason}) from {_plain(death.get('queue'))}", str(reason)
    return "no reason recorded", "unknown"


def to_dead_letter(service: str, queue: str, position: int, message: AbstractIncomingMessage) -> DeadLetter:
    headers = dict(message.headers or {})
    reason, category = _why(headers)
    attempts = headers.get(ATTEMPT_HEADER)
    return DeadLetter(
        service=service,
        queue=queue,
        position=position,
        message_id=message.message_id,
        type=message.type,
        order_id=message.correlation_id,
        routing_key=str(_plain(headers.get(ROUTING_KEY_HEADER) or message.routing_key or "")) or None,
        reason=reason,
        category=category,
        dead_lettered_at=_plain(headers.get(DEAD_LETTERED_AT_HEADER)),
        attempts=int(attempts) if attempts is not None else None,
        sent_at=message.timestamp,
        headers=headers,
        body=message.body,
    )


async def browse(channel: AbstractChannel, queue_name: str, limit: int = MAX_READ) -> list[AbstractIncomingMessage]:
    """Every message of a queue (up to `limit`), taken unacknowledged: closing `channel` gives them all back."""
    queue = await channel.get_queue(queue_name, ensure=True)
    messages = []
    while len(messages) < limit:
        message = await queue.get(no_ack=False, fail=False, timeout=5)
        if message is None:
            break
        messages.append(message)
    return messages


class DeadLetterQueues:
    """An open connection to the broker for one sagactl command."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection, services: list[str]) -> None:
        self._connection = connection
        self.services = services
        self._held: dict[str, tuple[AbstractChannel, dict[str, AbstractIncomingMessage]]] = {}

    @classmethod
    async def connect(cls, broker_urls: list[str], services: list[str]) -> DeadLetterQueues:
        unknown = set(services) - set(BINDINGS)
        if unknown:
            raise ValueError(f"unknown service {sorted(unknown)}; services are {sorted(BINDINGS)}")
        errors = []
        for url in broker_urls:
            try:
                return cls(await aio_pika.connect(url, timeout=5), services)
            except Exception as exc:  # noqa: BLE001 - try the next node, report all
                errors.append(f"{exc or type(exc).__name__}")
        raise ConnectionError("; ".join(errors))

    async def close(self) -> None:
        await self._connection.close()  # unacknowledged messages go back to their queue

    async def read(self) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        for service in self.services:
            queue_name = ServiceQueues(service, ()).dead_letter
            channel = await self._connection.channel(publisher_confirms=False)
            held: dict[str, AbstractIncomingMessage] = {}
            for position, message in enumerate(await browse(channel, queue_name), start=1):
                letter = to_dead_letter(service, queue_name, position, message)
                held[letter.key] = message
                letters.append(letter)
            self._held[service] = (channel, held)
        return letters

    async def replay(self, letter: DeadLetter, replayed_at: datetime | None = None) -> None:
        """Send one back to its service's work queue; acknowledge it once the copy is confirmed."""
        _, held = self._held[letter.service]
        original = held[letter.key]
        headers = {k: v for k, v in letter.headers.items() if k not in _DROPPED_ON_REPLAY}
        if letter.routing_key:
            headers[ROUTING_KEY_HEADER] = letter.routing_key
        headers[REPLAYED_AT_HEADER] = (replayed_at or datetime.now(UTC)).isoformat()
        headers[REPLAYS_HEADER] = letter.replays + 1
        publisher = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        try:
            await publisher.default_exchange.publish(
                copy_of(original, headers),
                routing_key=ServiceQueues(letter.service, ()).work,
                mandatory=True,
                timeout=10,
            )
        finally:
            await publisher.close()
        await original.ack()

    async def replay_paced(self, letters: list[DeadLetter], *, rate: float | None, replayed_at: datetime) -> None:
        """Replay in queue order, at most `rate` a second: thousands at once would flood the consumer."""
        started = time.monotonic()
        for number, letter in enumerate(letters):
            if rate and number:
                await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
            await self.replay(letter, replayed_at)

    async def depths(self) -> dict[str, int]:
        counts = {}
        for service in self.services:
            channel = await self._connection.channel(publisher_confirms=False)
            try:
                queue = await channel.declare_queue(ServiceQueues(service, ()).dead_letter, passive=True)
                counts[service] = int(queue.declaration_result.message_count or 0)
            finally:
                await channel.close()
        return counts

    async def purge(self, service: str) -> int:
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            queue = await channel.get_queue(ServiceQueues(service, ()).dead_letter, ensure=True)
            result = await queue.purge()
            return int(result.message_count or 0)
        finally:
            await channel.close()
