"""docs/asyncapi.yaml is the code's message contract: generated from it, valid AsyncAPI 3.0, and strict enough
that a wrong message fails it."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from saga_common.contract.messages import EVENT_TYPES, VERSIONS, Amount, OrderCreated, OrderCreatedV2, OrderRejected
from saga_common.contract.topology import BINDINGS
from saga_common.messaging import consumer
from saga_common.observability import metrics
from saga_dev import asyncapi
from tests.support.contract import ASYNCAPI, Contract

ROOT = Path(__file__).resolve().parents[2]
# The official JSON Schema of AsyncAPI 3.0.0, from asyncapi/spec-json-schemas (schemas/3.0.0-without-$id.json,
# Apache-2.0): no package on PyPI ships it.
ASYNCAPI_SCHEMA = Path(__file__).parent / "schemas" / "asyncapi-3.0.0.json"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return yaml.safe_load(ASYNCAPI.read_text())


def test_the_document_is_what_the_code_generates() -> None:
    assert ASYNCAPI.read_text() == asyncapi.render(), "docs/asyncapi.yaml differs from the code: run `make asyncapi`"


def asyncapi_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text()))
    return [f"{list(error.absolute_path)}: {error.message[:200]}" for error in validator.iter_errors(document)]


def test_the_document_is_valid_asyncapi_3(document) -> None:
    assert asyncapi_errors(document) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["operations"]["orderServiceReceives"].update(action="consume"),
        lambda d: d["channels"]["orderCreated"]["bindings"]["amqp"].update({"is": "topic"}),
        lambda d: d.pop("info"),
        lambda d: d.update(asyncapi="2.6.0"),
    ],
)
def test_the_asyncapi_schema_refuses_a_broken_document(document, break_it) -> None:
    broken = copy.deepcopy(document)
    break_it(broken)
    assert asyncapi_errors(broken)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in refs(value)]
    return []


def test_structure_and_every_ref_resolves(document) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] and document["info"]["version"]
    for ref in refs(document):
        resolve(document, ref)
    for name, operation in document["operations"].items():
        assert operation["action"] in {"send", "receive"}, name
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            # AsyncAPI 3: an operation's messages are messages of its own channel.
            assert message["$ref"].startswith(channel_ref + "/messages/"), (name, message)
    for name, message in document["components"]["messages"].items():
        assert "payload" in message and "headers" in message, name


def test_every_event_queue_and_header_of_the_code_is_in_the_document(document) -> None:
    channels = {channel["address"]: channel for channel in document["channels"].values()}
    sent = {
        resolve(document, op["channel"]["$ref"])["address"]
        for op in document["operations"].values()
        if op["action"] == "send"
    }
    for routing_key, cls in EVENT_TYPES.items():
        assert routing_key in channels and routing_key in sent
        message = Contract(document).message_for(routing_key)
        # Every version, oldest first, each with the schema of its model.
        versions = VERSIONS[routing_key].values()
        assert refs(message["payload"]) == [f"#/components/schemas/{each.__name__}" for each in versions]
        assert cls is list(versions)[-1]
        for each in versions:
            assert resolve(document, f"#/components/schemas/{each.__name__}") == asyncapi.payload_schema(each)
    topology = asyncapi.default_topology()
    for service, routing_keys in BINDINGS.items():
        queues = topology.queues(service)
        work = channels[queues.work]
        assert {resolve(document, ref["$ref"])["name"] for ref in work["messages"].values()} == set(routing_keys)
        assert queues.dead_letter in channels
        assert queues.retry(0).replace(".0ms", ".{delayMs}ms") in channels
    schemas = json.dumps(document["components"]["schemas"])
    for header in (
        consumer.ATTEMPT_HEADER,
        consumer.ROUTING_KEY_HEADER,
        consumer.REASON_HEADER,
        consumer.CATEGORY_HEADER,
        consumer.SOURCE_QUEUE_HEADER,
        consumer.DEAD_LETTERED_AT_HEADER,
        "traceparent",
        "tracestate",
        "x-death",
    ):
        assert f'"{header}"' in schemas, header


def test_every_dead_letter_category_the_code_raises_is_in_the_document(document) -> None:
    raised = set()
    for path in (ROOT / "services").rglob("*.py"):
        raised |= set(re.findall(r'PoisonMessage\([^()]*(?:\([^()]*\)[^()]*)*,\s*"([a-z_]+)"\)', path.read_text()))
    assert {"unknown_order", "max_attempts", "unknown_type"} <= raised
    categories = document["components"]["schemas"]["DeadLetterHeaders"]["anyOf"][0]["properties"]
    documented = set(categories[consumer.CATEGORY_HEADER]["enum"])
    assert raised <= documented == set(metrics.DEAD_LETTER_CATEGORIES)


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PROPERTIES = {
    "message_id": "3f1d2c4e-0000-4000-8000-000000000001",
    "type": "order.created",
    "correlation_id": "42",
    "content_type": "application/json",
    "delivery_mode": 2,
    "timestamp": "2026-01-01T00:00:00+00:00",
}


@pytest.mark.parametrize(
    "event",
    [
        OrderCreated(order_id=42, customer_id=7, amount="50.00", product_id=1, quantity=1),
        OrderCreatedV2(order_id=42, customer_id=7, amount=Amount(value="50.00", currency="EUR"), product_id=1),
    ],
    ids=["v1", "v2"],
)
def test_an_event_the_code_writes_fits_its_message(event) -> None:
    body = json.loads(event.to_json())
    properties = PROPERTIES | {"message_id": str(event.message_id)}
    assert (
        Contract.load().check("orderCreated", body=body, headers={"traceparent": TRACEPARENT}, properties=properties)
        == []
    )


@pytest.mark.parametrize(
    ("message", "body", "headers", "properties", "expected"),
    [
        ("orderCreated", {"amount": 50.0}, {}, {}, "body amount: 50.0 is not of type 'string'"),
        ("orderCreated", {"order_id": "42"}, {}, {}, "body order_id: '42' is not of type 'integer'"),
        ("orderCreated", {"type": "order.rejected"}, {}, {}, "body type: 'order.created' was expected"),
        ("orderCreated", {"version": 3}, {}, {}, "body version: 2 was expected"),
        ("orderCreated", {"version": 2}, {}, {}, "body amount: '50.00' is not of type 'object'"),
        ("orderCreated", {}, {"traceparent": "nope"}, {}, "headers traceparent: 'nope' does not match"),
        ("orderCreated", {}, {}, {"delivery_mode": 1}, "properties delivery_mode: 2 was expected"),
        (
            "orderCreated",
            {},
            {},
            {"correlation_id": "order-42"},
            "properties correlation_id: 'order-42' does not match",
        ),
        (
            "orderRejected",
            {"reason": "bad luck"},
            {},
            {"type": "order.rejected"},
            "body reason: 'bad luck' is not one of",
        ),
        ("deadLetter", {}, {}, None, "headers (root): {'traceparent'"),
        ("retry", {}, {}, {}, "headers (root): 'x-saga-attempt' is a required property"),
    ],
)
def test_a_message_that_breaks_the_contract_is_refused(message, body, headers, properties, expected) -> None:
    good_body = json.loads(OrderCreated(order_id=42, customer_id=7, amount="50.00").to_json())
    if message == "orderRejected":
        good_body = json.loads(OrderRejected(order_id=42, customer_id=7, reason="timeout").to_json())
    problems = Contract.load().check(
        message,
        body=good_body | body,
        headers={"traceparent": TRACEPARENT} | headers,
        properties=None if properties is None else PROPERTIES | properties,
    )
    assert any(problem.startswith(expected) for problem in problems), problems
