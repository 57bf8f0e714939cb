"""The chart tier's toolbox: charts/saga rendered by the real Helm engine (helm-python-sdk), as objects.

Also the generator of the plain manifests: `python -m tests.support.chart manifests` rewrites
k8s/saga.yaml from the chart and k8s/plain-values.yaml (that is what `make manifests` runs), and
tests/chart/test_plain_manifests.py fails when the file drifts from the chart.
"""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from saga_dev.system_packages import fix_for

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "saga"
K8S_DIR = ROOT / "k8s"
PLAIN_VALUES = K8S_DIR / "plain-values.yaml"
PLAIN_MANIFESTS = K8S_DIR / "saga.yaml"
RELEASE = "saga"
NAMESPACE = "saga"
# The Kubernetes release the rendered objects are validated against (kind-config.yaml runs kind's default).
KUBE_VERSION = "1.31.0"

POD_OWNERS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"}
# `kubectl apply -f` creates objects in file order: what others refer to first, the migration Jobs last.
APPLY_ORDER = [
    "Namespace",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "Role",
    "RoleBinding",
    "Service",
    "NetworkPolicy",
    "StatefulSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "CronJob",
    "Job",
    "Pod",
]


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
        for template, text in sorted(self.templates.items()):
            if template.endswith("NOTES.txt"):
                continue
            for document in yaml.safe_load_all(text):
                if document:
                    self.objects.append(document)

    @property
    def notes(self) -> str:
        return next((text for name, text in self.templates.items() if name.endswith("NOTES.txt")), "")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.of_kind(kind):
            if obj["metadata"]["name"] == name:
                return obj
        raise KeyError(f"no {kind}/{name} in the rendered chart")

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.get(kind, name)
        except KeyError:
            return None

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


@functools.cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(str(CHART_DIR))


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    """Every template of the chart (hooks and `helm test` included), as `helm install` would render it."""
    values = values or {}
    return Rendered(values, chart().render(values, name=name, namespace=namespace))


def hook_of(obj: dict[str, Any]) -> str | None:
    return (obj["metadata"].get("annotations") or {}).get("helm.sh/hook")


def plain_values() -> dict[str, Any]:
    return yaml.safe_load(PLAIN_VALUES.read_text())


def plain_objects() -> list[dict[str, Any]]:
    """The chart as plain manifests: no `helm test` objects, no Helm annotations, migrations as plain Jobs."""
    rendered = render(plain_values())
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]
    for obj in rendered.objects:
        if hook_of(obj) == "test":
            continue
        objects.append(_without_helm(obj))
    return sorted(objects, key=lambda obj: APPLY_ORDER.index(obj["kind"]))  # stable: template order within a kind


def _without_helm(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "annotations" and isinstance(value, dict):
                value = {k: v for k, v in value.items() if not k.startswith("helm.sh/")}
                if not value:
                    continue
            if key == "app.kubernetes.io/managed-by" and value == "Helm":
                value = "kubectl"
            out[key] = _without_helm(value)
        return out
    if isinstance(node, list):
        return [_without_helm(item) for item in node]
    return node


PLAIN_HEADER = """\
# The saga on Kubernetes without Helm: charts/saga rendered with k8s/plain-values.yaml
# (release "saga", namespace "saga", credentials from Secrets that k8s/create-secrets.sh makes).
#
#   kubectl create namespace saga
#   sh k8s/create-secrets.sh | kubectl apply -f -
#   kubectl apply -f k8s/saga.yaml
#
# Generated by `make manifests`; do not edit: change the chart and regenerate (a test fails on drift).
"""


class _PlainDumper(yaml.SafeDumper):
    """Multi-line strings (scripts, configs, dashboards) as literal blocks, readable in the file."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_PlainDumper.add_representer(str, _represent_str)


def plain_manifests_text() -> str:
    documents = [yaml.dump(obj, Dumper=_PlainDumper, sort_keys=False, width=120) for obj in plain_objects()]
    return PLAIN_HEADER + "".join(f"---\n{document}" for document in documents)


def main(argv: list[str]) -> int:
    if argv != ["manifests"]:
        print(f"usage: {sys.argv[0]} manifests", file=sys.stderr)
        return 2
    PLAIN_MANIFESTS.write_text(plain_manifests_text())
    print(f"wrote {PLAIN_MANIFESTS.relative_to(ROOT)} ({len(plain_objects())} objects)")
    return 0


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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
