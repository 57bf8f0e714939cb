from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from saga_dev.localstack import SagaEnvironment, ServiceProcess
from tests.support.otlp import OtlpReceiver, tracing_env
from tests.support.processes import both_services
from tests.support.saga_client import SagaClient, saga_client


@pytest.fixture(scope="module")
def traced_services(
    saga_env_module: SagaEnvironment, otlp_receiver: OtlpReceiver
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    with both_services(saga_env_module, tracing_env(otlp_receiver)) as services:
        yield services


@pytest.fixture
async def saga(traced_services: tuple[ServiceProcess, ServiceProcess]) -> AsyncIterator[SagaClient]:
    async with saga_client(*traced_services) as client:
        yield client
