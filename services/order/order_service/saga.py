"""The order saga as a step table and its state machine: pure functions, no I/O.

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
"""

from __future__ import annotations

from dataclasses import dataclass

from order_service.models import OrderStatus


@dataclass(frozen=True)
class Decision:
    new_status: OrderStatus | None = None
    reason: str | None = None
    compensate: bool = False

    @property
    def changes_anything(self) -> bool:
        return self.new_status is not None or self.compensate


class CannotCancel(Exception):
    pass


# The rejection reason of an order whose deadline passed while it was pending (see jobs.py).
DEADLINE_REASON = "timeout"


def on_order_fulfilled(status: OrderStatus) -> Decision:
    if status is OrderStatus.PENDING:
        return Decision(OrderStatus.FULFILLED)
    if status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
        return Decision(compensate=True)
    return Decision()  # fulfilled or cancelling: this reservation is already known


def on_order_rejected(status: OrderStatus, reason: str) -> Decision:
    if status is OrderStatus.PENDING:
        return Decision(OrderStatus.REJECTED, reason=reason)
    return Decision()


def on_credit_released(status: OrderStatus) -> Decision:
    if status is OrderStatus.CANCELLING:
        return Decision(OrderStatus.CANCELLED)
    return Decision()  # a compensation of a late reservation: the order keeps its state


def on_cancel_request(status: OrderStatus) -> Decision:
    if status is OrderStatus.FULFILLED:
        return Decision(OrderStatus.CANCELLING)
    explanations = {
        OrderStatus.PENDING: "it is still pending; wait for its outcome, then cancel it",
        OrderStatus.REJECTED: "it was rejected, so no credit was taken and there is nothing to release",
        OrderStatus.CANCELLING: "its cancellation is already in progress",
        OrderStatus.CANCELLED: "it is already cancelled",
    }
    raise CannotCancel(f"only a fulfilled order can be cancelled, and {explanations[status]}")
