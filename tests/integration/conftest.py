"""Fixtures of the integration tier: the services' runtimes in this process, built by their own composition roots."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import pytest

from customer_service import main as customer_main
from customer_service.settings import CustomerSettings
from order_service import main as order_main
from order_service.settings import OrderSettings
from order_service.waiters import OutcomeWaiters
from saga_common.contract.topology import ORDER_SERVICE
from saga_common.runtime import ServiceRuntime
from saga_dev.localstack import SagaEnvironment

RuntimeFactory = Callable[..., Any]


@pytest.fixture
def runtimes(saga_env: SagaEnvironment) -> RuntimeFactory:
    """Build in-process service runtimes against this test's own databases and vhost."""

    @asynccontextmanager
    async def make(
        service: str,
        *,
        handlers: dict[str, Any] | None = None,
        consume: bool = True,
        relay: bool = True,
        jobs: bool = False,
        **overrides: Any,
    ) -> AsyncIterator[ServiceRuntime]:
        common = {"rabbitmq_broker_url": saga_env.broker_url, "log_format": "text"} | overrides
        # The services' own composition roots build the spec; a test may swap the handlers, and the order
        # service's periodic jobs (deadline sweep, gauges) run only when it asks for them.
        if service == ORDER_SERVICE:
            settings: Any = OrderSettings(database_url=saga_env.databases.order_url, **common)
            spec = order_main.service_spec(settings, OutcomeWaiters())
        else:
            settings = CustomerSettings(database_url=saga_env.databases.customer_url, **common)
            spec = customer_main.service_spec(settings)
        spec = replace(spec, handlers=spec.handlers if handlers is None else handlers, jobs=spec.jobs if jobs else [])
        runtime = ServiceRuntime(settings, spec, consume=consume, relay=relay)
        await runtime.start()
        try:
            yield runtime
        finally:
            await runtime.stop()

    return make
