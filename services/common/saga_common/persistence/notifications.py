"""One LISTEN connection per process, shared by whoever needs PostgreSQL's NOTIFY wake-ups.

The outbox relay listens on `outbox` (a row was written), the order service on `order_terminal` (an order
reached a terminal state, for `GET /orders/{id}?wait=`). NOTIFY is delivered to every listening process, so
this works the same with several replicas. A lost connection (PostgreSQL restart) is re-established; what
was notified meanwhile is lost, so subscribers also get `on_reconnect` and every user keeps a fallback
(the relay polls, a waiting request re-reads the order when its wait ends).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger(__name__)

RECONNECT_DELAY_S = 1.0


class PgListener:
    def __init__(self, database_url: str) -> None:
        self._dsn = database_url
        self._callbacks: dict[str, list[Callable[[str], None]]] = {}
        self._reconnect_callbacks: list[Callable[[], None]] = []
        self.connected = asyncio.Event()

    def subscribe(self, channel: str, callback: Callable[[str], None]) -> None:
        """`callback(payload)` for every NOTIFY on `channel`; call before `run()` starts."""
        self._callbacks.setdefault(channel, []).append(callback)

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self._reconnect_callbacks.append(callback)

    def _dispatch(self, _connection: object, _pid: int, channel: str, payload: str) -> None:
        for callback in self._callbacks.get(channel, ()):
            try:
                callback(payload)
            except Exception:  # one subscriber's bug must not starve the others
                log.exception("NOTIFY subscriber for %s failed", channel)

    async def run(self) -> None:
        if not self._callbacks:
            return
        while True:
            conn = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _conn, closed=closed: closed.set())
                for channel in self._callbacks:
                    await conn.add_listener(channel, self._dispatch)
                self.connected.set()
                for callback in self._reconnect_callbacks:
                    callback()
                await closed.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - PostgreSQL down or restarting: try again shortly
                log.debug("LISTEN connection failed: %s", exc)
            finally:
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    await conn.close(timeout=2)
            await asyncio.sleep(RECONNECT_DELAY_S)
