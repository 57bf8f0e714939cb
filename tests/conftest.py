"""Fixtures shared by every tier: a throwaway environment (databases + vhost) per test or per module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.infra import SagaEnvironment


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
