"""Tracing on against an in-memory exporter, for one test: a tracer provider of the test's own put where our
code looks for it (the process's global provider is never set, so other tests stay untraced)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from saga_common.observability import tracing
from saga_common.web import server_spans


def memory_tracing(monkeypatch: pytest.MonkeyPatch, sampler: Sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(sampler=sampler)
    exported = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    monkeypatch.setattr(server_spans, "_tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    monkeypatch.setattr(tracing._State, "enabled", True)
    monkeypatch.setattr(tracing._State, "provider", provider)
    monkeypatch.setattr(tracing._State, "parent_decides", tracing._drops_unsampled_parents(sampler))
    monkeypatch.setattr(tracing._State, "fields", frozenset({"traceparent", "tracestate", "baggage"}))
    return provider, exported
