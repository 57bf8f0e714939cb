"""The chart's PostgreSQL init script (create-owner.sh, rendered by the real Helm engine), run as the image's
entrypoint runs it, against the machine's PostgreSQL: it makes an owner that is no superuser, and the
migrations (`migrate`, as the chart's migration Job runs it) succeed as that owner."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg

from saga_dev.localstack import POSTGRES_URL
from tests.support.chart import render

SERVER = urlsplit(POSTGRES_URL)


def sql(query: str, *args: Any, database: str = "postgres") -> Any:
    """One statement as the machine's superuser; the first row, if any."""

    async def run() -> Any:
        conn = await asyncpg.connect(f"{POSTGRES_URL}/{database}")
        try:
            return await conn.fetchrow(query, *args)
        finally:
            await conn.close()

    return asyncio.run(run())


def create_owner_script() -> str:
    config = next(c for c in render().of_kind("ConfigMap") if "create-owner.sh" in c.get("data", {}))
    return config["data"]["create-owner.sh"]


def test_the_init_script_makes_an_owner_without_superuser_that_can_migrate():
    prefix = f"o{uuid.uuid4().hex[:8]}"
    database, owner, service_role = f"{prefix}_orders", f"{prefix}_order", f"{prefix}_order_service"
    # A quote and a backslash: the script must pass the password to SQL as a literal, whatever it holds.
    password = secrets.token_urlsafe(12) + "'\\x"
    sql(f'CREATE DATABASE "{database}"')  # what initdb makes of POSTGRES_DB
    try:
        with tempfile.TemporaryDirectory() as folder:
            script = Path(folder) / "create-owner.sh"
            script.write_text(create_owner_script())
            script.chmod(0o555)  # the ConfigMap's defaultMode: the entrypoint runs it rather than sourcing it
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SAGA_"))}
            env |= {
                "PGHOST": SERVER.hostname or "127.0.0.1",
                "PGPORT": str(SERVER.port or 5432),
                "POSTGRES_USER": SERVER.username or "postgres",
                "POSTGRES_DB": database,
                "SAGA_DATABASE_OWNER": owner,
                "SAGA_DATABASE_OWNER_PASSWORD": password,
            }
            ran = subprocess.run([str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        role = sql("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = $1", owner)
        assert dict(role) == {"rolsuper": False, "rolcreaterole": True, "rolcreatedb": False, "rolbypassrls": False}
        assert sql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database)[0] == owner

        owner_url = f"postgresql://{owner}:{quote(password, safe='')}@{SERVER.hostname}:{SERVER.port}/{database}"
        migrate_env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
        migrate_env |= {
            "DATABASE_URL": owner_url,
            "SAGA_SERVICE_DATABASE_ROLE": service_role,
            "SAGA_SERVICE_DATABASE_PASSWORD": secrets.token_urlsafe(12),
        }
        migrated = subprocess.run(
            [sys.executable, "-m", "order_service", "migrate", "--no-create"],
            env=migrate_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert migrated.returncode == 0, migrated.stderr
        assert sql("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'", database=database)[0] == owner
        granted = sql("SELECT has_table_privilege($1, 'orders', 'INSERT')", service_role, database=database)
        assert granted[0] is True
        assert sql("SELECT rolsuper FROM pg_roles WHERE rolname = $1", service_role)[0] is False
    finally:
        sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for name in (service_role, owner):
            sql(f'DROP ROLE IF EXISTS "{name}"')
