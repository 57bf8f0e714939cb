"""Least privilege in the databases, on the machine's PostgreSQL with roles and databases of the test's own.

Each database belongs to an owner role that runs the migrations (`migrate`, as the chart's migration Job runs
it); the service connects as a service role `migrate` grants data access to and nothing more. The service role
of one database cannot reach the other database, and cannot drop, alter, truncate or create tables in its own.
The saga runs with the service roles.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from saga_dev.localstack import POSTGRES_URL, Vhost, unique_name
from tests.support.processes import ServiceProcess

SERVICES = ("order", "customer")


@dataclass
class Roles:
    prefix: str
    passwords: dict[str, str]

    def owner(self, service: str) -> str:
        return f"{self.prefix}_{service}_owner"

    def role(self, service: str) -> str:
        return f"{self.prefix}_{service}_svc"

    def database(self, service: str) -> str:
        return f"{self.prefix}_{service}s"

    def url(self, service: str, *, login: str, database: str | None = None) -> str:
        host = POSTGRES_URL.split("@", 1)[1]
        password = self.passwords.get(login, "")
        credentials = f"{login}:{password}" if password else login
        return f"postgresql://{credentials}@{host}/{database or self.database(service)}"


async def _admin(statements: list[str]) -> None:
    conn = await asyncpg.connect(f"{POSTGRES_URL}/postgres")
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _migrate(roles: Roles, service: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    env.update(
        DATABASE_URL=roles.url(service, login=roles.owner(service)),
        SAGA_SERVICE_DATABASE_ROLE=roles.role(service),
        SAGA_SERVICE_DATABASE_PASSWORD=roles.passwords[roles.role(service)],
    )
    result = subprocess.run(
        [sys.executable, "-m", f"{service}_service", "migrate", "--no-create"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert roles.passwords[roles.role(service)] not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def roles() -> Iterator[Roles]:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    roles = Roles(prefix, {})
    for service in SERVICES:
        roles.passwords[roles.role(service)] = secrets.token_urlsafe(18)
        roles.passwords[roles.owner(service)] = secrets.token_urlsafe(18)
    create = []
    for service in SERVICES:
        # The owner is no superuser: it owns its database and may create the service role, nothing more.
        create += [
            f"CREATE ROLE {roles.owner(service)} LOGIN CREATEROLE PASSWORD '{roles.passwords[roles.owner(service)]}'",
            f"CREATE DATABASE {roles.database(service)} OWNER {roles.owner(service)}",
        ]
    asyncio.run(_admin(create))
    try:
        for service in SERVICES:
            _migrate(roles, service)
        yield roles
    finally:
        drop = [f"DROP DATABASE IF EXISTS {roles.database(s)} WITH (FORCE)" for s in SERVICES]
        drop += [f"DROP ROLE IF EXISTS {roles.role(s)}" for s in SERVICES]
        drop += [f"DROP ROLE IF EXISTS {roles.owner(s)}" for s in SERVICES]
        asyncio.run(_admin(drop))


async def connect(roles: Roles, service: str, *, database_of: str | None = None) -> asyncpg.Connection:
    url = roles.url(service, login=roles.role(service), database=roles.database(database_of or service))
    return await asyncpg.connect(url)


TABLES = {"order": "orders", "customer": "customers"}


@pytest.mark.parametrize(("service", "other"), [("order", "customer"), ("customer", "order")])
async def test_a_service_role_cannot_reach_the_other_database(roles, service, other):
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
        await connect(roles, service, database_of=other)
    # Even a role granted CONNECT by mistake would find no table it may read or write there.
    conn = await asyncpg.connect(f"{POSTGRES_URL}/{roles.database(other)}")
    try:
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
            assert not await conn.fetchval(
                "SELECT has_table_privilege($1, $2, $3)", roles.role(service), TABLES[other], privilege
            )
    finally:
        await conn.close()


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_role_reads_and_writes_its_tables_and_changes_no_schema(roles, service):
    conn = await connect(roles, service)
    table = TABLES[service]
    try:
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") >= 0
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO inbox (message_id, message_type, order_id, occurred_at) VALUES ($1, 'test', 1, now())",
                uuid.uuid4(),
            )
            await conn.execute("DELETE FROM inbox WHERE message_type = 'test'")
        for statement, error in [
            (f"DROP TABLE {table}", "must be owner"),
            (f"DROP TABLE inbox, outbox, {table} CASCADE", "must be owner"),
            (f"TRUNCATE {table}", "permission denied"),
            (f"ALTER TABLE {table} ADD COLUMN evil int", "must be owner"),
            (f"ALTER TABLE {table} DISABLE TRIGGER ALL", "must be owner"),
            ("CREATE TABLE evil (id int)", "permission denied for schema public"),
            ("UPDATE alembic_version SET version_num = 'x'", "permission denied"),
            ("CREATE ROLE evil", "permission denied"),
        ]:
            with pytest.raises(asyncpg.PostgresError, match=error):
                await conn.execute(statement)
                pytest.fail(f"allowed: {statement}")
        assert await conn.fetchval("SELECT version_num FROM alembic_version") is not None
    finally:
        await conn.close()


async def test_the_saga_runs_with_the_service_roles(roles):
    vhost = Vhost(unique_name("saga-roles")).create()
    order = ServiceProcess("order_service", roles.url("order", login=roles.role("order")), vhost.url)
    customer = ServiceProcess("customer_service", roles.url("customer", login=roles.role("customer")), vhost.url)
    try:
        customer.start()
        order.start()
        async with httpx.AsyncClient(timeout=20) as http:
            created = await http.post(f"{customer.base_url}/customers", json={"name": "roles", "balance": "50.00"})
            assert created.status_code == 201, created.text
            placed = await http.post(
                f"{order.base_url}/orders/",
                json={"customer_id": created.json()["id"], "product_id": 1, "quantity": 1, "total_price": "20.00"},
            )
            assert placed.status_code == 201, placed.text
            done = await http.get(f"{order.base_url}/orders/{placed.json()['id']}?wait=20")
            assert done.json()["status"] == "fulfilled", done.text
            saga = await http.get(f"{order.base_url}/orders/{placed.json()['id']}/saga")
            assert saga.status_code == 200, saga.text
            produced = saga.text + done.text
            for process in (order, customer):
                produced += (await http.get(f"{process.base_url}/metrics")).text
        for process in (order, customer):
            assert "permission denied" not in process.log_text()
            produced += process.log_text()
        # No database password in what the run produced: logs, metrics, the saga timeline, the API's answers.
        for password in roles.passwords.values():
            assert password not in produced
    finally:
        order.stop()
        customer.stop()
        vhost.delete()
