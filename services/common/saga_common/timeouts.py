"""A time bound that holds even when the awaited code ignores its cancellation.

`asyncio.wait_for` cancels the operation at its deadline and then waits for it to end. An operation that swallows
the cancellation holds its caller for ever: aio-pika's connection close does (it awaits its close callback again
in a `finally`, aio-pika issue #640), and a SIGTERM'd service once hung there past every grace period. Shutdown
steps use `wait_at_most` instead: at the deadline the operation is cancelled and left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

# Operations left behind at their deadline: referenced until they end, so the loop does not drop them half-way.
_left_behind: set[asyncio.Future[object]] = set()


async def wait_at_most(awaitable: Awaitable[T], seconds: float) -> T:
    """`awaitable`'s result, or TimeoutError after `seconds` whether or not it honours its cancellation."""
    task = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    _left_behind.add(task)
    task.add_done_callback(_forget)
    raise TimeoutError(f"not done after {seconds:g} s")


def _forget(task: asyncio.Future[object]) -> None:
    _left_behind.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a late failure of an abandoned operation is not worth a warning
