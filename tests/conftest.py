"""Fixtures shared by every tier: a throwaway environment (databases + vhost) per test or per module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from saga_dev.localstack import SagaEnvironment

TIERS = {"unit", "integration", "e2e", "observability", "chart", "images", "compose", "chaos", "perf"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test's tier is its folder: tests/<tier>/... gets the marker <tier>."""
    root = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(root).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def saga_env() -> Iterator[SagaEnvironment]:
    env = SagaEnvironment.create()
    try:
        yield env
    finally:
        env.destroy()


@pytest.fixture(scope="module")
def saga_env_module() -> Iterator[SagaEnvironment]:
    env = SagaEnvironment.create()
    try:
        yield env
    finally:
        env.destroy()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
