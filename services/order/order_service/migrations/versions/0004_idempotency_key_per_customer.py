"""Idempotency keys per customer: a new column, unique with the customer id (expand only)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Keys were one namespace (`idempotency_key`, unique on its own): a customer could probe (409) or take another's
key. This release writes keys to `customer_idempotency_key`, unique per customer, and leaves the old column and
its constraint in place, because a release before 0004 names that constraint in the `ON CONFLICT` of every
order it creates, keyed or not: dropping it would fail every order those pods take during the rollout (the
upgrade tier measured it). A replay still finds a key an older release wrote, for the same customer only.
The contract step, in a later release once no pod of an older release runs and old keys are past any client's
retry window: drop `idempotency_key` and its constraint.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "orders", sa.Column("customer_idempotency_key", sa.Text, comment="Idempotency-Key, unique per customer")
    )
    op.create_unique_constraint("uq_orders_customer_id", "orders", ["customer_id", "customer_idempotency_key"])


def downgrade() -> None:
    op.drop_constraint("uq_orders_customer_id", "orders", type_="unique")
    op.drop_column("orders", "customer_idempotency_key")
