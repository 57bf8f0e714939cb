"""saga-bench: run the benchmark scenarios on this machine, print a table, write the results as JSON.

Each scenario starts its own stack (fresh databases, a vhost, the services as processes), sends its load,
waits for every outcome and tears the stack down. The baseline runs first, in the same session, so the
ratio compares figures measured under the same conditions (this machine is noisy: about 30% run to run).
The services run with authentication on; the load generator sends one bearer token, minted per scenario.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from tabulate import tabulate

from saga_common.contract.statuses import TERMINAL_STATUSES
from saga_dev.bench.baseline import run_baseline
from saga_dev.bench.progress import Progress
from saga_dev.bench.stack import BenchStack, outcomes
from saga_dev.load import LoadStats, OrderLoad
from saga_dev.localstack import SagaEnvironment, local_servers
from saga_dev.rabbit_cluster import RabbitCluster

T = TypeVar("T")
# Where the benchmark keeps the servers it starts when none answers (as the tests do).
BENCH_INFRA_HOME = Path(os.environ.get("SAGA_BENCH_INFRA_HOME", "/var/tmp/saga-bench-infra"))
PRICE = Decimal("1.00")
CUSTOMERS = 100
OUTCOME_TIMEOUT_S = 120


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    mode: str  # "open" (rate) or "closed" (concurrency)
    load: float
    replicas: int = 1
    hotspot: bool = False
    tracing: bool = False
    sampler_ratio: float = 1.0
    cluster: bool = False
    soak: bool = False
    prefer_wait: bool = False  # closed loop: the outcome in the POST (Prefer: wait=) instead of a GET ?wait=


SCENARIOS = [
    Scenario("closed-1x", "max throughput: one replica each, 64 sagas in flight", "closed", 64),
    Scenario(
        "closed-prefer",
        "closed-1x whose clients ask for the outcome in the POST (Prefer: wait=), one request per saga",
        "closed",
        64,
        prefer_wait=True,
    ),
    Scenario("open-100", "latency at 100 sagas/s, one replica each", "open", 100),
    Scenario("open-300", "latency at 300 sagas/s, one replica each", "open", 300),
    Scenario(
        "closed-2x", "two replicas each: competing consumers, relays sharing the outbox", "closed", 64, replicas=2
    ),
    Scenario("hotspot", "every order on one customer: row contention", "closed", 64, hotspot=True),
    Scenario(
        "tracing", "closed-1x with tracing on, every saga sampled, exported over OTLP", "closed", 64, tracing=True
    ),
    Scenario(
        "tracing-10%", "closed-1x with tracing on, 10% of sagas sampled", "closed", 64, tracing=True, sampler_ratio=0.1
    ),
    Scenario("cluster", "closed-1x on a three-node RabbitMQ cluster", "closed", 64, cluster=True),
    Scenario("soak", "5 minutes at 150 sagas/s: memory per process at start and end", "open", 150, soak=True),
]


@dataclass
class Result:
    scenario: str
    description: str
    mode: str
    load: float
    replicas: int
    duration_s: float
    accepted: int
    completed: int
    sagas_per_s: float
    saga_ms: dict[str, float]
    http_ms: dict[str, float]
    errors: dict[str, int]
    outcomes: dict[str, int]
    rss_mib_start: dict[str, float] = field(default_factory=dict)
    rss_mib_end: dict[str, float] = field(default_factory=dict)
    # CPU (user + system) per finished saga of each process (group), from the end of the warm-up to the last
    # outcome: each service (replicas summed), postgresql (every process of the instance), rabbitmq (the
    # node or nodes used), load_generator (this process).
    cpu_ms_per_saga: dict[str, float] = field(default_factory=dict)
    cpu_processes: dict[str, int] = field(default_factory=dict)  # process trees measured per group (rabbitmq: nodes)
    # What a POST without a token got from each service: 401 shows the scenario ran with authentication on.
    unauthenticated_status: dict[str, int] = field(default_factory=dict)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)
    cut = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else ordered * 99

    def rounded(x: float) -> float:
        return round(x * 1000, 1)

    return {"p50": rounded(cut[49]), "p95": rounded(cut[94]), "p99": rounded(cut[98]), "max": rounded(ordered[-1])}


async def run_scenario(
    scenario: Scenario, duration_s: float, cluster_urls: str | None, settings: dict[str, str] | None = None
) -> Result:
    extra_env: dict[str, str] = dict(settings or {})
    receiver = None
    if scenario.tracing:
        from saga_dev.bench.otlp_sink import OtlpSink

        receiver = OtlpSink().start()
        extra_env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            # Every span exported, none dropped: the cost measured is the whole cost.
            "OTEL_BSP_MAX_QUEUE_SIZE": "65536",
            "OTEL_BSP_SCHEDULE_DELAY": "1000",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(scenario.sampler_ratio),
        }
    stack = BenchStack(
        replicas=scenario.replicas, broker_urls=cluster_urls if scenario.cluster else None, extra_env=extra_env
    )
    await asyncio.to_thread(stack.start)
    try:
        refused = await asyncio.to_thread(stack.unauthenticated_status)
        customers = await asyncio.to_thread(stack.create_customers, 1 if scenario.hotspot else CUSTOMERS)
        # One token for the scenario, minted before the load (not per request), valid well past its end.
        token = stack.token(ttl_s=duration_s + OUTCOME_TIMEOUT_S + 600)
        await _warm_up(stack.order_urls, customers, token)
        meter = await stack.cpu_meter()
        rss_start = stack.rss_mib()
        cpu_start = meter.sample()
        load = OrderLoad(stack.order_urls, customers, token=token, price=PRICE)
        progress = Progress(scenario.name, duration_s)
        if scenario.mode == "open":
            run = await load.open_loop(scenario.load, duration_s=duration_s, progress=progress)
        else:
            run = await load.closed_loop(
                int(scenario.load), duration_s=duration_s, prefer_wait=scenario.prefer_wait, progress=progress
            )
        progress.done()
        assert stack.env is not None
        finished = await outcomes(stack.env.databases.order_url, list(run.accepted), timeout_s=OUTCOME_TIMEOUT_S)
        cpu_end = meter.sample()
        rss_end = stack.rss_mib()
        result = _result(scenario, duration_s, run, finished, rss_start, rss_end)
        result.unauthenticated_status = refused
        result.cpu_processes = {name: len(pids) for name, pids in meter.groups.items()}
        if result.completed:
            result.cpu_ms_per_saga = {
                name: round((cpu_end[name] - cpu_start[name]) * 1000 / result.completed, 2) for name in cpu_start
            }
        return result
    finally:
        await asyncio.to_thread(stack.stop)
        if receiver is not None:
            receiver.stop()


async def _warm_up(order_urls: list[str], customers: list[int], token: str) -> None:
    """A few sagas first, so connection pools, prepared statements and code paths are warm."""
    await OrderLoad(order_urls, customers, token=token, price=PRICE).closed_loop(8, duration_s=1.5)


def _result(
    scenario: Scenario,
    duration_s: float,
    run: LoadStats,
    finished: dict[int, tuple[str, float]],
    rss_start: dict[str, float],
    rss_end: dict[str, float],
) -> Result:
    latencies, counts = [], {}
    last_done = run.started
    for placed in run.accepted.values():
        status, done_at = finished.get(placed.order_id, ("missing", 0.0))
        counts[status] = counts.get(status, 0) + 1
        if status in TERMINAL_STATUSES and done_at:
            latencies.append(max(0.0, done_at - placed.sent_at))
            last_done = max(last_done, done_at)
    completed = len(latencies)
    # Sustained rate: completions over the time from the first POST to the last outcome recorded.
    span = max(last_done - run.started, 1e-9)
    return Result(
        scenario=scenario.name,
        description=scenario.description,
        mode=scenario.mode,
        load=scenario.load,
        replicas=scenario.replicas,
        duration_s=duration_s,
        accepted=len(run.accepted),
        completed=completed,
        sagas_per_s=round(completed / span, 1),
        saga_ms=percentiles(latencies),
        http_ms=percentiles(run.http_s),
        errors=dict(run.errors),
        outcomes=counts,
        rss_mib_start=rss_start,
        rss_mib_end=rss_end,
    )


async def run_baseline_scenario(duration_s: float) -> dict[str, float]:
    env = await asyncio.to_thread(SagaEnvironment.create)
    try:
        import asyncpg

        conn = await asyncpg.connect(env.databases.customer_url)
        try:
            customers = [
                await conn.fetchval("INSERT INTO customers (name, balance) VALUES ('baseline', 1e9) RETURNING id")
                for _ in range(CUSTOMERS)
            ]
        finally:
            await conn.close()
        print("  baseline: the saga's transactions and publishes without the services ...", file=sys.stderr)
        return await run_baseline(
            env.databases.order_url,
            env.databases.customer_url,
            env.broker_url,
            customers=customers,
            duration_s=duration_s,
            concurrency=32,
        )
    finally:
        await asyncio.to_thread(env.destroy)


# The processes whose CPU is measured, and their column in the table.
CPU_COLUMNS = {
    "order_service": "CPU ms/saga order",
    "customer_service": "customer",
    "postgresql": "postgres",
    "rabbitmq": "rabbitmq",
    "load_generator": "load gen",
}


def print_report(baseline: dict[str, float] | None, results: list[Result]) -> None:
    limit = baseline["sagas_per_s"] if baseline else None
    if baseline:
        print(f"\nbaseline (the machine's limit, no services): {baseline['sagas_per_s']:.0f} sagas/s")
    rows = []
    for r in results:
        ratio = f"{r.sagas_per_s / limit:.0%}" if limit else "-"
        load = f"{r.load:.0f}/s" if r.mode == "open" else f"{r.load:.0f} in flight"
        rows.append(
            [
                r.scenario,
                load,
                r.replicas,
                r.sagas_per_s,
                ratio,
                r.saga_ms["p50"],
                r.saga_ms["p95"],
                r.saga_ms["p99"],
                r.saga_ms["max"],
                r.http_ms["p50"],
                r.http_ms["p99"],
                sum(r.errors.values()),
                f"{r.outcomes.get('fulfilled', 0)}/{r.outcomes.get('rejected', 0)}/{r.accepted - r.completed}",
                *(r.cpu_ms_per_saga.get(name, "-") for name in CPU_COLUMNS),
                round(sum(r.cpu_ms_per_saga.values()), 2) if r.cpu_ms_per_saga else "-",
            ]
        )
    headers = [
        "scenario", "load", "replicas", "sagas/s", "of limit", "saga p50 ms", "p95", "p99", "max",
        "http p50 ms", "p99", "errors", "fulfilled/rejected/unfinished",
        *CPU_COLUMNS.values(), "CPU total",
    ]  # fmt: skip
    print(tabulate(rows, headers=headers))
    for r in results:
        if r.rss_mib_start:
            start, end = sum(r.rss_mib_start.values()), sum(r.rss_mib_end.values())
            per_process = ", ".join(
                f"{name} {r.rss_mib_start[name]:.0f}->{r.rss_mib_end.get(name, 0):.0f}" for name in r.rss_mib_start
            )
            print(f"{r.scenario}: RSS MiB {start:.0f} -> {end:.0f} ({per_process})")
    print("CPU: ms of CPU (user + system) per finished saga, from the end of the warm-up to the last outcome")


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="saga-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [s.name for s in SCENARIOS]
    parser.add_argument(
        "--scenarios",
        default=",".join(n for n in names if n != "soak"),
        help=f"comma-separated, from {names}".replace("%", "%%"),
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per scenario (soak: 300)")
    parser.add_argument("--soak-duration", type=float, default=300.0)
    parser.add_argument("--baseline-duration", type=float, default=20.0, help="seconds of the baseline")
    parser.add_argument("--no-baseline", action="store_true", help="skip the machine's-limit baseline")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="directory for the JSON results")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SAGA_NAME=VALUE",
        help="a service setting for every scenario, e.g. --set SAGA_CONSUMER_BATCH_SIZE=1 (repeatable)",
    )
    args = parser.parse_args(argv)
    args.settings = {}
    for item in args.set:
        name, equals, value = item.partition("=")
        if not equals or not name.startswith("SAGA_"):
            parser.error(f"--set takes SAGA_NAME=VALUE, not {item!r}")
        args.settings[name] = value
    chosen = [s for s in SCENARIOS if s.name in args.scenarios.split(",")]
    unknown = set(args.scenarios.split(",")) - set(names)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    results = _with_local_servers(lambda: asyncio.run(_run_all(chosen, args)))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    baseline, finished = results
    path.write_text(
        json.dumps(
            {
                "machine": machine(),
                "settings": args.settings,
                "baseline": baseline,
                "results": [asdict(r) for r in finished],
            },
            indent=2,
        )
    )
    print_report(baseline, finished)
    print(f"\nresults: {path}")


def _with_local_servers(run: Callable[[], T]) -> T:
    """`run()` with PostgreSQL and RabbitMQ answering (private ones when none does): a bare machine needs no
    other step."""
    with local_servers(
        home=BENCH_INFRA_HOME, node_name="saga-bench", log=lambda line: print(f"[infrastructure] {line}", flush=True)
    ):
        return run()


async def _run_all(chosen: list[Scenario], args: argparse.Namespace) -> tuple[dict[str, float] | None, list[Result]]:
    baseline = None if args.no_baseline else await run_baseline_scenario(args.baseline_duration)
    results = []
    cluster = None
    try:
        for scenario in chosen:
            cluster_urls = None
            if scenario.cluster:
                cluster = cluster or await asyncio.to_thread(_start_cluster)
                cluster_urls = ",".join(cluster.urls())
            duration = args.soak_duration if scenario.soak else args.duration
            print(f"- {scenario.name}: {scenario.description} ({duration:.0f}s)", file=sys.stderr)
            started = time.monotonic()
            results.append(await run_scenario(scenario, duration, cluster_urls, args.settings))
            print(f"  done in {time.monotonic() - started:.0f}s: {results[-1].sagas_per_s} sagas/s", file=sys.stderr)
    finally:
        if cluster is not None:
            await asyncio.to_thread(cluster.stop)
    return baseline, results


def _start_cluster() -> RabbitCluster:
    print("  starting a three-node RabbitMQ cluster ...", file=sys.stderr)
    return RabbitCluster.start()
