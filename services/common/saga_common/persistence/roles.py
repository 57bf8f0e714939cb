"""The service's database role: it reads and writes its own tables and can do nothing else.

Two roles per database: the owner, which owns the tables and runs the migrations, and the service role,
which the service connects as (`DATABASE_URL` of `serve`). After each migration, `migrate` (as the owner)
creates or updates the service role and grants it data access only: SELECT, INSERT, UPDATE, DELETE on the
tables (SELECT only on Alembic's version table), the sequences, and CONNECT on this one database, which
PUBLIC loses. Not being the owner, the service role cannot drop, alter or truncate a table, nor create one.
"""

from __future__ import annotations

import asyncpg

DML = "SELECT, INSERT, UPDATE, DELETE"


async def grant_service_role(owner_url: str, role: str, password: str | None) -> None:
    conn = await asyncpg.connect(owner_url)
    try:
        async with conn.transaction():
            await conn.execute(
                await conn.fetchval(
                    "SELECT format('DO $do$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = %L) THEN "
                    "CREATE ROLE %I LOGIN; END IF; END $do$', $1::text, $1::text)",
                    role,
                )
            )
            await conn.execute(
                await conn.fetchval(
                    "SELECT format('ALTER ROLE %I WITH LOGIN NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD %L', "
                    "$1::text, $2::text)",
                    role,
                    password,
                )
            )
            database, owner = await conn.fetchrow("SELECT current_database(), current_user")
            ident = await conn.fetchval("SELECT format('%I', $1::text)", role)
            db = await conn.fetchval("SELECT format('%I', $1::text)", database)
            owner_ident = await conn.fetchval("SELECT format('%I', $1::text)", owner)
            for statement in (
                f"REVOKE ALL ON DATABASE {db} FROM PUBLIC",
                f"GRANT CONNECT ON DATABASE {db} TO {ident}",
                "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                f"REVOKE CREATE ON SCHEMA public FROM {ident}",
                f"GRANT USAGE ON SCHEMA public TO {ident}",
                f"GRANT {DML} ON ALL TABLES IN SCHEMA public TO {ident}",
                f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ident}",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_ident} IN SCHEMA public GRANT {DML} ON TABLES TO {ident}",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_ident} IN SCHEMA public "
                f"GRANT USAGE, SELECT ON SEQUENCES TO {ident}",
            ):
                await conn.execute(statement)
            if await conn.fetchval("SELECT to_regclass('public.alembic_version') IS NOT NULL"):
                await conn.execute(f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {ident}")
    finally:
        await conn.close()
