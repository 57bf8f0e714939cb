"""The order API's request and response bodies."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from saga_common.contract.messages import PositiveId
from saga_common.contract.statuses import OrderStatus

CENT = Decimal("0.01")
Price = Annotated[
    Decimal,
    Field(gt=0, max_digits=12, decimal_places=2, description="Decimal, as a JSON number or string; at most 2 decimals"),
]


class OrderCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"customer_id": 1, "product_id": 1, "status": "pending", "quantity": 1, "total_price": 50.0}]
        },
    )

    customer_id: PositiveId
    product_id: PositiveId
    quantity: Annotated[int, Field(ge=1, le=1_000_000, strict=True)]
    total_price: Price
    status: Literal["pending"] = Field(
        "pending", description="Optional; a new order is always pending, any other value is refused."
    )

    def fingerprint_source(self) -> str:
        """The request's meaning, not its spelling: 50, 50.0 and "50.00" are one price."""
        return self.model_copy(update={"total_price": self.total_price.quantize(CENT)}).model_dump_json()


class OrderOut(BaseModel):
    id: int
    customer_id: int
    product_id: int
    quantity: int
    total_price: Decimal
    status: OrderStatus
    rejection_reason: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    trace_id: str | None = Field(description="The saga's trace id in Jaeger; null when tracing is off")
