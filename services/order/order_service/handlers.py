"""The order service's message handlers: record the customer service's answers, compensate late ones."""

from __future__ import annotations

import logging

from order_service import orders, saga
from order_service.models import TERMINAL_STATUSES, OrderStatus
from order_service.orders import OrderRow
from saga_common.contract.messages import CreditReleased, OrderCancelled, OrderFulfilled, OrderRejected, PoisonMessage
from saga_common.messaging.consumer import Handler
from saga_common.observability import metrics, tracing
from saga_common.persistence.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


async def _lock(uow: UnitOfWork, order_id: int) -> OrderRow:
    row = await orders.get(uow.conn, order_id, for_update=True)
    if row is None:
        raise PoisonMessage(f"order {order_id} does not exist in this order service", "unknown_order")
    return row


async def _apply(uow: UnitOfWork, row: OrderRow, decision: saga.Decision, step: str) -> None:
    if decision.new_status is not None:
        updated = await orders.set_status(uow.conn, row.id, decision.new_status, reason=decision.reason)
        outcome = decision.new_status.value
        tracing.annotate(outcome=outcome)
        log.info("order %s %s%s", row.id, outcome, f" ({decision.reason})" if decision.reason else "")
        if decision.new_status in TERMINAL_STATUSES:
            reason, seconds = decision.reason or "", orders.duration_seconds(updated)
            trace_id = tracing.current_trace_id()

            def count_finished() -> None:
                metrics.SAGAS_FINISHED.labels(outcome, reason).inc()
                # The exemplar lets Grafana jump from a slow bucket straight to that saga's trace.
                metrics.SAGA_DURATION.labels(outcome).observe(seconds, {"trace_id": trace_id} if trace_id else None)

            uow.after_commit(count_finished)
    if decision.compensate:
        log.info("credit reserved for order %s that is %s: releasing it", row.id, row.status)
        uow.emit(OrderCancelled(order_id=row.id, customer_id=row.customer_id, reason=f"order_{row.status}"))
    if not decision.changes_anything:
        log.info("%s for order %s in state %s changes nothing", step, row.id, row.status)


async def on_order_fulfilled(uow: UnitOfWork, event: OrderFulfilled) -> None:
    row = await _lock(uow, event.order_id)
    await _apply(uow, row, saga.on_order_fulfilled(OrderStatus(row.status)), event.type)


async def on_order_rejected(uow: UnitOfWork, event: OrderRejected) -> None:
    row = await _lock(uow, event.order_id)
    await _apply(uow, row, saga.on_order_rejected(OrderStatus(row.status), event.reason), event.type)


async def on_credit_released(uow: UnitOfWork, event: CreditReleased) -> None:
    row = await _lock(uow, event.order_id)
    await _apply(uow, row, saga.on_credit_released(OrderStatus(row.status)), event.type)


HANDLERS: dict[str, Handler] = {
    OrderFulfilled.routing_key: on_order_fulfilled,
    OrderRejected.routing_key: on_order_rejected,
    CreditReleased.routing_key: on_credit_released,
}
