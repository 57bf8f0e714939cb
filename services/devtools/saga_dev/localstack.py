"""A local saga stack, for the tests and the benchmark: throwaway databases, a RabbitMQ vhost of its own,
and the services as real processes (started, probed, signalled, restarted).

Nothing here touches names it did not create, so leftovers on the machine never change a result. Needs a
PostgreSQL that lets the configured user create databases, and a RabbitMQ: vhosts go through its management
HTTP API when the plugin answers (milliseconds), else through `rabbitmqctl` (it boots an Erlang VM per call,
about a second). The URLs come from SAGA_TEST_POSTGRES_URL, SAGA_TEST_RABBITMQ_URL and
SAGA_TEST_RABBITMQ_API_URL; when nothing answers there, the tests start private servers (`infra`, from
tests/conftest.py) and SAGA_TEST_RABBITMQ_NODE names the node `rabbitmqctl` talks to.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import httpx

from saga_common.persistence.db import drop_database, ensure_database
from saga_common.persistence.migrations import upgrade
from saga_dev.infra import LocalInfrastructure
from saga_dev.probes import free_port, pid_alive
from saga_dev.system_packages import fix_for

POSTGRES_URL = os.environ.get("SAGA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
RABBITMQ_URL = os.environ.get("SAGA_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")
RABBITMQ_USER = os.environ.get("SAGA_TEST_RABBITMQ_USER", "guest")
RABBITMQ_API_URL = os.environ.get("SAGA_TEST_RABBITMQ_API_URL", "http://127.0.0.1:15672/api")


def migrations_of(package: str) -> Path:
    """The Alembic directory a service package ships (imported lazily: sagactl installs need neither)."""
    return Path(import_module(package).__file__ or "").parent / "migrations"


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def rabbitmqctl(*args: str, node: str | None = None) -> str:
    """rabbitmqctl against the tests' broker: the private node when the tests started one, else the default."""
    binary = shutil.which("rabbitmqctl")
    if binary is None:
        raise RuntimeError(f"rabbitmqctl is not on PATH: {fix_for('rabbitmq-server')}")
    node = node or os.environ.get("SAGA_TEST_RABBITMQ_NODE")
    command = [binary, *(["-n", node] if node else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def _management_api(method: str, path: str, **kwargs: object) -> httpx.Response:
    parts = urlsplit(RABBITMQ_URL)
    auth = (parts.username or "guest", parts.password or "guest")
    response = httpx.request(method, f"{RABBITMQ_API_URL}/{path}", auth=auth, timeout=30, **kwargs)  # type: ignore[arg-type]
    response.raise_for_status()
    return response


@functools.cache
def management_api_answers() -> bool:
    """Asked once per process: .ci/run enables the plugin; without it every vhost costs ~3 Erlang VM boots."""
    try:
        _management_api("GET", "whoami")
    except httpx.HTTPError:
        return False
    return True


@dataclass
class Vhost:
    name: str
    base_url: str = RABBITMQ_URL

    @property
    def url(self) -> str:
        return f"{self.base_url}/{quote(self.name, safe='')}"

    def create(self) -> Vhost:
        if management_api_answers():
            vhost = quote(self.name, safe="")
            _management_api("PUT", f"vhosts/{vhost}")
            all_of_it = {"configure": ".*", "write": ".*", "read": ".*"}
            _management_api("PUT", f"permissions/{vhost}/{quote(RABBITMQ_USER, safe='')}", json=all_of_it)
        else:
            rabbitmqctl("add_vhost", self.name)
            rabbitmqctl("set_permissions", "-p", self.name, RABBITMQ_USER, ".*", ".*", ".*")
        return self

    def delete(self) -> None:
        if management_api_answers():
            _management_api("DELETE", f"vhosts/{quote(self.name, safe='')}")
        else:
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

    def names(self) -> tuple[str, str]:
        return self.order_url.rsplit("/", 1)[1], self.customer_url.rsplit("/", 1)[1]


def postgres_admin(*statements: str) -> list[list[tuple[object, ...]]]:
    """Run statements on the server's `postgres` database (in a thread: the caller may be on an event loop)."""

    async def run() -> list[list[tuple[object, ...]]]:
        conn = await asyncpg.connect(f"{POSTGRES_URL}/postgres", timeout=10)
        try:
            return [[tuple(row) for row in await conn.fetch(statement)] for statement in statements]
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


# sagatpl_<host>_<pid>_<random>_{orders,customers}: the host and pid tell whether a template's session is over.
TEMPLATE_PREFIX = "sagatpl"
TEMPLATE_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_TEMPLATE_NAME = re.compile(rf"^{TEMPLATE_PREFIX}_{TEMPLATE_HOST}_(\d+)_[0-9a-f]{{10}}_(orders|customers)$")


@dataclass
class DatabaseTemplates:
    """Both services' databases migrated once by the real Alembic histories; each environment's databases are
    then copies (CREATE DATABASE ... TEMPLATE: tens of milliseconds, where two Alembic runs take a second).

    `upgrade` alone grants nothing to any role (`migrate` does that, for the role its settings name), so the
    copies hold no grant to a cluster-wide role; the tests of roles run `migrate` on databases of their own."""

    databases: Databases

    @classmethod
    def build(cls) -> DatabaseTemplates:
        drop_stale_templates()
        templates = cls(Databases.fresh(f"{TEMPLATE_PREFIX}_{TEMPLATE_HOST}_{os.getpid()}").create())
        # CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template: let nobody connect.
        postgres_admin(*(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false' for name in templates.databases.names()))
        return templates

    def copy(self, prefix: str = "sagatest") -> Databases:
        copy = Databases.fresh(prefix)
        postgres_admin(
            *(
                f'CREATE DATABASE "{name}" TEMPLATE "{template}"'
                for name, template in zip(copy.names(), self.databases.names(), strict=True)
            )
        )
        return copy

    def drop(self) -> None:
        self.databases.drop()


def drop_stale_templates() -> None:
    """Templates of this machine's test sessions that ended without dropping them (killed, crashed)."""
    (rows,) = postgres_admin(f"SELECT datname FROM pg_database WHERE datname LIKE '{TEMPLATE_PREFIX}\\_%'")
    stale = [name for (name,) in rows if (m := _TEMPLATE_NAME.match(str(name))) and not pid_alive(int(m[1]))]
    if stale:
        postgres_admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in stale))


@contextmanager
def local_servers(*, home: Path, node_name: str, log: Callable[[str], None]) -> Iterator[LocalInfrastructure]:
    """PostgreSQL and RabbitMQ at the SAGA_TEST_* URLs: used as they are when they answer, else private servers
    (the management API on too) for the block, stopped after it. The test session and saga-bench both run in it."""
    infra = LocalInfrastructure.ensure(
        POSTGRES_URL,
        RABBITMQ_URL,
        home=home,
        node_name=node_name,
        management_port=urlsplit(RABBITMQ_API_URL).port or 15672,
        log=log,
    )
    if infra.rabbitmq is not None:
        os.environ["SAGA_TEST_RABBITMQ_NODE"] = infra.rabbitmq.name  # for rabbitmqctl (below)
    try:
        yield infra
    finally:
        infra.stop()
        os.environ.pop("SAGA_TEST_RABBITMQ_NODE", None)


@dataclass
class SagaEnvironment:
    """Everything a test needs to run the saga: two databases and a vhost, all its own."""

    databases: Databases
    vhost: Vhost

    @property
    def broker_url(self) -> str:
        return self.vhost.url

    @classmethod
    def create(cls, templates: DatabaseTemplates | None = None) -> SagaEnvironment:
        """Databases copied from `templates` (the tests), or migrated here (the benchmark, the API fuzzing)."""
        with ThreadPoolExecutor(1) as pool:  # the broker makes the vhost while PostgreSQL copies
            vhost = pool.submit(Vhost(unique_name("saga-test")).create)
            try:
                databases = templates.copy() if templates else Databases.fresh().create()
            except BaseException:
                vhost.result().delete()
                raise
            return cls(databases, vhost.result())

    def order_service(self, **options: Any) -> ServiceProcess:
        """A process of the order service on this environment's database and vhost, not started yet."""
        return ServiceProcess("order_service", self.databases.order_url, self.broker_url, **options)

    def customer_service(self, **options: Any) -> ServiceProcess:
        """A process of the customer service on this environment's database and vhost, not started yet."""
        return ServiceProcess("customer_service", self.databases.customer_url, self.broker_url, **options)

    def destroy(self) -> None:
        self.vhost.delete()
        self.databases.drop()


LOG_DIR = Path(os.environ.get("SAGA_TEST_LOG_DIR", "/tmp/saga-test-logs"))


@dataclass
class ServiceProcess:
    module: str  # "order_service" or "customer_service"
    database_url: str
    broker_url: str
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    # The CA of the certificate in extra_env's SAGA_HTTP_TLS_CERT_FILE: the API is then HTTPS, verified with it.
    tls_ca: Path | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls_ca else 'http'}://127.0.0.1:{self.port}"

    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client of this process verifies its API with."""
        return ssl.create_default_context(cafile=self.tls_ca) if self.tls_ca else True

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
        verify = self.verify()
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1, verify=verify).status_code == 200:
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


def unauthenticated_status(order: ServiceProcess, customer: ServiceProcess) -> dict[str, int]:
    """What each service answers a POST without a token (401 when authentication is on)."""
    body = {"customer_id": 1, "product_id": 1, "quantity": 1, "total_price": "1.00"}
    with httpx.Client(timeout=10) as http:
        order_answer = http.post(f"{order.base_url}/orders/", json=body)
        customer_answer = http.post(f"{customer.base_url}/customers", json={"name": "x", "balance": "1"})
    return {"order_service": order_answer.status_code, "customer_service": customer_answer.status_code}
