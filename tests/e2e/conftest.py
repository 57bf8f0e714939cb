from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from saga_dev.localstack import SagaEnvironment, ServiceProcess
from tests.support.processes import both_services
from tests.support.saga_client import SagaClient, saga_client


@pytest.fixture(scope="module")
def services(saga_env_module: SagaEnvironment) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """Both services as real processes, for the whole module."""
    with both_services(saga_env_module) as services:
        yield services


@pytest.fixture
async def saga(services: tuple[ServiceProcess, ServiceProcess]) -> AsyncIterator[SagaClient]:
    async with saga_client(*services) as client:
        yield client
