"""A local saga stack, for the tests and the benchmark: throwaway databases, a RabbitMQ vhost of its own,
and the services as real processes (started, probed, signalled, restarted).

Nothing here touches names it did not create, so leftovers on the machine never change a result. Needs a
PostgreSQL that lets the configured user create databases, and `rabbitmqctl` for vhosts (the machine's
RabbitMQ); the URLs come from SAGA_TEST_POSTGRES_URL and SAGA_TEST_RABBITMQ_URL.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from urllib.parse import quote

import httpx

from saga_common.db import drop_database, ensure_database
from saga_common.migrations import upgrade

POSTGRES_URL = os.environ.get("SAGA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
RABBITMQ_URL = os.environ.get("SAGA_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
RABBITMQ_USER = os.environ.get("SAGA_TEST_RABBITMQ_USER", "guest")


def migrations_of(package: str) -> Path:
    """The Alembic directory a service package ships (imported lazily: sagactl installs need neither)."""
    return Path(import_module(package).__file__ or "").parent / "migrations"


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
        upgrade(migrations_of("order_service"), self.order_url)
        upgrade(migrations_of("customer_service"), self.customer_url)

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


LOG_DIR = Path(os.environ.get("SAGA_TEST_LOG_DIR", "/tmp/saga-test-logs"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServiceProcess:
    module: str  # "order_service" or "customer_service"
    database_url: str
    broker_url: str
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAGA_"))}
        env.update(
            DATABASE_URL=self.database_url,
            RABBITMQ_BROKER_URL=self.broker_url,
            SAGA_HTTP_HOST="127.0.0.1",
            SAGA_HTTP_PORT=str(self.port),
            SAGA_LOG_FORMAT="json",
            SAGA_OUTBOX_POLL_INTERVAL_S="0.5",
            SAGA_DRAIN_TIMEOUT_S="10",
        )
        env.update(self.extra_env)
        return env

    def start(self, wait_ready: bool = True, timeout: float = 30) -> ServiceProcess:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{self.module}-{self.port}-{int(time.time() * 1000)}.log"
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "serve"], env=self.env(), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} not ready after {timeout}s:\n{self.log_tail()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        """kill -9: no drain, no flush, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait for the graceful exit; returns the exit code (uvicorn re-raises the signal after
        its clean shutdown, so a graceful stop ends with -15, as Kubernetes expects)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise
        return self.process.returncode

    def restart(self) -> ServiceProcess:
        self.kill()
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""
