"""Group commit: units of work of concurrent requests committed in one transaction.

    row = await db.group.run(lambda uow: insert_the_order(uow, ...))

`run()` queues the work and returns its result once it is committed. At most `concurrency` workers take the
work already waiting (up to `max_size`, never waiting for more; a lone request runs at once in a transaction
of its own, so latency at low load is that of one transaction) and run it in one transaction, one piece
after the other on the same connection, each in its caller's context (its trace span, its log fields). The
events all pieces emitted go out in one outbox statement, then one commit: at load, a request pays one
round trip for its own statement instead of four (BEGIN, statement, outbox, COMMIT) and shares one fsync.

If any piece raises, the group is rolled back and every piece runs again in a transaction of its own: one
failing request (a constraint, a conflict) never fails the others, and gets its own exception back.
A piece of work must therefore do nothing outside the database that it would regret doing twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from saga_common.observability import metrics, tracing
from saga_common.persistence.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from saga_common.persistence.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[UnitOfWork], Awaitable[T]]


class _Pending(Generic[T]):
    __slots__ = ("context", "future", "work")

    def __init__(self, work: Work[T], future: asyncio.Future[T]) -> None:
        self.work = work
        self.future = future
        self.context = contextvars.copy_context()  # the caller's: its span, its order id in the logs


class GroupCommit:
    def __init__(self, db: Database, *, max_size: int, concurrency: int) -> None:
        self._db = db
        self._max_size = max_size
        self._concurrency = concurrency
        self._waiting: deque[_Pending[Any]] = deque()
        self._workers: set[asyncio.Task[None]] = set()
        self._running = 0

    async def run(self, work: Work[T]) -> T:
        """Run `work` in a transaction, maybe shared with other callers'; its result once committed."""
        if self._max_size == 1:
            return await self._alone(work)
        if not self._waiting and self._running < self._concurrency:
            # Nothing queued and a slot free: a lone request runs at once in its own task, no hop.
            self._running += 1
            try:
                return await self._alone(work)
            finally:
                self._running -= 1
                self._start_worker()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(work, future))
        self._start_worker()
        return await future

    def _start_worker(self) -> None:
        """A worker for the queued work, if there is some and a slot is free."""
        if self._waiting and self._running < self._concurrency:
            self._running += 1
            worker = asyncio.create_task(self._work(), name="group-commit")
            self._workers.add(worker)  # a reference, so the task is not collected while it runs
            worker.add_done_callback(self._workers.discard)

    async def _work(self) -> None:
        try:
            while self._waiting:
                taken: list[_Pending[Any]] = []
                while self._waiting and len(taken) < self._max_size:
                    pending = self._waiting.popleft()
                    if not pending.future.cancelled():  # its caller gave up before it started
                        taken.append(pending)
                if len(taken) == 1:
                    await self._settle_alone(taken[0])
                elif taken:
                    await self._together(taken)
        finally:
            # Counted down with no await after the last look at the queue: work queued from now on starts
            # a worker of its own, none is left waiting for a worker that is already leaving.
            self._running -= 1

    async def _together(self, group: list[_Pending[Any]]) -> None:
        try:
            results = []
            # The group's own statements (BEGIN, the outbox, COMMIT) belong to no single request's trace.
            with tracing.untraced():
                async with self._db.unit_of_work() as uow:
                    for pending in group:
                        results.append(await asyncio.create_task(pending.work(uow), context=pending.context))
        except Exception as exc:  # noqa: BLE001 - rolled back: each gets a transaction of its own
            log.info("a group of %d units of work failed (%r); running each on its own", len(group), exc)
            metrics.GROUP_COMMIT_FALLBACKS.inc()
            for pending in group:
                await self._settle_alone(pending)
            return
        metrics.GROUP_COMMIT_SIZE.observe(len(group))
        for pending, result in zip(group, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)

    async def _settle_alone(self, pending: _Pending[Any]) -> None:
        try:
            result = await asyncio.create_task(self._alone(pending.work), context=pending.context)
        except Exception as exc:  # noqa: BLE001 - it is the caller's exception: handed over
            if not pending.future.done():
                pending.future.set_exception(exc)
        else:
            if not pending.future.done():
                pending.future.set_result(result)

    async def _alone(self, work: Work[T]) -> T:
        async with self._db.unit_of_work() as uow:
            return await work(uow)
