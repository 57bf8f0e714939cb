"""NOTIFY order_terminal when an order reaches a terminal state (GET /orders/{id}?wait=)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION order_terminal_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('order_terminal', NEW.id::text);
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER order_terminal_notify AFTER UPDATE OF status ON orders FOR EACH ROW
        WHEN (NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('fulfilled', 'rejected', 'cancelled'))
        EXECUTE FUNCTION order_terminal_notify()
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS order_terminal_notify ON orders")
    op.execute("DROP FUNCTION IF EXISTS order_terminal_notify()")
