"""A steady load of new orders (and some cancellations) for the chaos tier, in a thread of its own.

The generator runs its own event loop and HTTP client in a thread, so whatever the test does meanwhile
(blocking subprocess calls, restarts, waits) never changes the rate. It keeps what a client would know:
which requests got a 201 (the order ids the API accepted), which failed and how, which cancels got a 202.

- Orders go round-robin over the order service's URLs; a request refused at connect time (nothing was sent)
  goes to the next URL at once, as a Kubernetes Service would send it to another ready pod.
- Every order carries an Idempotency-Key, so an order whose response was lost can be found again.
- Most customers can pay, a few cannot: both outcomes happen under every fault.
- A share of the accepted orders is cancelled once fulfilled (found by reading the order database), so
  the compensation runs under the faults too.
- No keep-alive: a connection per request, so a graceful shutdown is judged on the requests it received,
  not on idle pooled connections it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
import httpx


@dataclass(frozen=True)
class Placed:
    order_id: int
    customer_id: int
    price: Decimal
    at: float  # time.time() of the 201


@dataclass
class LoadStats:
    attempted: int = 0
    accepted: dict[int, Placed] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    failovers: int = 0  # requests refused by one replica and taken by another
    cancel_candidates: set[int] = field(default_factory=set)
    cancels_requested: int = 0
    cancels_accepted: set[int] = field(default_factory=set)
    cancel_errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    keys: dict[str, tuple[int, Decimal]] = field(default_factory=dict)  # idempotency key -> (customer, price)
    cut_keys: list[str] = field(default_factory=list)  # requests cut before their answer: were they processed?

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def accepted_between(self, start: float, end: float) -> list[Placed]:
        return [p for p in self.accepted.values() if start <= p.at <= end]


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return "refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return "cut_mid_request"
    return type(exc).__name__


class LoadGenerator:
    def __init__(
        self,
        order_urls: list[str],
        *,
        order_database_url: str,
        rich_customers: list[int],
        poor_customers: list[int],
        rate: float = 25.0,
        cancel_fraction: float = 0.15,
        poor_fraction: float = 0.15,
        seed: int = 0,
        max_in_flight: int = 64,
        request_timeout_s: float = 5.0,
    ) -> None:
        if not order_urls:
            raise ValueError("at least one order service URL")
        self.order_urls = order_urls
        self.order_dsn = order_database_url
        self.rich = rich_customers
        self.poor = poor_customers
        self.rate = rate
        self.cancel_fraction = cancel_fraction
        self.poor_fraction = poor_fraction
        self.random = random.Random(seed)
        self.max_in_flight = max_in_flight
        self.request_timeout_s = request_timeout_s
        self.stats = LoadStats()
        self.started_at = 0.0
        self.stopped_at = 0.0
        self._stop = threading.Event()
        self._burst_lock = threading.Lock()
        self._burst = 0
        self._thread: threading.Thread | None = None
        self._next_url = 0
        self._failure: BaseException | None = None

    # -- control, from the test's thread -------------------------------------------------------------------

    def start(self) -> LoadGenerator:
        self.started_at = time.time()
        self._thread = threading.Thread(target=self._run, name="saga-load", daemon=True)
        self._thread.start()
        return self

    def burst(self, count: int) -> None:
        """Place `count` more orders at once, on top of the steady rate (so a fault finds work in flight)."""
        with self._burst_lock:
            self._burst += count

    def stop(self, timeout: float = 30) -> LoadStats:
        """Stop placing orders, let the requests in flight finish (bounded), return what the client saw."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the load generator did not stop within {timeout}s")
        self.stopped_at = time.time()
        if self._failure is not None:
            raise RuntimeError("the load generator failed") from self._failure
        return self.stats

    # -- the generator's own loop ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._failure = exc

    async def _main(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=0, max_connections=self.max_in_flight + 8)
        async with httpx.AsyncClient(timeout=self.request_timeout_s, limits=limits) as http:
            canceller = asyncio.create_task(self._cancel_loop(http))
            in_flight: set[asyncio.Task[None]] = set()
            interval = 1.0 / self.rate
            next_at = time.monotonic()
            while not self._stop.is_set():
                with self._burst_lock:
                    count, self._burst = 1 + self._burst, 0
                for _ in range(count):
                    if len(in_flight) < self.max_in_flight:
                        task = asyncio.create_task(self._place(http))
                        in_flight.add(task)
                        task.add_done_callback(in_flight.discard)
                    else:
                        self.stats.errors["client_backlog_full"] += 1
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if in_flight:
                await asyncio.wait(in_flight, timeout=self.request_timeout_s * 3)
            canceller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await canceller
            # One last pass, so the cancels picked before the stop are requested.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._cancel_round(http), 10)

    async def _post(self, http: httpx.AsyncClient, path: str, **kwargs: object) -> httpx.Response:
        """POST to one replica; refused at connect time (nothing sent) -> the next replica."""
        last: BaseException | None = None
        first = self._next_url
        self._next_url += 1
        for attempt in range(len(self.order_urls)):
            url = self.order_urls[(first + attempt) % len(self.order_urls)]
            try:
                response = await http.post(f"{url}{path}", **kwargs)  # type: ignore[arg-type]
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc
                continue
            if attempt:
                self.stats.failovers += 1
            return response
        assert last is not None
        raise last

    async def _place(self, http: httpx.AsyncClient) -> None:
        poor = self.poor and self.random.random() < self.poor_fraction
        customer = self.random.choice(self.poor if poor else self.rich)
        price = Decimal(self.random.randint(100, 2000)) / 100
        key = f"chaos-{uuid.uuid4().hex}"
        self.stats.keys[key] = (customer, price)
        body = {"customer_id": customer, "product_id": 1, "quantity": 1, "total_price": str(price)}
        self.stats.attempted += 1
        started = time.monotonic()
        try:
            response = await self._post(http, "/orders/", json=body, headers={"Idempotency-Key": key})
        except Exception as exc:  # noqa: BLE001 - every failure is a figure
            kind = _error_kind(exc)
            self.stats.errors[kind] += 1
            if kind in {"cut_mid_request", "timeout"}:
                self.stats.cut_keys.append(key)
            return
        if response.status_code != 201:
            self.stats.errors[f"http_{response.status_code}"] += 1
            return
        self.stats.latencies_ms.append((time.monotonic() - started) * 1000)
        order_id = int(response.json()["id"])
        self.stats.accepted[order_id] = Placed(order_id, customer, price, time.time())
        if self.random.random() < self.cancel_fraction:
            self.stats.cancel_candidates.add(order_id)

    async def _cancel_loop(self, http: httpx.AsyncClient) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                await self._cancel_round(http)
            except Exception as exc:  # noqa: BLE001 - the database may be the fault of the moment
                self.stats.cancel_errors[f"lookup_{type(exc).__name__}"] += 1

    async def _cancel_round(self, http: httpx.AsyncClient) -> None:
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
            self.stats.cancels_requested += 1
            try:
                response = await self._post(http, f"/orders/{order_id}/cancel")
            except Exception as exc:  # noqa: BLE001
                self.stats.cancel_errors[_error_kind(exc)] += 1
                continue
            if response.status_code == 202:
                self.stats.cancels_accepted.add(order_id)
            else:
                self.stats.cancel_errors[f"http_{response.status_code}"] += 1
