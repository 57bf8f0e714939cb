"""The saga's message contract: one envelope, five event types in one or more versions, and their JSON form.

Body: a flat JSON object with the envelope fields (`message_id`, `type`, `version`, `occurred_at`,
`order_id`) and the event's own fields. Money travels as a decimal string ("50.00"), never a float.

Versions: each version of an event type is a class of its own (the first carries the bare name, later ones
`V<n>`), and every step N -> N+1 has an upcaster here, so `decode()` hands handlers only the newest shape
whichever version arrived; a downcaster per step back lets a producer still publish an older version while
consumers of the last release run (`encode(event, version)`, the setting SAGA_PUBLISH_VERSIONS). A version
newer than this code knows raises `NewerVersion`: not poison, the consumer holds it back until it is upgraded.
Anything else that does not decode is a poison message: `decode()` raises `PoisonMessage` with a reason that
ends up in the dead-letter queue's headers. docs/message-contract.md says how to add a version.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The first version of every event type (the envelope's version before any type had a second).
SCHEMA_VERSION = 1
# The one currency of the ledger: version 1 amounts are in it, and the customer service keeps balances in it.
LEDGER_CURRENCY = "EUR"

Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2)]
# Ids are PostgreSQL bigints: bounded, so a huge number is a 422/poison message and never a database error.
PositiveId = Annotated[int, Field(gt=0, le=2**63 - 1, strict=True)]


class PoisonMessage(Exception):
    """A message that can never be processed, whatever is retried: it goes to the dead-letter queue."""

    def __init__(self, reason: str, category: str = "malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.category = category


class NewerVersion(Exception):
    """A version of a known type that this code does not know yet: a newer release published it. Not poison:
    the consumer holds it back until it knows the version (after its own upgrade)."""

    def __init__(self, event_type: str, version: int, newest: int) -> None:
        super().__init__(
            f"version {version} of {event_type} is newer than this release knows (1..{newest}): held back until "
            "the consumer is upgraded"
        )
        self.event_type = event_type
        self.version = version
        self.newest = newest


class CannotDowncast(ValueError):
    """The event says something its older version cannot carry (a producer pinned to that version)."""


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


class Amount(BaseModel):
    """A sum of money in a currency (ISO 4217 code)."""

    model_config = ConfigDict(frozen=True, extra="ignore", json_schema_serialization_defaults_required=True)

    value: Money
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class OrderCreatedV2(Event):
    """Order service -> customer service: please reserve `amount` (a value and its currency) for this order."""

    routing_key: ClassVar[str] = "order.created"
    type: Literal["order.created"] = "order.created"
    version: Literal[2] = 2
    customer_id: PositiveId
    amount: Amount
    product_id: PositiveId | None = None
    quantity: PositiveId | None = None
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


def _order_created_1_to_2(old: OrderCreated) -> OrderCreatedV2:
    # A version 1 amount is in the ledger's currency: the only one there was.
    fields = old.model_dump(exclude={"version", "amount"})
    return OrderCreatedV2(**fields, amount=Amount(value=old.amount, currency=LEDGER_CURRENCY))


def _order_created_2_to_1(new: OrderCreatedV2) -> OrderCreated:
    if new.amount.currency != LEDGER_CURRENCY:
        raise CannotDowncast(f"order.created version 1 carries {LEDGER_CURRENCY} only, not {new.amount.currency}")
    return OrderCreated(**new.model_dump(exclude={"version", "amount"}), amount=new.amount.value)


# Every version of every event type, oldest first.
VERSIONS: dict[str, dict[int, type[Event]]] = {}
for _cls in (OrderCreated, OrderCreatedV2, OrderCancelled, OrderFulfilled, OrderRejected, CreditReleased):
    VERSIONS.setdefault(_cls.routing_key, {})[_cls.model_fields["version"].default] = _cls
# (type, N) -> the step from version N to N+1, and (type, N+1) -> the step back.
UPCASTERS: dict[tuple[str, int], Callable[[Event], Event]] = {("order.created", 1): _order_created_1_to_2}
DOWNCASTERS: dict[tuple[str, int], Callable[[Event], Event]] = {("order.created", 2): _order_created_2_to_1}

# What handlers see: the newest version of each type.
EVENT_TYPES: dict[str, type[Event]] = {key: versions[max(versions)] for key, versions in VERSIONS.items()}


def newest_version(event_type: str) -> int:
    return max(VERSIONS[event_type])


def as_version(event: Event, version: int) -> Event:
    """The same event in another known version of its type, one step at a time."""
    if version not in VERSIONS[event.type]:
        raise ValueError(f"{event.type} has no version {version} (known: {sorted(VERSIONS[event.type])})")
    while event.version < version:
        event = UPCASTERS[(event.type, event.version)](event)
    while event.version > version:
        event = DOWNCASTERS[(event.type, event.version)](event)
    return event


def check_publish_versions(versions: Mapping[str, int]) -> None:
    """SAGA_PUBLISH_VERSIONS names only known types and versions (else the service refuses to start)."""
    for event_type, version in versions.items():
        if event_type not in VERSIONS:
            raise ValueError(f"SAGA_PUBLISH_VERSIONS: unknown event type {event_type!r} (known: {', '.join(VERSIONS)})")
        if version not in VERSIONS[event_type]:
            known = ", ".join(map(str, VERSIONS[event_type]))
            raise ValueError(f"SAGA_PUBLISH_VERSIONS: {event_type} has no version {version} (known: {known})")


def encode(event: Event, version: int | None = None) -> bytes:
    """The body to publish: the event in `version` (None: the version it was built in)."""
    return (event if version is None else as_version(event, version)).to_json()


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
    versions = VERSIONS.get(event_type) if isinstance(event_type, str) else None
    if versions is None:
        raise PoisonMessage(f"unknown message type {event_type!r} (known: {', '.join(VERSIONS)})", "unknown_type")
    version = data.get("version")
    # bool is an int to Python, never a version on the wire.
    if isinstance(version, int) and not isinstance(version, bool) and version > max(versions):
        raise NewerVersion(event_type, version, max(versions))
    cls = versions.get(version) if isinstance(version, int) and not isinstance(version, bool) else None
    if cls is None:
        raise PoisonMessage(
            f"unsupported version {version!r} for {event_type} (supported: {', '.join(map(str, versions))})",
            "wrong_version",
        )
    try:
        event = cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise PoisonMessage(f"invalid {event_type} version {version}: {problems}", "malformed") from None
    return as_version(event, max(versions))
