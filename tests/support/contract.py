"""docs/asyncapi.yaml as a validator: a message's body, headers and AMQP properties against the document."""

from __future__ import annotations

import datetime
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from aio_pika.abc import AbstractMessage
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

ASYNCAPI = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
_BASE = "urn:saga:asyncapi"


def plain(value: Any) -> Any:
    """AMQP header values as JSON sees them: bytes decoded, timestamps as ISO strings."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def properties_of(message: AbstractMessage) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "type": message.type,
        "correlation_id": message.correlation_id,
        "content_type": message.content_type,
        "delivery_mode": int(message.delivery_mode),
        "timestamp": plain(message.timestamp),
    }


class Contract:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.registry: Registry = Registry().with_resource(_BASE, Resource.from_contents(document, DRAFT7))

    @classmethod
    def load(cls, path: Path = ASYNCAPI) -> Contract:
        return cls(yaml.safe_load(path.read_text()))

    @cached_property
    def messages(self) -> dict[str, dict[str, Any]]:
        return self.document["components"]["messages"]

    def key_of(self, routing_key: str) -> str:
        """The components.messages key of an event type (orderCreated for order.created)."""
        (found,) = [key for key, message in self.messages.items() if message["name"] == routing_key]
        return found

    def message_for(self, routing_key: str) -> dict[str, Any]:
        return self.messages[self.key_of(routing_key)]

    def errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        validator = jsonschema.Draft7Validator(
            schema,
            registry=self.registry,
            format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER,
        )
        return [
            f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
            for error in validator.iter_errors(instance)
        ]

    def _absolute(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Local refs (#/components/...) made absolute, so they resolve against the document."""
        return json.loads(json.dumps(schema).replace('"$ref": "#/', f'"$ref": "{_BASE}#/'))

    def check(
        self, message_name: str, *, body: Any, headers: dict[str, Any], properties: dict[str, Any] | None
    ) -> list[str]:
        """Every way the message breaks the document's `components.messages[message_name]`; [] when it fits."""
        spec = self.messages[message_name]
        problems = [f"body {error}" for error in self.errors(self._absolute(spec["payload"]), body)]
        problems += [f"headers {error}" for error in self.errors(self._absolute(spec["headers"]), plain(headers))]
        if properties is not None and "x-amqp-properties" in spec:
            problems += [
                f"properties {error}" for error in self.errors(self._absolute(spec["x-amqp-properties"]), properties)
            ]
        return problems

    def check_delivery(self, message_name: str, message: AbstractMessage) -> list[str]:
        spec = self.messages[message_name]
        if spec.get("contentType", self.document.get("defaultContentType")) == "application/json" and (
            message_name != "deadLetter"
        ):
            body: Any = json.loads(message.body)
        else:
            body = message.body.decode(errors="replace")
        return self.check(
            message_name, body=body, headers=dict(message.headers or {}), properties=properties_of(message)
        )
