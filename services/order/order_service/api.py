"""The order API: create (idempotently), read, list and cancel orders; an operator expires or resends."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, Field

from order_service import orders, saga
from order_service.orders import OrderRow
from order_service.schemas import OrderCreate, OrderOut
from order_service.settings import OrderSettings
from order_service.timeline import SagaTimeline, timeline_of
from order_service.waiters import MAX_WAIT_S, OutcomeWaiters
from saga_common.contract.statuses import TERMINAL_STATUSES, OrderStatus
from saga_common.observability import tracing
from saga_common.persistence.db import Database
from saga_common.web.app import DatabaseDep, Problem
from saga_common.web.auth import OrdersCanceller, OrdersOperator, OrdersReader, OrdersWriter, Principal
from saga_common.web.strings import Instant, Text

log = logging.getLogger(__name__)
router = APIRouter(tags=["orders"])

MAX_PAGE_SIZE = 100
OrderId = Annotated[int, Path(gt=0, le=2**63 - 1, description="The order's id")]
IdempotencyKey = Annotated[
    Text | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Same key and same body: the same order, no second saga. Same key, other body: 409.",
    ),
]


PreferHeader = Annotated[
    str | None,
    Header(
        alias="Prefer",
        max_length=200,
        description=f"`wait=N` (RFC 7240): answer once the saga has its outcome, or after N seconds (at most "
        f"{MAX_WAIT_S:.0f}), with the order as it is then; `Preference-Applied` says it was honoured",
    ),
]


def preferred_wait(prefer: str | None) -> int | None:
    """The seconds of a `Prefer: wait=N` (RFC 7240 delta-seconds), capped at MAX_WAIT_S; None without one. A
    malformed preference is ignored, as the RFC asks of preferences a server cannot honour."""
    for preference in (prefer or "").split(","):
        name, _, value = preference.split(";")[0].strip().partition("=")
        value = value.strip().strip('"')
        if name.strip().lower() == "wait" and value.isascii() and value.isdigit():
            return min(int(value), int(MAX_WAIT_S))
    return None


# What `order_service.main` built the app with, read typed.
def _waiters(request: Request) -> OutcomeWaiters:
    waiters: OutcomeWaiters = request.app.state.waiters
    return waiters


def _deadline(request: Request) -> timedelta:
    settings: OrderSettings = request.app.state.settings
    return timedelta(seconds=settings.deadline_s)


def _not_found(order_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"order {order_id} not found")


@router.post(
    "/orders/",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut,
    summary="Create an order and start its saga",
    responses={409: {"model": Problem, "description": "Idempotency-Key reused with another body"}},
)
@router.post("/orders", status_code=status.HTTP_201_CREATED, response_model=OrderOut, include_in_schema=False)
async def create_order(
    body: OrderCreate,
    db: DatabaseDep,
    request: Request,
    response: Response,
    principal: OrdersWriter,
    idempotency_key: IdempotencyKey = None,
    prefer: PreferHeader = None,
) -> OrderOut:
    if not principal.sees_customer(body.customer_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token may order only for its own customer")
    fingerprint = hashlib.sha256(body.fingerprint_source().encode()).hexdigest()
    async with db.unit_of_work() as uow:
        row, replayed = await saga.create(
            uow,
            body,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            trace_parent=tracing.current_traceparent(),
            deadline=_deadline(request),
            actor=principal.subject,
        )
    if replayed:
        if row is None or row.request_fingerprint != fingerprint or not principal.sees_customer(row.customer_id):
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                "Idempotency-Key already used with a different request body; use a new key for a new order",
            )
        response.headers["Idempotent-Replayed"] = "true"
    assert row is not None
    response.headers["Location"] = f"/orders/{row.id}"
    wait = preferred_wait(prefer)
    if wait is not None:
        # One request per saga for clients that want the outcome: the answer a `GET ?wait=` would give.
        row = await _outcome_within(db, _waiters(request), row.id, principal, wait)
        response.headers["Preference-Applied"] = f"wait={wait}"
    return orders.to_resource(row)


@router.get(
    "/orders/{order_id}",
    response_model=OrderOut,
    responses={404: {"model": Problem}},
    summary="Read an order; with `wait`, answer as soon as it is terminal",
)
async def get_order(
    order_id: OrderId,
    db: DatabaseDep,
    request: Request,
    principal: OrdersReader,
    wait: Annotated[
        float | None,
        Query(
            gt=0,
            le=MAX_WAIT_S,
            description=f"Seconds (at most {MAX_WAIT_S:.0f}) to wait for a terminal state (fulfilled, rejected, "
            "cancelled) before answering with the order as it is then",
        ),
    ] = None,
) -> OrderOut:
    if wait is None:
        row = await _read(db, order_id, principal)
    else:
        row = await _outcome_within(db, _waiters(request), order_id, principal, wait)
    return orders.to_resource(row)


async def _outcome_within(
    db: Database, waiters: OutcomeWaiters, order_id: int, principal: Principal, wait_s: float
) -> OrderRow:
    """The order once terminal, or as it is after `wait_s`. Registered before the first read, so an outcome
    that lands between that read and the wait still wakes it."""
    with waiters.register(order_id) as outcome:
        row = await _read(db, order_id, principal)
        if OrderStatus(row.status) not in TERMINAL_STATUSES and wait_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outcome.wait(), wait_s)
            row = await _read(db, order_id, principal)  # woken or not: answer with what the database says now
    return row


async def _read(db: Database, order_id: int, principal: Principal) -> OrderRow:
    async with db.connection() as conn:
        row = await orders.get(conn, order_id)
    if row is None or not principal.sees_customer(row.customer_id):
        raise _not_found(order_id)
    return row


@router.get(
    "/orders/{order_id}/saga",
    response_model=SagaTimeline,
    responses={404: {"model": Problem}},
    summary="The order's saga step by step, with message ids and its trace id",
)
async def get_saga(order_id: OrderId, db: DatabaseDep, principal: OrdersReader) -> SagaTimeline:
    async with db.connection() as conn:
        row = await orders.get(conn, order_id)
        if row is None or not principal.sees_customer(row.customer_id):
            raise _not_found(order_id)
        return await timeline_of(conn, row)


@router.get("/orders", response_model=list[OrderOut], summary="List orders, newest first")
async def list_orders(
    db: DatabaseDep,
    principal: OrdersReader,
    customer_id: Annotated[int | None, Query(gt=0, le=2**63 - 1)] = None,
    order_status: Annotated[OrderStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
    before_id: Annotated[int | None, Query(gt=0, le=2**63 - 1, description="Page on: ids below this one")] = None,
    created_before: Annotated[Instant | None, Query(description="Only orders created before this instant")] = None,
    created_after: Annotated[Instant | None, Query(description="Only orders created after this instant")] = None,
) -> list[OrderOut]:
    if principal.customer_filter is not None:
        if customer_id not in (None, principal.customer_filter):
            return []
        customer_id = principal.customer_filter
    async with db.connection() as conn:
        rows = await orders.list_orders(
            conn,
            customer_id=customer_id,
            status=order_status,
            limit=limit,
            before_id=before_id,
            created_before=created_before,
            created_after=created_after,
        )
    return [orders.to_resource(row) for row in rows]


@router.post(
    "/orders/{order_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=OrderOut,
    summary="Cancel a pending or fulfilled order: its credit is released (compensation)",
    responses={404: {"model": Problem}, 409: {"model": Problem, "description": "The order is already over"}},
)
async def cancel_order(order_id: OrderId, db: DatabaseDep, principal: OrdersCanceller) -> OrderOut:
    try:
        async with db.unit_of_work() as uow:
            row = await saga.cancel(uow, order_id, may_act_for=principal.sees_customer, actor=principal.subject)
    except saga.OrderNotFound:
        raise _not_found(order_id) from None
    except saga.CannotCancel as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"order {order_id} cannot be cancelled: {exc}") from None
    return orders.to_resource(row)


class Resent(BaseModel):
    order_id: int
    message_id: uuid.UUID = Field(description="The id the event was published with again (its original one)")


@router.post(
    "/orders/{order_id}/expire",
    response_model=OrderOut,
    summary="Operator: reject a pending order now (`expired_by_operator`), releasing any credit it holds",
    responses={404: {"model": Problem}, 409: {"model": Problem, "description": "The order is not pending"}},
)
async def expire_order(order_id: OrderId, db: DatabaseDep, principal: OrdersOperator) -> OrderOut:
    async with _operator_action(order_id):
        async with db.unit_of_work() as uow:
            row = await saga.expire(uow, order_id, may_act_for=principal.sees_customer, actor=principal.subject)
    return orders.to_resource(row)


@router.post(
    "/orders/{order_id}/resend",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Resent,
    summary="Operator: publish the saga's last event again, with the same message id (the inbox deduplicates)",
    responses={404: {"model": Problem}, 409: {"model": Problem, "description": "The saga is over"}},
)
async def resend_event(order_id: OrderId, db: DatabaseDep, request: Request, principal: OrdersOperator) -> Resent:
    deadline = _deadline(request)
    async with _operator_action(order_id):
        async with db.unit_of_work() as uow:
            message_id = await saga.resend(
                uow, order_id, may_act_for=principal.sees_customer, actor=principal.subject, deadline=deadline
            )
    return Resent(order_id=order_id, message_id=message_id)


@contextlib.asynccontextmanager
async def _operator_action(order_id: int) -> AsyncIterator[None]:
    try:
        yield
    except saga.OrderNotFound:
        raise _not_found(order_id) from None
    except saga.CannotAct as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, f"order {order_id}: nothing to do, {exc}") from None
