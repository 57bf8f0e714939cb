"""The customer API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from customer_service.models import ReservationStatus
from saga_common.web.strings import Text


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "Dana", "balance": "250.00"}]})

    name: Annotated[Text, Field(min_length=1, max_length=200)]
    balance: Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=2, description="Starting balance")]


class CustomerOut(BaseModel):
    id: int
    name: str
    balance: Decimal = Field(description="Available balance")
    reserved: Decimal = Field(description="Credit held by active reservations")
    created_at: datetime
    updated_at: datetime


class ReservationOut(BaseModel):
    id: int
    order_id: int
    customer_id: int
    amount: Decimal
    status: ReservationStatus
    reason: str | None
    created_at: datetime
    released_at: datetime | None
