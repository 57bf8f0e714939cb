"""Fixtures shared by every tier: PostgreSQL and RabbitMQ (private ones when none answers), a throwaway
environment (databases + vhost) per test or per module, and each tier's time limit."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from saga_dev.docker_engine import DockerEngine
from saga_dev.infra import LocalInfrastructure
from saga_dev.localstack import (
    Databases,
    DatabaseTemplates,
    SagaEnvironment,
    local_servers,
)
from tests.support.otlp import OtlpReceiver

# Seconds a test of the tier may take, setup and teardown included (a module's first test also starts the
# module's fixtures), so a hang fails in a minute or two instead of at the global 300 s. Several times the
# slowest test measured on the 2-core machine (docs/testing.md), and above the longest wait a test makes of
# its own, so that wait fails first, with its message. A test or module with a timeout mark keeps its own.
TIER_TIMEOUTS = {
    "unit": 30,  # slowest 0.15 s
    "integration": 60,  # slowest 4.2 s
    "e2e": 120,  # slowest 8 s; 100 concurrent orders wait up to 60 s for their outcomes
    "observability": 90,  # slowest 10 s (a real Prometheus scraping both services)
    "chart": 60,  # slowest 11 s (the helm-test hook against a stand-in API)
    "perf": 120,  # the one smoke run, 23 s
    # Not re-measured; the images module and the chaos scenarios carry marks of their own.
    "chaos": 300,
    "images": 900,
    "compose": 600,  # the first test builds the stack's images (cold: over 5 min seen beside a build)
    "cluster": 1200,  # the module sets its own: one release goes through every step in file order
    "upgrade": 420,  # the one rolling upgrade, about 50 s
}
# The tiers that talk to the machine's PostgreSQL and RabbitMQ (the others bring their own or need none).
INFRASTRUCTURE_TIERS = {"integration", "e2e", "observability", "chaos", "perf", "upgrade"}
# Where the private servers keep their data between sessions (initdb once; a session then starts in seconds).
INFRA_HOME = Path(os.environ.get("SAGA_TEST_INFRA_HOME", "/var/tmp/saga-test-infra"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test's tier is its folder: tests/<tier>/... gets the marker <tier>, and the tier's time limit."""
    for item in items:
        tier = tier_of(item)
        if tier in TIER_TIMEOUTS:
            item.add_marker(getattr(pytest.mark, tier))
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(TIER_TIMEOUTS[tier]))


def tier_of(item: pytest.Item) -> str:
    return item.path.relative_to(Path(__file__).parent).parts[0]


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """Progress on the terminal even while pytest captures output."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(line, flush=True)


@pytest.fixture(scope="session", autouse=True)
def local_infrastructure(request: pytest.FixtureRequest) -> Iterator[LocalInfrastructure | None]:
    """PostgreSQL and RabbitMQ at the SAGA_TEST_* URLs: used as they are when they answer, else private servers
    started for this session (the management API on too) and stopped at its end."""
    if not {tier_of(item) for item in request.session.items} & INFRASTRUCTURE_TIERS:
        yield None
        return
    with local_servers(
        home=INFRA_HOME, node_name="saga-test", log=lambda line: _say(request, f"[infrastructure] {line}")
    ) as infra:
        yield infra


@pytest.fixture(scope="session")
def database_templates() -> Iterator[DatabaseTemplates]:
    """The migrations run once per session; every environment's databases are copies of these templates."""
    templates = DatabaseTemplates.build()
    try:
        yield templates
    finally:
        templates.drop()


Later = Callable[[Callable[[], None]], None]


@pytest.fixture(scope="session")
def later() -> Iterator[Later]:
    """Environments are dropped on a thread of their own while the next test runs (their names are unique, so
    nothing waits for them); the session waits for the last one and fails if any drop failed."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="saga-teardown")
    done: list[Future[None]] = []
    yield lambda work: done.append(pool.submit(work))
    pool.shutdown(wait=True)
    failures = [error for future in done if (error := future.exception()) is not None]
    if failures:
        raise failures[0]


def _saga_env(database_templates: DatabaseTemplates, later: Later) -> Iterator[SagaEnvironment]:
    """Two databases copied from the templates and a vhost of their own, dropped once the test is done."""
    env = SagaEnvironment.create(database_templates)
    try:
        yield env
    finally:
        later(env.destroy)


saga_env = pytest.fixture(_saga_env, name="saga_env")
saga_env_module = pytest.fixture(_saga_env, name="saga_env_module", scope="module")  # shared by a module's tests


@pytest.fixture(scope="module")
def migrated_databases() -> Iterator[Databases]:
    """Databases built by the real Alembic runs, not copied from the templates: for tests of the migrations."""
    databases = Databases.fresh().create()
    try:
        yield databases
    finally:
        databases.drop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


# A real OTLP/HTTP receiver for the services to export to (observability tier).
@pytest.fixture(scope="module")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    """The project's Docker engine (images, compose and cluster tiers), started if it does not answer and stopped again
    if it was started here; its data-root (the cache of images and builds) stays."""
    engine = DockerEngine.default()
    started = engine.start()
    yield engine
    if started:
        engine.stop()
