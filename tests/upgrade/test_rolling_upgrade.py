"""A mixed-version rolling upgrade under load: release N (before order.created v2) and release N+1 (the work tree)
side by side on the same databases and the same RabbitMQ, two replicas of each service rolled one at a time while
orders arrive at a steady rate, then the producers switched to v2. Counted as the chaos tier counts: every
accepted order terminal (0 lost), no second charge (0 duplicated), money conserved, no dead letter at all.

The steps are those of docs/message-contract.md#rolling-an-upgrade: N+1's migrations run while N serves, every
replica is rolled N -> N+1 with SAGA_PUBLISH_VERSIONS pinning order.created to version 1, then the order
replicas are rolled again without the pin (v2 from then on)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx
import pytest

from saga_common.persistence.migrations import upgrade
from saga_dev.localstack import Databases, ServiceProcess, Vhost, migrations_of, unique_name
from saga_tools import invariants
from tests.support.broker import broker_tool
from tests.support.saga_client import TERMINAL, money_of
from tests.support.waiting import eventually
from tests.upgrade.release import Release, revision_before_v2

pytestmark = pytest.mark.timeout(420)

RATE_PER_S = 15  # orders per second, throughout
SETTLE_S = 4  # load between two steps, so that every pairing of releases carries traffic
RICH, POOR = 8, 2
PIN_V1 = {"SAGA_PUBLISH_VERSIONS": json.dumps({"order.created": 1})}


@dataclass
class Load:
    """Orders at a steady rate over the order replicas that are in service now (round robin)."""

    targets: list[ServiceProcess]
    customers: list[int]
    accepted: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    # (when, replica, what) of every request not answered 201.
    refused: list[tuple[float, str, str]] = field(default_factory=list)
    attempted: int = 0
    running: bool = True

    async def run(self) -> None:
        rng = random.Random(22)
        async with httpx.AsyncClient(timeout=10) as http:
            pending: set[asyncio.Task[None]] = set()
            started = time.monotonic()
            while self.running:
                target = self.targets[self.attempted % len(self.targets)]
                body = {
                    "customer_id": rng.choice(self.customers),
                    "product_id": 7,
                    "quantity": 1,
                    "total_price": f"{rng.randint(100, 2000) / 100:.2f}",
                }
                task = asyncio.create_task(self._post(http, target.base_url, body))
                pending.add(task)
                task.add_done_callback(pending.discard)
                self.attempted += 1
                # Paced against the start, so a slow response does not lower the rate.
                await asyncio.sleep(max(0.0, started + self.attempted / RATE_PER_S - time.monotonic()))
            await asyncio.gather(*pending)

    async def _post(self, http: httpx.AsyncClient, base_url: str, body: dict[str, object]) -> None:
        try:
            response = await http.post(f"{base_url}/orders/", json=body)
        except httpx.HTTPError as exc:
            self._refused(base_url, type(exc).__name__)
            return
        if response.status_code == 201:
            self.accepted.append(int(response.json()["id"]))
        else:
            self._refused(base_url, str(response.status_code))

    def _refused(self, base_url: str, what: str) -> None:
        self.errors[what] += 1
        self.refused.append((time.monotonic(), base_url, what))


async def started(process: ServiceProcess) -> ServiceProcess:
    # ServiceProcess waits for /readyz synchronously: off the loop, so the load keeps its pace.
    return await asyncio.to_thread(process.start)


async def test_a_rolling_upgrade_from_release_n_under_load_loses_nothing(tmp_path: Path) -> None:
    figures: dict[str, object] = {}
    release_n = Release.build(revision_before_v2(), tmp_path / "release-n")
    assert release_n.imports_from_here("saga_common.contract.messages")
    assert "OrderCreatedV2" not in (release_n.root / "services/common/saga_common/contract/messages.py").read_text()
    figures |= {"release_n": release_n.revision[:10], "release_n_built_s": round(release_n.built_in_s, 2)}

    databases = Databases.fresh("sagaupgrade")
    vhost = Vhost(unique_name("saga-upgrade")).create()
    processes: list[ServiceProcess] = []
    try:
        # Release N's schema, by release N's own migrations.
        release_n.run("order_service", "migrate", env={"DATABASE_URL": databases.order_url})
        release_n.run("customer_service", "migrate", env={"DATABASE_URL": databases.customer_url})
        conn = await asyncpg.connect(databases.customer_url)
        try:
            customers = [
                await conn.fetchval("INSERT INTO customers (name, balance) VALUES ('u', $1) RETURNING id", balance)
                for balance in [Decimal("100000.00")] * RICH + [Decimal("0.00")] * POOR
            ]
        finally:
            await conn.close()
        money_before = await money_of(databases.customer_url)

        def process(module: str, release: Release | None, env: dict[str, str] | None = None) -> ServiceProcess:
            url = databases.order_url if module == "order_service" else databases.customer_url
            extra = (release.env() if release else {}) | (env or {})
            made = ServiceProcess(module, url, vhost.url, extra_env=extra)
            processes.append(made)
            return made

        async with broker_tool(vhost.url) as broker, broker.capture("order.created") as published:
            customer_replicas = [await started(process("customer_service", release_n)) for _ in range(2)]
            order_replicas = [await started(process("order_service", release_n)) for _ in range(2)]
            release_n_orders = {replica.base_url for replica in order_replicas}
            load = Load(targets=list(order_replicas), customers=customers)
            loading = asyncio.create_task(load.run())
            steps: list[dict[str, object]] = []

            async def roll(replicas: list[ServiceProcess], index: int, new: ServiceProcess, what: str) -> None:
                old = replicas[index]
                began = time.monotonic()
                if old in load.targets:
                    load.targets.remove(old)  # as a Service stops routing to a terminating pod
                    await asyncio.sleep(0.2)
                exit_code = await asyncio.to_thread(old.stop)
                assert exit_code in (0, -15), f"{what}: the old replica exited with {exit_code}"
                replicas[index] = await started(new)
                if new.module == "order_service":
                    load.targets.append(new)
                steps.append({"step": what, "s": round(time.monotonic() - began, 2), "accepted": len(load.accepted)})
                await asyncio.sleep(SETTLE_S)

            await asyncio.sleep(SETTLE_S)

            async def migrate(service: str, url: str) -> float:
                """A service's N+1 migrations while its release N replicas serve (as the chart's Job runs
                beside the rollout); a no-op when the release brings none."""
                began = time.monotonic()
                await asyncio.to_thread(upgrade, migrations_of(service), url)
                steps.append({"step": f"{service} N+1 migrations, N serving", "s": round(time.monotonic() - began, 2)})
                return began

            # Each service's migrations right before its own roll. A customer replica first, so release N's
            # order.created reaches N+1; then both order replicas, publishing v1 (pinned) to the customer replica
            # still on N; then the last one. Every consumer is N+1 before any producer publishes v2.
            await migrate("customer_service", databases.customer_url)
            await roll(customer_replicas, 0, process("customer_service", None, PIN_V1), "customer 0 N->N+1")
            migrated_at = await migrate("order_service", databases.order_url)
            for index in range(2):
                await roll(order_replicas, index, process("order_service", None, PIN_V1), f"order {index} N->N+1")
            await roll(customer_replicas, 1, process("customer_service", None, PIN_V1), "customer 1 N->N+1")
            # Every replica is N+1: the producers switch to v2, one replica at a time (v1 and v2 both in flight).
            for index in range(2):
                await roll(order_replicas, index, process("order_service", None), f"order {index} publishes v2")
            load.running = False
            await loading

            async def terminal_count() -> int:
                conn = await asyncpg.connect(databases.order_url)
                try:
                    return await conn.fetchval(
                        "SELECT count(*) FROM orders WHERE id = ANY($1::bigint[]) AND status = ANY($2::text[])",
                        load.accepted,
                        sorted(TERMINAL),
                    )
                finally:
                    await conn.close()

            converge_started = time.monotonic()
            await eventually(terminal_count, until=lambda n: n == len(load.accepted), timeout=60, what="every order")
            converged_s = time.monotonic() - converge_started
            versions = Counter(json.loads(m.body)["version"] for m in await published.settle(1.0))
            dead = {
                queue: await broker.queue_depth(queue)
                for queue in ("customer-service.dead-letter", "order-service.dead-letter")
            }

        order_conn = await asyncpg.connect(databases.order_url)
        customer_conn = await asyncpg.connect(databases.customer_url)
        try:
            snapshot = await invariants.load(order_conn, customer_conn)
            statuses = Counter(
                row["status"]
                for row in await order_conn.fetch(
                    "SELECT status FROM orders WHERE id = ANY($1::bigint[])", load.accepted
                )
            )
            created = await order_conn.fetchval("SELECT count(*) FROM orders")
        finally:
            await order_conn.close()
            await customer_conn.close()
        violations = invariants.violations(snapshot.orders, snapshot.reservations)
        money_after = await money_of(databases.customer_url)
        duplicated = [v for v in violations if v.kind in invariants.CHARGES]

        figures |= {
            "rate_per_s": RATE_PER_S,
            "attempted": load.attempted,
            "accepted": len(load.accepted),
            "client_errors": dict(load.errors),
            "refused_by": {
                "release N on its own schema": sum(
                    1 for t, url, _ in load.refused if url in release_n_orders and t < migrated_at
                ),
                "release N on N+1's schema": sum(
                    1 for t, url, _ in load.refused if url in release_n_orders and t >= migrated_at
                ),
                "release N+1": sum(1 for _, url, _ in load.refused if url not in release_n_orders),
            },
            "created_in_db": created,
            "lost": len(load.accepted) - sum(statuses[s] for s in TERMINAL),
            "duplicated": len(duplicated),
            "inconsistent": len(violations) - len(duplicated),
            "statuses": dict(statuses),
            "order_created_versions": {str(k): v for k, v in sorted(versions.items())},
            "dead_letters": dead,
            "money_before": str(money_before["total"]),
            "money_after": str(money_after["total"]),
            "converged_after_load_s": round(converged_s, 2),
            "steps": steps,
        }
        print("\nupgrade figures:", json.dumps(figures, indent=2))

        assert figures["lost"] == 0
        assert duplicated == [] and violations == [], violations[:10]
        assert money_after["total"] == money_before["total"], (money_before, money_after)
        assert money_after["min_balance"] >= 0
        assert dead == {"customer-service.dead-letter": 0, "order-service.dead-letter": 0}
        # Both versions crossed during the upgrade, and the sagas of each reached their outcome.
        assert versions[1] > 0 and versions[2] > 0, versions
        assert statuses["fulfilled"] > 0 and statuses["rejected"] > 0, statuses
        # A replica out of service gets no request, and no release refused anything: not release N on N+1's
        # schema either, which a migration that is not expand-only makes fail (docs/chaos.md, rolling upgrade).
        assert load.refused == [], load.refused[:10]
        assert created == len(load.accepted)
    finally:
        for each in processes:
            if each.process is not None and each.process.poll() is None:
                await asyncio.to_thread(each.stop)
        vhost.delete()
        databases.drop()
