"""Both services as real processes, started and stopped together (the mechanics live in `saga_dev.localstack`)."""

from collections.abc import Iterator
from contextlib import contextmanager

from saga_dev.localstack import SagaEnvironment, ServiceProcess


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
