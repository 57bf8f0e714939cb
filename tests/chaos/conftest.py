"""Fixtures of the chaos tier: the three-node RabbitMQ cluster (one per session), an environment per
scenario, PostgreSQL brought back whatever happens, and the table of figures at the end of the session."""

from __future__ import annotations

import atexit
from collections.abc import AsyncIterator, Iterator

import pytest

from saga_dev.rabbit_cluster import RabbitCluster
from tests.chaos.harness import (
    RESULTS,
    RESULTS_PATH,
    SEED,
    ChaosEnvironment,
    ensure_postgres_running,
    format_table,
    postgres_server,
)


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    cluster = RabbitCluster.start()
    atexit.register(cluster.stop)  # a second line of defence if the session is interrupted
    print(
        f"\nchaos: three-node RabbitMQ cluster formed in {cluster.formed_in_s:.1f}s, "
        f"{cluster.memory_mb():.0f} MB, nodes {[n.name for n in cluster.nodes]}; seed {SEED}"
    )
    try:
        yield cluster
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)


@pytest.fixture(scope="session", autouse=True)
def postgres_comes_back() -> Iterator[None]:
    postgres_server()  # found while it answers, so that it can be started again after a scenario stopped it
    try:
        yield
    finally:
        ensure_postgres_running()


@pytest.fixture
async def chaos(rabbit_cluster: RabbitCluster) -> AsyncIterator[ChaosEnvironment]:
    ensure_postgres_running()
    env = await ChaosEnvironment.create(rabbit_cluster)
    try:
        yield env
    finally:
        ensure_postgres_running()
        for node in rabbit_cluster.nodes:  # a scenario that failed midway may have left a node down
            if node.process is None or node.process.poll() is not None:
                rabbit_cluster.restart(node.index)
        await env.destroy()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RESULTS:
        return
    terminalreporter.section("chaos: figures per scenario")
    terminalreporter.write_line(format_table(RESULTS.values()))
    terminalreporter.write_line(f"(seed {SEED}; written to {RESULTS_PATH})")
