"""The load generator: orders over HTTP, for the benchmark (`saga-bench`) and the chaos tier alike.

- *Open loop* (`OrderLoad.open_loop`): a POST every 1/rate seconds whatever the answers take, for a number
  of orders or until stopped, plus any `burst()` on top (the chaos tier's work in flight at a fault).
- *Closed loop* (`OrderLoad.closed_loop`): N clients, each creating an order and waiting for its outcome
  (`GET /orders/{id}?wait=`, answered on NOTIFY) before the next one.

It keeps what a client would know: the orders accepted (201, with the wall-clock time the POST left, from
which the benchmark measures a saga to its `completed_at`), the requests refused or failed and how, the
duration of every request. Orders go round-robin over the order service's URLs; one refused at connect time
(nothing was sent) goes to the next URL at once, as a Kubernetes Service would send it to another ready pod.

aiohttp, not httpx, on purpose: at 64 connections httpx's pool spent a whole core here, so the load generator
measured itself. With authentication on, one token minted by the caller goes in every request (signing one
per request would make the generator's cost the figure). `BackgroundLoad` (`saga_dev.load_background`) runs
an open loop in a thread of its own for the chaos tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg


@dataclass(frozen=True)
class Placed:
    order_id: int
    customer_id: int
    price: Decimal
    at: float  # time.time() of the 201
    sent_at: float = 0.0  # time.time() when the POST left: a saga's latency starts here (the benchmark's)


@dataclass
class LoadStats:
    attempted: int = 0
    accepted: dict[int, Placed] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    failovers: int = 0  # requests refused by one replica and taken by another
    http_s: list[float] = field(default_factory=list)  # every order request's duration, answered or failed
    cancel_candidates: set[int] = field(default_factory=set)
    cancels_accepted: set[int] = field(default_factory=set)
    cancel_errors: Counter[str] = field(default_factory=Counter)
    keys: dict[str, tuple[int, Decimal]] = field(default_factory=dict)  # idempotency key -> (customer, price)
    cut_keys: list[str] = field(default_factory=list)  # requests cut before their answer: were they processed?
    started: float = 0.0  # time.time()
    ended: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def error_kind(exc: BaseException) -> str:
    # Connector errors first: they subclass ClientOSError, which otherwise means a cut connection.
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return "refused"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | aiohttp.ClientPayloadError):
        return "cut_mid_request"
    return type(exc).__name__


class OrderLoad:
    def __init__(
        self,
        order_urls: list[str],
        customers: list[int],
        *,
        token: str | None = None,
        poor_customers: list[int] | None = None,
        poor_fraction: float = 0.0,
        price: Decimal | None = None,  # None: a random price from 1.00 to 20.00
        idempotency_keys: bool = False,
        keep_alive: bool = True,
        connections: int = 256,
        max_in_flight: int = 1024,
        request_timeout_s: float = 30.0,
        cancel_fraction: float = 0.0,
        order_database_url: str | None = None,  # where fulfilled orders are found to cancel
        seed: int | None = None,
    ) -> None:
        if not order_urls or not customers:
            raise ValueError("at least one order service URL and one customer")
        if cancel_fraction and not order_database_url:
            raise ValueError("cancelling needs the order database to find fulfilled orders")
        self.order_urls = order_urls
        self.customers = customers
        self.poor = poor_customers or []
        self.poor_fraction = poor_fraction
        self.price = price
        self.token = token
        self.idempotency_keys = idempotency_keys
        self.keep_alive = keep_alive
        self.connections = connections
        self.max_in_flight = max_in_flight
        self.request_timeout_s = request_timeout_s
        self.cancel_fraction = cancel_fraction
        self.order_dsn = order_database_url
        self.random = random.Random(seed)
        self.stats = LoadStats()
        self._next_url = 0
        self._burst = 0
        self._burst_lock = threading.Lock()  # burst() may come from another thread

    def burst(self, count: int) -> None:
        """Place `count` more orders at once, on top of the open loop's rate."""
        with self._burst_lock:
            self._burst += count

    def _take_burst(self) -> int:
        with self._burst_lock:
            count, self._burst = self._burst, 0
        return count

    def _session(self) -> aiohttp.ClientSession:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.connections, force_close=not self.keep_alive),
            timeout=aiohttp.ClientTimeout(total=self.request_timeout_s),
            headers=headers,
        )

    async def open_loop(
        self,
        rate: float,
        *,
        duration_s: float | None = None,
        stop: threading.Event | None = None,
        progress: Callable[[LoadStats], None] | None = None,
    ) -> LoadStats:
        """POST at `rate` per second for `duration_s` (rate x duration orders) or until `stop` is set."""
        if duration_s is None and stop is None:
            raise ValueError("an open loop needs a duration or a stop event")
        total = None if duration_s is None else int(rate * duration_s)
        async with self._session() as http:
            canceller = asyncio.create_task(self._cancel_loop(http)) if self.cancel_fraction else None
            in_flight: set[asyncio.Task[Placed | None]] = set()
            self.stats.started = time.time()
            start, n = time.monotonic(), 0
            while (total is None or n < total) and not (stop is not None and stop.is_set()):
                for _ in range(1 + self._take_burst()):
                    if len(in_flight) < self.max_in_flight:
                        task = asyncio.create_task(self._place(http))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                    else:
                        self.stats.errors["client_backlog_full"] += 1
                n += 1
                if progress is not None:
                    progress(self.stats)
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            await self._finish(in_flight)
            if canceller is not None:
                canceller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await canceller
                # One last pass, so the cancels picked before the stop are requested.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._cancel_round(http), 10)
            self.stats.ended = time.time()
        return self.stats

    async def closed_loop(
        self,
        concurrency: int,
        *,
        duration_s: float,
        wait_s: float = 30,
        prefer_wait: bool = False,
        progress: Callable[[LoadStats], None] | None = None,
    ) -> LoadStats:
        """`concurrency` clients, each creating an order and waiting for its outcome before the next one: with a
        `GET ?wait=` after the POST, or with `prefer_wait`, in the POST itself (`Prefer: wait=`, one request)."""
        wait_timeout = aiohttp.ClientTimeout(total=wait_s + 10)
        async with self._session() as http:
            self.stats.started = time.time()
            deadline = time.monotonic() + duration_s

            async def client(index: int) -> None:
                while time.monotonic() < deadline:
                    placed = await self._place(http, first=index, prefer_wait_s=wait_s if prefer_wait else None)
                    if progress is not None:
                        progress(self.stats)
                    if placed is None:
                        await asyncio.sleep(0.05)
                        continue
                    if prefer_wait:
                        continue  # the POST answered with the outcome
                    url = self.order_urls[index % len(self.order_urls)]
                    try:
                        async with http.get(
                            f"{url}/orders/{placed.order_id}", params={"wait": str(wait_s)}, timeout=wait_timeout
                        ) as response:
                            await response.read()
                        if response.status != 200:
                            self.stats.errors[f"wait_http_{response.status}"] += 1
                    except Exception as exc:  # noqa: BLE001 - every failure is a figure
                        self.stats.errors[f"wait_{error_kind(exc)}"] += 1

            await asyncio.gather(*(client(index) for index in range(concurrency)))
            self.stats.ended = time.time()
        return self.stats

    async def _finish(self, in_flight: set[asyncio.Task[Placed | None]]) -> None:
        """Let the requests in flight end (bounded by their timeout); any still running is cancelled."""
        if not in_flight:
            return
        _, left = await asyncio.wait(set(in_flight), timeout=self.request_timeout_s * 3)
        for task in left:
            task.cancel()
            self.stats.errors["unfinished_at_stop"] += 1
        await asyncio.gather(*left, return_exceptions=True)

    async def _post(self, http: aiohttp.ClientSession, path: str, first: int | None, **kwargs: Any) -> tuple[int, Any]:
        """POST to one replica; refused at connect time (nothing sent) -> the next replica: (status, body of a
        201 or None)."""
        if first is None:
            first, self._next_url = self._next_url, self._next_url + 1
        last: BaseException | None = None
        for attempt in range(len(self.order_urls)):
            url = self.order_urls[(first + attempt) % len(self.order_urls)]
            try:
                async with http.post(f"{url}{path}", **kwargs) as response:
                    body = await response.json() if response.status == 201 else None
                    status = response.status
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                last = exc
                continue
            if attempt:
                self.stats.failovers += 1
            return status, body
        assert last is not None
        raise last

    async def _place(
        self, http: aiohttp.ClientSession, first: int | None = None, prefer_wait_s: float | None = None
    ) -> Placed | None:
        poor = bool(self.poor) and self.random.random() < self.poor_fraction
        customer = self.random.choice(self.poor if poor else self.customers)
        price = self.price if self.price is not None else Decimal(self.random.randint(100, 2000)) / 100
        body = {"customer_id": customer, "product_id": 1, "quantity": 1, "total_price": str(price)}
        headers: dict[str, str] = {}
        key = ""
        if self.idempotency_keys:
            key = f"load-{uuid.uuid4().hex}"
            self.stats.keys[key] = (customer, price)
            headers["Idempotency-Key"] = key
        extra: dict[str, Any] = {}
        if prefer_wait_s is not None:
            headers["Prefer"] = f"wait={int(prefer_wait_s)}"
            extra["timeout"] = aiohttp.ClientTimeout(total=prefer_wait_s + 10)
        self.stats.attempted += 1
        sent_at, started = time.time(), time.perf_counter()
        try:
            status, answer = await self._post(http, "/orders/", first, json=body, headers=headers, **extra)
        except Exception as exc:  # noqa: BLE001 - every failure is a figure
            self.stats.http_s.append(time.perf_counter() - started)
            kind = error_kind(exc)
            self.stats.errors[kind] += 1
            if key and kind in {"cut_mid_request", "timeout"}:
                self.stats.cut_keys.append(key)
            return None
        self.stats.http_s.append(time.perf_counter() - started)
        if status != 201:
            self.stats.errors[f"http_{status}"] += 1
            return None
        order_id = int(answer["id"])
        placed = Placed(order_id, customer, price, time.time(), sent_at)
        self.stats.accepted[order_id] = placed
        if self.cancel_fraction and self.random.random() < self.cancel_fraction:
            self.stats.cancel_candidates.add(order_id)
        return placed

    async def _cancel_loop(self, http: aiohttp.ClientSession) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                await self._cancel_round(http)
            except Exception as exc:  # noqa: BLE001 - the database may be the fault of the moment
                self.stats.cancel_errors[f"lookup_{type(exc).__name__}"] += 1

    async def _cancel_round(self, http: aiohttp.ClientSession) -> None:
        """Cancel the chosen orders once fulfilled (found in the order database), so compensation runs too."""
        waiting = self.stats.cancel_candidates - self.stats.cancels_accepted
        if not waiting:
            return
        conn = await asyncpg.connect(self.order_dsn, timeout=3)
        try:
            fulfilled = await conn.fetch(
                "SELECT id FROM orders WHERE status = 'fulfilled' AND id = ANY($1::bigint[])", list(waiting)
            )
        finally:
            await conn.close(timeout=2)
        for row in fulfilled:
            order_id = int(row["id"])
            try:
                status, _ = await self._post(http, f"/orders/{order_id}/cancel", None)
            except Exception as exc:  # noqa: BLE001
                self.stats.cancel_errors[error_kind(exc)] += 1
                continue
            if status == 202:
                self.stats.cancels_accepted.add(order_id)
            else:
                self.stats.cancel_errors[f"http_{status}"] += 1
