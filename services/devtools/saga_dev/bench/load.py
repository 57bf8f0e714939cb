"""The load generator: orders over HTTP, open loop at a rate or closed loop at a concurrency.

A saga's latency is measured from the moment its POST left (this process's wall clock) to the moment the
order service recorded its outcome (`completed_at`, written by PostgreSQL on the same machine, so on the
same clock): no polling is involved in the measure. Closed-loop workers wait for each outcome with
`GET /orders/{id}?wait=`, which the order service answers on NOTIFY.

aiohttp, not httpx, on purpose: at 64 connections httpx's pool spent a whole core here, so the load generator
measured itself (the services sat at 20% CPU).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import time
from dataclasses import dataclass, field

import aiohttp


@dataclass
class Sent:
    order_id: int | None
    sent_at: float  # wall clock
    http_s: float
    status_code: int


@dataclass
class LoadRun:
    sent: list[Sent] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def accepted(self) -> list[Sent]:
        return [s for s in self.sent if s.status_code == 201 and s.order_id is not None]


class Progress:
    """One line, rewritten in place, at most a few times a second."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0

    def update(self, run: LoadRun, total_s: float) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.25:
            return
        self._last = now
        elapsed = time.time() - run.started
        rate = len(run.sent) / elapsed if elapsed > 0 else 0
        sys.stderr.write(
            f"\r  {self.label}: {elapsed:5.1f}/{total_s:.0f}s  {len(run.sent)} orders  {rate:6.0f}/s  "
            f"errors {sum(run.errors.values())}   "
        )
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 90 + "\r")
            sys.stderr.flush()


def _order_body(customers: list[int], price: str) -> dict[str, object]:
    return {"customer_id": random.choice(customers), "product_id": 1, "quantity": 1, "total_price": price}


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, object], run: LoadRun) -> Sent:
    sent_at, started = time.time(), time.perf_counter()
    try:
        async with http.post(f"{url}/orders/", json=body) as response:
            status = response.status
            order_id = (await response.json())["id"] if status == 201 else None
    except (aiohttp.ClientError, TimeoutError) as exc:
        run.error(type(exc).__name__)
        sent = Sent(None, sent_at, time.perf_counter() - started, 0)
    else:
        if status != 201:
            run.error(f"HTTP {status}")
        sent = Sent(order_id, sent_at, time.perf_counter() - started, status)
    run.sent.append(sent)
    return sent


def _session(connections: int, timeout_s: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections), timeout=aiohttp.ClientTimeout(total=timeout_s)
    )


async def open_loop(
    order_urls: list[str], *, rate: float, duration_s: float, customers: list[int], price: str, label: str
) -> LoadRun:
    """POST at `rate` per second for `duration_s`, whatever the responses take (they overlap as needed)."""
    run, progress = LoadRun(), Progress(label)
    total = int(rate * duration_s)
    urls = itertools.cycle(order_urls)
    async with _session(256, 30) as http:
        run.started = time.time()
        start = time.monotonic()
        tasks = []
        for n in range(total):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_post(http, next(urls), _order_body(customers, price), run)))
            progress.update(run, duration_s)
        await asyncio.gather(*tasks)
        run.ended = time.time()
    progress.done()
    return run


async def closed_loop(
    order_urls: list[str], *, concurrency: int, duration_s: float, customers: list[int], price: str, label: str
) -> LoadRun:
    """`concurrency` clients, each creating an order and waiting for its outcome before the next one."""
    run, progress = LoadRun(), Progress(label)
    async with _session(concurrency * 2, 40) as http:
        run.started = time.time()
        deadline = time.monotonic() + duration_s

        async def client(url: str) -> None:
            while time.monotonic() < deadline:
                sent = await _post(http, url, _order_body(customers, price), run)
                progress.update(run, duration_s)
                if sent.order_id is None:
                    await asyncio.sleep(0.05)
                    continue
                try:
                    async with http.get(f"{url}/orders/{sent.order_id}", params={"wait": 30}) as response:
                        await response.read()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    run.error(f"wait: {type(exc).__name__}")

        await asyncio.gather(*(client(url) for url, _ in zip(itertools.cycle(order_urls), range(concurrency))))
        run.ended = time.time()
    progress.done()
    return run
