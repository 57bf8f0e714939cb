"""The order database: orders and their saga state, plus the shared outbox and inbox tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from saga_common.contract.statuses import IN_PROGRESS_STATUSES, OrderStatus, sql_in
from saga_common.persistence.models import NAMING_CONVENTION, inbox_table, outbox_table


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        CheckConstraint("total_price > 0", name="total_price_positive"),
        CheckConstraint(sql_in(frozenset(OrderStatus)), name="status_known"),
        Index("ix_orders_customer_id", "customer_id"),
        # Idempotency keys are per customer: one customer can neither probe nor take another's key.
        UniqueConstraint("customer_id", "customer_idempotency_key"),
        Index("ix_orders_in_progress", "updated_at", postgresql_where=text(sql_in(IN_PROGRESS_STATUSES))),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger)
    product_id: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int] = mapped_column(Integer)
    total_price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    status: Mapped[str] = mapped_column(Text, server_default=OrderStatus.PENDING.value)
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    # Written by releases before 0004 only (one namespace for all customers); still read by replays. The next
    # contract step drops it (migration 0004 says when).
    idempotency_key: Mapped[str | None] = mapped_column(Text, unique=True)
    customer_idempotency_key: Mapped[str | None] = mapped_column(Text, comment="Idempotency-Key, unique per customer")
    request_fingerprint: Mapped[str | None] = mapped_column(Text)
    trace_parent: Mapped[str | None] = mapped_column(Text, comment="W3C traceparent of the request that created it")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), comment="last terminal transition")


class SagaHistory(Base):
    """Append-only: one row per step of an order's saga, written in the transaction of the step itself. The
    timeline reads it; outbox and inbox retention leave it alone (it has its own, longer retention)."""

    __tablename__ = "saga_history"
    __table_args__ = (Index("ix_saga_history_order_id", "order_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    order_id: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    step: Mapped[str] = mapped_column(Text, comment="created, order.fulfilled, cancel, deadline...")
    from_status: Mapped[str | None] = mapped_column(Text)
    to_status: Mapped[str | None] = mapped_column(Text, comment="null: the step changed no status")
    reason: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text, comment="who: a service, a token's subject, the deadline")
    received_message_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), comment="the message that drove the step"
    )
    received_occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), comment="its sender's clock")
    sent_message_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), comment="the message the step published"
    )
    trace_id: Mapped[str | None] = mapped_column(Text)


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
orders = Order.__table__
saga_history = SagaHistory.__table__
