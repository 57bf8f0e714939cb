"""What the services' apps answer, asked in process: the chart's probes and routes are checked against it."""

from __future__ import annotations

from customer_service.settings import CustomerSettings
from order_service.settings import OrderSettings


def answers(service: str, method: str, path: str) -> int:
    """The status the service's app gives a request, without its lifespan (no database, no broker): a 404 or
    405 means there is no such route. Building the app connects to nothing."""
    import asyncio

    import httpx

    from customer_service.main import create_app as customer_app
    from order_service.main import create_app as order_app

    app = {
        "order-service": lambda: order_app(OrderSettings()),
        "customer-service": lambda: customer_app(CustomerSettings()),
    }[service]()

    async def call() -> int:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return (await client.request(method, path, json={} if method == "POST" else None)).status_code

    return asyncio.run(call())


def has_route(service: str, method: str, path: str) -> bool:
    return answers(service, method, path) not in {404, 405}
