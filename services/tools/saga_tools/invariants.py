"""The saga's cross-database invariants, in one place: the order database and the customer database agree.

`sagactl reconcile` checks them on a running system (sagas older than its grace period) and repairs what the
saga can repair itself; the chaos tier checks them after every fault. Both load the rows with `load()` and
judge them with `violations()`, so what "consistent" means is written once.

For each order the customer database holds credit for, and each fulfilled or cancelled order:
  - credit is held (an active reservation) only for an order the order database knows;
  - credit is held only for an order that still wants it: never for a rejected or cancelled one;
  - a fulfilled order holds exactly one active reservation, of its price;
  - a cancelled order's reservation is released, or was refused (cancelled while pending), never missing;
  - one reservation per order (also a unique key: a second one is a bug of the schema, not of the saga).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

import asyncpg

from saga_common.contract.statuses import OrderStatus, sql_in


class Kind(StrEnum):
    CREDIT_FOR_UNKNOWN_ORDER = "credit_for_unknown_order"
    CREDIT_FOR_ENDED_ORDER = "credit_for_ended_order"
    FULFILLED_WITHOUT_CREDIT = "fulfilled_without_credit"
    FULFILLED_WRONG_AMOUNT = "fulfilled_wrong_amount"
    CANCELLED_NOT_RELEASED = "cancelled_not_released"
    SECOND_RESERVATION = "second_reservation"


# A customer charged for something they should not be: a double effect, in the chaos tier's words.
CHARGES = frozenset({Kind.CREDIT_FOR_UNKNOWN_ORDER, Kind.CREDIT_FOR_ENDED_ORDER, Kind.SECOND_RESERVATION})


@dataclass(frozen=True)
class Order:
    id: int
    customer_id: int
    status: str
    total_price: Decimal


@dataclass(frozen=True)
class Reservation:
    id: int
    order_id: int
    customer_id: int
    amount: Decimal
    status: str


@dataclass(frozen=True)
class Violation:
    kind: Kind
    order_id: int
    customer_id: int
    problem: str


@dataclass
class Snapshot:
    """The rows the invariants are judged on. `orders` holds every order the reservations name, if it exists,
    and the fulfilled and cancelled orders in scope; `reservations` every active one in scope and those of
    those orders."""

    orders: dict[int, Order] = field(default_factory=dict)
    reservations: list[Reservation] = field(default_factory=list)
    active_reservations: int = 0


def violations(orders: Mapping[int, Order], reservations: Iterable[Reservation]) -> list[Violation]:
    by_order: dict[int, list[Reservation]] = defaultdict(list)
    for reservation in reservations:
        by_order[reservation.order_id].append(reservation)
    found: list[Violation] = []
    for order_id, rows in by_order.items():
        if len(rows) > 1:
            found.append(Violation(Kind.SECOND_RESERVATION, order_id, rows[0].customer_id, f"{len(rows)} reservations"))
        held = sum((r.amount for r in rows if r.status == "active"), Decimal(0))
        if not any(r.status == "active" for r in rows):
            continue
        order = orders.get(order_id)
        if order is None:
            found.append(
                Violation(
                    Kind.CREDIT_FOR_UNKNOWN_ORDER,
                    order_id,
                    rows[0].customer_id,
                    f"credit {held} held for an order the order database does not know",
                )
            )
        elif order.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
            found.append(
                Violation(
                    Kind.CREDIT_FOR_ENDED_ORDER,
                    order_id,
                    order.customer_id,
                    f"credit {held} held for a {order.status} order",
                )
            )
    for order in orders.values():
        rows = by_order.get(order.id, [])
        active = [r for r in rows if r.status == "active"]
        status = rows[0].status if rows else "missing"
        if order.status == OrderStatus.FULFILLED:
            if not active:
                found.append(
                    Violation(
                        Kind.FULFILLED_WITHOUT_CREDIT,
                        order.id,
                        order.customer_id,
                        f"fulfilled order whose reservation is {status}",
                    )
                )
            elif len(active) != 1 or active[0].amount != order.total_price:
                held = sum((r.amount for r in active), Decimal(0))
                found.append(
                    Violation(
                        Kind.FULFILLED_WRONG_AMOUNT,
                        order.id,
                        order.customer_id,
                        f"fulfilled order holds {held} of credit, its price is {order.total_price}",
                    )
                )
        elif order.status == OrderStatus.CANCELLED and not rows:
            # Released, or refused (an order cancelled while pending, before any credit was taken), is settled;
            # no decision at all means its order.cancelled never reached the customer service.
            found.append(
                Violation(
                    Kind.CANCELLED_NOT_RELEASED,
                    order.id,
                    order.customer_id,
                    f"cancelled order whose reservation is {status}, not released",
                )
            )
    return found


_ACTIVE_RESERVATIONS = """
    SELECT id, order_id, customer_id, amount, status FROM reservations
    WHERE status = 'active' AND created_at < now() - make_interval(secs => $1)
"""
# The orders whose reservation question is settled: fulfilled (one held) or cancelled (none held).
SETTLED = frozenset({OrderStatus.FULFILLED, OrderStatus.CANCELLED})
_ENDED_ORDERS = f"""
    SELECT id, customer_id, status, total_price FROM orders
    WHERE {sql_in(SETTLED)} AND updated_at < now() - make_interval(secs => $1)
      AND ($2::float8 IS NULL OR updated_at > now() - make_interval(secs => $2))
"""
_ORDERS_BY_ID = "SELECT id, customer_id, status, total_price FROM orders WHERE id = ANY($1::bigint[])"
_RESERVATIONS_OF = (
    "SELECT id, order_id, customer_id, amount, status FROM reservations WHERE order_id = ANY($1::bigint[])"
)


async def load(
    orders_db: asyncpg.Connection,
    customers_db: asyncpg.Connection,
    *,
    older_than_s: float = 0,
    window_s: float | None = None,
) -> Snapshot:
    """What `violations()` needs: every active reservation older than `older_than_s` with its order, and the
    fulfilled and cancelled orders last changed between `window_s` and `older_than_s` ago (no lower bound
    without a window) with their reservations."""
    held = [Reservation(**row) for row in await customers_db.fetch(_ACTIVE_RESERVATIONS, older_than_s)]
    orders = {row["id"]: Order(**row) for row in await orders_db.fetch(_ENDED_ORDERS, older_than_s, window_s)}
    unknown = sorted({r.order_id for r in held} - orders.keys())
    orders |= {row["id"]: Order(**row) for row in await orders_db.fetch(_ORDERS_BY_ID, unknown)}
    reservations = {r.id: r for r in held}
    for row in await customers_db.fetch(_RESERVATIONS_OF, sorted(orders)):
        reservations.setdefault(row["id"], Reservation(**row))
    return Snapshot(orders=orders, reservations=list(reservations.values()), active_reservations=len(held))


# Order-side checks of a running system (the chaos tier asks the same of its accepted orders directly).
_STUCK_CANCELLING = """
    SELECT o.id, o.customer_id FROM orders o
    WHERE o.status = 'cancelling' AND o.updated_at < now() - make_interval(secs => $1)
      AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.order_id = o.id AND b.published_at IS NULL)
"""
_OVERDUE_PENDING = (
    "SELECT count(*) FROM orders WHERE status = 'pending' AND created_at < now() - make_interval(secs => $1)"
)


async def stuck_cancelling(orders_db: asyncpg.Connection, older_than_s: float) -> list[tuple[int, int]]:
    """(order id, customer id) of orders cancelling for longer than that, with no order.cancelled waiting to leave."""
    return [(row["id"], row["customer_id"]) for row in await orders_db.fetch(_STUCK_CANCELLING, older_than_s)]


async def overdue_pending(orders_db: asyncpg.Connection, older_than_s: float) -> int:
    return int(await orders_db.fetchval(_OVERDUE_PENDING, older_than_s))
