"""The metrics as Prometheus sees them: every name the dashboards and alert rules use is exposed by a
running service, the saga counters and histogram move as sagas finish, and a real Prometheus scraping
both services answers the dashboards' queries."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from saga_dev.localstack import ServiceProcess, free_port
from saga_dev.system_packages import fix_for
from tests.support.promql import (
    DASHBOARDS_DIR,
    dashboard_expressions,
    dashboard_files,
    located_expressions,
    metric_names_in_expression,
    substitute_variables,
)
from tests.support.saga_client import TERMINAL
from tests.support.waiting import eventually, wait_until

PROMETHEUS_MADE = {"up"}


def scrape(service: ServiceProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{service.base_url}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_metric_of_the_dashboards_and_alerts_is_exposed_by_a_running_service(traced_services):
    exposed = {name for service in traced_services for name, _ in scrape(service)}
    expressions = located_expressions()
    assert expressions, "no dashboard or rule expressions found"
    missing = {
        f"{expression}: {name}"
        for expression in expressions
        for name in metric_names_in_expression(expression.expr) - PROMETHEUS_MADE
        if name not in exposed
    }
    assert not missing, "metrics used but not exposed:\n" + "\n".join(sorted(missing))


async def test_the_saga_counters_and_histogram_move_as_sagas_finish(saga, traced_services):
    order_service, customer_service = traced_services
    before_order, before_customer = scrape(order_service), scrape(customer_service)
    rich, poor = await saga.create_customer("100.00"), await saga.create_customer("1.00")
    fulfilled = [await saga.create_order(rich, "5.00") for _ in range(3)]
    rejected = await saga.create_order(poor, "5.00")
    for order in [*fulfilled, rejected]:
        await saga.wait_for_status(order["id"], TERMINAL)

    def moved(before, after, name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    # A counter may move just after the status does (a publish confirmed after the commit): scrape until the
    # last ones have moved at least as far as asserted below.
    after_order, after_customer = await eventually(
        lambda: (scrape(order_service), scrape(customer_service)),
        until=lambda after: (
            moved(before_order, after[0], "saga_messages_published_total", type="order.created", result="ok") >= 4
            and moved(before_customer, after[1], "saga_messages_published_total", type="order.fulfilled", result="ok")
            >= 3
        ),
        what="the publish counters of both services",
    )

    assert moved(before_order, after_order, "saga_started_total") == 4
    assert moved(before_order, after_order, "saga_finished_total", outcome="fulfilled", reason="") == 3
    assert (
        moved(before_order, after_order, "saga_finished_total", outcome="rejected", reason="insufficient_balance") == 1
    )
    assert moved(before_order, after_order, "saga_duration_seconds_count", outcome="fulfilled") == 3
    assert moved(before_order, after_order, "saga_duration_seconds_bucket", outcome="fulfilled", le="+Inf") == 3
    assert moved(before_order, after_order, "saga_messages_published_total", type="order.created", result="ok") == 4
    assert (
        moved(before_customer, after_customer, "saga_messages_consumed_total", type="order.created", result="processed")
        == 4
    )
    assert (
        moved(before_customer, after_customer, "saga_messages_published_total", type="order.fulfilled", result="ok")
        == 3
    )
    assert moved(before_order, after_order, "http_requests_total", method="POST", route="/orders/", status="201") == 4


def test_saga_latency_carries_trace_exemplars_in_openmetrics(saga, traced_services):
    order_service, _ = traced_services
    text = httpx.get(
        f"{order_service.base_url}/metrics", headers={"Accept": "application/openmetrics-text"}, timeout=5
    ).text
    exemplars = [
        line for line in text.splitlines() if line.startswith("saga_duration_seconds_bucket") and "# {" in line
    ]
    assert exemplars and all('trace_id="' in line for line in exemplars)


@pytest.fixture(scope="module")
def prometheus(traced_services, tmp_path_factory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(f"the prometheus binary is missing: {fix_for('prometheus')}")
    directory = tmp_path_factory.mktemp("prometheus")
    order_service, customer_service = traced_services
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "saga",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{s.port}"], "labels": {"service": name, "pod": f"{name}-0"}}
                    for s, name in ((order_service, "order-service"), (customer_service, "customer-service"))
                ],
            }
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(directory / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/-/ready", timeout=1),
            until=lambda response: response.status_code == 200,
            timeout=30,
            interval=0.2,
            ignoring=(httpx.HTTPError,),
            what="Prometheus ready",
        )
        yield url
    finally:
        process.terminate()
        process.wait(10)


def query(prometheus: str, expr: str) -> list[dict]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert response["status"] == "success", f"{expr}: {response.get('error')}"
    return response["data"]["result"]


async def test_a_real_prometheus_scrapes_both_services_and_the_dashboards_get_data(saga, prometheus):
    customer = await saga.create_customer("1000.00")
    for _ in range(2):
        orders = [await saga.create_order(customer, "1.00") for _ in range(5)]
        for order in orders:
            await saga.wait_for_status(order["id"], TERMINAL)
        await asyncio.sleep(1.5)  # pacing, not a wait: the two batches fall in different scrapes

    up = await eventually(
        lambda: query(prometheus, 'up{job="saga"} == 1'),
        until=lambda result: len(result) >= 2,
        timeout=30,
        interval=0.5,
        what="both services scraped",
    )
    assert {r["metric"]["service"] for r in up} == {
        "order-service",
        "customer-service",
    }
    # Every query of every dashboard evaluates in a real Prometheus (ranges shortened to this test's life).
    short = {"__rate_interval": "20s", "__interval": "5s", "__range": "1m"}
    overview = DASHBOARDS_DIR / "saga-overview.json"
    for path in dashboard_files():
        for expression in dashboard_expressions(path):
            query(prometheus, _short_ranges(substitute_variables(expression.expr), short))
    # The saga panels of the overview return data.
    saga_panels = [
        e
        for e in dashboard_expressions(overview)
        if "saga_finished_total" in e.expr or "saga_duration_seconds" in e.expr
    ]
    assert saga_panels
    with_data = [e for e in saga_panels if query(prometheus, _short_ranges(substitute_variables(e.expr), short))]
    assert len(with_data) >= len(saga_panels) // 2, (
        f"saga panels without data: {set(map(str, saga_panels)) - set(map(str, with_data))}"
    )


def _short_ranges(expr: str, ranges: dict[str, str]) -> str:
    for long, replacement in (
        ("[5m]", f"[{ranges['__rate_interval']}]"),
        ("[1m]", f"[{ranges['__interval']}]"),
        ("[1h]", f"[{ranges['__range']}]"),
    ):
        expr = expr.replace(long, replacement)
    return expr


def test_the_dashboards_exist() -> None:
    assert [path.name for path in dashboard_files()] == [
        "customer-service.json",
        "order-service.json",
        "saga-overview.json",
    ]
