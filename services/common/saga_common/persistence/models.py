"""The tables every service has, as SQLAlchemy metadata for its models and Alembic: the outbox and the inbox.

(The services' statements are asyncpg SQL; this metadata is what the migrations are checked against.)
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Identity, Index, MetaData, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID

# Stable constraint names, so Alembic migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", UUID(as_uuid=True), primary_key=True, comment="= the message_id"),
        Column("seq", BigInteger, Identity(), nullable=False, comment="publish order"),
        Column("routing_key", Text, nullable=False),
        Column("order_id", BigInteger, nullable=False),
        Column("payload", JSONB, nullable=False),
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("published_at", DateTime(timezone=True)),
        Index("ix_outbox_unsent", "seq", postgresql_where=text("published_at IS NULL")),
        Index("ix_outbox_order_id", "order_id"),
        Index("ix_outbox_published_at", "published_at", postgresql_where=text("published_at IS NOT NULL")),
    )


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("message_id", UUID(as_uuid=True), primary_key=True),
        Column("message_type", Text, nullable=False),
        Column("order_id", BigInteger, nullable=False),
        Column("occurred_at", DateTime(timezone=True), nullable=False, comment="when the sender wrote it"),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index("ix_inbox_order_id", "order_id"),
        Index("ix_inbox_processed_at", "processed_at"),
    )
