"""The shutdown's time bound holds even against code that ignores its cancellation (aio-pika's connection close)."""

import asyncio
import time

import pytest

from saga_common.timeouts import wait_at_most


async def _ignores_its_cancellation(release: asyncio.Event) -> None:
    """What aio-pika's UnderlayConnection.close does: its `finally` awaits again after the cancellation."""
    try:
        await asyncio.sleep(3600)
    finally:
        await release.wait()


async def test_it_returns_the_result_of_what_finishes_in_time() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert await wait_at_most(answer(), 1) == 42


async def test_it_raises_what_fails_in_time() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await wait_at_most(fails(), 1)


async def test_it_gives_up_on_time_where_wait_for_would_hang() -> None:
    release = asyncio.Event()
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        await wait_at_most(_ignores_its_cancellation(release), 0.2)
    assert time.monotonic() - began < 1

    # asyncio.wait_for, given the same operation, is still waiting long after its own deadline.
    waiting = asyncio.ensure_future(asyncio.wait_for(_ignores_its_cancellation(release), 0.2))
    await asyncio.sleep(1)
    assert not waiting.done()
    release.set()  # both operations may end now
    with pytest.raises(TimeoutError):
        await waiting


async def test_what_it_left_behind_is_cancelled() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await wait_at_most(slow(), 0.1)
    await asyncio.wait_for(cancelled.wait(), 1)
    assert started.is_set()
