"""The message contract as an AsyncAPI 3.0 document, generated from the code as OpenAPI is for HTTP.

    python -m saga_dev.asyncapi > docs/asyncapi.yaml        (what `make asyncapi` runs)

Payloads are the JSON schemas pydantic derives from the event models (`messages.py`), one per version of each
type (a message's payload picks the version's schema by its `version` field); channels, queues and
their arguments come from `topology.py`; the headers are the ones the outbox, the tracing and the consumer
add (`consumer.py`). Defaults are the settings' own defaults, never the environment's, so the document is
the same on every machine. tests/unit/test_asyncapi.py fails when docs/asyncapi.yaml and this disagree.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from saga_common.contract.messages import EVENT_TYPES, VERSIONS, Event, newest_version
from saga_common.contract.topology import BINDINGS, CUSTOMER_SERVICE, ORDER_SERVICE, Topology
from saga_common.messaging import consumer
from saga_common.observability import metrics
from saga_common.settings import ServiceSettings

AMQP_BINDING_VERSION = "0.3.0"
TRACEPARENT_PATTERN = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
PRODUCERS = {ORDER_SERVICE: ("order.created", "order.cancelled")} | {
    CUSTOMER_SERVICE: ("order.fulfilled", "order.rejected", "credit.released")
}


def _default(name: str) -> Any:
    field = ServiceSettings.model_fields[name]
    return field.get_default(call_default_factory=True)


def default_topology() -> Topology:
    return Topology(
        exchange=_default("exchange"),
        queue_type=_default("queue_type"),
        delivery_limit=_default("delivery_limit"),
        retry_delays_ms=tuple(_default("retry_delays_ms")),
    )


def _camel(name: str) -> str:
    """order.created -> orderCreated, customer-service -> customerService."""
    parts = name.replace("-", ".").split(".")
    return parts[0] + "".join(part.capitalize() for part in parts[1:])


def _message_name(routing_key: str) -> str:
    return _camel(routing_key)


def payload_schema(event: type[Event]) -> dict[str, Any]:
    """What travels: the event's JSON form (Event.to_json), every field present; nested models (a v2 amount)
    written in place, so each version's schema stands alone."""
    schema = event.model_json_schema(mode="serialization")
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"$ref"} and node["$ref"].startswith("#/$defs/"):
                return inline(definitions[node["$ref"].removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return inline(schema)


def every_version() -> list[type[Event]]:
    return [cls for versions in VERSIONS.values() for cls in versions.values()]


def versioned_payload(routing_key: str) -> dict[str, Any]:
    """The schema of the body's own version: if/then/else on `version` (so a validator names the field that is
    wrong, where oneOf would only say that no branch fits); a version past the newest is checked as the newest."""
    *older, newest = VERSIONS[routing_key].items()
    payload: dict[str, Any] = {"$ref": f"#/components/schemas/{newest[1].__name__}"}
    for version, cls in reversed(older):
        payload = {
            "if": {"properties": {"version": {"const": version}}, "required": ["version"]},
            "then": {"$ref": f"#/components/schemas/{cls.__name__}"},
            "else": payload,
        }
    return payload


def _schemas() -> dict[str, Any]:
    routing_keys = sorted(EVENT_TYPES)
    schemas: dict[str, Any] = {cls.__name__: payload_schema(cls) for cls in every_version()}
    schemas["EventHeaders"] = {
        "type": "object",
        "description": (
            "AMQP headers of an event. The outbox row stores the W3C trace context of the span that wrote it and "
            "the relay publishes it with the context of its publish span (only when tracing is on). Retried copies "
            f"also carry `{consumer.ATTEMPT_HEADER}` and `{consumer.ROUTING_KEY_HEADER}`, held-back ones (a version "
            f"newer than the consumer knows) `{consumer.HELD_SINCE_HEADER}`. Other headers are ignored."
        ),
        "properties": {
            "traceparent": {
                "type": "string",
                "pattern": TRACEPARENT_PATTERN,
                "description": "W3C trace context: the producer span of this message.",
            },
            "tracestate": {"type": "string", "description": "W3C trace state, when the trace has one."},
            consumer.ATTEMPT_HEADER: {
                "type": "integer",
                "minimum": 0,
                "description": "Handler failures so far (set on copies sent to a delay queue).",
            },
            consumer.HELD_SINCE_HEADER: {
                "type": "string",
                "format": "date-time",
                "description": (
                    "When a consumer first held this message back because its version is newer than it knows "
                    "(ISO 8601, UTC); past SAGA_NEWER_VERSION_HOLD_S it is dead-lettered as `newer_version`."
                ),
            },
            consumer.ROUTING_KEY_HEADER: {
                "type": "string",
                "description": (
                    "The routing key the message first arrived with, kept through delay and dead-letter queues: "
                    "the event's type for what came through the exchange, the queue's name for a message "
                    "published straight into the queue."
                ),
            },
        },
    }
    schemas["RetryHeaders"] = {
        "description": "A copy waiting in a delay queue: the event's headers, with the attempt and the original key.",
        "allOf": [
            {"$ref": "#/components/schemas/EventHeaders"},
            {"type": "object", "required": [consumer.ATTEMPT_HEADER, consumer.ROUTING_KEY_HEADER]},
        ],
    }
    schemas["DeadLetterHeaders"] = {
        "description": (
            "A dead letter carries the event's headers and either the reason this project's consumer gave, or "
            "RabbitMQ's own `x-death` when the broker dead-lettered it (a message redelivered more than "
            "`x-delivery-limit` times: reason `delivery_limit`)."
        ),
        "allOf": [{"$ref": "#/components/schemas/EventHeaders"}],
        "anyOf": [
            {
                "type": "object",
                "required": [
                    consumer.REASON_HEADER,
                    consumer.CATEGORY_HEADER,
                    consumer.SOURCE_QUEUE_HEADER,
                    consumer.DEAD_LETTERED_AT_HEADER,
                    consumer.ROUTING_KEY_HEADER,
                ],
                "properties": {
                    consumer.REASON_HEADER: {
                        "type": "string",
                        "maxLength": 1000,
                        "description": "Why it cannot be processed, for a human.",
                    },
                    consumer.CATEGORY_HEADER: {"type": "string", "enum": list(metrics.DEAD_LETTER_CATEGORIES)},
                    consumer.SOURCE_QUEUE_HEADER: {
                        "type": "string",
                        "enum": [f"{service}.events" for service in BINDINGS],
                        "description": "The work queue it was taken from (where `sagactl dlq replay` sends it back).",
                    },
                    consumer.DEAD_LETTERED_AT_HEADER: {
                        "type": "string",
                        "format": "date-time",
                        "description": "When it was dead-lettered (ISO 8601, UTC).",
                    },
                },
            },
            {
                "type": "object",
                "required": ["x-death"],
                "properties": {
                    "x-death": {
                        "type": "array",
                        "minItems": 1,
                        "description": "Set by RabbitMQ: one entry per queue and reason that dead-lettered it.",
                        "items": {
                            "type": "object",
                            "required": ["queue", "reason"],
                            "properties": {
                                "queue": {"type": "string"},
                                "reason": {
                                    "type": "string",
                                    "enum": ["rejected", "expired", "maxlen", "delivery_limit"],
                                },
                                "count": {"type": "integer"},
                            },
                        },
                    }
                },
            },
        ],
    }
    schemas["AmqpProperties"] = {
        "type": "object",
        "description": (
            "AMQP basic properties every event is published with (outbox relay) and every retry or dead-letter "
            "copy keeps (consumer). `x-amqp-properties` on each message names them; AsyncAPI's AMQP binding has "
            "no place for them."
        ),
        "required": ["message_id", "type", "correlation_id", "content_type", "delivery_mode", "timestamp"],
        "properties": {
            "message_id": {"type": "string", "format": "uuid", "description": "Equals the body's `message_id`."},
            "type": {"type": "string", "enum": routing_keys, "description": "Equals the body's `type`."},
            "correlation_id": {
                "type": "string",
                "pattern": "^[1-9][0-9]*$",
                "description": "The order id: one saga, one correlation id.",
            },
            "content_type": {"const": "application/json"},
            "delivery_mode": {"const": 2, "description": "Persistent."},
            "timestamp": {"description": "When the outbox row was written."},
        },
    }
    return schemas


def _event_message(routing_key: str, cls: type[Event]) -> dict[str, Any]:
    consumers = [service for service, keys in BINDINGS.items() if routing_key in keys]
    producers = [service for service, keys in PRODUCERS.items() if routing_key in keys]
    versions = VERSIONS[routing_key]
    listed = ", ".join(f"{version} (`{each.__name__}`)" for version, each in versions.items())
    return {
        "name": routing_key,
        "title": versions[min(versions)].__name__,  # the type's name, whatever its versions
        "summary": (cls.__doc__ or "").strip(),
        "description": (
            f"Published by the {', '.join(producers)}; consumed by the {', '.join(consumers)}. Versions: {listed}; "
            "published in the newest unless SAGA_PUBLISH_VERSIONS names another, read in every one."
        ),
        "contentType": "application/json",
        "correlationId": {"location": "$message.payload#/order_id", "description": "The order id."},
        "headers": {"$ref": "#/components/schemas/EventHeaders"},
        "payload": versioned_payload(routing_key),
        "bindings": {"amqp": {"messageType": routing_key, "bindingVersion": AMQP_BINDING_VERSION}},
        "x-amqp-properties": {"$ref": "#/components/schemas/AmqpProperties"},
    }


def _queue_binding(name: str) -> dict[str, Any]:
    return {
        "amqp": {
            "is": "queue",
            "queue": {"name": name, "durable": True, "exclusive": False, "autoDelete": False, "vhost": "/"},
            "bindingVersion": AMQP_BINDING_VERSION,
        }
    }


def document() -> dict[str, Any]:
    topology = default_topology()
    exchange = topology.exchange
    messages = {_message_name(key): _event_message(key, cls) for key, cls in EVENT_TYPES.items()}
    messages["retry"] = {
        "name": "retry",
        "title": "An event waiting for its next attempt",
        "summary": "The event as it was delivered, copied to a delay queue after its handler failed.",
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/RetryHeaders"},
        "payload": {"oneOf": [{"$ref": f"#/components/schemas/{cls.__name__}"} for cls in every_version()]},
        "x-amqp-properties": {"$ref": "#/components/schemas/AmqpProperties"},
    }
    messages["deadLetter"] = {
        "name": "dead-letter",
        "title": "A message that cannot be processed",
        "summary": "The delivery, body and properties unchanged, with why it was dead-lettered in its headers.",
        "description": (
            "The body is whatever arrived, byte for byte: an event, or something that is not one (not JSON, an "
            "unknown type, a wrong version, too large). `sagactl dlq list|show|replay|purge` reads these queues."
        ),
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {"description": "The original body, unparsed."},
    }

    channels: dict[str, Any] = {}
    for routing_key in EVENT_TYPES:
        name = _message_name(routing_key)
        channels[name] = {
            "address": routing_key,
            "title": f"{routing_key} on {exchange}",
            "description": f"Routing key `{routing_key}` on the durable topic exchange `{exchange}`.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {
                        "name": exchange,
                        "type": "topic",
                        "durable": True,
                        "autoDelete": False,
                        "vhost": "/",
                    },
                    "bindingVersion": AMQP_BINDING_VERSION,
                }
            },
        }
    operations: dict[str, Any] = {}
    for service, routing_keys in BINDINGS.items():
        queues = topology.queues(service)
        prefix = _camel(service)
        channels[f"{prefix}Events"] = {
            "address": queues.work,
            "title": f"The {service}'s work queue",
            "description": (
                f"Bound to `{exchange}` with {', '.join(f'`{key}`' for key in routing_keys)}. "
                "Arguments (defaults): `" + _arguments_text(topology.work_arguments(service)) + "`."
            ),
            "messages": {
                _message_name(key): {"$ref": f"#/components/messages/{_message_name(key)}"} for key in routing_keys
            },
            "bindings": _queue_binding(queues.work),
        }
        retry_name = queues.retry(0).replace(".0ms", ".{delayMs}ms")
        channels[f"{prefix}Retry"] = {
            "address": retry_name,
            "title": f"The {service}'s delay queues",
            "description": (
                "One queue per back-off tier (`SAGA_RETRY_DELAYS_MS`): a copy waits its TTL there and is "
                f"dead-lettered back to `{queues.work}` through the default exchange. Arguments (defaults): `"
                + _arguments_text(topology.retry_arguments(service, "{delayMs}"))
                + "`."
            ),
            "parameters": {
                "delayMs": {
                    "description": "A tier of SAGA_RETRY_DELAYS_MS, in milliseconds.",
                    "enum": [str(delay) for delay in topology.retry_delays_ms],
                    "default": str(topology.retry_delays_ms[0]),
                }
            },
            "messages": {"retry": {"$ref": "#/components/messages/retry"}},
            "bindings": _queue_binding(retry_name),
        }
        channels[f"{prefix}DeadLetter"] = {
            "address": queues.dead_letter,
            "title": f"The {service}'s dead-letter queue",
            "description": (
                "What can never be processed: put there by the consumer (with its reason) or by the broker "
                "(`x-delivery-limit`). Arguments (defaults): `"
                + _arguments_text(topology.dead_letter_arguments())
                + "`."
            ),
            "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
            "bindings": _queue_binding(queues.dead_letter),
        }
        operations[f"{prefix}Receives"] = {
            "action": "receive",
            "title": f"The {service} consumes its work queue",
            "description": "Idempotent: the message id is recorded in the inbox in the same transaction as the effect.",
            "channel": {"$ref": f"#/channels/{prefix}Events"},
            "messages": [{"$ref": f"#/channels/{prefix}Events/messages/{_message_name(key)}"} for key in routing_keys],
            "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
        }
        for routing_key in PRODUCERS[service]:
            name = _message_name(routing_key)
            operations[f"{prefix}Sends{name[0].upper()}{name[1:]}"] = {
                "action": "send",
                "title": f"The {service} publishes {routing_key}",
                "description": "From the transactional outbox: persistent, mandatory, with publisher confirms.",
                "channel": {"$ref": f"#/channels/{name}"},
                "messages": [{"$ref": f"#/channels/{name}/messages/{name}"}],
                "bindings": _send_binding(),
            }
        operations[f"{prefix}Retries"] = {
            "action": "send",
            "title": f"The {service} parks a failed message in a delay queue",
            "channel": {"$ref": f"#/channels/{prefix}Retry"},
            "messages": [{"$ref": f"#/channels/{prefix}Retry/messages/retry"}],
            "bindings": _send_binding(),
        }
        operations[f"{prefix}DeadLetters"] = {
            "action": "send",
            "title": f"The {service} dead-letters what it can never process",
            "channel": {"$ref": f"#/channels/{prefix}DeadLetter"},
            "messages": [{"$ref": f"#/channels/{prefix}DeadLetter/messages/deadLetter"}],
            "bindings": _send_binding(),
        }
        operations[f"sagactlReads{prefix[0].upper()}{prefix[1:]}DeadLetters"] = {
            "action": "receive",
            "title": f"sagactl dlq lists, shows, replays and purges the {service}'s dead letters",
            "channel": {"$ref": f"#/channels/{prefix}DeadLetter"},
            "messages": [{"$ref": f"#/channels/{prefix}DeadLetter/messages/deadLetter"}],
        }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Saga events",
            "version": str(max(newest_version(key) for key in VERSIONS)),
            "description": (
                "The events the order service and the customer service exchange through RabbitMQ "
                "(choreography), generated from `saga_common.contract.messages` and `saga_common.contract.topology` by "
                "`python -m saga_dev.asyncapi`. Each body is one flat JSON object: the envelope "
                "(`message_id`, `type`, `version`, `occurred_at`, `order_id`) and the fields of its type. Money "
                "is a decimal string. Unknown fields are ignored (forward compatible). Each type may have several "
                "versions (`version`): a consumer reads every version it knows (upcast to the newest), holds back a "
                "newer one in a delay queue until it is upgraded, and dead-letters any other (`wrong_version`). The "
                "info version is the newest version of any type."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "`make run`'s broker; RABBITMQ_BROKER_URL points the services elsewhere.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": _schemas(), "messages": messages},
    }


def _send_binding() -> dict[str, Any]:
    return {"amqp": {"deliveryMode": 2, "mandatory": True, "timestamp": True, "bindingVersion": AMQP_BINDING_VERSION}}


def _arguments_text(arguments: dict[str, object]) -> str:
    return ", ".join(f"{key}={value}" for key, value in arguments.items())


def render() -> str:
    header = "# Generated by `python -m saga_dev.asyncapi` (make asyncapi) from the code: do not edit by hand.\n"
    return header + yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=110)


if __name__ == "__main__":
    sys.stdout.write(render())
