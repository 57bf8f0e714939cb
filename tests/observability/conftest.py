from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from saga_dev.localstack import SagaEnvironment, ServiceProcess
from tests.support.otlp import OtlpReceiver
from tests.support.processes import both_services
from tests.support.saga_client import SagaClient, saga_client


def tracing_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }


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
