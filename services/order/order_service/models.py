"""The order database: orders and their saga state, plus the shared outbox and inbox tables."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

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
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from saga_common.persistence.models import NAMING_CONVENTION, inbox_table, outbox_table


class OrderStatus(StrEnum):
    PENDING = "pending"
    FULFILLED = "fulfilled"
    REJECTED = "rejected"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({OrderStatus.FULFILLED, OrderStatus.REJECTED, OrderStatus.CANCELLED})
# A saga still at work: waiting for its reservation or for its release.
IN_PROGRESS_STATUSES = frozenset({OrderStatus.PENDING, OrderStatus.CANCELLING})


def sql_in(statuses: frozenset[OrderStatus]) -> str:
    """`status IN (...)` as SQL: the status lists are written once, here."""
    return f"status IN ({', '.join(repr(s.value) for s in OrderStatus if s in statuses)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("quantity >= 1", name="quantity_positive"),
        CheckConstraint("total_price > 0", name="total_price_positive"),
        CheckConstraint(sql_in(frozenset(OrderStatus)), name="status_known"),
        Index("ix_orders_customer_id", "customer_id"),
        Index("ix_orders_in_progress", "updated_at", postgresql_where=text(sql_in(IN_PROGRESS_STATUSES))),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger)
    product_id: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int] = mapped_column(Integer)
    total_price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    status: Mapped[str] = mapped_column(Text, server_default=OrderStatus.PENDING.value)
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text, unique=True)
    request_fingerprint: Mapped[str | None] = mapped_column(Text)
    trace_parent: Mapped[str | None] = mapped_column(Text, comment="W3C traceparent of the request that created it")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), comment="last terminal transition")


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
orders = Order.__table__
