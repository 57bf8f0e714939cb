"""Composition root of the order service: `create_app()` is uvicorn's factory."""

from __future__ import annotations

from fastapi import FastAPI

from order_service.api import router
from order_service.cli import MIGRATIONS
from order_service.jobs import order_jobs
from order_service.saga import HANDLERS
from order_service.settings import OrderSettings
from order_service.waiters import NOTIFY_CHANNEL as WAITERS_CHANNEL
from order_service.waiters import OutcomeWaiters
from saga_common.contract.topology import ORDER_SERVICE
from saga_common.persistence.migrations import SchemaHistory
from saga_common.runtime import ServiceSpec
from saga_common.web.app import create_service_app


def service_spec(settings: OrderSettings, waiters: OutcomeWaiters) -> ServiceSpec:
    return ServiceSpec(
        name=ORDER_SERVICE,
        handlers=HANDLERS,
        jobs=order_jobs(settings),
        notifications={WAITERS_CHANNEL: waiters.notify},
        schema=SchemaHistory.of(MIGRATIONS),
    )


def create_app(settings: OrderSettings | None = None) -> FastAPI:
    settings = settings or OrderSettings()
    waiters = OutcomeWaiters()
    app = create_service_app(
        settings,
        service_spec(settings, waiters),
        title="Order service",
        description="Takes orders and drives their saga: order.created out; order.fulfilled, order.rejected "
        "and credit.released in.",
        routers=[router],
        extra_state={"waiters": waiters},
    )
    return app
