"""A benchmark stack: fresh databases and vhost, N replicas of each service as processes, demo customers.

Authentication is on, as in production: the services trust a signing key of the stack's own
(`saga_tools.tokens.LocalIdentity`, in a temporary directory that lives as long as the stack), and the load
generator sends a token minted with it.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

from saga_common.contract.statuses import IN_PROGRESS_STATUSES, sql_in
from saga_dev.bench import cpu
from saga_dev.localstack import SagaEnvironment, ServiceProcess, unauthenticated_status
from saga_tools.tokens import LocalIdentity

# The services run as they would in production, except for INFO logs (a JSON line per saga step, which
# costs about 10% of the throughput here): WARNING keeps the figures about the saga, not the log volume.
SERVICE_ENV = {"SAGA_LOG_LEVEL": "WARNING", "SAGA_DEADLINE_S": "120"}
RICH_BALANCE = Decimal("1000000000.00")
LOAD_SCOPES = ("orders:write", "orders:read", "customers:all")  # one token orders for every customer


@dataclass
class BenchStack:
    replicas: int = 1
    broker_urls: str | None = None  # None: a fresh vhost on the machine's RabbitMQ
    extra_env: dict[str, str] = field(default_factory=dict)
    env: SagaEnvironment | None = None
    orders: list[ServiceProcess] = field(default_factory=list)
    customers: list[ServiceProcess] = field(default_factory=list)
    identity: LocalIdentity | None = None
    _identity_dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> BenchStack:
        self._identity_dir = tempfile.TemporaryDirectory(prefix="saga-bench-idp-")
        self.identity = LocalIdentity(Path(self._identity_dir.name))
        self.env = SagaEnvironment.create()
        broker = self.broker_urls or self.env.broker_url
        service_env = SERVICE_ENV | self.identity.service_env() | self.extra_env
        for _ in range(self.replicas):
            self.customers.append(
                ServiceProcess("customer_service", self.env.databases.customer_url, broker, extra_env=service_env)
            )
            self.orders.append(
                ServiceProcess("order_service", self.env.databases.order_url, broker, extra_env=service_env)
            )
        for process in [*self.customers, *self.orders]:
            process.start(wait_ready=False)
        for process in [*self.customers, *self.orders]:
            process.wait_ready(60)
        return self

    def stop(self) -> None:
        for process in [*self.orders, *self.customers]:
            try:
                process.stop(30)
            except Exception:  # noqa: BLE001 - a stuck process is killed; the figures are already taken
                process.kill()
        if self.env is not None:
            self.env.destroy()
        if self._identity_dir is not None:
            self._identity_dir.cleanup()

    @property
    def order_urls(self) -> list[str]:
        return [process.base_url for process in self.orders]

    def token(self, ttl_s: float) -> str:
        """The load generator's one token: minted once, valid for `ttl_s`."""
        assert self.identity is not None
        return self.identity.token(LOAD_SCOPES, subject="saga-bench", ttl_s=ttl_s)

    def unauthenticated_status(self) -> dict[str, int]:
        return unauthenticated_status(self.orders[0], self.customers[0])

    def create_customers(self, count: int) -> list[int]:
        assert self.identity is not None
        ids = []
        headers = self.identity.headers(["customers:write", "customers:all"])
        with httpx.Client(timeout=10, headers=headers) as http:
            for n in range(count):
                response = http.post(
                    f"{self.customers[0].base_url}/customers", json={"name": f"bench {n}", "balance": str(RICH_BALANCE)}
                )
                response.raise_for_status()
                ids.append(int(response.json()["id"]))
        return ids

    def rss_mib(self) -> dict[str, float]:
        return {f"{p.module}:{p.port}": _rss_mib(p) for p in [*self.orders, *self.customers]}

    async def cpu_meter(self) -> cpu.CpuMeter:
        """Every process of the scenario: the services (replicas summed), PostgreSQL (the postmaster, found as
        the parent of a backend of ours, and all its children), the broker node(s) the services use."""
        assert self.env is not None
        conn = await asyncpg.connect(self.env.databases.order_url)
        try:  # read while connected: the backend exits with its connection
            postmaster = cpu.parent_of(await conn.fetchval("SELECT pg_backend_pid()"))
        finally:
            await conn.close()
        brokers = cpu.broker_pids((self.broker_urls or self.env.broker_url).split(","))
        if postmaster is None or not brokers:
            raise RuntimeError(f"cannot find the processes to measure: postmaster {postmaster}, brokers {brokers}")
        groups: dict[str, list[int]] = {}
        for process in [*self.orders, *self.customers]:
            assert process.process is not None
            groups.setdefault(process.module, []).append(process.process.pid)
        return cpu.CpuMeter(groups | {"postgresql": [postmaster], "rabbitmq": brokers})


def _rss_mib(process: ServiceProcess) -> float:
    assert process.process is not None
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def outcomes(order_database_url: str, order_ids: list[int], timeout_s: float) -> dict[int, tuple[str, float]]:
    """Wait (bounded) until every order is terminal; return id -> (status, completed_at as epoch seconds)."""
    conn = await asyncpg.connect(order_database_url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pending = await conn.fetchval(
                f"SELECT count(*) FROM orders WHERE id = ANY($1::bigint[]) AND {sql_in(IN_PROGRESS_STATUSES)}",
                order_ids,
            )
            if not pending:
                break
            await asyncio.sleep(0.5)
        rows = await conn.fetch(
            "SELECT id, status, extract(epoch FROM completed_at) AS done FROM orders WHERE id = ANY($1::bigint[])",
            order_ids,
        )
        return {row["id"]: (row["status"], float(row["done"]) if row["done"] is not None else 0.0) for row in rows}
    finally:
        await conn.close()
