"""saga_history: an append-only record of every step of every saga (expand only: older releases ignore it)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

Orders that exist before this revision get the steps their row still tells (created, and the status it
reached), so that every timeline reads from the history alone.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "saga_history",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("order_id", sa.BigInteger, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("step", sa.Text, nullable=False, comment="created, order.fulfilled, cancel, deadline..."),
        sa.Column("from_status", sa.Text),
        sa.Column("to_status", sa.Text, comment="null: the step changed no status"),
        sa.Column("reason", sa.Text),
        sa.Column("actor", sa.Text, nullable=False, comment="who: a service, a token's subject, the deadline"),
        sa.Column("received_message_id", UUID(as_uuid=True), comment="the message that drove the step"),
        sa.Column("received_occurred_at", sa.DateTime(timezone=True), comment="its sender's clock"),
        sa.Column("sent_message_id", UUID(as_uuid=True), comment="the message the step published"),
        sa.Column("trace_id", sa.Text),
    )
    op.create_index("ix_saga_history_order_id", "saga_history", ["order_id", "id"])
    op.execute(
        """
        INSERT INTO saga_history (order_id, at, step, to_status, actor)
        SELECT id, created_at, 'created', 'pending', 'order-service' FROM orders ORDER BY id
        """
    )
    op.execute(
        """
        INSERT INTO saga_history (order_id, at, step, from_status, to_status, reason, actor)
        SELECT id, updated_at, 'recorded before the history existed', 'pending', status, rejection_reason,
               'order-service'
        FROM orders WHERE status <> 'pending' ORDER BY id
        """
    )


def downgrade() -> None:
    op.drop_table("saga_history")
