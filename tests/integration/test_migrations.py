"""Migrations: each service's Alembic history builds exactly its models, and `migrate --check` tells."""

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import customer_service.models
import order_service.models
from saga_common.persistence.db import drop_database, ensure_database
from saga_common.persistence.migrations import migration_engine
from saga_dev.localstack import POSTGRES_URL, unique_name

SERVICES = {"order-service": order_service.models.Base, "customer-service": customer_service.models.Base}


@pytest.mark.parametrize(("service", "base"), SERVICES.items())
async def test_the_migrations_build_exactly_the_models(migrated_databases, service, base):
    url = migrated_databases.order_url if service == "order-service" else migrated_databases.customer_url
    engine = migration_engine(url)

    def compare(conn):
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), base.metadata)

    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(compare)
    finally:
        await engine.dispose()
    assert differences == [], f"{service}: models and migrations differ: {differences}"


async def test_migrate_check_tells_whether_every_migration_is_applied(migrated_databases):
    command = [str(Path(sys.executable).parent / "order-service"), "migrate", "--check"]
    migrated = await asyncio.to_thread(
        subprocess.run, command, env={"DATABASE_URL": migrated_databases.order_url}, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "latest revision" in migrated.stdout

    empty = f"{POSTGRES_URL}/{unique_name('sagaempty')}"
    await ensure_database(empty)
    try:
        fresh = await asyncio.to_thread(
            subprocess.run, command, env={"DATABASE_URL": empty}, capture_output=True, text=True
        )
    finally:
        await drop_database(empty)
    assert fresh.returncode == 1
    assert "database at revision None" in fresh.stderr and "run `order-service migrate`" in fresh.stderr
