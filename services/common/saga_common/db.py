"""Database engine and the small administrative helpers around it."""

from __future__ import annotations

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from saga_common.settings import ServiceSettings, to_asyncpg_url, to_libpq_url
from saga_common.tracing import tracing_enabled

# Stable constraint names, so Alembic migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    engine = create_async_engine(
        to_asyncpg_url(settings.database_url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=10,
        # No pre-ping: it costs a round trip per checkout. After a PostgreSQL restart the first statement on
        # a stale connection fails, SQLAlchemy invalidates the pool, and the caller's retry path takes over.
        connect_args={
            "server_settings": {
                "statement_timeout": str(settings.db_statement_timeout_ms),
                "application_name": settings.service_name,
            },
            "timeout": 5,
        },
    )
    if tracing_enabled():
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(engine=engine.sync_engine, enable_commenter=False)
    return engine


def _server_and_name(url: str) -> tuple[str, str]:
    """('postgresql://…/postgres', the database name): the maintenance database creates and drops the other."""
    base, _, name_and_query = to_libpq_url(url).rpartition("/")
    return f"{base}/postgres", _identifier(name_and_query.split("?")[0])


async def ensure_database(url: str) -> bool:
    """Create the database named in `url` if it does not exist; True when it was created."""
    server, name = _server_and_name(url)
    admin = await asyncpg.connect(server, timeout=5)
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return False
        await admin.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await admin.close()


async def drop_database(url: str) -> None:
    server, name = _server_and_name(url)
    admin = await asyncpg.connect(server, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _identifier(name: str) -> str:
    if not name or '"' in name or "\x00" in name:
        raise ValueError(f"unusable database name {name!r}")
    return name
