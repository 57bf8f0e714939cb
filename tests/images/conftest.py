"""The images tier: both images built by `make images` on the project's own Docker engine, and what is in them
(marker `images`, from the folder). Their pods run on a real Kubernetes node in the cluster tier.

Needs root (dockerd runs as root; `make system-packages` installs the engine). The engine's data-root is kept
between runs (SAGA_DOCKER_ROOT), so a second run finds its base images and build cache: cold about 4 minutes,
warm well under one.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from saga_dev.chart import ROOT
from saga_dev.docker_engine import DOCKER, DockerEngine
from tests.images.built import IMAGE_TAG, OUR_IMAGES, BuiltImages


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
    built = BuiltImages(engine, time.monotonic() - started)
    sizes = ", ".join(
        f"{image}:{IMAGE_TAG} {built.size_mb(f'{image}:{IMAGE_TAG}'):.0f} MB" for image in sorted(OUR_IMAGES)
    )
    say(f"make images on {python_image}: {built.seconds:.1f} s ({sizes})")
    return built
