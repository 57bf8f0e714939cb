"""The chart tier: charts/saga rendered by the real Helm engine for the defaults and for value sets that flip
its options. Nothing here needs a cluster, a Docker engine or the network. Marker: `chart` (from the folder)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from saga_dev.system_packages import fix_for
from tests.chart.saga_chart import Rendered, plain_values, render

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


@pytest.fixture(params=ALL_VARIANTS)
def variant(request: pytest.FixtureRequest) -> Rendered:
    return rendered_variant(request.param)


@pytest.fixture
def default() -> Rendered:
    return rendered_variant("defaults")


def require_tool(name: str, package: str) -> str:
    """A tool of a system package (`make system-packages` installs it): its absence fails, naming the fix."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: {fix_for(package)}")
    return path
