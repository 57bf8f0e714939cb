import asyncio
from pathlib import Path

import asyncpg

from customer_service.customers import seed_demo_customers
from customer_service.settings import CustomerSettings
from saga_common.cli import service_cli
from saga_common.persistence.db import CONNECT_TIMEOUT_S
from saga_common.settings import ServiceSettings

MIGRATIONS = Path(__file__).parent / "migrations"


def seed(settings: ServiceSettings) -> None:
    async def run() -> list[int]:
        conn = await asyncpg.connect(settings.database_url, timeout=CONNECT_TIMEOUT_S)
        try:
            return await seed_demo_customers(conn)
        finally:
            await conn.close()

    created = asyncio.run(run())
    print(f"customer-service: demo customers {'created: ' + str(created) if created else 'already present'}")


main = service_cli(
    prog="customer-service",
    settings_factory=CustomerSettings,
    app_factory="customer_service.main:create_app",
    migrations_dir=MIGRATIONS,
    extra_commands={"seed": ("create the demo customers (idempotent)", seed)},
)
