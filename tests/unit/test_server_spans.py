"""The server span middleware and the spans made without the sampler, against an in-memory exporter (a
tracer provider of the test's own: the process's global one is never set)."""

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

from saga_common.observability import tracing
from saga_common.web.server_spans import ServerSpans
from tests.support.memory_tracing import memory_tracing

pytestmark = pytest.mark.unit

SAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
UNSAMPLED_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"


@pytest.fixture
def exporter(request, monkeypatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on with the sampler the test names (parent-based, always on by default)."""
    provider, exported = memory_tracing(monkeypatch, getattr(request, "param", ParentBased(ALWAYS_ON)))
    yield exported
    provider.shutdown()


seen: dict[str, object] = {}


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def read(order_id: int) -> dict[str, int]:
        span = trace.get_current_span()
        seen.update(span=span, instrumented=is_instrumentation_enabled(), traceparent=tracing.current_traceparent())
        if order_id == 500:
            raise HTTPException(503, "unavailable")
        if order_id == 666:
            raise RuntimeError("boom")
        return {"id": order_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        seen.update(span=trace.get_current_span())
        return {"status": "ok"}

    app.add_middleware(ServerSpans, untraced_paths=("/healthz",))
    return app


async def _get(path: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers=headers)


async def test_a_sampled_request_is_one_server_span_named_after_its_route(exporter):
    response = await _get("/orders/7")
    assert response.status_code == 200
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET /orders/{order_id}" and span.kind == SpanKind.SERVER and span.parent is None
    assert dict(span.attributes) == {
        "http.request.method": "GET",
        "url.path": "/orders/7",
        "url.scheme": "http",
        "http.route": "/orders/{order_id}",
        "http.response.status_code": 200,
    }
    assert span.status.status_code == StatusCode.UNSET
    ids = f"{span.context.trace_id:032x}-{span.context.span_id:016x}"
    assert response.headers["traceparent"] == f"00-{ids}-{span.context.trace_flags:02x}"
    assert int(response.headers["traceparent"][-2:], 16) & 1
    assert seen["span"] is not None and seen["instrumented"] and ids in str(seen["traceparent"])


async def test_the_request_continues_the_callers_trace(exporter):
    await _get("/orders/7", traceparent=SAMPLED_PARENT, tracestate="a=1")
    (span,) = exporter.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == SAMPLED_PARENT.split("-")[1]
    assert f"{span.parent.span_id:016x}" == SAMPLED_PARENT.split("-")[2]
    assert span.context.trace_state.get("a") == "1"


async def test_a_5xx_is_an_error_and_an_exception_is_recorded(exporter):
    assert (await _get("/orders/500")).status_code == 503
    assert (await _get("/orders/666")).status_code == 500
    unavailable, crashed = exporter.get_finished_spans()
    assert unavailable.status.status_code == StatusCode.ERROR
    assert unavailable.attributes["http.response.status_code"] == 503
    assert crashed.status.status_code == StatusCode.ERROR
    assert crashed.attributes["http.response.status_code"] == 500
    assert crashed.attributes["error.type"] == "RuntimeError"
    assert [event.name for event in crashed.events] == ["exception"]


async def test_a_client_error_is_not_a_server_error(exporter):
    assert (await _get("/orders/x")).status_code == 422
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.UNSET


async def test_an_unknown_path_is_named_by_its_method_only(exporter):
    assert (await _get("/nowhere")).status_code == 404
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET" and "http.route" not in span.attributes


@pytest.mark.parametrize("exporter", [ParentBased(ALWAYS_OFF)], indirect=True)
async def test_an_unsampled_request_exports_nothing_runs_uninstrumented_and_says_so_downstream(exporter):
    response = await _get("/orders/7")
    assert exporter.get_finished_spans() == ()
    assert not int(response.headers["traceparent"][-2:], 16) & 1  # the sampled flag (0x02: a random trace id)
    assert not seen["instrumented"]
    assert not seen["span"].is_recording()  # type: ignore[attr-defined]
    assert seen["traceparent"] == response.headers["traceparent"], "the unsampled decision travels on"


async def test_an_unsampled_caller_is_followed(exporter):
    response = await _get("/orders/7", traceparent=UNSAMPLED_PARENT)
    assert exporter.get_finished_spans() == ()
    assert response.headers["traceparent"].split("-")[1] == UNSAMPLED_PARENT.split("-")[1]
    assert response.headers["traceparent"].endswith("-00")


async def test_probes_get_no_span_and_no_header(exporter):
    response = await _get("/healthz")
    assert response.status_code == 200 and "traceparent" not in response.headers
    assert exporter.get_finished_spans() == () and not seen["span"].get_span_context().is_valid  # type: ignore[attr-defined]


def test_only_parent_based_samplers_let_an_unsampled_parent_decide():
    assert tracing._drops_unsampled_parents(ParentBased(TraceIdRatioBased(0.1)))
    assert tracing._drops_unsampled_parents(ParentBased(ALWAYS_ON))
    assert not tracing._drops_unsampled_parents(TraceIdRatioBased(0.1))
    assert not tracing._drops_unsampled_parents(ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_ON))


def _never_called() -> dict:
    raise AssertionError("attributes built for a span that cannot record")


def test_under_an_unsampled_parent_a_span_is_made_as_the_sdk_would_without_the_sampler(exporter):
    parent = tracing.context_from({"traceparent": UNSAMPLED_PARENT, "x-other": 1})
    span = tracing.start_span("work", context=parent, kind=SpanKind.CONSUMER, attributes=_never_called)
    context = span.get_span_context()
    assert not span.is_recording()
    assert f"{context.trace_id:032x}" == UNSAMPLED_PARENT.split("-")[1]
    assert f"{context.span_id:016x}" != UNSAMPLED_PARENT.split("-")[2] and not context.trace_flags.sampled
    headers: dict[str, str] = {}
    tracing.inject_into(span, headers)
    assert (
        headers["traceparent"].split("-")[1] == UNSAMPLED_PARENT.split("-")[1] and headers["traceparent"][-2:] == "00"
    )
    sampled = tracing.start_span(
        "work",
        context=tracing.context_from({"traceparent": SAMPLED_PARENT}),
        kind=SpanKind.CONSUMER,
        attributes=lambda: {"a": 1},
    )
    assert sampled.is_recording()
    sampled.end()
    assert [span.attributes["a"] for span in exporter.get_finished_spans()] == [1]
