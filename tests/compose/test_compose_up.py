"""`docker compose up --build --wait` on the user's file with the override: the seed's request reaches fulfilled,
a cancelled order is compensated, the saga's spans arrive as one trace, and `down -v` leaves nothing behind.

The tests of this module run in order on one stack (the last one takes it down).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from saga_dev.docker_engine import DockerEngine
from tests.support.compose import Compose, busy_ports, say
from tests.support.saga_client import SEED_ORDER, SagaClient
from tests.support.waiting import eventually

ORDER_URL = "http://127.0.0.1:8001"
CUSTOMER_URL = "http://127.0.0.1:8002"
EXPECTED_SERVICES = {"postgres", "rabbitmq", "jaeger", "order-migrate", "customer-migrate", "order-service",
                     "customer-service"}  # fmt: skip


@pytest.fixture(scope="module")
def stack(engine: DockerEngine) -> Iterator[Compose]:
    busy = busy_ports()
    if busy:
        pytest.fail(f"the compose stack needs these addresses, already in use on this machine: {', '.join(busy)}")
    compose = Compose(engine, "saga-compose-test")
    networks_before = set(engine.docker("network", "ls", "--quiet").split())
    result, seconds = compose.up()
    try:
        assert result.returncode == 0, (
            f"docker compose up --build --wait failed ({result.returncode}):\n{result.stderr[-6000:]}"
        )
        say(f"up --build --wait: {seconds:.1f} s")
        unhealthy = {
            name: state["Health"] for name, state in compose.states().items() if state["Health"] not in ("", "healthy")
        }
        assert not unhealthy, f"up --wait returned with services not healthy: {unhealthy}"
        assert set(engine.docker("network", "ls", "--quiet").split()) == networks_before, "a network was created"
        yield compose
    finally:
        compose.down()


@pytest.fixture
async def client() -> Iterator[SagaClient]:
    async with httpx.AsyncClient(timeout=10) as http:
        yield SagaClient(ORDER_URL, CUSTOMER_URL, http)


def test_every_service_is_up_and_healthy(stack):
    states = stack.states()
    assert set(states) == EXPECTED_SERVICES
    for service in ("postgres", "rabbitmq", "order-service", "customer-service"):
        assert states[service]["State"] == "running" and states[service]["Health"] == "healthy", states[service]
    for job in ("order-migrate", "customer-migrate"):
        assert states[job]["State"] == "exited" and states[job]["ExitCode"] == 0, states[job]


async def test_the_seed_request_reaches_fulfilled(stack, client):
    """The README's curl, as written: customer 1 comes from `customer-service seed` in customer-migrate."""
    response = await client.http.post(
        f"{ORDER_URL}/orders/", json=SEED_ORDER, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 201, response.text
    order = await client.wait_for_status(response.json()["id"], {"fulfilled", "rejected"}, timeout=30)
    assert order["status"] == "fulfilled", order


async def test_a_cancelled_order_is_compensated(stack, client):
    customer = await client.create_customer("100.00", name="compose tier")
    order = await client.create_order(customer, "30.00")
    await client.wait_for_status(order["id"], {"fulfilled"}, timeout=30)
    assert Decimal((await client.customer(customer))["balance"]) == Decimal("70.00")
    assert (await client.cancel(order["id"])).status_code == 202
    await client.wait_for_status(order["id"], {"cancelled"}, timeout=30)
    after = await eventually(
        lambda: client.customer(customer),
        until=lambda after: Decimal(after["balance"]) == Decimal("100.00"),
        timeout=15,
        interval=0.2,
        what="the credit released",
    )
    assert Decimal(after["reserved"]) == 0, after


async def test_the_sagas_spans_arrive_as_one_trace(stack, client):
    order = await client.create_order(1, "1.00")
    await client.wait_for_status(order["id"], {"fulfilled"}, timeout=30)
    timeline = (await client.http.get(f"{ORDER_URL}/orders/{order['id']}/saga")).json()
    trace_id = timeline["trace_id"]
    wanted = {("order-service", "server"), ("order-service", "producer"), ("customer-service", "consumer"),
              ("customer-service", "producer"), ("order-service", "consumer")}  # fmt: skip

    def trace() -> dict:
        spans = [span for span in stack.spans() if span.trace_id == trace_id]
        ids = {span.span_id for span in spans}
        return {
            "kinds": {(span.service, span.kind) for span in spans},
            "orphans": [span.name for span in spans if span.parent_span_id and span.parent_span_id not in ids],
            "spans": spans,
        }

    found = await eventually(
        trace,
        until=lambda found: wanted <= found["kinds"] and not found["orphans"],
        timeout=30,  # the exporters send in batches (every 5 s by default)
        interval=1,
        what=f"trace {trace_id} complete at the OTLP receiver (all span kinds, no orphans)",
    )
    spans = found["spans"]
    assert {span.service for span in spans} == {"order-service", "customer-service"}
    roots = [span for span in spans if not span.parent_span_id]
    assert [root.kind for root in roots] == ["server"], f"one root, the order request: {roots}"


def test_down_leaves_nothing_behind(stack, engine):
    networks_before = set(engine.docker("network", "ls", "--quiet").split())
    stack.down()
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}
    assert set(engine.docker("network", "ls", "--quiet").split()) == networks_before
