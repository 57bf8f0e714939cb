"""The services as real processes (the mechanics live in `saga_tools.localstack`, shared with the benchmark)."""

from collections.abc import Iterator
from contextlib import contextmanager

from saga_tools.localstack import LOG_DIR, SagaEnvironment, ServiceProcess, free_port

__all__ = ["LOG_DIR", "ServiceProcess", "both_services", "free_port"]


@contextmanager
def both_services(
    env: SagaEnvironment, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """(order, customer) running as processes on `env`; stopped gracefully at the end."""
    customer = ServiceProcess("customer_service", env.databases.customer_url, env.broker_url, extra_env=extra_env or {})
    order = ServiceProcess("order_service", env.databases.order_url, env.broker_url, extra_env=extra_env or {})
    customer.start()
    try:
        order.start()
        try:
            yield order, customer
        finally:
            order.stop()
    finally:
        customer.stop()
