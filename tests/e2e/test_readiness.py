"""/readyz tells the truth: a service that cannot do its work answers 503 with the reason, not 200."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import httpx

from order_service.cli import MIGRATIONS
from saga_common.persistence.migrations import SchemaHistory, downgrade, upgrade
from saga_dev.localstack import ServiceProcess, unique_name
from tests.support.waiting import eventually


async def _role_without_table_privileges(database_url: str) -> tuple[str, str]:
    """A login role that may connect and read, but not lock or write the outbox (seen in a real deployment)."""
    role, password = unique_name("readonly"), uuid.uuid4().hex
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    finally:
        await conn.close()
    host, _, database = database_url.rpartition("/")
    return role, f"postgresql://{role}:{password}@{host.split('@')[-1]}/{database}"


async def _drop_role(database_url: str, role: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
    finally:
        await conn.close()


def unready_for(check: str) -> Callable[[httpx.Response], bool]:
    return lambda r: r.status_code == 503 and check in r.json().get("reasons", {})


async def readyz_until(
    http: httpx.AsyncClient, service: ServiceProcess, until: Callable[[httpx.Response], bool], what: str
) -> httpx.Response:
    """/readyz of a service that is starting, polled until `until` holds (30 s)."""
    return await eventually(
        lambda: http.get(f"{service.base_url}/readyz"),
        until=until,
        timeout=30,
        interval=0.2,
        ignoring=(httpx.HTTPError,),
        what=what,
    )


async def test_a_relay_that_fails_every_round_makes_the_service_unready_with_the_reason(saga_env):
    role, url = await _role_without_table_privileges(saga_env.databases.order_url)
    order = ServiceProcess("order_service", url, saga_env.broker_url, extra_env={"SAGA_RELAY_UNREADY_AFTER_S": "1"})
    await asyncio.to_thread(order.start, False)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            seen = await readyz_until(http, order, unready_for("outbox_relay"), "/readyz names the failing relay")
            body = seen.json()
            assert body["checks"]["database"] is True and body["checks"]["outbox_relay"] is False
            assert "permission denied for table outbox" in body["reasons"]["outbox_relay"]
    finally:
        order.stop()
        await _drop_role(saga_env.databases.order_url, role)


async def test_a_service_waits_on_readyz_until_its_migrations_have_run(saga_env):
    """The chart's migration Job runs beside the rollout: a pod of a release whose schema is not there yet must
    not be ready (old pods keep serving), and becomes ready once `migrate` has run."""
    await asyncio.to_thread(downgrade, MIGRATIONS, saga_env.databases.order_url, "0001")
    order = saga_env.order_service()
    await asyncio.to_thread(order.start, False)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            waiting = await readyz_until(http, order, unready_for("schema"), "/readyz waiting for the schema")
            head = SchemaHistory.of(MIGRATIONS).head
            assert f"at revision 0001, this release needs {head}" in waiting.json()["reasons"]["schema"]
            await asyncio.to_thread(upgrade, MIGRATIONS, saga_env.databases.order_url)
            await readyz_until(http, order, lambda r: r.status_code == 200, "/readyz ready once migrated")
    finally:
        order.stop()
