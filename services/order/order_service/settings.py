from pydantic import Field

from saga_common.settings import ServiceSettings


class OrderSettings(ServiceSettings):
    service_name: str = "order-service"
    http_port: int = Field(8001, ge=1, le=65535)
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/orders",
        validation_alias="DATABASE_URL",
        description="PostgreSQL URL of the order database.",
    )
    deadline_s: float = Field(
        30.0,
        gt=0,
        description="An order still pending after this long is rejected with reason `timeout` "
        "(one cancelled while pending ends cancelled).",
    )
    deadline_sweep_interval_s: float = Field(1.0, gt=0)
