"""A benchmark stack: fresh databases and vhost, N replicas of each service as processes, demo customers."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

from saga_dev.localstack import SagaEnvironment, ServiceProcess

# The services run as they would in production, except for INFO logs (a JSON line per saga step, which
# costs about 10% of the throughput here): WARNING keeps the figures about the saga, not the log volume.
SERVICE_ENV = {"SAGA_LOG_LEVEL": "WARNING", "SAGA_DEADLINE_S": "120"}
RICH_BALANCE = Decimal("1000000000.00")


@dataclass
class BenchStack:
    replicas: int = 1
    broker_urls: str | None = None  # None: a fresh vhost on the machine's RabbitMQ
    extra_env: dict[str, str] = field(default_factory=dict)
    env: SagaEnvironment | None = None
    orders: list[ServiceProcess] = field(default_factory=list)
    customers: list[ServiceProcess] = field(default_factory=list)

    def start(self) -> BenchStack:
        self.env = SagaEnvironment.create()
        broker = self.broker_urls or self.env.broker_url
        service_env = SERVICE_ENV | self.extra_env
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

    @property
    def order_urls(self) -> list[str]:
        return [process.base_url for process in self.orders]

    def create_customers(self, count: int) -> list[int]:
        ids = []
        with httpx.Client(timeout=10) as http:
            for n in range(count):
                response = http.post(
                    f"{self.customers[0].base_url}/customers", json={"name": f"bench {n}", "balance": str(RICH_BALANCE)}
                )
                response.raise_for_status()
                ids.append(int(response.json()["id"]))
        return ids

    def rss_mib(self) -> dict[str, float]:
        return {f"{p.module}:{p.port}": _rss_mib(p) for p in [*self.orders, *self.customers]}

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds (user + system) each service has used so far, replicas summed, from /proc."""
        used: dict[str, float] = {}
        for process in [*self.orders, *self.customers]:
            used[process.module] = used.get(process.module, 0.0) + _cpu_s(process)
        return used


def _rss_mib(process: ServiceProcess) -> float:
    assert process.process is not None
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(process: ServiceProcess) -> float:
    assert process.process is not None
    # Fields 14 and 15 of /proc/PID/stat, after the parenthesised command name: utime and stime, in ticks.
    fields = Path(f"/proc/{process.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def outcomes(order_database_url: str, order_ids: list[int], timeout_s: float) -> dict[int, tuple[str, float]]:
    """Wait (bounded) until every order is terminal; return id -> (status, completed_at as epoch seconds)."""
    conn = await asyncpg.connect(order_database_url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pending = await conn.fetchval(
                "SELECT count(*) FROM orders WHERE id = ANY($1::bigint[]) AND status IN ('pending', 'cancelling')",
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
