"""The order saga: its step table, its state machine, and every transition of an order, in one place.

    step            action (order service)        answer (customer service)          on failure
    ------------    --------------------------    -------------------------------    ---------------------------
    reserve credit  publish order.created         order.fulfilled | order.rejected   rejected, with its reason
    (deadline)      pending too long              -                                  rejected, reason `timeout`
    compensate      publish order.cancelled       credit.released                    -

    pending --order.fulfilled--> fulfilled --cancel--> cancelling --credit.released--> cancelled
    pending --cancel--> cancelling --credit.released--> cancelled      (deadline first: cancelled)
    pending --order.rejected / deadline / operator's expire--> rejected

Cancelling a pending order publishes `order.cancelled` at once: the customer service serialises it with the
reservation on the reservation row, so either it releases a reservation already made or it records the order
as cancelled and refuses a reservation that comes later; either way `credit.released` follows. A reservation
that arrives for an order that no longer wants it (rejected by its deadline, or cancelled) is compensated at
once: the order stays as it is and `order.cancelled` releases the credit. Every other late or repeated answer
changes nothing.

The decisions (`on_*`) are pure functions of the order's status. The transitions (`create`, `react_to_*`,
`cancel`, `expire`, `resend`, `expire_overdue`) run inside the caller's unit of work, one shape for every
write of the saga, and each appends its step to the saga history (`history.py`) in that same transaction:

    async with db.unit_of_work() as uow:
        row = await saga.cancel(uow, order_id, may_act_for=principal.sees_customer, actor=principal.subject)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from opentelemetry.context import Context

from order_service import history, orders
from order_service.history import Cause
from order_service.orders import OrderRow
from order_service.schemas import OrderCreate
from saga_common.contract.messages import (
    LEDGER_CURRENCY,
    Amount,
    CreditReleased,
    Event,
    OrderCancelled,
    OrderCreatedV2,
    OrderFulfilled,
    OrderRejected,
    PoisonMessage,
)
from saga_common.contract.statuses import IN_PROGRESS_STATUSES, TERMINAL_STATUSES, OrderStatus
from saga_common.contract.topology import CUSTOMER_SERVICE
from saga_common.messaging.consumer import Handler
from saga_common.observability import metrics, tracing
from saga_common.observability.logs import current_order_id
from saga_common.persistence import outbox
from saga_common.persistence.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

# The rejection reason of an order whose deadline passed while it was pending.
DEADLINE_REASON = "timeout"
# The rejection reason of an order an operator expired (`sagactl order ID expire`).
OPERATOR_EXPIRY_REASON = "expired_by_operator"
# Who drives the steps no person asks for.
DEADLINE_ACTOR = "deadline"
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


class CannotAct(Exception):
    """An operator's action that does not apply to the order in its state: 409, with why."""


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
    if status is OrderStatus.CANCELLING:
        # Cancelled while pending and no release confirmed in time: the saga stops waiting. The order.cancelled
        # it sent still releases (or refuses) the reservation whenever the customer service reads it.
        return Decision(OrderStatus.CANCELLED)
    return Decision()  # its answer came first


def on_credit_released(status: OrderStatus) -> Decision:
    if status is OrderStatus.CANCELLING:
        return Decision(OrderStatus.CANCELLED)
    return Decision()  # a compensation of a late reservation: the order keeps its state


def on_cancel_request(status: OrderStatus) -> Decision:
    if status in (OrderStatus.PENDING, OrderStatus.FULFILLED):
        return Decision(OrderStatus.CANCELLING, release_reason="cancelled_by_client")
    explanations = {
        OrderStatus.REJECTED: "it was rejected, so no credit was taken and there is nothing to release",
        OrderStatus.CANCELLING: "its cancellation is already in progress",
        OrderStatus.CANCELLED: "it is already cancelled",
    }
    raise CannotCancel(f"only a pending or fulfilled order can be cancelled, and {explanations[status]}")


def on_operator_expiry(status: OrderStatus) -> Decision:
    """Reject now. order.cancelled goes too: it releases a reservation whose answer is stuck on its way, or
    makes the customer service refuse one that comes later."""
    if status is OrderStatus.PENDING:
        return Decision(OrderStatus.REJECTED, reason=OPERATOR_EXPIRY_REASON, release_reason=OPERATOR_EXPIRY_REASON)
    if status is OrderStatus.CANCELLING:
        raise CannotAct("its credit release is already on its way; resend it instead (sagactl order ID resend)")
    raise CannotAct(f"it is {status.value}, so its saga is over")


# --- the transitions ---------------------------------------------------------------------------------------


async def create(
    uow: UnitOfWork,
    body: OrderCreate,
    *,
    idempotency_key: str | None,
    fingerprint: str,
    trace_parent: str | None,
    deadline: timedelta,
    actor: str,
) -> tuple[OrderRow | None, bool]:
    """The saga's first step: a pending order and its order.created. With a key already taken, the order an
    earlier request made with it and True (a replay; None if that order is gone), and nothing is written."""
    row = await orders.insert_order(
        uow.conn, body, idempotency_key=idempotency_key, fingerprint=fingerprint, trace_parent=trace_parent
    )
    if row is None:
        assert idempotency_key is not None
        return await orders.get_by_idempotency_key(uow.conn, body.customer_id, idempotency_key), True
    created = _order_created(row, deadline)
    uow.emit(created)
    await history.record(
        uow.conn,
        row.id,
        Cause("created", actor),
        from_status=None,
        to_status=OrderStatus.PENDING.value,
        sent_message_id=created.message_id,
    )
    current_order_id.set(row.id)
    tracing.annotate(order_id=row.id, step="order.created")
    log.info("order %s accepted: customer %s, %s", row.id, row.customer_id, row.total_price)
    uow.after_commit(metrics.SAGAS_STARTED.inc)
    return row, False


def _order_created(row: OrderRow, deadline: timedelta, message_id: uuid.UUID | None = None) -> OrderCreatedV2:
    return OrderCreatedV2(
        **({"message_id": message_id} if message_id else {}),
        order_id=row.id,
        customer_id=row.customer_id,
        amount=Amount(value=row.total_price, currency=LEDGER_CURRENCY),
        product_id=row.product_id,
        quantity=row.quantity,
        deadline=row.created_at + deadline,
    )


async def react_to_fulfilled(uow: UnitOfWork, event: OrderFulfilled) -> None:
    row = await _lock_for_message(uow, event.order_id)
    await _apply(uow, row, on_order_fulfilled(OrderStatus(row.status)), _answer(event))


async def react_to_rejected(uow: UnitOfWork, event: OrderRejected) -> None:
    row = await _lock_for_message(uow, event.order_id)
    await _apply(uow, row, on_order_rejected(OrderStatus(row.status), event.reason), _answer(event))


async def react_to_released(uow: UnitOfWork, event: CreditReleased) -> None:
    row = await _lock_for_message(uow, event.order_id)
    await _apply(uow, row, on_credit_released(OrderStatus(row.status)), _answer(event))


def _answer(event: Event) -> Cause:
    return Cause(event.type, CUSTOMER_SERVICE, event.message_id, event.occurred_at)


# What the order service consumes, and the transition each message drives.
HANDLERS: dict[str, Handler] = {
    OrderFulfilled.routing_key: react_to_fulfilled,
    OrderRejected.routing_key: react_to_rejected,
    CreditReleased.routing_key: react_to_released,
}


async def cancel(uow: UnitOfWork, order_id: int, *, may_act_for: Callable[[int], bool], actor: str) -> OrderRow:
    """A client's cancellation: pending or fulfilled → cancelling, and order.cancelled releases the credit.
    Raises OrderNotFound (also for an order of a customer the caller may not act for) or CannotCancel."""
    row = await _lock_for_caller(uow, order_id, may_act_for)
    decision = on_cancel_request(OrderStatus(row.status))
    log.info("order %s cancelling (was %s): releasing its credit", order_id, row.status)
    return await _apply(uow, row, decision, Cause("cancel", actor), compensation_parent=_saga_context(row))


async def expire(uow: UnitOfWork, order_id: int, *, may_act_for: Callable[[int], bool], actor: str) -> OrderRow:
    """An operator's expiry of a pending order: rejected now (`expired_by_operator`), its credit released if
    it was reserved. Raises OrderNotFound or CannotAct."""
    row = await _lock_for_caller(uow, order_id, may_act_for)
    decision = on_operator_expiry(OrderStatus(row.status))
    log.warning("order %s expired by %s", order_id, actor)
    return await _apply(uow, row, decision, Cause("expire", actor), compensation_parent=_saga_context(row))


async def resend(
    uow: UnitOfWork, order_id: int, *, may_act_for: Callable[[int], bool], actor: str, deadline: timedelta
) -> uuid.UUID:
    """Publish the saga's last event again, with its message id (the consumer's inbox makes a second copy a
    no-op); its id. Only while the saga is in progress. Raises OrderNotFound or CannotAct."""
    row = await _lock_for_caller(uow, order_id, may_act_for)
    if OrderStatus(row.status) not in IN_PROGRESS_STATUSES:
        raise CannotAct(f"it is {row.status}, so its saga is over and nothing waits for an answer")
    last = next((step for step in reversed(await history.of_order(uow.conn, order_id)) if step.sent_message_id), None)
    if last is None or last.sent_message_id is None:
        raise CannotAct("its history records no message it sent")
    message_id = last.sent_message_id
    if not await outbox.publish_again(uow.conn, message_id):
        # The outbox row is gone (retention): the same event again, rebuilt from the order and its history.
        uow.emit(_rebuilt(row, last, deadline, message_id), parent=_saga_context(row))
    await history.record(
        uow.conn, order_id, Cause("resend", actor), from_status=row.status, to_status=None, sent_message_id=message_id
    )
    log.warning("order %s: %s resent message %s", order_id, actor, message_id)
    return message_id


def _rebuilt(row: OrderRow, last: history.HistoryRow, deadline: timedelta, message_id: uuid.UUID) -> Event:
    if last.step == "created":
        return _order_created(row, deadline, message_id)
    return OrderCancelled(
        message_id=message_id, order_id=row.id, customer_id=row.customer_id, reason=last.reason or "cancelled_by_client"
    )


async def expire_overdue(uow: UnitOfWork, deadline_s: float) -> list[int]:
    """End the sagas still waiting after `deadline_s`: a pending order is rejected (reason `timeout`), one
    cancelled while pending is cancelled; their ids. Rows another replica holds are skipped (SKIP LOCKED), so
    no order is expired twice; a reservation that still arrives later is compensated by `react_to_fulfilled`."""
    overdue = await orders.lock_overdue(uow.conn, older_than_s=deadline_s, limit=SWEEP_BATCH)
    for row in overdue:
        await _apply(uow, row, on_deadline(OrderStatus(row.status)), Cause("deadline", DEADLINE_ACTOR))
    expired = [row.id for row in overdue]
    if expired:
        log.warning("ended %d sagas past their %ss deadline: %s", len(expired), deadline_s, expired[:20])
    return expired


async def _lock_for_message(uow: UnitOfWork, order_id: int) -> OrderRow:
    row = await orders.get(uow.conn, order_id, for_update=True)
    if row is None:
        raise PoisonMessage(f"order {order_id} does not exist in this order service", "unknown_order")
    return row


async def _lock_for_caller(uow: UnitOfWork, order_id: int, may_act_for: Callable[[int], bool]) -> OrderRow:
    row = await orders.get(uow.conn, order_id, for_update=True)
    if row is None or not may_act_for(row.customer_id):
        raise OrderNotFound(order_id)
    current_order_id.set(order_id)
    return row


def _saga_context(row: OrderRow) -> Context | None:
    """The saga's own trace: a compensation a new request starts belongs to it (the request is linked)."""
    return tracing.context_from({"traceparent": row.trace_parent}) if row.trace_parent else None


async def _apply(
    uow: UnitOfWork, row: OrderRow, decision: Decision, cause: Cause, *, compensation_parent: Context | None = None
) -> OrderRow:
    """Carry out a decision on a locked order: its new status, the compensation it asks for (in the trace of
    `compensation_parent` when given, the current span linked), and the step in the saga history."""
    tracing.annotate(order_id=row.id, step=cause.step)
    updated = row
    if decision.new_status is not None:
        updated = await orders.set_status(uow.conn, row.id, decision.new_status, reason=decision.reason)
        outcome = decision.new_status.value
        tracing.annotate(outcome=outcome)
        log.info("order %s %s%s", row.id, outcome, f" ({decision.reason})" if decision.reason else "")
        if decision.new_status in TERMINAL_STATUSES:
            _count_finished(uow, updated, outcome, decision.reason or "")
    sent = None
    if decision.release_reason is not None:
        sent = OrderCancelled(order_id=row.id, customer_id=row.customer_id, reason=decision.release_reason)
        if compensation_parent is None:
            log.info("credit reserved for order %s that is %s: releasing it", row.id, row.status)
            uow.emit(sent)
        else:
            uow.emit(sent, parent=compensation_parent, links=tracing.link_to_current())
    if not decision.changes_anything:
        log.info("%s for order %s in state %s changes nothing", cause.step, row.id, row.status)
    await history.record(
        uow.conn,
        row.id,
        cause,
        from_status=row.status,
        to_status=None if decision.new_status is None else decision.new_status.value,
        reason=decision.reason or decision.release_reason,
        sent_message_id=None if sent is None else sent.message_id,
    )
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
