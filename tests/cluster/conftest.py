"""The cluster tier's fixtures: the cluster (a kubeconfig context of the user's, or the single-node cluster of
saga_dev.node, built and started here), both service images under two tags (the second for `helm upgrade`),
and the figures printed at the end.

Needs root for the node (network namespace, mounts, cgroups) and the system packages of `make system-packages`.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from saga_dev.docker_engine import DockerEngine
from saga_dev.node import build, images
from saga_dev.node.node import Node
from tests.support.cluster import FIGURES, LOCAL_VALUES, NEXT_TAG, TAG, ClusterUnderTest, say

FIGURES_PATH = Path(os.environ.get("SAGA_CLUSTER_FIGURES", "/tmp/saga-cluster-figures.json"))
STARTED = time.monotonic()


def _our_node() -> Iterator[ClusterUnderTest]:
    started = time.monotonic()
    built = build.build_all(say)
    if built:
        FIGURES["cold build of the node's parts (s)"] = time.monotonic() - started
    engine = DockerEngine.default()
    engine_started = engine.start()
    try:
        started = time.monotonic()
        services = images.service_images(engine, TAG, say)
        retagged = images.retagged(engine, services, NEXT_TAG)
        archives = [
            images.pause_image(),
            images.helper_image(),
            images.jaeger_image(),
            images.prometheus_image(),
            *images.standin_images(engine, say),
            *services,
            *retagged,
        ]
        images.prune(archives)
        FIGURES["images built or found (s)"] = time.monotonic() - started
    finally:
        if engine_started:
            engine.stop()
    node = Node.default()
    FIGURES["node start (s)"] = node.up(archives, say)
    try:
        yield ClusterUnderTest(
            kubectl_bin=str(build.binary("kubectl")),
            helm_bin=str(build.binary("helm")),
            kubeconfig=node.kubeconfig,
            values_files=[LOCAL_VALUES],
        )
    finally:
        FIGURES["node stop and clean-up (s)"] = node.down(say)


def _users_cluster(context: str) -> Iterator[ClusterUnderTest]:
    """A kind cluster (or any) of the user's: images built with their Docker and loaded with kind."""
    kind_cluster = os.environ.get("SAGA_KIND_CLUSTER", context.removeprefix("kind-"))
    for tag in (TAG, NEXT_TAG):
        subprocess.run(["make", "images", f"IMAGE_TAG={tag}"], check=True)
    cluster = ClusterUnderTest(kubectl_bin="kubectl", helm_bin="helm", context=context)
    subprocess.run(
        ["make", "kind-load", f"KIND_CLUSTER={kind_cluster}", f"IMAGE_TAG={TAG}"], check=True, env=cluster.env()
    )
    subprocess.run(
        ["make", "kind-load", f"KIND_CLUSTER={kind_cluster}", f"IMAGE_TAG={NEXT_TAG}"], check=True, env=cluster.env()
    )
    yield cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterUnderTest]:
    context = os.environ.get("SAGA_CLUSTER_CONTEXT")
    yield from (_users_cluster(context) if context else _our_node())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FIGURES:
        return
    FIGURES["the tier, in all (s)"] = time.monotonic() - STARTED
    terminalreporter.section("cluster: figures")
    for name, value in FIGURES.items():
        terminalreporter.write_line(f"{name:60} {value:8.1f}")
    FIGURES_PATH.write_text(json.dumps(FIGURES, indent=2) + "\n")
    terminalreporter.write_line(f"(written to {FIGURES_PATH})")
