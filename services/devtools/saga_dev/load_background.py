"""An open loop of orders in a thread of its own, for the chaos tier.

The generator runs its own event loop and HTTP client in a thread, so whatever the test does meanwhile
(blocking subprocess calls, restarts, waits) never changes the rate.
"""

from __future__ import annotations

import asyncio
import threading

from saga_dev.load import LoadStats, OrderLoad


class BackgroundLoad:
    def __init__(self, load: OrderLoad, rate: float) -> None:
        self.load = load
        self.rate = rate
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def stats(self) -> LoadStats:
        return self.load.stats

    def start(self) -> BackgroundLoad:
        self._thread = threading.Thread(target=self._run, name="saga-load", daemon=True)
        self._thread.start()
        return self

    def burst(self, count: int) -> None:
        """Place `count` more orders at once, on top of the steady rate (so a fault finds work in flight)."""
        self.load.burst(count)

    def stop(self, timeout: float = 60) -> LoadStats:
        """Stop placing orders, let the requests in flight finish (bounded), return what the client saw."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the load generator did not stop within {timeout}s")
        if self._failure is not None:
            raise RuntimeError("the load generator failed") from self._failure
        return self.stats

    def _run(self) -> None:
        try:
            asyncio.run(self.load.open_loop(self.rate, stop=self._stop))
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._failure = exc
