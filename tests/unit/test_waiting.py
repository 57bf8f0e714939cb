"""The one way the tests wait: it returns as soon as the condition holds and fails with what it last saw."""

import itertools

import pytest

from tests.support.waiting import TimedOut, eventually, wait_until


async def test_eventually_returns_the_first_value_that_satisfies() -> None:
    counter = itertools.count()
    assert await eventually(lambda: next(counter), until=lambda n: n >= 3, interval=0) == 3


async def test_eventually_awaits_a_coroutine_probe() -> None:
    counter = itertools.count()

    async def probe() -> int:
        return next(counter)

    assert await eventually(probe, until=lambda n: n == 2, interval=0) == 2


async def test_eventually_fails_with_the_last_value_seen() -> None:
    with pytest.raises(TimedOut, match=r"order 7 in \['fulfilled'\] not met within 0.1s: last saw 'pending'"):
        await eventually(
            lambda: "pending", until=lambda s: s == "fulfilled", timeout=0.1, what="order 7 in ['fulfilled']"
        )


async def test_ignored_errors_are_not_yet_and_are_reported() -> None:
    def refused() -> None:
        raise ConnectionRefusedError("nobody listens")

    with pytest.raises(TimedOut, match="nothing seen; last error ConnectionRefusedError: nobody listens"):
        await eventually(refused, timeout=0.1, ignoring=(OSError,))


async def test_other_errors_are_raised_at_once() -> None:
    with pytest.raises(ZeroDivisionError):
        await eventually(lambda: 1 / 0, timeout=5)


def test_wait_until_is_the_same_without_a_loop() -> None:
    values = iter([[], [], [1]])
    assert wait_until(lambda: next(values), interval=0) == [1]
    with pytest.raises(TimedOut, match="last saw \\[\\]"):
        wait_until(list, timeout=0.1)
