"""Composition root of the customer service: `create_app()` is uvicorn's factory."""

from __future__ import annotations

from fastapi import FastAPI

from customer_service.api import router
from customer_service.cli import MIGRATIONS
from customer_service.handlers import HANDLERS, lock_order
from customer_service.settings import CustomerSettings
from saga_common.contract.topology import CUSTOMER_SERVICE
from saga_common.persistence.migrations import SchemaHistory
from saga_common.runtime import ServiceSpec
from saga_common.web.app import create_service_app


def service_spec(settings: CustomerSettings) -> ServiceSpec:
    return ServiceSpec(
        name=CUSTOMER_SERVICE, handlers=HANDLERS, lock_order=lock_order, schema=SchemaHistory.of(MIGRATIONS)
    )


def create_app(settings: CustomerSettings | None = None) -> FastAPI:
    settings = settings or CustomerSettings()
    return create_service_app(
        settings,
        service_spec(settings),
        title="Customer service",
        description="Holds balances and reserves credit for orders: order.created and order.cancelled in; "
        "order.fulfilled, order.rejected and credit.released out.",
        routers=[router],
    )
