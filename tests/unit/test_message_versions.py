"""Versioned events: every older version reaches handlers in the newest shape, a producer can still publish an
older one, a newer one than the code knows is held back (not poison), and the publish setting is checked."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from customer_service.handlers import HANDLERS as CUSTOMER_HANDLERS
from customer_service.settings import CustomerSettings
from order_service.saga import HANDLERS as ORDER_HANDLERS
from saga_common.contract.messages import (
    DOWNCASTERS,
    EVENT_TYPES,
    LEDGER_CURRENCY,
    UPCASTERS,
    VERSIONS,
    Amount,
    CannotDowncast,
    NewerVersion,
    OrderCreated,
    OrderCreatedV2,
    PoisonMessage,
    as_version,
    check_publish_versions,
    decode,
    encode,
    newest_version,
)
from saga_common.persistence.outbox import _version_to_write

MAX = 64 * 1024


def test_versions_run_from_1_without_gaps_and_every_step_has_both_casts():
    for event_type, versions in VERSIONS.items():
        assert sorted(versions) == list(range(1, len(versions) + 1)), event_type
        for version, cls in versions.items():
            assert cls.routing_key == event_type and cls.model_fields["version"].default == version
        for step in range(1, max(versions)):
            assert (event_type, step) in UPCASTERS, f"{event_type}: no upcaster {step} -> {step + 1}"
            assert (event_type, step + 1) in DOWNCASTERS, f"{event_type}: no downcaster {step + 1} -> {step}"
    assert newest_version("order.created") == 2
    assert EVENT_TYPES["order.created"] is OrderCreatedV2


def test_handlers_are_written_for_the_newest_version():
    """What the services register is keyed by type; decode() hands them EVENT_TYPES' class, never an older one."""
    assert set(CUSTOMER_HANDLERS) | set(ORDER_HANDLERS) == set(EVENT_TYPES)
    v1 = OrderCreated(order_id=3, customer_id=4, amount=Decimal("12.50"))
    assert type(decode(v1.to_json(), max_bytes=MAX)) is EVENT_TYPES["order.created"]


def test_a_v1_order_created_is_upcast_to_v2_in_the_ledger_currency():
    v1 = OrderCreated(order_id=3, customer_id=4, amount=Decimal("12.50"), product_id=5, quantity=2)
    event = decode(v1.to_json(), max_bytes=MAX)
    assert isinstance(event, OrderCreatedV2)
    assert event.amount == Amount(value=Decimal("12.50"), currency=LEDGER_CURRENCY)
    kept = {"message_id", "occurred_at", "order_id", "customer_id", "product_id", "quantity", "deadline"}
    assert event.model_dump(include=kept) == v1.model_dump(include=kept)


def test_a_producer_pinned_to_v1_publishes_the_v1_body_and_it_comes_back_equal():
    v2 = OrderCreatedV2(order_id=3, customer_id=4, amount=Amount(value="7.00", currency="EUR"))
    body = json.loads(encode(v2, 1))
    assert body["version"] == 1 and body["amount"] == "7.00"
    assert OrderCreated.model_validate(body).amount == Decimal("7.00")
    assert decode(encode(v2, 1), max_bytes=MAX) == v2
    assert json.loads(encode(v2))["amount"] == {"value": "7.00", "currency": "EUR"}
    assert as_version(v2, 2) is v2


def test_an_amount_v1_cannot_carry_is_refused_not_truncated():
    foreign = OrderCreatedV2(order_id=3, customer_id=4, amount=Amount(value="7.00", currency="USD"))
    with pytest.raises(CannotDowncast, match="USD"):
        encode(foreign, 1)
    with pytest.raises(ValueError, match="no version 9"):
        encode(foreign, 9)


def test_a_newer_version_is_held_back_not_poison():
    body = json.loads(encode(OrderCreatedV2(order_id=3, customer_id=4, amount=Amount(value="1.00", currency="EUR"))))
    with pytest.raises(NewerVersion) as caught:
        decode(json.dumps(body | {"version": 3, "amount": "whatever v3 is"}).encode(), max_bytes=MAX)
    assert not isinstance(caught.value, PoisonMessage)
    assert (caught.value.event_type, caught.value.version, caught.value.newest) == ("order.created", 3, 2)
    assert "newer than this release knows (1..2)" in str(caught.value)


def test_the_publish_setting_is_read_from_the_environment_and_checked(monkeypatch):
    monkeypatch.setenv("SAGA_PUBLISH_VERSIONS", '{"order.created": 1}')
    settings = CustomerSettings()
    assert settings.publish_versions == {"order.created": 1}
    check_publish_versions(settings.publish_versions)
    with pytest.raises(ValueError, match=r"order\.created has no version 3"):
        check_publish_versions({"order.created": 3})
    with pytest.raises(ValueError, match=r"unknown event type 'order\.shipped'"):
        check_publish_versions({"order.shipped": 1})


@pytest.mark.parametrize(
    ("versions", "expected"),
    [(None, None), ({}, 2), ({"order.created": 1}, 1), ({"order.cancelled": 1}, 2)],
)
def test_the_outbox_writes_the_pinned_version_else_the_newest(versions, expected):
    assert _version_to_write("order.created", versions) == expected
