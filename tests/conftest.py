"""Fixtures shared by every tier: a throwaway environment (databases + vhost) per test or per module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from saga_dev.localstack import SagaEnvironment
from tests.support.otlp import OtlpReceiver

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


# A real OTLP/HTTP receiver for the services to export to (observability and images tiers).
@pytest.fixture(scope="module")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
