from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from customer_service.handlers import HANDLERS as CUSTOMER_HANDLERS
from customer_service.handlers import lock_order as customer_lock_order
from customer_service.settings import CustomerSettings
from order_service.jobs import order_jobs
from order_service.saga import HANDLERS as ORDER_HANDLERS
from order_service.settings import OrderSettings
from saga_common.contract.topology import CUSTOMER_SERVICE, ORDER_SERVICE
from saga_common.runtime import ServiceRuntime, ServiceSpec
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
        if service == ORDER_SERVICE:
            settings: Any = OrderSettings(database_url=saga_env.databases.order_url, **common)
            default_handlers = ORDER_HANDLERS
        else:
            settings = CustomerSettings(database_url=saga_env.databases.customer_url, **common)
            default_handlers = CUSTOMER_HANDLERS
        spec = ServiceSpec(
            service,
            handlers if handlers is not None else default_handlers,
            jobs=order_jobs(settings) if jobs and service == ORDER_SERVICE else [],
        )
        if service == CUSTOMER_SERVICE:
            spec.lock_order = customer_lock_order
        runtime = ServiceRuntime(settings, spec, consume=consume, relay=relay)
        await runtime.start()
        try:
            yield runtime
        finally:
            await runtime.stop()

    return make


__all__ = ["CUSTOMER_SERVICE", "ORDER_SERVICE"]
