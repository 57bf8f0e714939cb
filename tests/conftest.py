"""Fixtures shared by every tier: a throwaway environment (databases + vhost) per test or per module, and each
tier's time limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from saga_dev.localstack import Databases, DatabaseTemplates, SagaEnvironment
from tests.support.otlp import OtlpReceiver

# Seconds a test of the tier may take, setup and teardown included (a module's first test also starts its
# module fixtures): a few times the slowest test measured here, so a hang fails in minutes, not at 300 s.
# A test or module with a timeout mark of its own keeps it.
TIER_TIMEOUTS = {
    "unit": 30,
    "integration": 60,
    "e2e": 90,
    "observability": 90,
    "chart": 120,
    "perf": 120,
    "chaos": 300,
    "images": 900,
    "compose": 900,
}
TIERS = set(TIER_TIMEOUTS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test's tier is its folder: tests/<tier>/... gets the marker <tier>, and the tier's time limit."""
    root = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(root).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(TIER_TIMEOUTS[tier]))


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


@pytest.fixture
def saga_env(database_templates: DatabaseTemplates, later: Later) -> Iterator[SagaEnvironment]:
    env = SagaEnvironment.create(database_templates)
    try:
        yield env
    finally:
        later(env.destroy)


@pytest.fixture(scope="module")
def saga_env_module(database_templates: DatabaseTemplates, later: Later) -> Iterator[SagaEnvironment]:
    env = SagaEnvironment.create(database_templates)
    try:
        yield env
    finally:
        later(env.destroy)


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


# A real OTLP/HTTP receiver for the services to export to (observability and images tiers).
@pytest.fixture(scope="module")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
