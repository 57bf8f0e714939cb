"""orders, outbox and inbox

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from saga_common.persistence.migrations import create_messaging_tables, drop_messaging_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orders",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("customer_id", sa.BigInteger, nullable=False),
        sa.Column("product_id", sa.BigInteger, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("total_price", sa.Numeric(12, 2), nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("rejection_reason", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("request_fingerprint", sa.Text),
        sa.Column("trace_parent", sa.Text, comment="W3C traceparent of the request that created it"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("completed_at", sa.DateTime(timezone=True), comment="last terminal transition"),
        sa.CheckConstraint("quantity >= 1", name="ck_orders_quantity_positive"),
        sa.CheckConstraint("total_price > 0", name="ck_orders_total_price_positive"),
        sa.CheckConstraint(
            "status IN ('pending', 'fulfilled', 'rejected', 'cancelling', 'cancelled')", name="ck_orders_status_known"
        ),
        sa.UniqueConstraint("idempotency_key", name="uq_orders_idempotency_key"),
    )
    op.create_index("ix_orders_customer_id", "orders", ["customer_id"])
    op.create_index(
        "ix_orders_in_progress",
        "orders",
        ["updated_at"],
        postgresql_where=sa.text("status IN ('pending', 'cancelling')"),
    )
    create_messaging_tables()


def downgrade() -> None:
    drop_messaging_tables()
    op.drop_table("orders")
