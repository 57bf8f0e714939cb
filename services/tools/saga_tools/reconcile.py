"""Reconciliation: compare both databases, repair what the saga can repair itself, report the rest.

What it looks for (only in sagas older than a grace period, so in-flight sagas are never touched): the
invariants of `saga_tools.invariants`, which the chaos tier checks too, and
  - credit held (an active reservation) for an order that is rejected or cancelled: re-send
    `order.cancelled`, the customer service releases it (repairable);
  - an order stuck in `cancelling`: re-send `order.cancelled`; releasing is idempotent, and the answer
    `credit.released` completes the cancellation (repairable);
  - credit held for an order the order database does not know, a fulfilled order whose credit is not held
    (or not at its price), a cancelled order whose credit was never released: reported for a human
    (re-reserving credit could fail; releasing it could be wrong);
  - orders pending past their deadline: reported (the order service's deadline sweeper rejects them).
Repairs go through the order service's outbox, like any other event of the saga, so they are published and
deduplicated the usual way (sagactl exports no spans: a repair is not part of the saga's trace). With
nothing wrong, it writes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from saga_common.contract.messages import OrderCancelled
from saga_common.contract.statuses import OrderStatus
from saga_common.persistence.outbox import write_events
from saga_common.persistence.unit_of_work import PendingEvent
from saga_common.settings import redact_url
from saga_tools import invariants
from saga_tools.invariants import Kind

RECONCILE_REASON = "reconciliation"
FULFILLED_WINDOW_S = 7 * 86400  # how far back fulfilled orders are compared with their reservations
STATEMENT_TIMEOUT_MS = 60_000  # a check that takes longer is stopped, not left to the Job's deadline

# What a human is told to do about each invariant reconcile cannot repair by itself.
HUMAN_ACTIONS = {
    Kind.CREDIT_FOR_UNKNOWN_ORDER: "none: check where this order came from, then release it by hand",
    Kind.FULFILLED_WITHOUT_CREDIT: "none: reserve again by hand or cancel the order",
    Kind.FULFILLED_WRONG_AMOUNT: "none: correct the reservation by hand",
    Kind.CANCELLED_NOT_RELEASED: "none: check the customer's balance, then release by hand",
    Kind.SECOND_RESERVATION: "none: a schema without its unique key; keep one reservation by hand",
}
REPAIRABLE = {Kind.CREDIT_FOR_ENDED_ORDER: "re-sent order.cancelled: the customer service releases the credit"}


class DatabaseUnreachable(ConnectionError):
    pass


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=10, server_settings={"statement_timeout": str(STATEMENT_TIMEOUT_MS)})
    except (OSError, asyncpg.PostgresError) as exc:
        raise DatabaseUnreachable(f"{redact_url(url)}: {exc or type(exc).__name__}") from None


@dataclass(frozen=True)
class Finding:
    problem: str
    order_id: int | None
    customer_id: int | None
    action: str


@dataclass
class ReconcileReport:
    dry_run: bool
    checked: dict[str, int] = field(default_factory=dict)
    repaired: list[Finding] = field(default_factory=list)
    needs_attention: list[Finding] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.repaired and not self.needs_attention

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "consistent": self.consistent,
            "checked": self.checked,
            "repaired": [asdict(f) for f in self.repaired],
            "needs_attention": [asdict(f) for f in self.needs_attention],
        }


async def reconcile(
    order_database_url: str,
    customer_database_url: str,
    *,
    grace_s: float,
    deadline_s: float,
    dry_run: bool,
    exchange: str = "saga.events",
) -> ReconcileReport:
    report = ReconcileReport(dry_run=dry_run)
    orders = await _connect(order_database_url)
    try:
        customers = await _connect(customer_database_url)
    except BaseException:
        await orders.close()
        raise
    try:
        resend: list[Finding] = []
        snapshot = await invariants.load(orders, customers, older_than_s=grace_s, window_s=FULFILLED_WINDOW_S)
        report.checked["active reservations"] = snapshot.active_reservations
        ended = [order.status for order in snapshot.orders.values()]
        report.checked["fulfilled orders"] = ended.count(OrderStatus.FULFILLED)
        report.checked["cancelled orders"] = ended.count(OrderStatus.CANCELLED)
        for violation in invariants.violations(snapshot.orders, snapshot.reservations):
            finding_of = (violation.problem, violation.order_id, violation.customer_id)
            if violation.kind in REPAIRABLE:
                resend.append(Finding(*finding_of, REPAIRABLE[violation.kind]))
            else:
                report.needs_attention.append(Finding(*finding_of, HUMAN_ACTIONS[violation.kind]))

        stuck = await invariants.stuck_cancelling(orders, grace_s)
        report.checked["orders cancelling"] = len(stuck)
        for order_id, customer_id in stuck:
            finding = Finding(
                f"order cancelling for more than {grace_s:.0f}s",
                order_id,
                customer_id,
                "re-sent order.cancelled: its credit.released answer completes the cancellation",
            )
            resend.append(finding)

        overdue = await invariants.overdue_pending(orders, deadline_s + grace_s)
        report.checked["orders pending past their deadline"] = overdue
        if overdue:
            report.needs_attention.append(
                Finding(
                    f"{overdue} orders pending past their deadline",
                    None,
                    None,
                    "none: the order service's deadline sweeper rejects them; is an order service running?",
                )
            )

        if resend and not dry_run:
            events = []
            for finding in resend:
                assert finding.order_id is not None and finding.customer_id is not None
                cancel = OrderCancelled(
                    order_id=finding.order_id, customer_id=finding.customer_id, reason=RECONCILE_REASON
                )
                events.append(PendingEvent(cancel, parent=None, links=()))
            async with orders.transaction():
                await write_events(orders, events, exchange=exchange)
    finally:
        await orders.close()
        await customers.close()
    report.repaired = resend
    return report
