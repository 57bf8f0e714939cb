from pydantic import Field

from saga_common.settings import ServiceSettings


class CustomerSettings(ServiceSettings):
    service_name: str = "customer-service"
    http_port: int = Field(8002, ge=1, le=65535)
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/customers",
        validation_alias="DATABASE_URL",
        description="PostgreSQL URL of the customer database.",
    )
