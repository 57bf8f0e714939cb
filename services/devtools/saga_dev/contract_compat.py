"""The message contract against the snapshot of the last release: what would break a consumer or a producer
of that release.

    python -m saga_dev.contract_compat            # exit 1 and the list when something breaks
    python -m saga_dev.contract_compat --write    # record the code's contract as the release snapshot

A snapshot holds, per routing key, the service its queue belongs to and, per version, each field's JSON schema
(as a consumer validates it: pydantic's validation mode) and which fields are required. Breaking, for a version
the snapshot has: the routing key gone or bound elsewhere, the version gone, a field gone or its schema
changed, a field newly required. Additions (types, versions, optional fields) are not. docs/message-contract.md
says how to change a message without breaking it (a new version).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from saga_common.contract.messages import VERSIONS
from saga_common.contract.topology import BINDINGS

SNAPSHOT = Path(__file__).resolve().parents[3] / "tests" / "unit" / "data" / "contract-release.json"
# Words about a field, not its type: changing them breaks nobody.
_PROSE = {"title", "description", "examples"}


def _without_prose(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _without_prose(value) for key, value in node.items() if key not in _PROSE}
    if isinstance(node, list):
        return [_without_prose(value) for value in node]
    return node


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """Nested models written in place: a change inside one is a change of the field that holds it."""
    definitions = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"$ref"}:
                return walk(definitions[node["$ref"].removeprefix("#/$defs/")])
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        return node

    return walk(schema)


def contract() -> dict[str, Any]:
    """The code's contract in the snapshot's form."""
    consumers = {key: service for service, keys in BINDINGS.items() for key in keys}
    events: dict[str, Any] = {}
    for routing_key, versions in VERSIONS.items():
        events[routing_key] = {"consumer": consumers.get(routing_key), "versions": {}}
        for version, cls in versions.items():
            schema = _without_prose(_inline(cls.model_json_schema(mode="validation")))
            events[routing_key]["versions"][str(version)] = {
                "fields": schema["properties"],
                "required": sorted(schema.get("required", [])),
            }
    return {"events": events}


def breaking_changes(released: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Every way `current` breaks a producer or consumer of `released`; [] when it does not."""
    problems: list[str] = []
    for routing_key, old in released["events"].items():
        new = current["events"].get(routing_key)
        if new is None:
            problems.append(f"routing key {routing_key} removed (or renamed): consumers of the release wait for it")
            continue
        if new["consumer"] != old["consumer"]:
            problems.append(f"{routing_key} is bound to {new['consumer']}'s queue, was {old['consumer']}'s")
        for version, was in old["versions"].items():
            now = new["versions"].get(version)
            where = f"{routing_key} version {version}"
            if now is None:
                problems.append(f"{where} removed: every released version must stay readable")
                continue
            for name, schema in was["fields"].items():
                if name not in now["fields"]:
                    problems.append(f"{where}: field {name} removed")
                elif now["fields"][name] != schema:
                    problems.append(
                        f"{where}: field {name} retyped: {json.dumps(schema, sort_keys=True)} -> "
                        f"{json.dumps(now['fields'][name], sort_keys=True)}"
                    )
            for name in sorted(set(now["required"]) - set(was["required"])):
                problems.append(f"{where}: field {name} is newly required")
    return problems


def render(snapshot: dict[str, Any]) -> str:
    return json.dumps(snapshot, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        SNAPSHOT.write_text(render(contract()))
        print(f"wrote {SNAPSHOT}")
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    problems = breaking_changes(json.loads(SNAPSHOT.read_text()), contract())
    for problem in problems:
        print(problem)
    if problems:
        print("breaking changes without a new version: add a version (docs/message-contract.md)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
