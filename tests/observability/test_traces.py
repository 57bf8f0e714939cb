"""One saga is one trace: the HTTP request, the outbox writes, every publish and consume, and the database
calls of both services arrive at a real OTLP receiver under one trace id, consumers parented to producers."""

from __future__ import annotations

import asyncio
import json

import httpx

from saga_dev.localstack import ServiceProcess
from tests.support.otlp import OtlpReceiver, ReceivedSpan, tracing_env
from tests.support.saga_client import TERMINAL, SagaClient
from tests.support.waiting import TimedOut, eventually, unchanged_for, wait_until

ORDER, CUSTOMER = "order-service", "customer-service"


def steps_of(outcome: str) -> list[str]:
    """The messages one saga exchanges, in order."""
    answer = "order.fulfilled" if outcome != "rejected" else "order.rejected"
    steps = ["order.created", answer]
    if outcome == "cancelled":
        steps += ["order.cancelled", "credit.released"]
    return steps


PRODUCER_OF = {
    "order.created": ORDER,
    "order.cancelled": ORDER,
    "order.fulfilled": CUSTOMER,
    "order.rejected": CUSTOMER,
    "credit.released": CUSTOMER,
}
CONSUMER_OF = {key: CUSTOMER if producer == ORDER else ORDER for key, producer in PRODUCER_OF.items()}


def one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    names = sorted({s.name for s in spans})
    assert len(found) == 1, f"expected one {name!r} span from {service}, got {len(found)}: {names}"
    return found[0]


def expected_names(outcome: str) -> set[tuple[str, str]]:
    names = {(ORDER, "POST /orders/")}
    for step in steps_of(outcome):
        names |= {
            (PRODUCER_OF[step], f"create {step}"),
            (PRODUCER_OF[step], f"publish {step}"),
            (CONSUMER_OF[step], f"process {step}"),
        }
    return names


def wait_for_whole_saga(receiver: OtlpReceiver, trace_id: str, outcome: str) -> list[ReceivedSpan]:
    wanted = expected_names(outcome)
    receiver.wait_for(lambda: wanted <= {(s.service, s.name) for s in receiver.trace(trace_id)})
    # The database spans of the last step arrive in the same or the next export (100 ms batches).
    return wait_until(lambda: receiver.trace(trace_id), until=unchanged_for(0.3), what="the trace's last spans")


def assert_saga_is_one_trace(spans: list[ReceivedSpan], order_id: int, outcome: str) -> None:
    by_id = {s.span_id: s for s in spans}
    assert {s.service for s in spans} == {ORDER, CUSTOMER}
    request = one(spans, ORDER, "POST /orders/")
    assert request.kind == "server"

    for step in steps_of(outcome):
        create = one(spans, PRODUCER_OF[step], f"create {step}")
        publish = one(spans, PRODUCER_OF[step], f"publish {step}")
        process = one(spans, CONSUMER_OF[step], f"process {step}")
        assert (create.kind, publish.kind, process.kind) == ("producer", "producer", "consumer")
        # The relay publishes in the context stored with the outbox row; the consumer continues the publish.
        assert publish.parent_span_id == create.span_id, f"{step}: publish is not a child of the outbox write"
        assert process.parent_span_id == publish.span_id, f"{step}: consumer span is not a child of the publish"
        for span in (create, publish, process):
            assert span.attributes["messaging.system"] == "rabbitmq"
            assert span.attributes["messaging.destination.name"] == "saga.events"
            assert span.attributes["messaging.rabbitmq.destination.routing_key"] == step
            assert span.attributes["saga.order_id"] == order_id
        assert create.attributes["messaging.operation.type"] == "create"
        assert publish.attributes["messaging.operation.type"] == "send"
        assert process.attributes["messaging.operation.type"] == "process"
        assert publish.attributes["messaging.message.id"] == process.attributes["messaging.message.id"]
        assert process.attributes["messaging.destination.subscription.name"] == f"{CONSUMER_OF[step]}.events"

    # Each consume writes its outcome in the database inside its own span.
    for step in steps_of(outcome):
        process = one(spans, CONSUMER_OF[step], f"process {step}")
        children = [s for s in spans if s.parent_span_id == process.span_id]
        assert any(s.kind == "client" and "postgresql" in _db_system(s) for s in children), (
            f"no database span under process {step}: {[(c.name, c.kind, c.attributes) for c in children]}"
        )
    # The first outbox write happens inside the HTTP request.
    create = one(spans, ORDER, "create order.created")
    ancestor = by_id.get(create.parent_span_id)
    while ancestor is not None and ancestor is not request:
        ancestor = by_id.get(ancestor.parent_span_id)
    assert ancestor is request, "the outbox write is not under the HTTP request"
    # Every span of the trace is reachable from the request: no orphan, no second root.
    roots = [s for s in spans if s.parent_span_id == "" or s.parent_span_id not in by_id]
    assert roots == [request], f"more than one root: {[(r.service, r.name) for r in roots]}"


def _db_system(span: ReceivedSpan) -> str:
    return str(span.attributes.get("db.system.name") or span.attributes.get("db.system") or "")


async def create_and_finish(saga: SagaClient, customer: int, price: str) -> tuple[dict, str]:
    body = {"customer_id": customer, "product_id": 1, "quantity": 1, "total_price": price}
    response = await saga.http.post(f"{saga.order_url}/orders/", json=body)
    assert response.status_code == 201
    traceparent = response.headers["traceparent"]
    order = response.json()
    assert order["trace_id"] == traceparent.split("-")[1], "the order resource and the header name the same trace"
    done = await saga.wait_for_status(order["id"], TERMINAL)
    return done, order["trace_id"]


async def test_a_fulfilled_saga_is_one_trace_across_both_services(saga, otlp_receiver):
    customer = await saga.create_customer("100.00")
    order, trace_id = await create_and_finish(saga, customer, "25.00")
    assert order["status"] == "fulfilled"
    spans = await asyncio.to_thread(wait_for_whole_saga, otlp_receiver, trace_id, "fulfilled")
    assert_saga_is_one_trace(spans, order["id"], "fulfilled")
    outcome = one(spans, ORDER, "process order.fulfilled")
    assert outcome.attributes["saga.outcome"] == "fulfilled"
    assert one(spans, CUSTOMER, "process order.created").attributes["saga.outcome"] == "reserved"


async def test_a_rejected_saga_is_one_trace(saga, otlp_receiver):
    customer = await saga.create_customer("1.00")
    order, trace_id = await create_and_finish(saga, customer, "25.00")
    assert order["status"] == "rejected"
    spans = await asyncio.to_thread(wait_for_whole_saga, otlp_receiver, trace_id, "rejected")
    assert_saga_is_one_trace(spans, order["id"], "rejected")
    assert one(spans, CUSTOMER, "process order.created").attributes["saga.outcome"] == "rejected:insufficient_balance"


async def test_a_cancelled_saga_and_its_compensation_are_one_trace(saga, otlp_receiver):
    customer = await saga.create_customer("100.00")
    order, trace_id = await create_and_finish(saga, customer, "25.00")
    cancel = await saga.cancel(order["id"])
    assert cancel.status_code == 202
    await saga.wait_for_status(order["id"], {"cancelled"})
    spans = await asyncio.to_thread(wait_for_whole_saga, otlp_receiver, trace_id, "cancelled")
    assert_saga_is_one_trace(spans, order["id"], "cancelled")
    # The cancel request is a trace of its own, linked from the compensation it started.
    cancel_trace = cancel.headers["traceparent"].split("-")[1]
    compensation = one(spans, ORDER, "create order.cancelled")
    assert any(link_trace == cancel_trace for link_trace, _ in compensation.links)


async def test_sagas_handled_in_batches_are_still_one_trace_each(saga, otlp_receiver):
    """Concurrent sagas: their messages are handled together (batched consumers), yet each saga's spans form
    its own tree under its own request."""
    customer = await saga.create_customer("1000.00")
    finished = await asyncio.gather(*(create_and_finish(saga, customer, "5.00") for _ in range(40)))
    assert {order["status"] for order, _ in finished} == {"fulfilled"}
    assert len({trace_id for _, trace_id in finished}) == 40
    for order, trace_id in finished:
        spans = await asyncio.to_thread(wait_for_whole_saga, otlp_receiver, trace_id, "fulfilled")
        assert_saga_is_one_trace(spans, order["id"], "fulfilled")
    batched = (await saga.http.get(f"{saga.customer_url}/metrics")).text
    assert _sample(batched, "saga_consumer_batch_size_count") > 0, "no order.created was handled in a batch"


def _sample(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not exposed")


async def test_a_saga_published_after_an_order_service_restart_is_still_one_trace(saga_env, otlp_receiver):
    extra = tracing_env(otlp_receiver)
    customer_service = saga_env.customer_service(extra_env=extra).start()
    # First life: the broker is unreachable, so the order waits in the outbox.
    offline = ServiceProcess(
        "order_service", saga_env.databases.order_url, "amqp://guest:guest@127.0.0.1:1/", extra_env=extra
    ).start(wait_ready=False)
    second = None
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            await asyncio.to_thread(_wait_alive, offline)
            client = SagaClient(offline.base_url, customer_service.base_url, http)
            customer = await client.create_customer("100.00")
            created = await client.create_order(customer, "10.00")
            assert created["status"] == "pending"
            offline.stop()
            assert "order-service stopped" in offline.log_text(), "the first life did not shut down gracefully"
            # Second life, another process: its relay publishes the row with the context stored with it.
            second = saga_env.order_service(extra_env=extra)
            second.port = offline.port
            second.start()
            done = await client.wait_for_status(created["id"], TERMINAL)
        assert done["status"] == "fulfilled"
        spans = await asyncio.to_thread(wait_for_whole_saga, otlp_receiver, created["trace_id"], "fulfilled")
        assert_saga_is_one_trace(spans, created["id"], "fulfilled")
        request = one(spans, ORDER, "POST /orders/")
        publish = one(spans, ORDER, "publish order.created")
        assert request.instance != publish.instance, "the publish must come from the restarted process"
    finally:
        if second is not None:
            second.stop()
        offline.stop()
        customer_service.stop()


def _wait_alive(service: ServiceProcess, timeout: float = 30) -> None:
    try:
        wait_until(
            lambda: httpx.get(f"{service.base_url}/healthz", timeout=1),
            until=lambda response: response.status_code == 200,
            timeout=timeout,
            interval=0.1,
            ignoring=(httpx.HTTPError,),
            what="the service alive",
        )
    except TimedOut as exc:
        raise TimedOut(f"{exc}\n{service.log_tail()}") from None


async def test_logs_are_json_lines_with_the_trace_span_and_order(saga, otlp_receiver, traced_services):
    order_service, customer_service = traced_services
    customer = await saga.create_customer("100.00")
    order, trace_id = await create_and_finish(saga, customer, "5.00")
    for service, says in ((order_service, "fulfilled"), (customer_service, "reserved")):

        def lines_about_order(service=service) -> list[dict]:
            lines = [json.loads(line) for line in service.log_text().splitlines() if line.startswith("{")]
            return [line for line in lines if line.get("order_id") == order["id"]]

        about_order = await eventually(
            lines_about_order,
            until=lambda lines, says=says: any(says in line["message"] for line in lines),
            what=f"a '{says}' log line for the order",
        )
        for line in about_order:
            assert {"time", "level", "message", "trace_id", "span_id", "order_id"} <= line.keys()
            assert line["trace_id"] == trace_id, line
            assert len(line["span_id"]) == 16


async def test_consumer_spans_can_start_a_linked_trace_instead(saga_env, otlp_receiver):
    extra = tracing_env(otlp_receiver)
    customer_service = saga_env.customer_service(
        extra_env=extra | {"SAGA_TRACE_CONSUMER_PARENT": "link"},
    ).start()
    order_service = saga_env.order_service(extra_env=extra).start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            client = SagaClient(order_service.base_url, customer_service.base_url, http)
            customer = await client.create_customer("10.00")
            order, trace_id = await create_and_finish(client, customer, "1.00")

        def linked_consumer_span() -> list[ReceivedSpan]:
            return [
                s
                for s in otlp_receiver.spans
                if s.name == "process order.created"
                and s.attributes.get("saga.order_id") == order["id"]
                and s.service == CUSTOMER
                and s.instance != ""
                and s.links
            ]

        otlp_receiver.wait_for(lambda: bool(linked_consumer_span()))
        otlp_receiver.wait_for(lambda: any(s.name == "publish order.created" for s in otlp_receiver.trace(trace_id)))
        (process,) = [s for s in linked_consumer_span() if s.links[0][0] == trace_id]
        publish = one(otlp_receiver.trace(trace_id), ORDER, "publish order.created")
        assert process.trace_id != trace_id and process.parent_span_id == ""
        assert process.links == ((trace_id, publish.span_id),)
    finally:
        order_service.stop()
        customer_service.stop()


async def test_with_sampling_a_sampled_saga_is_whole_and_an_unsampled_one_exports_nothing(saga_env, otlp_receiver):
    # The sampling is decided once, at the order API; everything downstream follows it, so a saga is either
    # one whole trace or nothing at all (no fragment sampled on its own by a later step).
    extra = tracing_env(otlp_receiver) | {
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
    }
    customer_service = saga_env.customer_service(extra_env=extra).start()
    order_service = saga_env.order_service(extra_env=extra).start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            client = SagaClient(order_service.base_url, customer_service.base_url, http)
            customer = await client.create_customer("1000.00")
            sagas = []
            for _ in range(16):
                body = {"customer_id": customer, "product_id": 1, "quantity": 1, "total_price": "1.00"}
                response = await http.post(f"{client.order_url}/orders/", json=body)
                assert response.status_code == 201
                sampled = bool(int(response.headers["traceparent"].rsplit("-", 1)[1], 16) & 1)  # the sampled flag
                sagas.append((response.json(), sampled))
            for order, _ in sagas:
                await client.wait_for_status(order["id"], {"fulfilled"})
        sampled = [order for order, is_sampled in sagas if is_sampled]
        unsampled = [order for order, is_sampled in sagas if not is_sampled]
        assert sampled and unsampled, f"16 sagas at 50% should give both kinds: {len(sampled)} sampled"
        ours: set[str] = set()  # this test's two processes (the receiver also holds other tests' spans)
        for order in sampled:
            spans = await asyncio.to_thread(wait_for_whole_saga, otlp_receiver, order["trace_id"], "fulfilled")
            assert_saga_is_one_trace(spans, order["id"], "fulfilled")
            ours |= {span.instance for span in spans}
        await asyncio.sleep(1.0)  # the exporters' batch delay (OTEL_BSP_SCHEDULE_DELAY in tracing_env) has passed
        unsampled_ids = {order["id"] for order in unsampled}
        leaked = [
            (s.service, s.name)
            for s in otlp_receiver.spans
            if s.trace_id in {order["trace_id"] for order in unsampled}
            or (s.instance in ours and s.attributes.get("saga.order_id") in unsampled_ids)
        ]
        assert leaked == [], f"spans exported for unsampled sagas: {leaked}"
    finally:
        order_service.stop()
        customer_service.stop()


async def test_a_request_makes_one_server_span(saga, otlp_receiver):
    """Ours: FastAPI's native telemetry would add a second server span, a root of a trace of its own."""
    customer = await saga.create_customer("100.00")
    order = await saga.create_order(customer, "1.00")
    response = await saga.http.get(f"{saga.order_url}/orders/{order['id']}")
    span_id = response.headers["traceparent"].split("-")[2]
    path = f"/orders/{order['id']}"
    otlp_receiver.wait_for(lambda: any(s.span_id == span_id for s in otlp_receiver.spans))
    await asyncio.sleep(1.0)  # the exporters' batch delay: a second span of the request would have arrived
    servers = [s for s in otlp_receiver.spans if s.kind == "server" and s.attributes.get("url.path") == path]
    assert [(s.span_id, s.name) for s in servers] == [(span_id, "GET /orders/{order_id}")]
    assert servers[0].attributes["http.response.status_code"] == 200
