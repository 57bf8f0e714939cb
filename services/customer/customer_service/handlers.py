"""The customer service's message handlers: reserve credit for new orders, release it for cancelled ones."""

from __future__ import annotations

import logging

from customer_service import credit
from saga_common.contract.messages import (
    LEDGER_CURRENCY,
    CreditReleased,
    OrderCancelled,
    OrderCreatedV2,
    OrderFulfilled,
    OrderRejected,
    PoisonMessage,
)
from saga_common.messaging.consumer import Handler
from saga_common.observability import tracing
from saga_common.persistence.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


async def on_order_created(uow: UnitOfWork, event: OrderCreatedV2) -> None:
    """Every version of order.created arrives here as the newest (the contract upcasts the older ones)."""
    if event.amount.currency != LEDGER_CURRENCY:
        # Balances are kept in one currency; converting is not this service's job.
        raise PoisonMessage(
            f"order {event.order_id} is in {event.amount.currency}; balances are kept in {LEDGER_CURRENCY}", "malformed"
        )
    amount = event.amount.value
    decision = await credit.reserve(
        uow.conn, order_id=event.order_id, customer_id=event.customer_id, amount=amount, deadline=event.deadline
    )
    if decision is None:
        log.info("order %s was already decided; this order.created changes nothing", event.order_id)
    elif decision.reserved:
        assert decision.reservation_id is not None
        tracing.annotate(outcome="reserved")
        log.info("reserved %s for order %s of customer %s", amount, event.order_id, event.customer_id)
        uow.emit(
            OrderFulfilled(
                order_id=event.order_id,
                customer_id=event.customer_id,
                amount=amount,
                reservation_id=decision.reservation_id,
            )
        )
    else:
        tracing.annotate(outcome=f"rejected:{decision.reason}")
        log.info("rejected order %s of customer %s: %s", event.order_id, event.customer_id, decision.reason)
        uow.emit(OrderRejected(order_id=event.order_id, customer_id=event.customer_id, reason=decision.reason))


async def on_order_cancelled(uow: UnitOfWork, event: OrderCancelled) -> None:
    released = await credit.release(uow.conn, order_id=event.order_id, customer_id=event.customer_id)
    tracing.annotate(outcome="released")
    log.info("released %s for order %s (%s)", released.amount, event.order_id, event.reason)
    uow.emit(CreditReleased(order_id=event.order_id, customer_id=released.customer_id, amount=released.amount))


HANDLERS: dict[str, Handler] = {
    OrderCreatedV2.routing_key: on_order_created,
    OrderCancelled.routing_key: on_order_cancelled,
}


def lock_order(event: OrderCreatedV2 | OrderCancelled) -> int:
    """Reserving and releasing credit lock the customer's row: a batch handles its messages in this order."""
    return event.customer_id
