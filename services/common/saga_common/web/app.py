"""FastAPI glue shared by both services: lifespan, health routes, metrics, trace headers, dependencies."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel

from saga_common.observability import tracing
from saga_common.observability.logs import configure_logging
from saga_common.observability.metrics import HttpMetricsMiddleware
from saga_common.persistence.db import Database
from saga_common.runtime import ServiceRuntime, ServiceSpec
from saga_common.settings import ServiceSettings
from saga_common.web.auth import AUTH_RESPONSES, AuthenticateFirst, Authenticator
from saga_common.web.limits import BodyLimit, ConcurrencyLimit
from saga_common.web.server_spans import ServerSpans
from saga_common.web.strings import encodable

log = logging.getLogger(__name__)

UNTRACED_PATHS = ("/healthz", "/readyz", "/metrics")


class Problem(BaseModel):
    """The body of every 4xx the services answer themselves (FastAPI's 422 adds the field-level list)."""

    detail: str


def create_service_app(
    settings: ServiceSettings,
    spec: ServiceSpec,
    *,
    title: str,
    description: str,
    routers: list[APIRouter],
    runtime_factory: Callable[[ServiceSettings, ServiceSpec], ServiceRuntime] | None = None,
    extra_state: Mapping[str, object] | None = None,
) -> FastAPI:
    """The service's FastAPI app. `extra_state`: what the service's own routes read from `app.state` (set here,
    with the settings and the authenticator; the runtime joins them when the app starts)."""
    settings.check_broker_secrets()
    settings.check_authentication()
    configure_logging(spec.name, settings.log_level, settings.log_format)
    tracing_on = tracing.configure_tracing(spec.name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = (runtime_factory or ServiceRuntime)(settings, spec)
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()
            tracing.shutdown_tracing()

    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry server spans would be a second root span per request beside ours
        # (server_spans.py), made for unsampled requests too; its metrics and logs go to providers we never set.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # FastAPI's own answer to a JSON body that is not UTF-8: documented, so clients (and schemathesis) know it.
        responses={
            400: {"model": Problem, "description": "The request body cannot be read (e.g. not UTF-8)"},
            413: {"model": Problem, "description": "The request body is larger than `SAGA_HTTP_MAX_BODY_BYTES`"},
            503: {
                "model": Problem,
                "description": "The database is unreachable, restarting or saturated: retry after `Retry-After` "
                "seconds (with the same Idempotency-Key)",
            },
            **(AUTH_RESPONSES if settings.authentication_on else {}),
        },
    )
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_unavailable)
    app.state.settings = settings
    app.state.authenticator = Authenticator(settings)
    for name, value in (extra_state or {}).items():
        setattr(app.state, name, value)
    app.include_router(health_router(spec.name))
    for router in routers:
        app.include_router(router)
    # The last added runs first: the metrics see every answer; then the cheapest refusals, before any work:
    # too many requests in progress, a body too large, no valid token (none of them reads the body).
    app.add_middleware(AuthenticateFirst, service_app=app)
    app.add_middleware(BodyLimit, max_bytes=settings.http_max_body_bytes)
    app.add_middleware(ConcurrencyLimit, limit=settings.http_max_concurrent_requests, retry_after_s=RETRY_AFTER_S)
    app.add_middleware(HttpMetricsMiddleware)
    if tracing_on:
        # Outside everything else: the metrics' exemplars and the log lines see the request's span, and an
        # unsampled request runs every middleware with the instrumentations off.
        app.add_middleware(ServerSpans, untraced_paths=UNTRACED_PATHS)
    return app


# What a request meets when PostgreSQL is down, restarting or saturated: not the request's fault, and not a
# bug either, so a 503 that says "retry" rather than a 500 with a traceback.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, unreachable host (ConnectionError is one)
    TimeoutError,  # no connection within the connect or the acquire timeout: saturated or unreachable
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: the connection failed or was lost
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: "too many clients", out of memory or disk
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, starting up, statement timeout
    asyncpg.InterfaceError,  # the connection closed under the client
)
RETRY_AFTER_S = 1


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("%s %s: database unavailable (%s)", request.method, request.url.path, type(exc).__name__)
    return JSONResponse(
        {"detail": "the database is unavailable; retry shortly (with the same Idempotency-Key for an order)"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's default handler, except that a body that is not UTF-8 gets its 422 too: the default one
    decodes the raw bytes it echoes as UTF-8, fails, and the client gets no answer at all (found by the
    chaos tier's bad-input list: a non-UTF-8 body sent without a JSON content type), and the JSON literals
    NaN, Infinity and -Infinity (Python's parser takes them) are echoed as strings: JSON cannot carry them."""
    errors = [{**error, "input": _json_safe(error["input"])} if "input" in error else error for error in exc.errors()]
    # A lone surrogate in the input (or in a field's name) is echoed escaped: it has no UTF-8 encoding.
    return JSONResponse(status_code=422, content={"detail": encodable(jsonable_encoder(errors))})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def health_router(service: str) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/", summary="Service information")
    async def info() -> dict[str, str]:
        return {"service": service, "status": "ok", "docs": "/docs", "health": "/healthz", "ready": "/readyz"}

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: database and broker reachable, consumer attached, outbox relay working",
        responses={503: {"description": "Not ready; `reasons` says what is missing and why"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        runtime: ServiceRuntime | None = getattr(request.app.state, "runtime", None)
        problems = runtime.readiness() if runtime is not None else {"started": "the service is starting"}
        ready = not any(problems.values())
        body: dict[str, object] = {
            "status": "ready" if ready else "not ready",
            "checks": {name: problem is None for name, problem in problems.items()},
        }
        if not ready:
            body["reasons"] = {name: problem for name, problem in problems.items() if problem is not None}
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        # OpenMetrics when the scraper asks for it: that format carries the trace-id exemplars.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(REGISTRY), media_type=content_type)

    return router


# Async on purpose: FastAPI runs a plain `def` dependency in a worker thread, a thread hop per request.
async def get_database(request: Request) -> Database:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime.db


DatabaseDep = Annotated[Database, Depends(get_database)]
