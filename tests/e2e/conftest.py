from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from saga_dev.localstack import SagaEnvironment, ServiceProcess
from tests.support import auth
from tests.support.processes import both_services
from tests.support.saga_client import SagaClient, saga_client


@pytest.fixture(scope="module")
def services(saga_env_module: SagaEnvironment) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """Both services as real processes, for the whole module."""
    with both_services(saga_env_module) as services:
        yield services


@pytest.fixture(scope="module")
def idp() -> Iterator[tuple[auth.JwksServer, object]]:
    """An identity provider for a module that turns authentication on: a JWKS server and the key it publishes
    (as `auth.KID`); `server.service_env(...)` gives the services' settings that trust it."""
    key = auth.rsa_key()
    with auth.jwks_server() as server:
        server.publish((key, auth.KID))
        yield server, key


@pytest.fixture
async def client(services: tuple[ServiceProcess, ServiceProcess]) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for tests that call the services (started for the module) themselves."""
    async with httpx.AsyncClient(timeout=20) as http:
        yield http


@pytest.fixture
async def saga(services: tuple[ServiceProcess, ServiceProcess]) -> AsyncIterator[SagaClient]:
    async with saga_client(*services) as client:
        yield client
