"""Throwaway infrastructure for one test: its own PostgreSQL databases and its own RabbitMQ vhost.

The mechanics live in `saga_tools.localstack`, shared with the benchmark.
"""

from saga_tools.localstack import (
    POSTGRES_URL,
    RABBITMQ_URL,
    RABBITMQ_USER,
    Databases,
    SagaEnvironment,
    Vhost,
    rabbitmqctl,
    unique_name,
)

__all__ = [
    "POSTGRES_URL",
    "RABBITMQ_URL",
    "RABBITMQ_USER",
    "Databases",
    "SagaEnvironment",
    "Vhost",
    "rabbitmqctl",
    "unique_name",
]
