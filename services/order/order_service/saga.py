"""The order saga: its step table, its state machine, and every transition of an order, in one place.

    step            action (order service)        answer (customer service)          on failure
    ------------    --------------------------    -------------------------------    ---------------------------
    reserve credit  publish order.created         order.fulfilled | order.rejected   rejected, with its reason
    (deadline)      pending too long              -                                  rejected, reason `timeout`
    compensate      publish order.cancelled       credit.released                    -

    pending --order.fulfilled--> fulfilled --cancel--> cancelling --credit.released--> cancelled
    pending --order.rejected / deadline--> rejected

A reservation that arrives for an order that no longer wants it (rejected by its deadline, or cancelled)
is compensated at once: the order stays as it is and `order.cancelled` releases the credit. Every other
late or repeated answer changes nothing.

The decisions (`on_*`) are pure functions of the order's status. The transitions (`create`, `react_to_*`,
`cancel`, `expire_overdue`) run inside the caller's unit of work, one shape for every write of the saga:

    async with db.unit_of_work() as uow:
        row = await saga.cancel(uow, order_id, may_act_for=principal.sees_customer)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from opentelemetry.context import Context

from order_service import orders
from order_service.models import TERMINAL_STATUSES, OrderStatus
from order_service.orders import OrderRow
from order_service.schemas import OrderCreate
from saga_common.contract.messages import (
    CreditReleased,
    OrderCancelled,
    OrderCreated,
    OrderFulfilled,
    OrderRejected,
    PoisonMessage,
)
from saga_common.messaging.consumer import Handler
from saga_common.observability import metrics, tracing
from saga_common.observability.logs import current_order_id
from saga_common.persistence.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

# The rejection reason of an order whose deadline passed while it was pending.
DEADLINE_REASON = "timeout"
# Most orders one deadline sweep rejects (the next sweep takes the rest).
SWEEP_BATCH = 500


# --- the state machine -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    new_status: OrderStatus | None = None
    reason: str | None = None  # of a rejection
    release_reason: str | None = None  # set: publish order.cancelled, which releases the credit, with this reason

    @property
    def compensate(self) -> bool:
        return self.release_reason is not None

    @property
    def changes_anything(self) -> bool:
        return self.new_status is not None or self.compensate


class CannotCancel(Exception):
    pass


class OrderNotFound(LookupError):
    pass


def on_order_fulfilled(status: OrderStatus) -> Decision:
    if status is OrderStatus.PENDING:
        return Decision(OrderStatus.FULFILLED)
    if status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
        return Decision(release_reason=f"order_{status.value}")
    return Decision()  # fulfilled or cancelling: this reservation is already known


def on_order_rejected(status: OrderStatus, reason: str) -> Decision:
    if status is OrderStatus.PENDING:
        return Decision(OrderStatus.REJECTED, reason=reason)
    return Decision()


def on_deadline(status: OrderStatus) -> Decision:
    if status is OrderStatus.PENDING:
        return Decision(OrderStatus.REJECTED, reason=DEADLINE_REASON)
    return Decision()  # its answer came first


def on_credit_released(status: OrderStatus) -> Decision:
    if status is OrderStatus.CANCELLING:
        return Decision(OrderStatus.CANCELLED)
    return Decision()  # a compensation of a late reservation: the order keeps its state


def on_cancel_request(status: OrderStatus) -> Decision:
    if status is OrderStatus.FULFILLED:
        return Decision(OrderStatus.CANCELLING, release_reason="cancelled_by_client")
    explanations = {
        OrderStatus.PENDING: "it is still pending; wait for its outcome, then cancel it",
        OrderStatus.REJECTED: "it was rejected, so no credit was taken and there is nothing to release",
        OrderStatus.CANCELLING: "its cancellation is already in progress",
        OrderStatus.CANCELLED: "it is already cancelled",
    }
    raise CannotCancel(f"only a fulfilled order can be cancelled, and {explanations[status]}")


# --- the transitions ---------------------------------------------------------------------------------------


async def create(
    uow: UnitOfWork,
    body: OrderCreate,
    *,
    idempotency_key: str | None,
    fingerprint: str,
    trace_parent: str | None,
    deadline: timedelta,
) -> tuple[OrderRow | None, bool]:
    """The saga's first step: a pending order and its order.created. With a key already taken, the order an
    earlier request made with it and True (a replay; None if that order is gone), and nothing is written."""
    row = await orders.insert_order(
        uow.conn, body, idempotency_key=idempotency_key, fingerprint=fingerprint, trace_parent=trace_parent
    )
    if row is None:
        assert idempotency_key is not None
        return await orders.get_by_idempotency_key(uow.conn, idempotency_key), True
    uow.emit(
        OrderCreated(
            order_id=row.id,
            customer_id=row.customer_id,
            amount=row.total_price,
            product_id=row.product_id,
            quantity=row.quantity,
            deadline=row.created_at + deadline,
        )
    )
    current_order_id.set(row.id)
    tracing.annotate(order_id=row.id, step="order.created")
    log.info("order %s accepted: customer %s, %s", row.id, row.customer_id, row.total_price)
    uow.after_commit(metrics.SAGAS_STARTED.inc)
    return row, False


async def react_to_fulfilled(uow: UnitOfWork, event: OrderFulfilled) -> None:
    row = await _lock_for_message(uow, event.order_id)
    await _apply(uow, row, on_order_fulfilled(OrderStatus(row.status)), event.type)


async def react_to_rejected(uow: UnitOfWork, event: OrderRejected) -> None:
    row = await _lock_for_message(uow, event.order_id)
    await _apply(uow, row, on_order_rejected(OrderStatus(row.status), event.reason), event.type)


async def react_to_released(uow: UnitOfWork, event: CreditReleased) -> None:
    row = await _lock_for_message(uow, event.order_id)
    await _apply(uow, row, on_credit_released(OrderStatus(row.status)), event.type)


# What the order service consumes, and the transition each message drives.
HANDLERS: dict[str, Handler] = {
    OrderFulfilled.routing_key: react_to_fulfilled,
    OrderRejected.routing_key: react_to_rejected,
    CreditReleased.routing_key: react_to_released,
}


async def cancel(uow: UnitOfWork, order_id: int, *, may_act_for: Callable[[int], bool]) -> OrderRow:
    """A client's cancellation: fulfilled → cancelling, and order.cancelled releases the credit. Raises
    OrderNotFound (also for an order of a customer the caller may not act for) or CannotCancel."""
    row = await orders.get(uow.conn, order_id, for_update=True)
    if row is None or not may_act_for(row.customer_id):
        raise OrderNotFound(order_id)
    decision = on_cancel_request(OrderStatus(row.status))
    current_order_id.set(order_id)
    tracing.annotate(order_id=order_id, step="order.cancelled")
    log.info("order %s cancelling: releasing its credit", order_id)
    # The compensation belongs to the saga's trace; the cancel request that started it is linked.
    parent = tracing.context_from({"traceparent": row.trace_parent}) if row.trace_parent else None
    return await _apply(uow, row, decision, "cancel", compensation_parent=parent)


async def expire_overdue(uow: UnitOfWork, deadline_s: float) -> list[int]:
    """Reject the orders pending longer than `deadline_s` (reason `timeout`); their ids. Rows another replica
    holds are skipped (SKIP LOCKED), so no order is expired twice; a reservation that still arrives later is
    compensated by `react_to_fulfilled`."""
    overdue = await orders.lock_overdue(uow.conn, older_than_s=deadline_s, limit=SWEEP_BATCH)
    for row in overdue:
        await _apply(uow, row, on_deadline(OrderStatus(row.status)), "deadline")
    expired = [row.id for row in overdue]
    if expired:
        log.warning("rejected %d orders past their %ss deadline: %s", len(expired), deadline_s, expired[:20])
    return expired


async def _lock_for_message(uow: UnitOfWork, order_id: int) -> OrderRow:
    row = await orders.get(uow.conn, order_id, for_update=True)
    if row is None:
        raise PoisonMessage(f"order {order_id} does not exist in this order service", "unknown_order")
    return row


async def _apply(
    uow: UnitOfWork, row: OrderRow, decision: Decision, step: str, *, compensation_parent: Context | None = None
) -> OrderRow:
    """Carry out a decision on a locked order: its new status, and the compensation it asks for (in the trace
    of `compensation_parent` when given, the current span linked)."""
    updated = row
    if decision.new_status is not None:
        updated = await orders.set_status(uow.conn, row.id, decision.new_status, reason=decision.reason)
        outcome = decision.new_status.value
        tracing.annotate(outcome=outcome)
        log.info("order %s %s%s", row.id, outcome, f" ({decision.reason})" if decision.reason else "")
        if decision.new_status in TERMINAL_STATUSES:
            _count_finished(uow, updated, outcome, decision.reason or "")
    if decision.release_reason is not None:
        release = OrderCancelled(order_id=row.id, customer_id=row.customer_id, reason=decision.release_reason)
        if compensation_parent is None:
            log.info("credit reserved for order %s that is %s: releasing it", row.id, row.status)
            uow.emit(release)
        else:
            uow.emit(release, parent=compensation_parent, links=tracing.link_to_current())
    if not decision.changes_anything:
        log.info("%s for order %s in state %s changes nothing", step, row.id, row.status)
    return updated


def _count_finished(uow: UnitOfWork, row: OrderRow, outcome: str, reason: str) -> None:
    """The one place a finished saga is counted, once its transaction committed."""
    seconds = orders.duration_seconds(row)
    trace_id = tracing.current_trace_id()

    def count() -> None:
        metrics.SAGAS_FINISHED.labels(outcome, reason).inc()
        # The exemplar lets Grafana jump from a slow bucket straight to that saga's trace.
        metrics.SAGA_DURATION.labels(outcome).observe(seconds, {"trace_id": trace_id} if trace_id else None)

    uow.after_commit(count)
