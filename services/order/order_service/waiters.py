"""Requests waiting for an order to reach a terminal state (`GET /orders/{id}?wait=`).

Woken by PostgreSQL NOTIFY `order_terminal` (a trigger on orders fires it when the status becomes
fulfilled, rejected or cancelled), so it works whichever replica recorded the outcome, without a database
poll per waiting request. A waiter registers *before* it reads the order: an outcome that lands between the
read and the wait still wakes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

NOTIFY_CHANNEL = "order_terminal"
MAX_WAIT_S = 30.0


class OutcomeWaiters:
    def __init__(self) -> None:
        self._waiting: dict[int, set[asyncio.Event]] = {}

    @property
    def count(self) -> int:
        return sum(len(events) for events in self._waiting.values())

    def notify(self, payload: str) -> None:
        """NOTIFY callback: the payload is the order id."""
        try:
            order_id = int(payload)
        except ValueError:
            return
        for event in self._waiting.get(order_id, ()):
            event.set()

    @contextmanager
    def register(self, order_id: int) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiting.setdefault(order_id, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiting.get(order_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[order_id]
