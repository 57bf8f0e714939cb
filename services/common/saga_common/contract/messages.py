"""The saga's message contract: one envelope, five event types, and their JSON form.

Body: a flat JSON object with the envelope fields (`message_id`, `type`, `version`, `occurred_at`,
`order_id`) and the event's own fields. Money travels as a decimal string ("50.00"), never a float.
Anything that does not decode into one of these types is a poison message: `decode()` raises
`PoisonMessage` with a reason that ends up in the dead-letter queue's headers.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1

Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
# Ids are PostgreSQL bigints: bounded, so a huge number is a 422/poison message and never a database error.
PositiveId = Annotated[int, Field(gt=0, le=2**63 - 1, strict=True)]


class PoisonMessage(Exception):
    """A message that can never be processed, whatever is retried: it goes to the dead-letter queue."""

    def __init__(self, reason: str, category: str = "malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class Event(BaseModel):
    """Envelope fields shared by every event; subclasses add their payload and their routing key."""

    # Every field is on the wire (to_json dumps them all), so the published JSON schema requires them all.
    model_config = ConfigDict(frozen=True, extra="ignore", json_schema_serialization_defaults_required=True)
    routing_key: ClassVar[str]

    message_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    version: Literal[1] = SCHEMA_VERSION
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    order_id: PositiveId

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class OrderCreated(Event):
    """Order service -> customer service: please reserve `amount` for this order."""

    routing_key: ClassVar[str] = "order.created"
    type: Literal["order.created"] = "order.created"
    customer_id: PositiveId
    amount: Money
    product_id: PositiveId | None = None
    quantity: PositiveId | None = None
    # After this instant the order service no longer waits: reserving credit would only be released again.
    deadline: datetime | None = None


class OrderCancelled(Event):
    """Order service -> customer service: release the credit reserved for this order (compensation)."""

    routing_key: ClassVar[str] = "order.cancelled"
    type: Literal["order.cancelled"] = "order.cancelled"
    customer_id: PositiveId
    reason: str = "cancelled_by_client"


class OrderFulfilled(Event):
    """Customer service -> order service: the credit is reserved."""

    routing_key: ClassVar[str] = "order.fulfilled"
    type: Literal["order.fulfilled"] = "order.fulfilled"
    customer_id: PositiveId
    amount: Money
    reservation_id: PositiveId


class OrderRejected(Event):
    """Customer service -> order service: no credit was reserved, and why."""

    routing_key: ClassVar[str] = "order.rejected"
    type: Literal["order.rejected"] = "order.rejected"
    customer_id: PositiveId
    reason: Literal["insufficient_balance", "unknown_customer", "timeout"]


class CreditReleased(Event):
    """Customer service -> order service: the reservation is released, the balance is restored."""

    routing_key: ClassVar[str] = "credit.released"
    type: Literal["credit.released"] = "credit.released"
    customer_id: PositiveId
    amount: Money


EVENT_TYPES: dict[str, type[Event]] = {
    cls.routing_key: cls for cls in (OrderCreated, OrderCancelled, OrderFulfilled, OrderRejected, CreditReleased)
}


def decode(body: bytes, *, max_bytes: int) -> Event:
    """Parse a message body into its event, or raise PoisonMessage saying exactly what is wrong."""
    if len(body) > max_bytes:
        raise PoisonMessage(f"body is {len(body)} bytes, over the {max_bytes}-byte limit", "too_large")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"body is not JSON: {exc}", "not_json") from None
    if not isinstance(data, dict):
        raise PoisonMessage(f"body is JSON {type(data).__name__}, not an object", "malformed")
    event_type = data.get("type")
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise PoisonMessage(f"unknown message type {event_type!r} (known: {', '.join(EVENT_TYPES)})", "unknown_type")
    if data.get("version") != SCHEMA_VERSION:
        raise PoisonMessage(
            f"unsupported version {data.get('version')!r} for {event_type} (supported: {SCHEMA_VERSION})",
            "wrong_version",
        )
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise PoisonMessage(f"invalid {event_type}: {problems}", "malformed") from None
