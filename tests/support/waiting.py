"""Waiting on a condition, the one way the tests do it: poll until it holds or a deadline passes, then fail
with what was last seen.

    order = await eventually(lambda: client.order(order_id), until=lambda o: o["status"] == "fulfilled")
    wait_until(lambda: receiver.trace(trace_id), timeout=15, what="the saga's spans")

The probe may be a plain function or a coroutine function; it is called again after `interval` until `until`
(truthiness by default) accepts its value. An exception listed in `ignoring` (a connection refused while a
process starts, say) counts as "not yet". On timeout, `TimedOut` (an AssertionError) names what was awaited
and the last value or exception seen, so a failure says how far things got instead of "condition not met".
Waiting for "nothing more comes" is the same wait with `until=unchanged_for(seconds)`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

_NOTHING = object()


class TimedOut(AssertionError):
    pass


def unchanged_for(seconds: float) -> Callable[[Any], bool]:
    """An `until` that holds once the probed value has stayed the same for `seconds` (a count of messages, a
    log's text): the wait for quiet, after which nothing more is expected to arrive."""
    last: list[Any] = [_NOTHING, time.monotonic()]

    def until(value: Any) -> bool:
        now = time.monotonic()
        if value != last[0]:
            last[:] = [value, now]
        return now - last[1] >= seconds

    return until


def _failure(what: str, timeout: float, last: Any, error: BaseException | None) -> TimedOut:
    seen = f"last saw {last!r}" if last is not _NOTHING else "nothing seen"
    if error is not None:
        seen += f"; last error {type(error).__name__}: {error}"
    return TimedOut(f"{what or 'condition'} not met within {timeout}s: {seen}"[:4000])


async def eventually(
    probe: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    until: Callable[[T], Any] = bool,
    timeout: float = 10.0,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
    what: str = "",
) -> T:
    deadline = time.monotonic() + timeout
    last: Any = _NOTHING
    error: BaseException | None = None
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            last, error = value, None
            if until(value):
                return value  # type: ignore[return-value]
        except ignoring as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last, error)
        await asyncio.sleep(interval)


def wait_until(
    probe: Callable[[], T],
    *,
    until: Callable[[T], Any] = bool,
    timeout: float = 10.0,
    interval: float = 0.05,
    ignoring: tuple[type[BaseException], ...] = (),
    what: str = "",
) -> T:
    """`eventually` for code that is not async (fixtures, threads, subprocess watchers)."""
    deadline = time.monotonic() + timeout
    last: Any = _NOTHING
    error: BaseException | None = None
    while True:
        try:
            value = probe()
            last, error = value, None
            if until(value):
                return value
        except ignoring as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last, error)
        time.sleep(interval)
