"""Throwaway infrastructure for one test: its own PostgreSQL databases and its own RabbitMQ vhost.

Nothing a test does touches names it did not create, and nothing left on the machine changes a result.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import customer_service
import order_service
from saga_common.db import drop_database, ensure_database
from saga_common.migrations import upgrade

POSTGRES_URL = os.environ.get("SAGA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
RABBITMQ_URL = os.environ.get("SAGA_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
RABBITMQ_USER = os.environ.get("SAGA_TEST_RABBITMQ_USER", "guest")

ORDER_MIGRATIONS = Path(order_service.__file__).parent / "migrations"
CUSTOMER_MIGRATIONS = Path(customer_service.__file__).parent / "migrations"


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def rabbitmqctl(*args: str, node: str | None = None) -> str:
    binary = shutil.which("rabbitmqctl")
    if binary is None:
        raise RuntimeError(
            "rabbitmqctl is not on PATH: the tests need a local RabbitMQ (apt-get install rabbitmq-server)"
        )
    command = [binary, *(["-n", node] if node else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


@dataclass
class Vhost:
    name: str
    base_url: str = RABBITMQ_URL

    @property
    def url(self) -> str:
        return f"{self.base_url}/{quote(self.name, safe='')}"

    def create(self) -> Vhost:
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, RABBITMQ_USER, ".*", ".*", ".*")
        return self

    def delete(self) -> None:
        rabbitmqctl("delete_vhost", self.name)


@dataclass
class Databases:
    order_url: str
    customer_url: str

    @classmethod
    def fresh(cls, prefix: str = "sagatest") -> Databases:
        name = unique_name(prefix)
        return cls(f"{POSTGRES_URL}/{name}_orders", f"{POSTGRES_URL}/{name}_customers")

    def create(self) -> Databases:
        # Alembic's env.py runs its own event loop: keep it off the test's loop thread.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(self._create_and_migrate).result()
        return self

    def _create_and_migrate(self) -> None:
        asyncio.run(ensure_database(self.order_url))
        asyncio.run(ensure_database(self.customer_url))
        upgrade(ORDER_MIGRATIONS, self.order_url)
        upgrade(CUSTOMER_MIGRATIONS, self.customer_url)

    def drop(self) -> None:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(
                lambda: (asyncio.run(drop_database(self.order_url)), asyncio.run(drop_database(self.customer_url)))
            ).result()


@dataclass
class SagaEnvironment:
    """Everything a test needs to run the saga: two databases and a vhost, all its own."""

    databases: Databases
    vhost: Vhost

    @property
    def broker_url(self) -> str:
        return self.vhost.url

    @classmethod
    def create(cls) -> SagaEnvironment:
        return cls(Databases.fresh().create(), Vhost(unique_name("saga-test")).create())

    def destroy(self) -> None:
        self.vhost.delete()
        self.databases.drop()
