"""Reconciliation: compare both databases, repair what the saga can repair itself, report the rest.

What it looks for (only in sagas older than a grace period, so in-flight sagas are never touched):
  - credit held (an active reservation) for an order that is rejected or cancelled: re-send
    `order.cancelled`, the customer service releases it (repairable);
  - an order stuck in `cancelling`: re-send `order.cancelled`; releasing is idempotent, and the answer
    `credit.released` completes the cancellation (repairable);
  - credit held for an order the order database does not know, or a fulfilled order whose credit is not
    held: reported for a human (re-reserving credit could fail; releasing it could be wrong);
  - orders pending past their deadline: reported (the order service's deadline sweeper rejects them).
Repairs go through the order service's outbox, like any other event of the saga, so they are published and
deduplicated the usual way (sagactl exports no spans: a repair is not part of the saga's trace). With
nothing wrong, it writes nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from saga_common.messages import OrderCancelled
from saga_common.outbox import PendingEvent, write_events
from saga_common.settings import redact_url

RECONCILE_REASON = "reconciliation"
FULFILLED_WINDOW_S = 7 * 86400  # how far back fulfilled orders are compared with their reservations
STATEMENT_TIMEOUT_MS = 60_000  # a check that takes longer is stopped, not left to the Job's deadline

_ACTIVE_RESERVATIONS = """
    SELECT order_id, customer_id, amount FROM reservations
    WHERE status = 'active' AND created_at < now() - make_interval(secs => $1)
"""
_ORDERS_BY_ID = "SELECT id, status, customer_id FROM orders WHERE id = ANY($1::bigint[])"
_STUCK_CANCELLING = """
    SELECT o.id, o.customer_id FROM orders o
    WHERE o.status = 'cancelling' AND o.updated_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.order_id = o.id AND b.published_at IS NULL)
"""
_RECENT_FULFILLED = """
    SELECT id, customer_id FROM orders
    WHERE status = 'fulfilled' AND updated_at < now() - make_interval(secs => $1)
      AND updated_at > now() - make_interval(secs => $2)
"""
_RESERVATION_STATUS = "SELECT order_id, status FROM reservations WHERE order_id = ANY($1::bigint[])"
_OVERDUE_PENDING = (
    "SELECT count(*) FROM orders WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1)"
)


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

        held = await customers.fetch(_ACTIVE_RESERVATIONS, grace_s)
        report.checked["active reservations"] = len(held)
        known = {row["id"]: row for row in await orders.fetch(_ORDERS_BY_ID, [r["order_id"] for r in held])}
        for reservation in held:
            order = known.get(reservation["order_id"])
            if order is None:
                report.needs_attention.append(
                    Finding(
                        f"credit {reservation['amount']} held for an order the order database does not know",
                        reservation["order_id"],
                        reservation["customer_id"],
                        "none: check where this order came from, then release it by hand",
                    )
                )
            elif order["status"] in ("rejected", "cancelled"):
                finding = Finding(
                    f"credit {reservation['amount']} held for a {order['status']} order",
                    order["id"],
                    order["customer_id"],
                    "re-sent order.cancelled: the customer service releases the credit",
                )
                resend.append(finding)

        stuck = await orders.fetch(_STUCK_CANCELLING, grace_s)
        report.checked["orders cancelling"] = len(stuck)
        for order in stuck:
            finding = Finding(
                f"order cancelling for more than {grace_s:.0f}s",
                order["id"],
                order["customer_id"],
                "re-sent order.cancelled: its credit.released answer completes the cancellation",
            )
            resend.append(finding)

        fulfilled = await orders.fetch(_RECENT_FULFILLED, grace_s, FULFILLED_WINDOW_S)
        report.checked["fulfilled orders"] = len(fulfilled)
        reservations = {
            row["order_id"]: row["status"]
            for row in await customers.fetch(_RESERVATION_STATUS, [o["id"] for o in fulfilled])
        }
        for order in fulfilled:
            status = reservations.get(order["id"], "missing")
            if status != "active":
                report.needs_attention.append(
                    Finding(
                        f"fulfilled order whose reservation is {status}",
                        order["id"],
                        order["customer_id"],
                        "none: reserve again by hand or cancel the order",
                    )
                )

        overdue = await orders.fetchval(_OVERDUE_PENDING, deadline_s + grace_s)
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
