"""The harness itself: each test's databases are copies of templates the real migrations built once per session,
at the latest revision and sharing nothing; nobody connects to a template; a crashed session's templates go."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import pytest

from saga_common.persistence.migrations import pending_revision
from saga_dev.localstack import TEMPLATE_HOST, TEMPLATE_PREFIX, drop_stale_templates, migrations_of, postgres_admin


async def customer_names(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [row["name"] for row in await conn.fetch("SELECT name FROM customers")]
    finally:
        await conn.close()


async def test_each_environment_is_a_migrated_copy_of_its_own(saga_env, database_templates):
    for package, url in (
        ("order_service", saga_env.databases.order_url),
        ("customer_service", saga_env.databases.customer_url),
    ):
        current, head = await asyncio.to_thread(pending_revision, migrations_of(package), url)
        assert head is not None and current == head, f"{package}: copy at {current}, migrations at {head}"

    conn = await asyncpg.connect(saga_env.databases.customer_url)
    try:
        await conn.execute("INSERT INTO customers (name, balance) VALUES ('only-here', 1)")
    finally:
        await conn.close()
    other = await asyncio.to_thread(database_templates.copy)
    try:
        assert await customer_names(other.customer_url) == []
    finally:
        await asyncio.to_thread(other.drop)
    assert await customer_names(saga_env.databases.customer_url) == ["only-here"]


async def test_nobody_can_connect_to_a_template(database_templates):
    # A session left on a template would make every CREATE DATABASE ... TEMPLATE fail.
    with pytest.raises(asyncpg.PostgresError, match="not currently accepting connections"):
        await asyncpg.connect(database_templates.databases.order_url)


def test_only_the_templates_of_ended_sessions_on_this_host_are_dropped():
    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text())  # pids stay below it: never a live process
    names = {
        "ended here": f"{TEMPLATE_PREFIX}_{TEMPLATE_HOST}_{dead_pid}_0123456789_orders",
        "running here": f"{TEMPLATE_PREFIX}_{TEMPLATE_HOST}_{os.getpid()}_0123456789_orders",
        "other host": f"{TEMPLATE_PREFIX}_ffffff_{dead_pid}_0123456789_orders",
    }
    postgres_admin(*(f'CREATE DATABASE "{name}"' for name in names.values()))
    try:
        drop_stale_templates()
        (rows,) = postgres_admin(f"SELECT datname FROM pg_database WHERE datname LIKE '{TEMPLATE_PREFIX}\\_%'")
        left = {name for (name,) in rows}
        assert names["ended here"] not in left
        assert {names["running here"], names["other host"]} <= left
    finally:
        postgres_admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names.values()))
