"""A cancellation and a reservation of one order, handled at the same moment in two transactions (two
consumers, or one consumer's concurrent batches): whichever commits first, the money ends where the saga
says. The e2e tier once ended 20.00 short after 30 cancels raced their reservations."""

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import pytest

from customer_service import credit
from tests.support.customer_db import new_customer
from tests.support.waiting import eventually


async def waits_on_a_lock(saga_env, waiter: asyncpg.Connection) -> None:
    """Until `waiter`'s backend is blocked on a lock (the other transaction's unique key). Asked from a third
    connection: inside a transaction, pg_stat_activity is a snapshot."""
    observer = await asyncpg.connect(saga_env.databases.customer_url)

    async def blocked() -> bool:
        return await observer.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", waiter.get_server_pid()
        )

    try:
        await eventually(blocked, timeout=10, interval=0.02, what="the second transaction waiting on the first")
    finally:
        await observer.close()


@dataclass
class Race:
    """One order of a customer with 100.00, and two connections of the customer database to race on it."""

    order_id: int
    customer: int
    first: asyncpg.Connection
    second: asyncpg.Connection


@pytest.fixture
async def race(saga_env) -> AsyncIterator[Race]:
    order_id = random.randrange(10**9, 2 * 10**9)
    customer = await new_customer(saga_env, "100.00")
    first = await asyncpg.connect(saga_env.databases.customer_url)
    second = await asyncpg.connect(saga_env.databases.customer_url)
    try:
        yield Race(order_id, customer, first, second)
    finally:
        await first.close()
        await second.close()


async def test_a_release_racing_an_uncommitted_reservation_retries_and_gives_the_money_back(saga_env, race: Race):
    order_id, customer, reserving, releasing = race.order_id, race.customer, race.first, race.second
    reserve = reserving.transaction()
    await reserve.start()
    decision = await credit.reserve(
        reserving, order_id=order_id, customer_id=customer, amount=Decimal("30.00"), deadline=None
    )
    assert decision is not None and decision.reserved

    async def release_in_own_transaction() -> credit.Release:
        async with releasing.transaction():
            return await credit.release(releasing, order_id=order_id, customer_id=customer)

    # The release does not see the uncommitted reservation; its tombstone waits on the reservation's row.
    racing = asyncio.create_task(release_in_own_transaction())
    await waits_on_a_lock(saga_env, releasing)
    await reserve.commit()
    with pytest.raises(credit.DecisionRace):
        await racing
    # Retried, as the consumer does with any failed handling: it finds the reservation and releases it.
    again = await release_in_own_transaction()
    assert again.amount == Decimal("30.00")
    assert await releasing.fetchval("SELECT balance FROM customers WHERE id = $1", customer) == Decimal("100.00")


async def test_a_reservation_racing_an_uncommitted_tombstone_retries_and_reserves_nothing(saga_env, race: Race):
    order_id, customer, cancelling, reserving = race.order_id, race.customer, race.first, race.second
    cancel = cancelling.transaction()
    await cancel.start()
    released = await credit.release(cancelling, order_id=order_id, customer_id=customer)
    assert released.amount == Decimal(0)

    async def reserve_in_own_transaction() -> credit.Decision | None:
        async with reserving.transaction():
            return await credit.reserve(
                reserving, order_id=order_id, customer_id=customer, amount=Decimal("30.00"), deadline=None
            )

    racing = asyncio.create_task(reserve_in_own_transaction())
    await waits_on_a_lock(saga_env, reserving)
    await cancel.commit()
    with pytest.raises(credit.DecisionRace):
        await racing
    assert await reserve_in_own_transaction() is None, "a cancelled order must not reserve credit when retried"
    assert await reserving.fetchval("SELECT balance FROM customers WHERE id = $1", customer) == Decimal("100.00")


class CommitsAfterFirstStatement:
    """A real connection whose first statement is followed by another transaction's commit: the moment a release
    that reads its reservation twice (to release it, then to see what is there) was answered "nothing held"."""

    def __init__(self, conn: asyncpg.Connection, commit_between) -> None:
        self._conn, self._commit_between, self._statements = conn, commit_between, 0

    def __getattr__(self, name: str):
        return getattr(self._conn, name)

    async def _after(self, result):
        self._statements += 1
        if self._statements == 1:
            await self._commit_between()
        return result

    async def fetchrow(self, *args):
        return await self._after(await self._conn.fetchrow(*args))

    async def fetchval(self, *args):
        return await self._after(await self._conn.fetchval(*args))

    async def execute(self, *args):
        return await self._after(await self._conn.execute(*args))


async def test_a_reservation_committed_right_after_the_release_looked_is_still_given_back(saga_env, race: Race):
    order_id, customer, reserving, releasing = race.order_id, race.customer, race.first, race.second
    reserve = reserving.transaction()
    await reserve.start()
    await credit.reserve(reserving, order_id=order_id, customer_id=customer, amount=Decimal("30.00"), deadline=None)
    try:
        async with releasing.transaction():
            released = await credit.release(
                CommitsAfterFirstStatement(releasing, reserve.commit), order_id=order_id, customer_id=customer
            )
    except credit.DecisionRace:  # rolled back; the consumer retries it, as here (and only then)
        async with releasing.transaction():
            released = await credit.release(releasing, order_id=order_id, customer_id=customer)
    balance = await releasing.fetchval("SELECT balance FROM customers WHERE id = $1", customer)
    status = await releasing.fetchval("SELECT status FROM reservations WHERE order_id = $1", order_id)
    assert (balance, status, released.amount) == (Decimal("100.00"), "released", Decimal("30.00"))
