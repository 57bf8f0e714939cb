"""The chart tier's toolbox: charts/saga rendered by the real Helm engine (saga_dev.chart), as objects to query,
and the value sets every structural test runs on."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from saga_dev.chart import NAMESPACE, RELEASE, objects_of, render_templates
from saga_dev.plain_manifests import plain_values
from saga_dev.system_packages import fix_for

# The Kubernetes release the rendered objects are validated against (kind-config.yaml runs kind's default).
KUBE_VERSION = "1.31.0"

POD_OWNERS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"}


@dataclass
class Workload:
    """A pod template, with the object that owns it (a bare Pod owns itself, a CronJob its Jobs' template)."""

    owner: dict[str, Any]
    metadata: dict[str, Any]
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.owner['kind']}/{self.owner['metadata']['name']}"

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.get("labels", {})

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", "")

    def containers(self, *, init: bool = True) -> list[dict[str, Any]]:
        return [*(self.spec.get("initContainers", []) if init else []), *self.spec["containers"]]


@dataclass
class Rendered:
    values: dict[str, Any]
    templates: dict[str, str]
    objects: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.objects = objects_of(self.templates)

    @property
    def notes(self) -> str:
        return next((text for name, text in self.templates.items() if name.endswith("NOTES.txt")), "")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name), None)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        if (found := self.find(kind, name)) is None:
            raise KeyError(f"no {kind}/{name} in the rendered chart")
        return found

    @property
    def names(self) -> set[tuple[str, str]]:
        return {(obj["kind"], obj["metadata"]["name"]) for obj in self.objects}

    def workloads(self) -> Iterator[Workload]:
        for obj in self.objects:
            if obj["kind"] in POD_OWNERS:
                template = obj["spec"]["template"]
                yield Workload(obj, template.get("metadata", {}), template["spec"])
            elif obj["kind"] == "CronJob":
                template = obj["spec"]["jobTemplate"]["spec"]["template"]
                yield Workload(obj, template.get("metadata", {}), template["spec"])
            elif obj["kind"] == "Pod":
                yield Workload(obj, obj["metadata"], obj["spec"])

    def workload(self, component: str) -> Workload:
        found = [w for w in self.workloads() if w.component == component]
        if len(found) != 1:
            raise KeyError(f"{len(found)} workloads of component {component!r}")
        return found[0]

    def service_workloads(self) -> list[Workload]:
        """The Deployments of the order and customer services."""
        return [w for w in self.workloads() if w.owner["kind"] == "Deployment" and w.component.endswith("-service")]


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    """Every template of the chart (hooks and `helm test` included), as `helm install` would render it."""
    values = values or {}
    return Rendered(values, render_templates(values, name=name, namespace=namespace))


# Value sets that switch the chart's options; every structural test runs on each.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "observability-off": {
        "jaeger": {"enabled": False},
        "prometheus": {"enabled": False},
        "grafana": {"enabled": False},
    },
    "external-collector": {
        "jaeger": {"enabled": False},
        "grafana": {"enabled": False},
        "tracing": {
            "otlpEndpoint": "http://collector.observability:4318",
            "sampler": "parentbased_traceidratio",
            "samplerArg": "0.25",
        },
        # One operations CronJob off, network policies on: the databases admit the other one only.
        "cronJobs": {"prune": {"enabled": False}},
    },
    "existing-secrets": plain_values(),
    "replicas": {
        "rabbitmq": {"replicas": 5},
        "serviceDefaults": {
            "autoscaling": {"enabled": False},
            "replicas": 3,
            "settings": {"SAGA_CONSUMER_PREFETCH": "32"},
        },
        "services": {
            "order": {
                "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 6},
                # The reconcile CronJob must follow the order service's deadline.
                "settings": {"SAGA_DEADLINE_S": "45"},
            }
        },
        "networkPolicy": {"enabled": False},
        "cronJobDefaults": {"timeZone": "Europe/Berlin", "backoffLimit": 0},
        "cronJobs": {
            "reconcile": {"schedule": "*/5 * * * *", "graceSeconds": 120, "activeDeadlineSeconds": 240},
            "prune": {"outboxRetentionSeconds": 2592000, "inboxRetentionSeconds": 1209600},
        },
    },
    "single-broker": {
        "rabbitmq": {"replicas": 1},
        "services": {"customer": {"migration": {"afterMigrate": []}}},
        # No operations CronJobs at all.
        "cronJobDefaults": {"enabled": False},
    },
    # TLS on every hop to PostgreSQL and RabbitMQ, with the certificates the chart generates.
    "tls": {"tls": {"enabled": True}},
}
# Another release name, namespace and cluster domain: nothing may assume "saga".
OTHER_RELEASE = {"name": "shop", "namespace": "prod"}
OTHER_RELEASE_VALUES = {"clusterDomain": "k8s.internal"}

_cache: dict[str, Rendered] = {}


def rendered_variant(variant: str) -> Rendered:
    if variant not in _cache:
        if variant == "other-release":
            _cache[variant] = render(OTHER_RELEASE_VALUES, **OTHER_RELEASE)
        else:
            _cache[variant] = render(VARIANTS[variant])
    return _cache[variant]


ALL_VARIANTS = [*VARIANTS, "other-release"]


def require_tool(name: str, package: str) -> str:
    """A tool of a system package (`make system-packages` installs it): its absence fails, naming the fix."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {fix_for(package)}")
    return path
