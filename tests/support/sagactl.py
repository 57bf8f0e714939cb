"""Run the real `sagactl` command against a test's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from saga_dev.localstack import SagaEnvironment

SAGACTL = str(Path(sys.executable).parent / "sagactl")


def sagactl(
    env: SagaEnvironment,
    *args: str,
    order_url: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAGA_"))}
    environ.update(
        ORDER_DATABASE_URL=env.databases.order_url,
        CUSTOMER_DATABASE_URL=env.databases.customer_url,
        RABBITMQ_BROKER_URL=env.broker_url,
        ORDER_SERVICE_URL=order_url or "http://127.0.0.1:1",
    )
    environ.update(extra_env or {})
    return subprocess.run([SAGACTL, *args], env=environ, capture_output=True, text=True, timeout=60)


def sagactl_json(env: SagaEnvironment, *args: str, **kwargs: Any) -> Any:
    result = sagactl(env, *args, "--json", **kwargs)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)
