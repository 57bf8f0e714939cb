"""The customer database: balances, credit reservations, plus the shared outbox and inbox tables.

Money is conserved by construction: a reservation moves `amount` from `customers.balance` to an active
reservation and a release moves it back, so sum(balance) + sum(active reservations) never changes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Identity, Index, MetaData, Numeric, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from saga_common.persistence.models import NAMING_CONVENTION, inbox_table, outbox_table


class ReservationStatus(StrEnum):
    ACTIVE = "active"  # credit taken from the balance and held for the order
    RELEASED = "released"  # given back (compensation)
    REJECTED = "rejected"  # nothing taken; `reason` says why (a record, so a redelivery cannot reserve later)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Customer(Base):
    __tablename__ = "customers"
    __table_args__ = (CheckConstraint("balance >= 0", name="balance_not_negative"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    balance: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Reservation(Base):
    __tablename__ = "reservations"
    __table_args__ = (
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        CheckConstraint(f"status IN {tuple(s.value for s in ReservationStatus)}", name="status_known"),
        Index("ix_reservations_customer_id", "customer_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # One decision per order, whatever arrives how many times: the business key of the saga step.
    order_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    # No foreign key: a rejection for an unknown customer is recorded too.
    customer_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    status: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


outbox = outbox_table(Base.metadata)
inbox = inbox_table(Base.metadata)
customers = Customer.__table__
reservations = Reservation.__table__
