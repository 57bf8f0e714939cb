"""The benchmark's progress line: one line, rewritten in place, at most a few times a second."""

from __future__ import annotations

import sys
import time

from saga_dev.load import LoadStats


class Progress:
    def __init__(self, label: str, total_s: float, enabled: bool = True) -> None:
        self.label = label
        self.total_s = total_s
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, stats: LoadStats) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.25:
            return
        self._last = now
        elapsed = time.time() - stats.started
        rate = stats.attempted / elapsed if elapsed > 0 else 0
        sys.stderr.write(
            f"\r  {self.label}: {elapsed:5.1f}/{self.total_s:.0f}s  {stats.attempted} orders  {rate:6.0f}/s  "
            f"errors {stats.failed}   "
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()
