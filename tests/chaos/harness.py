"""The chaos tier's harness: one environment per scenario, a load, a fault, and checks that count.

A scenario gets its own two databases (on the machine's PostgreSQL), its own vhost on the three-node
cluster, four TCP proxies (one per broker node, one to PostgreSQL) between the services and the
infrastructure, customers written straight into its customer database, and the services as real processes
with authentication on, as in production: they trust a signing key of the scenario's own
(`saga_tools.tokens.LocalIdentity`), the load sends a token minted once per scenario, and a request without
one is checked to be refused (401) as soon as the services are up.

    run = env.scenario("kill -9 customer service")
    await run.start_load()
    await run.steady(3)
    run.fault_started(); ...break something...; run.fault_ended()
    figures = await run.finish()          # stops the load, waits (bounded), counts, asserts

`finish()` counts from the databases and the broker only (docs/chaos.md lists every check): every accepted
order terminal within CONVERGENCE_BOUND_S of the fault's end, no duplicated effect nor inconsistency between
the databases (`saga_tools.invariants`, as `sagactl reconcile` judges them), money conserved, nothing left
in a queue or an outbox. Figures are recorded before the assertions, so a failing scenario still shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

from saga_common.contract.statuses import IN_PROGRESS_STATUSES, TERMINAL_STATUSES, OrderStatus, sql_in
from saga_common.contract.topology import CUSTOMER_SERVICE, ORDER_SERVICE, ServiceQueues
from saga_dev.load import LoadStats, OrderLoad
from saga_dev.load_background import BackgroundLoad
from saga_dev.localstack import POSTGRES_URL, Databases, ServiceProcess, unauthenticated_status, unique_name
from saga_dev.postgres_server import PostgresServer
from saga_dev.probes import port_open
from saga_dev.rabbit_cluster import RabbitCluster
from saga_tools import invariants
from saga_tools.tokens import LocalIdentity
from tests.support.broker import queue_depth, take_messages
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import TimedOut, eventually, wait_until

# Every accepted order must be terminal this long after the fault ended (the README states it).
CONVERGENCE_BOUND_S = float(os.environ.get("SAGA_CHAOS_BOUND_S", "60"))
LOAD_RATE = float(os.environ.get("SAGA_CHAOS_RATE", "25"))  # new orders per second
SEED = int(os.environ.get("SAGA_CHAOS_SEED", str(int(time.time()) % 100_000)))
RESULTS_PATH = Path(os.environ.get("SAGA_CHAOS_RESULTS", "/tmp/saga-chaos-results.json"))

RETRY_DELAYS_MS = [250, 1000, 5000]
DRAIN_TIMEOUT_S = 10
# uvicorn waits drain + 5 s for open requests; the whole exit must fit in a Kubernetes-like grace period.
GRACE_PERIOD_S = DRAIN_TIMEOUT_S + 10

LOAD_SCOPES = ("orders:write", "orders:read", "orders:cancel", "customers:all")  # for every customer
TOKEN_TTL_S = 3600  # longer than any scenario: the load's one token must not expire under it
RICH_BALANCE = Decimal("100000.00")
POOR_BALANCE = Decimal("40.00")

SERVICE_ENV = {
    "SAGA_DEADLINE_S": "300",  # the checks measure recovery, not expiry
    "SAGA_DEADLINE_SWEEP_INTERVAL_S": "1",
    "SAGA_DELIVERY_LIMIT": "20",
    "SAGA_MAX_ATTEMPTS": "6",
    "SAGA_RETRY_DELAYS_MS": json.dumps(RETRY_DELAYS_MS),
    "SAGA_BROKER_HEARTBEAT_S": "4",
    "SAGA_BROKER_RECONNECT_MAX_DELAY_S": "2",
    "SAGA_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S),
    "SAGA_HEALTH_PROBE_INTERVAL_S": "1",
}

RESULTS: dict[str, Figures] = {}  # by scenario
_IN_PROGRESS = f"SELECT count(*) FROM orders WHERE {sql_in(IN_PROGRESS_STATUSES)}"
# What a check meets while a fault has the database down or slow: "not yet".
DOWN = (OSError, asyncpg.PostgresError, TimeoutError)


# -- the tests' PostgreSQL, restarted by scenario 5 and always brought back -------------------------------


@cache  # found once, while it answers; a scenario may leave it down
def postgres_server() -> PostgresServer:
    with ThreadPoolExecutor(1) as pool:  # on a thread of its own: the caller may be on an event loop
        return pool.submit(asyncio.run, PostgresServer.of(f"{POSTGRES_URL}/postgres")).result()


def postgres_is_up() -> bool:
    host, port = POSTGRES_URL.rsplit("@", 1)[1].rsplit(":", 1)
    return port_open(int(port), host)


def ensure_postgres_running(timeout: float = 60) -> None:
    """Start the tests' PostgreSQL if a scenario left it down; everything else in the session needs it."""
    if postgres_is_up():
        return
    with contextlib.suppress(RuntimeError):
        postgres_server().start()
    wait_until(postgres_is_up, timeout=timeout, interval=0.5, what=f"PostgreSQL back ({postgres_server()})")


@dataclass
class Figures:
    scenario: str
    attempted: int = 0
    accepted: int = 0
    terminal: int = 0
    lost: int = 0
    duplicated: int = 0
    converge_s: float | None = None
    fulfilled: int = 0
    rejected: int = 0
    cancelled: int = 0
    client_errors: dict[str, int] = field(default_factory=dict)
    failovers: int = 0
    unacknowledged: int = 0  # orders created whose 201 the client never got
    faults: int = 0
    in_flight: int = 0  # sagas under way when a fault hit (the largest sample)
    dead_lettered: int = 0
    unsent_outbox: int = 0
    duration_s: float = 0.0
    note: str = ""
    problems: list[str] = field(default_factory=list)


def record(figures: Figures) -> None:
    RESULTS[figures.scenario] = figures
    payload = {
        "seed": SEED,
        "rate_per_s": LOAD_RATE,
        "bound_s": CONVERGENCE_BOUND_S,
        "command": "make test-chaos",
        "scenarios": [asdict(f) for f in RESULTS.values()],
    }
    with contextlib.suppress(OSError):
        RESULTS_PATH.write_text(json.dumps(payload, indent=2, default=str))


def format_table(results: Iterable[Figures]) -> str:
    header = (
        "| scenario | accepted | terminal | lost | duplicated | converge (s) | in flight at fault "
        "| fulfilled/rejected/cancelled | refused or failed requests | faults |"
    )
    lines = [header, "|" + " --- |" * 10]
    for f in results:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(f.client_errors.items())) or "0"
        converge = "-" if f.converge_s is None else f"{f.converge_s:.1f}"
        lines.append(
            f"| {f.scenario} | {f.accepted} | {f.terminal} | {f.lost} | {f.duplicated} | {converge} | {f.in_flight} "
            f"| {f.fulfilled}/{f.rejected}/{f.cancelled} | {errors} | {f.faults} |"
        )
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def _connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        yield conn
    finally:
        await conn.close()


# -- the environment of one scenario --------------------------------------------------------------------------


@dataclass
class ChaosEnvironment:
    cluster: RabbitCluster
    vhost: str
    databases: Databases
    broker_proxies: list[TcpProxy]
    db_proxy: TcpProxy
    identity_dir: tempfile.TemporaryDirectory[str]
    identity: LocalIdentity
    rich: list[int] = field(default_factory=list)
    poor: list[int] = field(default_factory=list)
    initial: dict[int, Decimal] = field(default_factory=dict)
    orders: list[ServiceProcess] = field(default_factory=list)
    customers: list[ServiceProcess] = field(default_factory=list)

    @classmethod
    async def create(cls, cluster: RabbitCluster) -> ChaosEnvironment:
        vhost = unique_name("chaos")
        databases = Databases.fresh("chaos")
        await asyncio.gather(
            asyncio.to_thread(cluster.add_vhost, vhost),
            asyncio.to_thread(databases.create),
        )
        proxies = [TcpProxy(node.amqp_port, name=f"amqp-{node.index}").start() for node in cluster.nodes]
        db_proxy = TcpProxy(int(POSTGRES_URL.rsplit(":", 1)[1]), name="postgres").start()
        identity_dir = tempfile.TemporaryDirectory(prefix="saga-chaos-idp-")
        identity = LocalIdentity(Path(identity_dir.name))
        env = cls(cluster, vhost, databases, proxies, db_proxy, identity_dir, identity)
        await env._seed_customers(rich=8, poor=4)
        return env

    async def _seed_customers(self, rich: int, poor: int) -> None:
        async with self.customer_db() as conn:
            for count, balance, ids in ((rich, RICH_BALANCE, self.rich), (poor, POOR_BALANCE, self.poor)):
                for _ in range(count):
                    customer = await conn.fetchval(
                        "INSERT INTO customers (name, balance) VALUES ('chaos', $1) RETURNING id", balance
                    )
                    ids.append(int(customer))
                    self.initial[int(customer)] = balance

    # URLs the services use: everything through the proxies.

    def broker_url(self, first_node: int) -> str:
        """All three nodes, starting with `first_node` (so the services spread over the cluster)."""
        proxies = self.broker_proxies[first_node - 1 :] + self.broker_proxies[: first_node - 1]
        return ",".join(self.cluster.url(1, self.vhost, port=proxy.port) for proxy in proxies)

    def _service(self, module: str, direct_database_url: str, first_node: int) -> ServiceProcess:
        database = direct_database_url.rsplit("/", 1)[1]
        database_url = f"postgresql://postgres@127.0.0.1:{self.db_proxy.port}/{database}"
        extra_env = SERVICE_ENV | self.identity.service_env()
        return ServiceProcess(module, database_url, self.broker_url(first_node), extra_env=extra_env)

    async def start_services(self, replicas: int = 1) -> None:
        self.customers = [self._service("customer_service", self.databases.customer_url, 2) for _ in range(replicas)]
        # The customer service declares the topology first, through node 2: the queue leaders start there.
        await asyncio.to_thread(self.customers[0].start)
        self.orders = [self._service("order_service", self.databases.order_url, 1) for _ in range(replicas)]
        await asyncio.gather(
            *(asyncio.to_thread(p.start) for p in [*self.customers[1:], *self.orders]),
        )
        # A request without a token is refused by both: the scenario runs with authentication on, as in production.
        answers = await asyncio.to_thread(unauthenticated_status, self.orders[0], self.customers[0])
        assert answers == {"order_service": 401, "customer_service": 401}, answers

    def scenario(self, name: str, **kwargs: Any) -> ScenarioRun:
        return ScenarioRun(self, name, **kwargs)

    async def destroy(self) -> None:
        for process in [*self.orders, *self.customers]:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(process.stop, 30)
        for proxy in [*self.broker_proxies, self.db_proxy]:
            proxy.stop()
        await asyncio.to_thread(self.cluster.delete_vhost, self.vhost)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.databases.drop)
        self.identity_dir.cleanup()

    # Direct access (never through the proxies) for the checks.

    def order_db(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        return _connected(self.databases.order_url)

    def customer_db(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        return _connected(self.databases.customer_url)

    @contextlib.asynccontextmanager
    async def broker(self) -> Any:
        """A connection to any node that is up (the checks must work whichever node is down)."""
        last: Exception | None = None
        for node in self.cluster.nodes:
            try:
                connection = await aio_pika.connect(self.cluster.url(node.index, self.vhost), timeout=5)
            except Exception as exc:  # noqa: BLE001 - that node is down: the next one
                last = exc
                continue
            try:
                yield connection
            finally:
                await connection.close()
            return
        raise RuntimeError(f"no node of the cluster accepts connections: {last}")

    async def queue_depths(self) -> dict[str, int]:
        """Every queue of both services: work, retry tiers, dead letters (as saga_common's topology names them)."""
        names = [
            name
            for service in (CUSTOMER_SERVICE, ORDER_SERVICE)
            for queues in [ServiceQueues(service, tuple(RETRY_DELAYS_MS))]
            for name in (queues.work, *queues.parked)
        ]
        async with self.broker() as connection:
            return {name: await queue_depth(connection, name) for name in names}

    async def peek_dead_letters(self, queue: str, expect: int) -> list[Any]:
        """Read what sits in a dead-letter queue without taking it: unacked, it goes back when the channel
        closes, so the depth check still sees it."""
        async with self.broker() as connection:
            channel = await connection.channel()
            found = await take_messages(await channel.get_queue(queue, ensure=False), expect, timeout=10, ack=False)
            await channel.close()
        return found


# -- one scenario -------------------------------------------------------------------------------------------


class ScenarioRun:
    def __init__(
        self,
        env: ChaosEnvironment,
        name: str,
        *,
        expected_dead_letters: dict[str, int] | None = None,
        allow_client_errors: bool = True,
    ) -> None:
        self.env = env
        self.name = name
        self.expected_dead_letters = expected_dead_letters or {}
        self.allow_client_errors = allow_client_errors
        self.load: BackgroundLoad | None = None
        self.started = time.monotonic()
        self.fault_end: float | None = None
        self.faults = 0
        self.note = ""
        self.problems: list[str] = []
        self._watcher: asyncio.Task[float | None] | None = None
        self._samples: list[asyncio.Task[None]] = []
        self.in_flight = 0

    async def start_load(self) -> None:
        # Chaos settings: an Idempotency-Key per order (a lost answer can be found again), a connection per
        # request (a graceful shutdown is judged on the requests it received, not on idle pooled
        # connections it closes), 15% of orders for customers who soon cannot pay, 15% of the fulfilled
        # ones cancelled (compensation under the faults too).
        load = OrderLoad(
            [process.base_url for process in self.env.orders],
            self.env.rich,
            token=self.env.identity.token(LOAD_SCOPES, subject="chaos-load", ttl_s=TOKEN_TTL_S),
            poor_customers=self.env.poor,
            poor_fraction=0.15,
            idempotency_keys=True,
            keep_alive=False,
            connections=72,
            max_in_flight=64,
            request_timeout_s=5.0,
            cancel_fraction=0.15,
            order_database_url=self.env.databases.order_url,
            seed=SEED + zlib.crc32(self.name.encode()) % 1000,  # not hash(): it differs from run to run
        )
        self.load = BackgroundLoad(load, LOAD_RATE).start()

    async def steady(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def burst(self) -> None:
        """Orders on top of the steady rate, so that the fault about to come finds sagas under way."""
        assert self.load is not None
        self.load.burst(40)
        await asyncio.sleep(0.15)

    def fault_started(self) -> None:
        self.faults += 1
        self._samples.append(asyncio.create_task(self._sample_in_flight()))

    async def _sample_in_flight(self) -> None:
        """How many sagas were under way when the fault hit (pending or cancelling orders)."""
        with contextlib.suppress(*DOWN):
            async with self.env.order_db() as conn:
                count = await conn.fetchval(_IN_PROGRESS)
            self.in_flight = max(self.in_flight, int(count))

    def fault_ended(self) -> None:
        self.fault_end = time.time()
        assert self._watcher is None, "one fault_ended() per scenario: convergence is measured from it"
        self._watcher = asyncio.create_task(self._watch_convergence(self.fault_end))

    async def _watch_convergence(self, since: float) -> float | None:
        """Seconds from `since` until no order created before it is pending, nor cancelling since before it."""

        async def left() -> int:
            async with self.env.order_db() as conn:
                return await conn.fetchval(
                    "SELECT count(*) FROM orders WHERE (status = 'pending' AND created_at <= to_timestamp($1)) "
                    "OR (status = 'cancelling' AND updated_at <= to_timestamp($1))",
                    since,
                )

        try:
            await eventually(left, until=lambda n: n == 0, timeout=since + CONVERGENCE_BOUND_S - time.time(),
                             interval=0.1, ignoring=DOWN)  # fmt: skip
        except TimedOut:
            return None
        return max(0.0, time.time() - since)

    async def finish(
        self, after_fault_s: float = 3.0, inspect: Callable[[], Awaitable[list[str]]] | None = None
    ) -> Figures:
        await asyncio.sleep(after_fault_s)
        assert self.load is not None
        stats = await asyncio.to_thread(self.load.stop)
        assert self.fault_end is not None and self._watcher is not None
        converge = await self._watcher
        await asyncio.gather(*self._samples, return_exceptions=True)
        await self._wait_settled(self.fault_end + CONVERGENCE_BOUND_S)
        if inspect is not None:
            self.problems += await inspect()
        figures = await self._count(stats, converge)
        record(figures)
        assert not figures.problems, f"{self.name}: " + "; ".join(figures.problems)
        return figures

    async def _wait_settled(self, deadline: float) -> None:
        """Until every order is terminal, both outboxes are sent and the work and delay queues are empty."""
        with contextlib.suppress(TimedOut):  # the counting that follows says what is missing
            await eventually(self._settled, timeout=deadline - time.time(), interval=0.25,
                             ignoring=(*DOWN, aio_pika.exceptions.AMQPError))  # fmt: skip

    async def _settled(self) -> bool:
        async with self.env.order_db() as orders, self.env.customer_db() as customers:
            busy = await orders.fetchval(_IN_PROGRESS)
            unsent = await orders.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            unsent += await customers.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        if busy or unsent:
            return False
        depths = await self.env.queue_depths()
        return all(depth == 0 for name, depth in depths.items() if not name.endswith(".dead-letter"))

    def converged(self) -> bool:
        """The orders in flight when the fault ended are all done (so far)."""
        return self._watcher is not None and self._watcher.done() and self._watcher.result() is not None

    async def _request_problems(self, stats: LoadStats) -> list[str]:
        """For scenarios where no request may fail: a request refused by every replica fails the scenario; a
        connection reset before any answer only if the order was created (the server had taken the request:
        its answer was lost). A reset before the server read the request is what a closing listener does to
        a connection still in the kernel's backlog: the request was never taken, like a refused one."""
        problems = []
        others = {kind: n for kind, n in stats.errors.items() if kind != "cut_mid_request"}
        if others:
            problems.append(f"requests failed: {others}")
        if stats.cut_keys:
            async with self.env.order_db() as conn:
                taken = await conn.fetchval(
                    "SELECT count(*) FROM orders WHERE idempotency_key = ANY($1::text[])", stats.cut_keys
                )
            if taken:
                problems.append(f"{taken} requests were processed and their answer lost (connection cut)")
        return problems

    async def _count(self, stats: LoadStats, converge: float | None) -> Figures:
        figures = Figures(
            scenario=self.name,
            attempted=stats.attempted,
            accepted=len(stats.accepted),
            converge_s=None if converge is None else round(converge, 2),
            client_errors=dict(stats.errors),
            failovers=stats.failovers,
            faults=self.faults,
            in_flight=self.in_flight,
            duration_s=round(time.monotonic() - self.started, 1),
            note=self.note,
        )
        problems = list(self.problems)
        if converge is None:
            problems.append(f"orders created before the fault's end still in progress after {CONVERGENCE_BOUND_S}s")
        if not self.allow_client_errors:
            problems += await self._request_problems(stats)

        async with self.env.order_db() as order_conn, self.env.customer_db() as customer_conn:
            orders = {
                int(r["id"]): r
                for r in await order_conn.fetch(
                    "SELECT id, customer_id, total_price, status, rejection_reason, idempotency_key FROM orders"
                )
            }
            snapshot = await invariants.load(order_conn, customer_conn)
            balances = {
                int(r["id"]): r["balance"] for r in await customer_conn.fetch("SELECT id, balance FROM customers")
            }
            unsent = [
                await conn.fetchrow(
                    "SELECT count(*) AS rows, extract(epoch FROM now() - min(created_at)) AS oldest_s "
                    "FROM outbox WHERE published_at IS NULL"
                )
                for conn in (order_conn, customer_conn)
            ]

        # Lost: accepted by the API, and not (or not yet, after the bound) in a terminal state.
        missing = [oid for oid in stats.accepted if oid not in orders]
        not_terminal = [
            oid for oid in stats.accepted if oid in orders and orders[oid]["status"] not in TERMINAL_STATUSES
        ]
        figures.lost = len(missing) + len(not_terminal)
        figures.terminal = len(stats.accepted) - figures.lost
        if missing:
            problems.append(f"{len(missing)} accepted orders are not in the database: {missing[:10]}")
        if not_terminal:
            problems.append(f"{len(not_terminal)} accepted orders not terminal: {not_terminal[:10]}")
        # Created, but the client never saw the 201 (cut or timed out): still sagas, checked like the others.
        figures.unacknowledged = sum(1 for oid in orders if oid not in stats.accepted)
        stuck = [oid for oid, r in orders.items() if r["status"] not in TERMINAL_STATUSES and oid not in stats.accepted]
        if stuck:
            problems.append(f"{len(stuck)} orders created without a 201 seen are not terminal: {stuck[:10]}")
        expired = [oid for oid, r in orders.items() if r["rejection_reason"] == "timeout"]
        if expired:  # the chaos tier sets a long deadline: an expiry here means recovery took that long
            problems.append(f"{len(expired)} orders expired (deadline) instead of completing: {expired[:10]}")
        statuses = Counter(r["status"] for r in orders.values())
        figures.fulfilled, figures.rejected, figures.cancelled = (
            statuses[s] for s in (OrderStatus.FULFILLED, OrderStatus.REJECTED, OrderStatus.CANCELLED)
        )

        # Duplicated effects and inconsistencies between the two databases: the invariants sagactl reconcile
        # checks too (saga_tools.invariants), over every order and reservation.
        duplicated: list[str] = []
        inconsistent: list[str] = []
        for violation in invariants.violations(snapshot.orders, snapshot.reservations):
            text = f"order {violation.order_id}: {violation.problem}"
            (duplicated if violation.kind in invariants.CHARGES else inconsistent).append(text)
        active_by_customer: Counter[int] = Counter()
        for reservation in snapshot.reservations:
            if reservation.status == "active":
                active_by_customer[reservation.customer_id] += reservation.amount
        for customer, start in self.env.initial.items():
            moved = start - balances.get(customer, Decimal(0))
            if moved != active_by_customer.get(customer, Decimal(0)):
                duplicated.append(
                    f"customer {customer}: balance moved by {moved}, active reservations hold "
                    f"{active_by_customer.get(customer, Decimal(0))}"
                )
        figures.duplicated = len(duplicated)
        problems += duplicated[:10] + inconsistent[:10]

        # Money.
        start_total = sum(self.env.initial.values(), Decimal(0))
        balance_total = sum((balances[c] for c in self.env.initial if c in balances), Decimal(0))
        active_total = sum(active_by_customer.values(), Decimal(0))
        fulfilled_total = sum(
            (r["total_price"] for r in orders.values() if r["status"] == OrderStatus.FULFILLED), Decimal(0)
        )
        if balance_total + active_total != start_total:
            problems.append(f"money not conserved: {balance_total} + {active_total} != {start_total}")
        if balance_total != start_total - fulfilled_total:
            problems.append(f"balances {balance_total} != start {start_total} - fulfilled orders {fulfilled_total}")
        if balances and min(balances.values()) < 0:
            problems.append(f"a balance is below zero: {min(balances.values())}")

        # The broker and the outboxes.
        depths = await self.env.queue_depths()
        figures.dead_lettered = sum(d for n, d in depths.items() if n.endswith(".dead-letter"))
        for name, depth in depths.items():
            wanted = self.expected_dead_letters.get(name, 0) if name.endswith(".dead-letter") else 0
            if depth != wanted:
                problems.append(f"queue {name} holds {depth} messages, expected {wanted}")
        figures.unsent_outbox = sum(row["rows"] for row in unsent)
        if figures.unsent_outbox:
            oldest = max(row["oldest_s"] for row in unsent if row["rows"])
            problems.append(
                f"{figures.unsent_outbox} outbox rows still unsent at the end, the oldest for {oldest:.0f}s"
            )
        figures.problems = problems
        return figures
