"""The order saga's statuses: the one list, shared by the order service (its table, its state machine, its API)
and by everything that reads orders from outside (sagactl, the benchmark, the tests)."""

from __future__ import annotations

from enum import StrEnum


class OrderStatus(StrEnum):
    PENDING = "pending"
    FULFILLED = "fulfilled"
    REJECTED = "rejected"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({OrderStatus.FULFILLED, OrderStatus.REJECTED, OrderStatus.CANCELLED})
# A saga still at work: waiting for its reservation or for its release.
IN_PROGRESS_STATUSES = frozenset({OrderStatus.PENDING, OrderStatus.CANCELLING})


def sql_in(statuses: frozenset[OrderStatus]) -> str:
    """`status IN (...)` as SQL, in the enum's order (so generated SQL and constraint names stay stable)."""
    return f"status IN ({', '.join(repr(s.value) for s in OrderStatus if s in statuses)})"
