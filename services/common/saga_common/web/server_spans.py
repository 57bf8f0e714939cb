"""The server span of every HTTP request, and its `traceparent` in the response.

Ours rather than opentelemetry-instrumentation-fastapi's because of what an unsampled request costs: that
middleware reads every header through its getter, builds the request's attributes and wraps `send` whether
or not the span records (11% of the order service's samples at 10% sampling). Here the sampler decides once,
from the `traceparent`/`tracestate` read straight from the scope; an unsampled request then runs with the
instrumentations off, its non-recording span current so that the decision travels on in every
`traceparent` it causes. A sampled one gets a SERVER span following the HTTP semantic conventions.

Added as the outermost of the app's middleware: an exception that escapes the app is recorded as a 500
here, and Starlette's ServerErrorMiddleware (outside it) answers it.
"""

from __future__ import annotations

from collections.abc import Collection

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from saga_common.observability import tracing

_tracer = trace.get_tracer("saga.http")


class ServerSpans:
    def __init__(self, app: ASGIApp, *, untraced_paths: Collection[str]) -> None:
        self.app = app
        self._untraced = frozenset(untraced_paths)  # probes and scrapes: no span, no header
        self._fields = frozenset(field.encode() for field in propagate.get_global_textmap().fields)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._untraced:
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name in self._fields:
                key, text = name.decode("latin-1"), value.decode("latin-1")
                carrier[key] = f"{carrier[key]},{text}" if key in carrier else text  # a list split over lines
        parent = propagate.extract(carrier, context=otel_context.Context())
        method = scope["method"]
        span = _tracer.start_span(
            method,
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
            },
        )
        context = span.get_span_context()
        header = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}".encode()
        status = 500  # unless the app answers: an exception escaping it becomes ServerErrorMiddleware's 500

        async def send_with_traceparent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"traceparent", header)]
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            if not span.is_recording():
                with tracing.untraced():
                    await self.app(scope, receive, send_with_traceparent)
                return
            failure: BaseException | None = None
            try:
                await self.app(scope, receive, send_with_traceparent)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                _finish(span, scope, method, status, failure)
        finally:
            otel_context.detach(token)


def _finish(span: Span, scope: Scope, method: str, status: int, failure: BaseException | None) -> None:
    """Name the span after the route the router chose (none for a 404), record the answer, end it."""
    route = getattr(scope.get("route"), "path_format", None)
    if route:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if failure is not None:
        span.record_exception(failure)
        span.set_attribute("error.type", type(failure).__qualname__)
        span.set_status(Status(StatusCode.ERROR, str(failure)))
    elif status >= 500:  # a 4xx is the client's error, not the server's (HTTP semantic conventions)
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))
    span.end()
