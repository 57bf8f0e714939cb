"""The customer API: customers, their balance and reserved credit, their reservations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status

from customer_service import customers
from customer_service.schemas import CustomerCreate, CustomerOut, ReservationOut
from saga_common.web.app import DatabaseDep, Problem
from saga_common.web.auth import CustomersReader, CustomersWriter

router = APIRouter(tags=["customers"])

MAX_PAGE_SIZE = 100
CustomerId = Annotated[int, Path(gt=0, le=2**63 - 1, description="The customer's id")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
BeforeId = Annotated[int | None, Query(gt=0, le=2**63 - 1, description="Page on: ids below this one")]


@router.post("/customers", status_code=status.HTTP_201_CREATED, response_model=CustomerOut, summary="Create a customer")
@router.post("/customers/", status_code=status.HTTP_201_CREATED, response_model=CustomerOut, include_in_schema=False)
async def create_customer(
    body: CustomerCreate, db: DatabaseDep, response: Response, principal: CustomersWriter
) -> CustomerOut:
    if principal.customer_id is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a token bound to a customer cannot create customers")
    async with db.unit_of_work() as uow:
        customer = customers.to_customer(await customers.create(uow.conn, body))
    response.headers["Location"] = f"/customers/{customer.id}"
    return customer


@router.get("/customers", response_model=list[CustomerOut], summary="List customers, newest first")
async def list_customers(
    db: DatabaseDep, principal: CustomersReader, limit: Limit = 20, before_id: BeforeId = None
) -> list[CustomerOut]:
    if principal.customer_filter is not None:
        own = await get_customer(principal.customer_filter, db, principal)
        return [own] if before_id is None or own.id < before_id else []
    async with db.connection() as conn:
        rows = await customers.list_customers(conn, limit=limit, before_id=before_id)
    return [customers.to_customer(row) for row in rows]


@router.get(
    "/customers/{customer_id}",
    response_model=CustomerOut,
    responses={404: {"model": Problem}},
    summary="A customer's balance and reserved credit",
)
async def get_customer(customer_id: CustomerId, db: DatabaseDep, principal: CustomersReader) -> CustomerOut:
    if not principal.sees_customer(customer_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id} not found")
    async with db.connection() as conn:
        row = await customers.get(conn, customer_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id} not found")
    return customers.to_customer(row)


@router.get(
    "/customers/{customer_id}/reservations",
    response_model=list[ReservationOut],
    responses={404: {"model": Problem}},
    summary="A customer's credit reservations (active, released, rejected), newest first",
)
async def list_reservations(
    customer_id: CustomerId, db: DatabaseDep, principal: CustomersReader, limit: Limit = 50, before_id: BeforeId = None
) -> list[ReservationOut]:
    async with db.connection() as conn:
        if not principal.sees_customer(customer_id) or await customers.get(conn, customer_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"customer {customer_id} not found")
        rows = await customers.reservations_of(conn, customer_id, limit=limit, before_id=before_id)
    return [customers.to_reservation(row) for row in rows]
