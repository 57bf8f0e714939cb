"""Alembic, one history per service, driven from code (the services ship their migrations in the package).

Each service's `migrations/env.py` is two lines: import its metadata, call `run_env(metadata)`.
`upgrade(migrations_dir, database_url)` is what `<service> migrate`, `make run` and the Helm hook Job call.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

URL_ATTRIBUTE = "database_url"


def alembic_config(migrations_dir: Path, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    # Passed as an attribute, not an ini option: configparser would choke on a '%' in a password.
    config.attributes[URL_ATTRIBUTE] = database_url
    return config


def upgrade(migrations_dir: Path, database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(migrations_dir, database_url), revision)


def downgrade(migrations_dir: Path, database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(migrations_dir, database_url), revision)


def pending_revision(migrations_dir: Path, database_url: str) -> tuple[str | None, str | None]:
    """(the database's revision, the latest one): equal when nothing is left to apply."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(migrations_dir, database_url)).get_current_head()

    async def current() -> str | None:
        conn = await asyncpg.connect(database_url, timeout=5)
        try:
            return await current_revision(conn)
        finally:
            await conn.close()

    return asyncio.run(current()), head


@dataclass(frozen=True)
class SchemaHistory:
    """What a release knows of its database's Alembic history: the head it needs and every revision it ships.

    A database at the head, or at a revision this release does not know (a newer release migrated it: with
    expand/contract migrations the older code still works on it), is ready; one at an older known revision,
    or with no schema at all, is waiting for its migration, and the service says so on /readyz."""

    head: str | None
    known: frozenset[str]

    @classmethod
    def of(cls, migrations_dir: Path) -> SchemaHistory:
        from alembic.script import ScriptDirectory

        scripts = ScriptDirectory(str(migrations_dir))
        return cls(scripts.get_current_head(), frozenset(r.revision for r in scripts.walk_revisions()))

    def problem(self, current: str | None) -> str | None:
        if self.head is None or current == self.head:
            return None
        if current is None:
            return f"the database has no schema yet (this release needs revision {self.head}): waiting for migrate"
        if current not in self.known:
            return None  # newer than this release: expand/contract keeps it working
        return f"the database schema is at revision {current}, this release needs {self.head}: waiting for migrate"


async def current_revision(conn: asyncpg.Connection) -> str | None:
    if not await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL"):
        return None
    return await conn.fetchval("SELECT version_num FROM alembic_version")  # type: ignore[no-any-return]


def migration_engine(database_url: str) -> AsyncEngine:
    """SQLAlchemy for Alembic, on connections asyncpg opens from the URL exactly as the services get it
    (SQLAlchemy's URL would need its driver in the scheme)."""
    return create_async_engine(
        "postgresql+asyncpg://",
        async_creator=lambda: asyncpg.connect(database_url, timeout=5),
        poolclass=pool.NullPool,
    )


def run_env(metadata: MetaData) -> None:
    """Body of env.py: run the migrations online over an asyncpg connection."""
    url = context.config.attributes.get(URL_ATTRIBUTE) or os.environ["DATABASE_URL"]

    def run_in(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = migration_engine(url)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(run_in)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(run())


def create_messaging_tables() -> None:
    """Version 1 of the outbox and inbox tables, for each service's first migration (frozen: a later change
    to the shared tables gets a migration of its own in each service)."""
    import sqlalchemy as sa
    from alembic import op
    from sqlalchemy.dialects import postgresql

    from saga_common.persistence.outbox import DROP_NOTIFY_TRIGGER_DDL, NOTIFY_TRIGGER_DDL

    op.create_table(
        "outbox",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True, comment="= the message_id"),
        sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False, comment="publish order"),
        sa.Column("routing_key", sa.Text, nullable=False),
        sa.Column("order_id", sa.BigInteger, nullable=False),
        sa.Column("payload", postgresql.JSONB, nullable=False),
        sa.Column("headers", postgresql.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("published_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_outbox_unsent", "outbox", ["seq"], postgresql_where=sa.text("published_at IS NULL"))
    op.create_index("ix_outbox_order_id", "outbox", ["order_id"])
    op.create_index(
        "ix_outbox_published_at", "outbox", ["published_at"], postgresql_where=sa.text("published_at IS NOT NULL")
    )
    for statement in DROP_NOTIFY_TRIGGER_DDL + NOTIFY_TRIGGER_DDL:
        op.execute(statement)

    op.create_table(
        "inbox",
        sa.Column("message_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("message_type", sa.Text, nullable=False),
        sa.Column("order_id", sa.BigInteger, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False, comment="when the sender wrote it"),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.create_index("ix_inbox_order_id", "inbox", ["order_id"])
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])


def drop_messaging_tables() -> None:
    from alembic import op

    from saga_common.persistence.outbox import DROP_NOTIFY_TRIGGER_DDL

    for statement in DROP_NOTIFY_TRIGGER_DDL:
        op.execute(statement)
    op.drop_table("inbox")
    op.drop_table("outbox")
