"""The images tier: both images built by `make images` on the project's own Docker engine, then the rendered
chart's pods of ours run from them as a kubelet would (marker `images`, from the folder).

Needs root (dockerd runs as root; `make system-packages` installs the engine) and the machine's
PostgreSQL and RabbitMQ. The engine's data-root is kept between runs (SAGA_DOCKER_ROOT), so a second run finds
its base images and build cache: cold about 4 minutes, warm well under one.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from saga_dev.docker_engine import DOCKER, DockerEngine
from tests.images.stack import IMAGE_TAG, OUR_IMAGES, BuiltImages, ChartOnDocker, new_stack
from tests.support.chart import ROOT, Rendered
from tests.support.kubelet import Kubelet
from tests.support.otlp import OtlpReceiver


def say(line: str) -> None:
    print(f"[images] {line}", flush=True)


@pytest.fixture(scope="session")
def images(engine: DockerEngine) -> BuiltImages:
    python_image = engine.python_base()
    started = time.monotonic()
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "images",
            f"DOCKER={DOCKER}",
            f"IMAGE_TAG={IMAGE_TAG}",
            f"PYTHON_IMAGE={python_image}",
            "DOCKER_BUILD_FLAGS=--network=host --quiet",
        ],
        cwd=ROOT,
        env=engine.env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, f"make images failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    built = BuiltImages(engine, python_image, time.monotonic() - started)
    sizes = ", ".join(
        f"{image}:{IMAGE_TAG} {built.size_mb(f'{image}:{IMAGE_TAG}'):.0f} MB" for image in sorted(OUR_IMAGES)
    )
    say(f"make images on {python_image}: {built.seconds:.1f} s ({sizes})")
    return built


@pytest.fixture(scope="module")
def chart_stack(engine: DockerEngine, images: BuiltImages, otlp_receiver: OtlpReceiver) -> Iterator[ChartOnDocker]:
    """The chart rendered with names of this module's own; its databases, roles, vhost and users created."""

    def kubelet(rendered: Rendered) -> Kubelet:
        return Kubelet(engine, rendered, OUR_IMAGES, report=say)

    stack, _ = new_stack(kubelet, otlp_receiver.endpoint)
    try:
        stack.prepare_databases()
        stack.prepare_broker()
        yield stack
    finally:
        stack.teardown()
