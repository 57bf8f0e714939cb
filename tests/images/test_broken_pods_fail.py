"""The images tier fails for the right reasons: a pod spec broken the way charts break is caught.

Each case takes the rendered order-service Deployment, changes one thing in its pod spec, and runs it exactly as
test_pods.py runs the real one; the run must end in PodFailed, naming what went wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.images.stack import ChartOnDocker
from tests.support.kubelet import PodFailed, mutated

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def migrated(chart_stack: ChartOnDocker) -> Iterator[ChartOnDocker]:
    chart_stack.run_migrations()
    yield chart_stack


def _container(spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = spec["containers"]
    return container


def rename_database_url(spec: dict[str, Any]) -> None:
    for item in _container(spec)["env"]:
        if item["name"] == "DATABASE_URL":
            item["name"] = "DATABASE_URI"


def drop_tmp_mount(spec: dict[str, Any]) -> None:
    container = _container(spec)
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] != "/tmp"]


def wrong_readiness_path(spec: dict[str, Any]) -> None:
    _container(spec)["readinessProbe"]["httpGet"]["path"] = "/ready"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (rename_database_url, "exited with code"),
        (drop_tmp_mount, "no writable temporary directory"),
        (wrong_readiness_path, "readiness probe failed"),
    ],
    ids=["env-name", "no-tmpfs", "probe-path"],
)
def test_a_broken_order_pod_fails_the_tier(
    migrated: ChartOnDocker, change: Callable[[dict[str, Any]], None], reason: str
) -> None:
    (workload,) = [w for w in migrated.ours("Deployment") if w.component == "order-service"]
    with pytest.raises(PodFailed, match=reason) as failure:
        migrated.start_service(mutated(workload, change))
    migrated.say(f"broken pod ({change.__name__}) failed as it should: {str(failure.value).splitlines()[0]}")


def test_the_unbroken_pod_passes_the_same_checks(migrated: ChartOnDocker) -> None:
    (workload,) = [w for w in migrated.ours("Deployment") if w.component == "order-service"]
    migrated.start_service(workload)
