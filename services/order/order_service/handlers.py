"""The order service's message handlers: record the customer service's answers, compensate late ones."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Row

from order_service import orders, saga
from order_service.models import OrderStatus
from saga_common import metrics
from saga_common.consumer import Handler
from saga_common.messages import CreditReleased, OrderCancelled, OrderFulfilled, OrderRejected, PoisonMessage
from saga_common.unit_of_work import Transaction

log = logging.getLogger(__name__)


async def _lock(tx: Transaction, order_id: int) -> Row[Any]:
    row = await orders.get(tx.conn, order_id, for_update=True)
    if row is None:
        raise PoisonMessage(f"order {order_id} does not exist in this order service", "unknown_order")
    return row


async def _apply(tx: Transaction, row: Row[Any], decision: saga.Decision, step: str) -> None:
    if decision.new_status is not None:
        updated = await orders.set_status(tx.conn, row.id, decision.new_status, reason=decision.reason)
        if decision.new_status in (OrderStatus.FULFILLED, OrderStatus.REJECTED, OrderStatus.CANCELLED):
            outcome, reason, seconds = (
                decision.new_status.value,
                decision.reason or "",
                orders.duration_seconds(updated),
            )

            def count_finished() -> None:
                metrics.SAGAS_FINISHED.labels(outcome, reason).inc()
                metrics.SAGA_DURATION.labels(outcome).observe(seconds)

            tx.after_commit(count_finished)
    if decision.compensate:
        log.info("credit reserved for order %s that is %s: releasing it", row.id, row.status)
        tx.emit(OrderCancelled(order_id=row.id, customer_id=row.customer_id, reason=f"order_{row.status}"))
    if not decision.changes_anything:
        log.info("%s for order %s in state %s changes nothing", step, row.id, row.status)


async def on_order_fulfilled(tx: Transaction, event: OrderFulfilled) -> None:
    row = await _lock(tx, event.order_id)
    await _apply(tx, row, saga.on_credit_reserved(OrderStatus(row.status)), event.type)


async def on_order_rejected(tx: Transaction, event: OrderRejected) -> None:
    row = await _lock(tx, event.order_id)
    await _apply(tx, row, saga.on_credit_rejected(OrderStatus(row.status), event.reason), event.type)


async def on_credit_released(tx: Transaction, event: CreditReleased) -> None:
    row = await _lock(tx, event.order_id)
    await _apply(tx, row, saga.on_credit_released(OrderStatus(row.status)), event.type)


HANDLERS: dict[str, Handler] = {
    OrderFulfilled.routing_key: on_order_fulfilled,
    OrderRejected.routing_key: on_order_rejected,
    CreditReleased.routing_key: on_credit_released,
}
