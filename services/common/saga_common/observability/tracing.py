"""OpenTelemetry set-up and the messaging spans that carry one saga through the outbox and RabbitMQ.

Configured only by the standard variables: tracing is on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is not true; the sampler comes from
`OTEL_TRACES_SAMPLER`, the service name from `OTEL_SERVICE_NAME`, batching from `OTEL_BSP_*`. With no
endpoint nothing is installed and the hot paths skip span work entirely.

Why the messaging spans are ours and not opentelemetry-instrumentation-aio-pika's: that instrumentation
replaces the `traceparent` of every publish with the *current* context, and continues traces only for
`Queue.consume` callbacks. The outbox relay publishes rows written earlier, maybe by another process, so
each publish must continue the context stored with its row; and the consumer's parent-vs-link choice is a
setting. Three small helpers below do exactly that, following the messaging semantic conventions.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, suppress_instrumentation
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags

log = logging.getLogger(__name__)

# Saga attributes on our spans; the one list of names this project adds to the conventions.
ATTR_ORDER_ID = "saga.order_id"
ATTR_STEP = "saga.step"
ATTR_OUTCOME = "saga.outcome"

_tracer = trace.get_tracer("saga")


class _State:
    enabled = False
    provider: Any = None
    # True when the sampler always drops a span whose parent is not sampled (the parent-based samplers
    # OTEL_TRACES_SAMPLER names): such spans are then made here, without the sampler or their attributes.
    parent_decides = False
    # The header names the configured propagators read (traceparent, tracestate, baggage by default).
    fields: frozenset[str] = frozenset()


def tracing_enabled() -> bool:
    return _State.enabled


def configure_tracing(default_service_name: str) -> bool:
    """Install the SDK when an OTLP endpoint is configured; return whether tracing is on."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    if _State.enabled:
        return True

    from opentelemetry.sdk.resources import HOST_NAME, SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Defaults the standard variables may override: service.instance.id tells replicas (and a process from
    # its restarted self) apart in Jaeger; host.name is the pod's name in Kubernetes.
    defaults = Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4()), HOST_NAME: socket.gethostname()})
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: default_service_name}
    provider = TracerProvider(resource=defaults.merge(Resource.create(named)))
    provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    trace.set_tracer_provider(provider)
    _State.provider = provider
    _State.parent_decides = _drops_unsampled_parents(provider.sampler)
    _State.fields = frozenset(propagate.get_global_textmap().fields)
    _State.enabled = True
    log.info("tracing on: OTLP export to %s", endpoint)
    return True


def _drops_unsampled_parents(sampler: Any) -> bool:
    """Whether `sampler` drops every span under an unsampled parent, asked the way the SDK asks it."""
    from opentelemetry.sdk.trace.sampling import Decision, ParentBased

    if not isinstance(sampler, ParentBased):
        return False
    for remote in (True, False):
        for trace_id in (1, 2**127, 2**128 - 1):
            parent = SpanContext(trace_id, 1, is_remote=remote, trace_flags=TraceFlags(TraceFlags.DEFAULT))
            context = trace.set_span_in_context(NonRecordingSpan(parent), otel_context.Context())
            if sampler.should_sample(context, trace_id, "probe").decision is not Decision.DROP:
                return False
    return True


def start_span(
    name: str,
    *,
    context: otel_context.Context | None,
    kind: SpanKind,
    attributes: Callable[[], dict[str, Any]],
    links: Sequence[Link] = (),
) -> Span:
    """`tracer.start_span`, except that under an unsampled parent (with a parent-based sampler) the span is
    made at once, non-recording, as the SDK would make it: a new span id, the parent's trace id, flags and
    trace state, so the unsampled decision travels on. `attributes` is only called for a span that may record."""
    parent = trace.get_current_span(context).get_span_context()
    if _State.parent_decides and parent.is_valid and not parent.trace_flags.sampled:
        span_id = _State.provider.id_generator.generate_span_id()
        flags = TraceFlags(parent.trace_flags & TraceFlags.RANDOM_TRACE_ID)
        return NonRecordingSpan(SpanContext(parent.trace_id, span_id, False, flags, parent.trace_state))
    return _tracer.start_span(name, context=context, kind=kind, links=links, attributes=attributes())


def _otlp_exporter() -> Any:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            raise RuntimeError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the opentelemetry-exporter-otlp-proto-grpc package; "
                "use http/protobuf (port 4318) or install it"
            ) from None
        return GrpcExporter()
    raise RuntimeError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported (use http/protobuf or grpc)")


def shutdown_tracing() -> None:
    """Flush what is buffered; called last on SIGTERM."""
    if _State.provider is not None:
        _State.provider.shutdown()


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex trace id inside a W3C traceparent ("00-<trace id>-<span id>-<flags>")."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def context_from(carrier: Mapping[str, Any] | None) -> otel_context.Context:
    """The trace context in message headers (or a stored row's): only the propagators' own fields are read."""
    fields = _State.fields
    return propagate.extract({k: str(v) for k, v in (carrier or {}).items() if not fields or k in fields})


def _messaging_attributes(
    *, operation: str, operation_type: str, exchange: str, routing_key: str, message_id: str, order_id: int
) -> dict[str, Any]:
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": operation,
        "messaging.operation.type": operation_type,
        "messaging.destination.name": exchange,
        "messaging.rabbitmq.destination.routing_key": routing_key,
        "messaging.message.id": message_id,
        "messaging.message.conversation_id": str(order_id),
        ATTR_ORDER_ID: order_id,
        ATTR_STEP: routing_key,
    }


def start_create_span(
    *,
    exchange: str,
    routing_key: str,
    message_id: str,
    order_id: int,
    parent: otel_context.Context | None,
    links: Sequence[Link] = (),
) -> Span:
    """The outbox write: the message is created inside the business transaction."""
    return start_span(
        f"create {routing_key}",
        context=parent,
        kind=SpanKind.PRODUCER,
        links=links,
        attributes=lambda: _messaging_attributes(
            operation="create",
            operation_type="create",
            exchange=exchange,
            routing_key=routing_key,
            message_id=message_id,
            order_id=order_id,
        ),
    )


def start_publish_span(
    *, exchange: str, routing_key: str, message_id: str, order_id: int, stored_headers: Mapping[str, Any] | None
) -> Span:
    """The relay's publish, continuing the context stored with the outbox row."""
    return start_span(
        f"publish {routing_key}",
        context=context_from(stored_headers),
        kind=SpanKind.PRODUCER,
        attributes=lambda: _messaging_attributes(
            operation="publish",
            operation_type="send",
            exchange=exchange,
            routing_key=routing_key,
            message_id=message_id,
            order_id=order_id,
        ),
    )


def start_consume_span(
    *,
    exchange: str,
    routing_key: str,
    message_id: str,
    order_id: int,
    queue: str,
    headers: Mapping[str, Any] | None,
    as_link: bool,
) -> Span:
    """The consumer's processing of one message: a child of the publish span, or a new trace linked to it."""
    producer_context = context_from(headers)
    if as_link:
        producer = trace.get_current_span(producer_context).get_span_context()
        parent, links = otel_context.Context(), ([Link(producer)] if producer.is_valid else [])
    else:
        parent, links = producer_context, []

    def attributes() -> dict[str, Any]:
        named = _messaging_attributes(
            operation="process",
            operation_type="process",
            exchange=exchange,
            routing_key=routing_key,
            message_id=message_id,
            order_id=order_id,
        )
        named["messaging.destination.subscription.name"] = queue
        return named

    return start_span(
        f"process {routing_key}", context=parent, kind=SpanKind.CONSUMER, links=links, attributes=attributes
    )


@contextmanager
def only_span(span: Span) -> Iterator[None]:
    """`span` as the current span in a fresh context: inside an `untraced()` batch, one message's handler is
    traced again, under its own message's trace and nothing of the batch's context. A span that is not
    recording (its trace is not sampled) keeps the instrumentations off: they would only make spans nobody sees."""
    token = otel_context.attach(trace.set_span_in_context(span, otel_context.Context()))
    try:
        if span.is_recording():
            yield
        else:
            with untraced():
                yield
    finally:
        otel_context.detach(token)


@contextmanager
def untraced() -> Iterator[None]:
    """Background work (relay polling, probes, gauges) must not start a trace of its own per round: the
    database instrumentation would make every poll a root span in Jaeger."""
    # Already off (an unsampled request or message, a batch's own statements): nothing to switch, and most
    # calls come from there; switching costs three context managers and a context copy.
    if not _State.enabled or not is_instrumentation_enabled():
        yield
        return
    with suppress_instrumentation():
        yield


def annotate(*, order_id: int | None = None, step: str | None = None, outcome: str | None = None) -> None:
    """Put the saga's attributes on the current span (the HTTP request or the consumer's span)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    for key, value in ((ATTR_ORDER_ID, order_id), (ATTR_STEP, step), (ATTR_OUTCOME, outcome)):
        if value is not None:
            span.set_attribute(key, value)


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def inject_into(span: Span, carrier: MutableMapping[str, Any]) -> None:
    propagate.inject(carrier, context=trace.set_span_in_context(span))


def mark_error(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, str(exc)))


def link_to_current() -> list[Link]:
    current = trace.get_current_span().get_span_context()
    return [Link(current)] if current.is_valid else []
