"""A small client of both APIs for tests, plus the money invariants read straight from the database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx

from saga_common.contract.statuses import TERMINAL_STATUSES
from saga_dev.localstack import ServiceProcess
from tests.support.waiting import eventually

SEED_ORDER = {"customer_id": 1, "product_id": 1, "status": "pending", "quantity": 1, "total_price": 50.0}
TERMINAL = TERMINAL_STATUSES


@asynccontextmanager
async def saga_client(order: ServiceProcess, customer: ServiceProcess) -> AsyncIterator[SagaClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield SagaClient(order.base_url, customer.base_url, http)


@dataclass
class SagaClient:
    order_url: str
    customer_url: str
    http: httpx.AsyncClient

    async def create_customer(self, balance: str | Decimal, name: str = "test customer") -> int:
        response = await self.http.post(f"{self.customer_url}/customers", json={"name": name, "balance": str(balance)})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    async def customer(self, customer_id: int) -> dict[str, Any]:
        response = await self.http.get(f"{self.customer_url}/customers/{customer_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def create_order(
        self, customer_id: int, price: str | float | Decimal = "10.00", **headers: str
    ) -> dict[str, Any]:
        body = {"customer_id": customer_id, "product_id": 7, "quantity": 1, "total_price": str(price)}
        response = await self.http.post(f"{self.order_url}/orders/", json=body, headers=headers)
        assert response.status_code == 201, response.text
        return response.json()

    async def order(self, order_id: int) -> dict[str, Any]:
        response = await self.http.get(f"{self.order_url}/orders/{order_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_for_status(self, order_id: int, statuses: set[str], timeout: float = 15) -> dict[str, Any]:
        return await eventually(
            lambda: self.order(order_id),
            until=lambda order: order["status"] in statuses,
            timeout=timeout,
            what=f"order {order_id} in {sorted(statuses)}",
        )

    async def cancel(self, order_id: int) -> httpx.Response:
        return await self.http.post(f"{self.order_url}/orders/{order_id}/cancel")


async def money_of(customer_database_url: str, customer_ids: list[int] | None = None) -> dict[str, Decimal]:
    """Balances and active reservations, summed (over some customers, or all)."""
    conn = await asyncpg.connect(customer_database_url)
    try:
        where = "WHERE id = ANY($1::bigint[])" if customer_ids else ""
        args = [customer_ids] if customer_ids else []
        balance = await conn.fetchval(f"SELECT coalesce(sum(balance), 0) FROM customers {where}", *args)
        where_r = "AND customer_id = ANY($1::bigint[])" if customer_ids else ""
        reserved = await conn.fetchval(
            f"SELECT coalesce(sum(amount), 0) FROM reservations WHERE status = 'active' {where_r}", *args
        )
        minimum = await conn.fetchval(f"SELECT coalesce(min(balance), 0) FROM customers {where}", *args)
        return {"balance": balance, "reserved": reserved, "total": balance + reserved, "min_balance": minimum}
    finally:
        await conn.close()
