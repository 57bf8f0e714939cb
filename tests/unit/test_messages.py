"""The message contract: what round-trips, and the reason every kind of poison message gets (versions and their
up- and downcasting: test_message_versions.py)."""

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from saga_common.contract.messages import (
    EVENT_TYPES,
    Amount,
    CreditReleased,
    OrderCancelled,
    OrderCreated,
    OrderCreatedV2,
    OrderFulfilled,
    OrderRejected,
    PoisonMessage,
    decode,
)

MAX = 64 * 1024

EXAMPLES = [
    OrderCreatedV2(order_id=1, customer_id=2, amount=Amount(value="50.00", currency="EUR"), product_id=3, quantity=1),
    OrderCancelled(order_id=1, customer_id=2),
    OrderFulfilled(order_id=1, customer_id=2, amount=Decimal("0.10"), reservation_id=9),
    OrderRejected(order_id=1, customer_id=2, reason="insufficient_balance"),
    CreditReleased(order_id=1, customer_id=2, amount=Decimal("12345678.90")),
]


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.type)
def test_every_event_round_trips_exactly(event):
    decoded = decode(event.to_json(), max_bytes=MAX)
    assert decoded == event
    assert type(decoded) is type(event)


def test_envelope_fields_and_money_as_decimal_string():
    event = OrderCreated(order_id=5, customer_id=2, amount=Decimal("19.99"))
    body = json.loads(event.to_json())
    assert {"message_id", "type", "version", "occurred_at", "order_id"} <= body.keys()
    assert body["type"] == "order.created" == event.routing_key
    assert body["version"] == 1
    assert body["amount"] == "19.99"  # never a float
    uuid.UUID(body["message_id"])
    assert datetime.fromisoformat(body["occurred_at"]).tzinfo is not None


def test_routing_keys_are_the_contract():
    assert set(EVENT_TYPES) == {
        "order.created",
        "order.cancelled",
        "order.fulfilled",
        "order.rejected",
        "credit.released",
    }


def valid_body(**changes):
    body = json.loads(EXAMPLES[0].to_json())
    body.update(changes)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "category", "says"),
    [
        (b"\x00\xffnot json", "not_json", "not JSON"),
        (b"[1, 2]", "malformed", "not an object"),
        (valid_body(type="order.teleported"), "unknown_type", "unknown message type 'order.teleported'"),
        (valid_body(type=None), "unknown_type", "unknown message type None"),
        (valid_body(version=0), "wrong_version", "unsupported version 0"),
        (valid_body(version="1"), "wrong_version", "unsupported version '1'"),
        (valid_body(version=True), "wrong_version", "unsupported version True"),
        (valid_body(version=None), "wrong_version", "unsupported version None"),
        (valid_body(version=1), "malformed", "version 1: amount"),  # a v2 body that claims to be v1
        (valid_body(customer_id=None), "malformed", "customer_id"),
        (valid_body(amount="12.345"), "malformed", "amount"),
        (valid_body(amount={"value": "12.345", "currency": "EUR"}), "malformed", "amount.value"),
        (valid_body(amount={"value": "-1", "currency": "EUR"}), "malformed", "amount.value"),
        (valid_body(amount={"value": "1.00", "currency": "euro"}), "malformed", "amount.currency"),
        (valid_body(amount={"value": "1.00"}), "malformed", "amount.currency"),
        (valid_body(order_id=0), "malformed", "order_id"),
        (valid_body(message_id="not-a-uuid"), "malformed", "message_id"),
        (b'{"type": "order.created", "version": 1}', "malformed", "order_id"),
        (b" " * (MAX + 1), "too_large", "over the"),
    ],
)
def test_poison_messages_say_why(body, category, says):
    with pytest.raises(PoisonMessage) as caught:
        decode(body, max_bytes=MAX)
    assert caught.value.category == category
    assert says in caught.value.reason


def test_unknown_fields_are_ignored_for_forward_compatibility():
    event = decode(valid_body(added_in_a_later_minor="x"), max_bytes=MAX)
    assert isinstance(event, OrderCreatedV2)


def test_deadline_travels_with_order_created():
    deadline = datetime(2030, 1, 1, tzinfo=UTC)
    event = OrderCreated(order_id=1, customer_id=1, amount=Decimal("1.00"), deadline=deadline)
    assert decode(event.to_json(), max_bytes=MAX).deadline == deadline
