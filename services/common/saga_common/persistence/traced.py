"""A database span per statement, made by the pool's own connection class.

Ours rather than opentelemetry-instrumentation-asyncpg's: that one patches asyncpg's methods process-wide,
strips comments with a regular expression and builds seven attributes before it asks whether the span will
record, and makes each span current (a context switch per statement for a span that has no children). Here
the attributes that never change are computed once per connection, a span under an unsampled parent is made
without the sampler, and with the instrumentations suppressed (`tracing.untraced()`) a statement is one
check away from asyncpg's own method. Names and attributes follow the database semantic conventions: the
operation as the name (`SELECT`, `INSERT`, ...), `db.system.name`, `db.namespace`, `db.query.text`,
`server.address`, `server.port`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import SpanKind

from saga_common.observability import tracing

T = TypeVar("T")


class TracedConnection(asyncpg.Connection):  # type: ignore[misc]
    """What `create_pool` opens when tracing is on; the statements the services run go through these five."""

    __slots__ = ("_span_attributes",)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> str:
        return await self._traced(query, super().execute, query, *args, **kwargs)

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> None:
        return await self._traced(command, super().executemany, command, args, **kwargs)

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[Any]:
        return await self._traced(query, super().fetch, query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._traced(query, super().fetchrow, query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        return await self._traced(query, super().fetchval, query, *args, **kwargs)

    async def _traced(self, query: str, method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if not is_instrumentation_enabled():
            return await method(*args, **kwargs)
        words = query.split(None, 1)
        span = tracing.start_span(
            words[0].upper() if words else "postgresql",
            context=None,
            kind=SpanKind.CLIENT,
            attributes=lambda: {**self._constant_attributes(), "db.query.text": query},
        )
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            if span.is_recording():
                span.set_attribute("error.type", type(exc).__qualname__)
                tracing.mark_error(span, exc)
            raise
        finally:
            span.end()

    def _constant_attributes(self) -> dict[str, Any]:
        try:
            return self._span_attributes  # type: ignore[no-any-return]
        except AttributeError:
            pass
        named: dict[str, Any] = {"db.system.name": "postgresql"}
        database = getattr(self._params, "database", None)
        if database:
            named["db.namespace"] = database
        address = self._addr
        if isinstance(address, tuple):
            named["server.address"], named["server.port"] = address[0], address[1]
        elif isinstance(address, str):  # a Unix socket
            named["server.address"] = address
        self._span_attributes = named
        return named
