"""What `sagactl why` reads about one order, into `why.Facts`: both databases, the broker and both services'
readiness, each asked at the same time and each allowed to fail on its own (a failure is a fact too).

Nothing is changed anywhere: the delay and dead-letter queues are browsed by taking their messages
unacknowledged and closing the channel, which gives every one of them back (as `sagactl dlq list` does);
the work queues are only counted (a passive declare), never read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import httpx

from saga_common.contract.topology import BINDINGS, CUSTOMER_SERVICE, ORDER_SERVICE, ServiceQueues
from saga_common.messaging.consumer import ATTEMPT_HEADER
from saga_common.persistence.db import CONNECT_TIMEOUT_S
from saga_common.redaction import redact
from saga_common.settings import redact_url
from saga_tools.dlq import browse, to_dead_letter
from saga_tools.why import Facts, Message, Order, Parked, QueueState, Readiness, Reservation

READY_TIMEOUT_S = 3.0  # a service that does not answer its readiness probe within this is "not answering"
BROWSE_LIMIT = 2000  # messages looked at per delay or dead-letter queue
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class Where:
    order_database_url: str
    customer_database_url: str
    broker_urls: list[str]
    service_urls: dict[str, str]
    retry_delays_ms: tuple[int, ...]
    deadline_s: float


def _error(exc: BaseException) -> str:
    return redact(str(exc) or type(exc).__name__)


async def _fetch(url: str, queries: dict[str, tuple[str, tuple[Any, ...]]]) -> dict[str, list[asyncpg.Record]]:
    conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    try:
        return {name: await conn.fetch(sql, *args) for name, (sql, args) in queries.items()}
    finally:
        await conn.close()


def _side(order_id: int) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """What each database holds of one saga: its outbox rows and its inbox records."""
    return {
        "outbox": (
            "SELECT id::text, routing_key, created_at, published_at FROM outbox WHERE order_id = $1 ORDER BY seq",
            (order_id,),
        ),
        "inbox": ("SELECT message_id::text, processed_at FROM inbox WHERE order_id = $1", (order_id,)),
    }


async def _order_side(url: str, order_id: int) -> dict[str, list[asyncpg.Record]]:
    queries = _side(order_id) | {
        "order": (
            "SELECT status, rejection_reason, customer_id, created_at, updated_at FROM orders WHERE id = $1",
            (order_id,),
        ),
        "history_table": ("SELECT to_regclass('saga_history') IS NOT NULL AS present", ()),
    }
    rows = await _fetch(url, queries)
    if rows["history_table"][0]["present"]:  # another change's table: used when there, never required
        rows |= await _fetch(url, {"history": ("SELECT * FROM saga_history WHERE order_id = $1", (order_id,))})
    return rows


async def _customer_side(url: str, order_id: int, customer_id: int | None) -> dict[str, list[asyncpg.Record]]:
    queries = _side(order_id) | {
        "reservation": ("SELECT status, amount::text, reason FROM reservations WHERE order_id = $1", (order_id,)),
        "customer": ("SELECT id FROM customers WHERE id = $1", (customer_id or 0,)),
    }
    return await _fetch(url, queries)


async def _readiness(http: httpx.AsyncClient, url: str) -> Readiness:
    try:
        response = await http.get(f"{url.rstrip('/')}/readyz")
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        return Readiness(url=url, answered=False, error=_error(exc) if str(exc) else "no answer")
    reasons = body.get("reasons") or {} if isinstance(body, dict) else {}
    return Readiness(url=url, answered=True, ready=response.status_code == 200, problems=dict(reasons))


async def _broker(
    urls: list[str], wanted: set[str], receivers: set[str], retry_delays_ms: tuple[int, ...]
) -> tuple[dict[str, QueueState], list[Parked]]:
    errors = []
    for url in urls:
        try:
            connection = await aio_pika.connect(url, timeout=5)
            break
        except Exception as exc:  # noqa: BLE001 - try the next node, report all
            errors.append(_error(exc))
    else:
        raise ConnectionError("; ".join(errors))
    try:
        queues = {}
        for service in BINDINGS:
            channel = await connection.channel(publisher_confirms=False)
            try:
                declared = await channel.declare_queue(ServiceQueues(service, ()).work, passive=True)
                result = declared.declaration_result
                queues[service] = QueueState(declared.name, int(result.message_count), int(result.consumer_count))
            finally:
                await channel.close()
        parked: list[Parked] = []
        for service in receivers:
            names = ServiceQueues(service, retry_delays_ms)
            for queue_name in names.parked:
                parked += await _look_for(connection, service, queue_name, queue_name == names.dead_letter, wanted)
        return queues, parked
    finally:
        await connection.close()


async def _look_for(
    connection: aio_pika.abc.AbstractConnection, service: str, queue_name: str, dead_letter: bool, wanted: set[str]
) -> list[Parked]:
    channel = await connection.channel(publisher_confirms=False)
    try:
        found = []
        for position, message in enumerate(await browse(channel, queue_name, BROWSE_LIMIT), start=1):
            if message.message_id not in wanted:
                continue
            if dead_letter:
                letter = to_dead_letter(service, queue_name, position, message)
                found.append(Parked(queue_name, "dead-letter", letter.key, letter.reason, letter.attempts))
            else:
                attempts = (message.headers or {}).get(ATTEMPT_HEADER)
                found.append(Parked(queue_name, "delay", message.message_id, None, int(attempts) if attempts else None))
        return found
    except aio_pika.exceptions.AMQPError:
        return []  # the queue does not exist (other retry delays than SAGA_RETRY_DELAYS_MS says)
    finally:
        if not channel.is_closed:
            await channel.close()  # every message taken goes back


def _messages(sender: str, outbox: list[asyncpg.Record], receiver_inbox: dict[str, datetime]) -> list[Message]:
    return [
        Message(r["id"], r["routing_key"], sender, r["created_at"], r["published_at"], receiver_inbox.get(r["id"]))
        for r in outbox
    ]


async def collect(order_id: int, where: Where, now: datetime | None = None) -> Facts:
    now = now or datetime.now(UTC)
    facts: dict[str, Any] = {"order_id": order_id, "now": now, "deadline_s": where.deadline_s}
    facts["broker_url"] = ", ".join(redact_url(url) for url in where.broker_urls)
    try:
        order_rows = await _order_side(where.order_database_url, order_id)
    except DATABASE_ERRORS as exc:
        return Facts(**facts, order_db_error=f"{redact_url(where.order_database_url)}: {_error(exc)}")
    if not order_rows["order"]:
        return Facts(**facts)
    row = order_rows["order"][0]
    facts["order"] = Order(
        row["status"], row["rejection_reason"], row["customer_id"], row["created_at"], row["updated_at"]
    )
    if "history" in order_rows:
        facts["history"] = tuple({k: str(v) for k, v in dict(r).items()} for r in order_rows["history"])

    async with httpx.AsyncClient(timeout=READY_TIMEOUT_S) as http:
        readiness = asyncio.gather(*(_readiness(http, url) for url in where.service_urls.values()))
        customer_side = asyncio.create_task(_customer_side(where.customer_database_url, order_id, row["customer_id"]))
        try:
            customer_rows = await customer_side
        except DATABASE_ERRORS as exc:
            customer_rows = {"outbox": [], "inbox": [], "reservation": [], "customer": None}
            facts["customer_db_error"] = f"{redact_url(where.customer_database_url)}: {_error(exc)}"
        facts["services"] = dict(zip(where.service_urls, await readiness, strict=True))

    order_inbox = {r["message_id"]: r["processed_at"] for r in order_rows["inbox"]}
    customer_inbox = {r["message_id"]: r["processed_at"] for r in customer_rows["inbox"]}
    messages = _messages(ORDER_SERVICE, order_rows["outbox"], customer_inbox) + _messages(
        CUSTOMER_SERVICE, customer_rows["outbox"], order_inbox
    )
    facts["messages"] = tuple(sorted(messages, key=lambda m: m.created_at))
    if customer_rows["customer"] is not None:
        facts["customer_exists"] = bool(customer_rows["customer"])
    if customer_rows["reservation"]:
        r = customer_rows["reservation"][0]
        facts["reservation"] = Reservation(r["status"], r["amount"], r["reason"])

    unreceived = [m for m in messages if m.received_at is None and m.published_at is not None]
    try:
        queues, parked = await _broker(
            where.broker_urls, {m.id for m in unreceived}, {m.receiver for m in unreceived}, where.retry_delays_ms
        )
        facts["queues"], facts["parked"] = queues, tuple(parked)
    except (ConnectionError, OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        facts["broker_error"] = _error(exc)
    return Facts(**facts)
