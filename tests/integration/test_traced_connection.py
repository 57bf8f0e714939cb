"""The database spans of the pool's connection class (persistence/traced.py), against a real PostgreSQL."""

from collections.abc import AsyncIterator

import asyncpg
import pytest
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.trace import SpanKind, StatusCode

from saga_common.observability import tracing
from saga_common.persistence.traced import TracedConnection
from tests.support.memory_tracing import memory_tracing

pytestmark = pytest.mark.integration


async def _no_reset(_: asyncpg.Connection) -> None:
    pass


@pytest.fixture
async def traced(saga_env, monkeypatch) -> AsyncIterator[tuple[asyncpg.Pool, object]]:
    provider, exported = memory_tracing(monkeypatch, ParentBased(ALWAYS_ON))
    # No session reset on release, as the services' pool (db.py): else its statement would be traced too.
    pool = await asyncpg.create_pool(
        saga_env.databases.order_url, min_size=1, max_size=1, connection_class=TracedConnection, reset=_no_reset
    )
    try:
        yield pool, exported
    finally:
        await pool.close()
        provider.shutdown()


async def test_each_statement_is_a_client_span_under_the_current_one(traced):
    pool, exported = traced
    async with pool.acquire() as conn:
        with tracing._tracer.start_as_current_span("request") as request:
            assert await conn.fetchval("  select $1::int", 7) == 7
            await conn.fetchrow("SELECT 1")
            await conn.fetch("SELECT 1")
            await conn.execute("SELECT 1")
            await conn.executemany("SELECT $1::int", [(1,), (2,)])
    *statements, outer = exported.get_finished_spans()
    assert [span.name for span in statements] == ["SELECT"] * 5 and outer.name == "request"
    first = statements[0]
    assert first.kind == SpanKind.CLIENT and first.parent.span_id == request.get_span_context().span_id
    assert first.attributes["db.system.name"] == "postgresql"
    assert first.attributes["db.query.text"] == "  select $1::int"
    assert first.attributes["db.namespace"] and first.attributes["server.address"] and first.attributes["server.port"]


async def test_a_failing_statement_is_an_error(traced):
    pool, exported = traced
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.UndefinedTableError):
            await conn.fetch("SELECT * FROM no_such_table")
    (span,) = exported.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR and span.attributes["error.type"] == "UndefinedTableError"


async def test_untraced_and_unsampled_statements_make_no_span(traced, monkeypatch):
    pool, exported = traced
    async with pool.acquire() as conn:
        with tracing.untraced():
            await conn.fetchval("SELECT 1")
        unsampled = tracing.context_from({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"})
        token = otel_context.attach(unsampled)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            otel_context.detach(token)
    assert exported.get_finished_spans() == ()


async def test_without_a_recording_parent_the_sampler_decides(traced, monkeypatch):
    pool, exported = traced
    memory_tracing(monkeypatch, ParentBased(ALWAYS_OFF))
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
    assert exported.get_finished_spans() == ()
