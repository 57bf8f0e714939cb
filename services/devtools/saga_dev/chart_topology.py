"""The broker topology of the chart, generated from the code: charts/saga/files/topology.yaml.

    python -m saga_dev.chart_topology > charts/saga/files/topology.yaml        (what `make chart-topology` runs)

The RabbitMQ definitions the chart renders (templates/_rabbitmq.tpl) are what `Topology.definitions()` and
`Topology.permissions()` of saga_common.contract.topology return, computed here with placeholders where the
chart's values decide: `${vhost}`, `${exchange}` (`${exchange_pattern}` inside a permission's pattern),
`${delivery_limit}` and `${retry_delay_ms}`. The template fills them in from each service's settings; an entry
that names `${retry_delay_ms}` is repeated once per retry delay. A service's queues are written once per queue type
the settings accept, and the defaults are the settings' own, for a service whose settings do not say.
tests/chart/test_chart_topology.py fails when the committed file and this disagree.
"""

from __future__ import annotations

import json
import os
import sys
import typing
from pathlib import Path
from typing import Any

import yaml

from saga_common.contract.topology import BINDINGS, Topology
from saga_common.settings import ServiceSettings

ROOT = Path(os.environ.get("SAGA_REPO_ROOT", Path(__file__).resolve().parents[3]))
TOPOLOGY_FILE = ROOT / "charts" / "saga" / "files" / "topology.yaml"

# What the chart's values may change, by the settings that carry them (the services read the same variables).
VALUE_SETTINGS = ("exchange", "queue_type", "delivery_limit", "retry_delays_ms")
QUEUE_TYPES: tuple[str, ...] = typing.get_args(ServiceSettings.model_fields["queue_type"].annotation)
# The fields of a permission that are regular expressions, where the exchange's name appears escaped.
PATTERN_FIELDS = ("configure", "write", "read")

HEADER = """\
# Generated from saga_common.contract.topology by `make chart-topology` (python -m saga_dev.chart_topology):
# do not edit. tests/chart/test_chart_topology.py fails when this file and the code disagree.
#
# The broker definitions of templates/_rabbitmq.tpl: the exchanges every service shares, and per service its
# requeue exchange, its queues (per queue type) with their arguments, its bindings and its user's permissions.
# The template fills in from each service's settings (`defaults` when they do not say): ${vhost} (rabbitmq.vhost),
# ${exchange}, ${exchange_pattern} (the exchange's name escaped for a pattern), ${delivery_limit}, and
# ${retry_delay_ms}, once per retry delay for an entry that names it. A placeholder that is a whole string stands
# for the value itself (a number where the value is one); inside a longer string, for its text.
"""


def placeholder(name: str) -> Any:
    """`${name}`, standing in for a value of the chart's (typed Any: it takes the place of ints too)."""
    return "${" + name + "}"


def _env_name(field: str) -> str:
    return ServiceSettings.model_config.get("env_prefix", "") + field.upper()


def _env_text(value: object) -> str:
    """A default as the environment variable would carry it."""
    return value if isinstance(value, str) else json.dumps(value)


def defaults() -> dict[str, str]:
    """The settings' own defaults (never the environment's), by environment variable."""
    return {
        _env_name(field): _env_text(ServiceSettings.model_fields[field].get_default(call_default_factory=True))
        for field in VALUE_SETTINGS
    }


def _in_patterns(permission: dict[str, str]) -> dict[str, str]:
    """A permission with `${exchange_pattern}` where its patterns name the exchange."""
    exchange, pattern = placeholder("exchange"), placeholder("exchange_pattern")
    return {
        key: value.replace(exchange, pattern) if key in PATTERN_FIELDS else value for key, value in permission.items()
    }


def _split(queue_type: str) -> tuple[list[dict[str, object]], dict[str, dict[str, list[dict[str, object]]]]]:
    """The topology's definitions for `queue_type`, as (the saga's exchange, each service's own part: its requeue
    exchange, its queues, the bindings to them, its user's permissions)."""
    topology = Topology(
        exchange=placeholder("exchange"),
        queue_type=queue_type,
        delivery_limit=placeholder("delivery_limit"),
        retry_delays_ms=(placeholder("retry_delay_ms"),),
    )
    vhost = placeholder("vhost")
    definitions = topology.definitions(vhost)
    shared = [e for e in definitions["exchanges"] if e["name"] == topology.exchange]
    services = {}
    for service in BINDINGS:
        queues = set(topology.queue_arguments(service))
        permission, topic = topology.permissions(service, service, vhost)
        services[service] = {
            "exchanges": [
                e for e in definitions["exchanges"] if e["name"] == topology.queues(service).requeue_exchange
            ],
            "queues": [q for q in definitions["queues"] if q["name"] in queues],
            "bindings": [b for b in definitions["bindings"] if b["destination"] in queues],
            "permissions": [_in_patterns(permission)],
            "topic_permissions": [_in_patterns(topic)],
        }
    for section, entries in definitions.items():
        placed = sum(len(own[section]) for own in services.values()) + (len(shared) if section == "exchanges" else 0)
        if placed != len(entries):
            raise ValueError(f"{section}: each must be the saga's exchange or belong to exactly one service")
    return shared, services


def generate() -> dict[str, Any]:
    parts = {queue_type: _split(queue_type) for queue_type in QUEUE_TYPES}
    shared, services = parts[QUEUE_TYPES[0]]
    # Only the queues' arguments depend on the queue type: the rest is written once.
    for queue_type, (other_shared, other_services) in parts.items():
        for service, own in other_services.items():
            if other_shared != shared or any(own[k] != services[service][k] for k in own if k != "queues"):
                raise ValueError(f"{service}: more than its queues differs for queue type {queue_type}")
    return {
        "defaults": defaults(),
        "exchanges": shared,
        "services": {
            service: own | {"queues": {queue_type: parts[queue_type][1][service]["queues"] for queue_type in parts}}
            for service, own in services.items()
        },
    }


def render() -> str:
    return HEADER + yaml.safe_dump(generate(), sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
