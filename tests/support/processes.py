"""Both services as real processes, started and stopped together (the mechanics live in `saga_dev.localstack`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx

from saga_dev.localstack import SagaEnvironment, ServiceProcess
from tests.support.saga_client import SagaClient


@contextmanager
def both_services(
    env: SagaEnvironment, extra_env: dict[str, str] | None = None, tls_ca: Path | None = None
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """(order, customer) running as processes on `env`; stopped gracefully at the end. With `tls_ca`, extra_env
    gives them a certificate signed by it: their APIs are HTTPS, verified with that CA."""
    customer = env.customer_service(extra_env=extra_env or {}, tls_ca=tls_ca)
    order = env.order_service(extra_env=extra_env or {}, tls_ca=tls_ca)
    customer.start()
    try:
        order.start()
        try:
            yield order, customer
        finally:
            order.stop()
    finally:
        customer.stop()


class Saga:
    """Both services as processes in a test's own environment, with per-test settings, and a client of both."""

    def __init__(self, env: SagaEnvironment, order_env: dict | None = None, customer_env: dict | None = None):
        self.env = env
        self.customer = env.customer_service(extra_env=customer_env or {})
        self.order = env.order_service(extra_env=order_env or {})

    async def __aenter__(self) -> tuple[Saga, SagaClient]:
        await asyncio.to_thread(self.customer.start)
        await asyncio.to_thread(self.order.start)
        self._http = httpx.AsyncClient(timeout=40)
        return self, SagaClient(self.order.base_url, self.customer.base_url, self._http)

    async def __aexit__(self, *exc) -> None:
        await self._http.aclose()
        self.order.stop()
        self.customer.stop()


async def sql(database_url: str, query: str, *args):
    """The rows of one statement on its own connection: for a test to look at, or age, what the services wrote."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()
