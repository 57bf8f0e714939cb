from pathlib import Path

from order_service.settings import OrderSettings
from saga_common.cli import service_cli

MIGRATIONS = Path(__file__).parent / "migrations"

main = service_cli(
    prog="order-service",
    settings_factory=OrderSettings,
    app_factory="order_service.main:create_app",
    migrations_dir=MIGRATIONS,
)
