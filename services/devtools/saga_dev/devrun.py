"""`make run`: PostgreSQL and RabbitMQ (private ones when none answers), both databases, both services.

Steps: reach PostgreSQL and RabbitMQ at their URLs; when nothing answers there on this machine, start a private
server of each (data under SAGA_DEV_HOME, default .saga/, kept between runs; `make clean` removes it), installing
Debian's package first when it is missing and we are root. Then create the two databases if missing, apply the
migrations, seed the demo customers, start the order and customer services (HTTP, consumer and outbox relay
each), wait until both are ready, print the URLs and an example request. Ctrl-C or SIGTERM stops both services
gracefully, then the private servers; the services also die with this process (PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
import httpx

from saga_common.persistence.db import ensure_database
from saga_common.persistence.migrations import upgrade
from saga_common.redaction import redact
from saga_common.settings import DEFAULT_BROKER_URL, redact_url, split_broker_urls
from saga_dev.infra import LocalInfrastructure
from saga_dev.localstack import migrations_of
from saga_dev.system_packages import MissingPackages, install_named

SEED_REQUEST = '{"customer_id": 1, "product_id": 1, "status": "pending", "quantity": 1, "total_price": 50.0}'
HOW_TO_GET_INFRASTRUCTURE = (
    "  - leave the URLs at 127.0.0.1 and saga-dev starts private ones (as root it installs Debian's\n"
    "    postgresql and rabbitmq-server; otherwise: sudo apt-get install postgresql rabbitmq-server), or\n"
    "  - with Docker: docker compose -f docker/compose.yaml up -d postgres rabbitmq, or\n"
    "  - on Kubernetes: make kind-up (everything in a kind cluster; see docs/deploy-kind.md)."
)
HOME = Path(os.environ.get("SAGA_DEV_HOME", ".saga"))
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServiceProcess:
    name: str
    module: str
    database_url: str
    port: int


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="saga-dev", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--host", default=os.environ.get("SAGA_DEV_HOST", "127.0.0.1"), help="interface to listen on")
    parser.add_argument("--order-port", type=int, default=int(os.environ.get("ORDER_PORT", "8001")))
    parser.add_argument("--customer-port", type=int, default=int(os.environ.get("CUSTOMER_PORT", "8002")))
    parser.add_argument(
        "--no-private-servers",
        action="store_true",
        default=os.environ.get("SAGA_DEV_PRIVATE_SERVERS", "1") == "0",
        help="start no private PostgreSQL or RabbitMQ: name what does not answer (SAGA_DEV_PRIVATE_SERVERS=0)",
    )
    args = parser.parse_args(argv)

    _die_with_parent()
    broker_url = os.environ.get("RABBITMQ_BROKER_URL", DEFAULT_BROKER_URL)
    services = [
        ServiceProcess(
            "order-service",
            "order_service",
            os.environ.get("ORDER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/orders"),
            args.order_port,
        ),
        ServiceProcess(
            "customer-service",
            "customer_service",
            os.environ.get("CUSTOMER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/customers"),
            args.customer_port,
        ),
    ]

    # Until the services run, SIGTERM unwinds like Ctrl-C does, so a private server started meanwhile is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    infra = (
        LocalInfrastructure(HOME, "saga-dev")
        if args.no_private_servers
        else _private_infrastructure(services[0].database_url, broker_url)
    )
    try:
        _run(services, broker_url, args.host, infra)
    finally:
        if infra.started():
            infra.stop()
            print(
                "saga-dev: private PostgreSQL and RabbitMQ stopped (their data stays in "
                f"{HOME}; make clean removes it).",
                flush=True,
            )


def _private_infrastructure(database_url: str, broker_url: str) -> LocalInfrastructure:
    """Private servers for the URLs nothing answers at (none when everything answers)."""
    try:
        return LocalInfrastructure.ensure(
            database_url,
            split_broker_urls(broker_url)[0],
            home=HOME,
            node_name="saga-dev",
            install=install_named,
            log=lambda line: print(f"saga-dev: {line}", flush=True),
        )
    except (MissingPackages, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"saga-dev: cannot start the missing infrastructure: {redact(str(exc))}", file=sys.stderr)
        print(f"How to get it:\n{HOW_TO_GET_INFRASTRUCTURE}", file=sys.stderr)
        sys.exit(1)


def _run(services: list[ServiceProcess], broker_url: str, host: str, infra: LocalInfrastructure) -> None:
    problems = asyncio.run(_check_infrastructure(services[0].database_url, broker_url))
    if problems:
        print("saga-dev: cannot start, missing infrastructure:", *problems, sep="\n  ", file=sys.stderr)
        print(f"How to get it:\n{HOW_TO_GET_INFRASTRUCTURE}", file=sys.stderr)
        sys.exit(1)

    for service in services:
        created = asyncio.run(ensure_database(service.database_url))
        print(f"saga-dev: {service.name} database {redact_url(service.database_url)}{' created' if created else ''}")
        upgrade(migrations_of(service.module), service.database_url)
    _run_quietly([sys.executable, "-m", "customer_service", "seed"], services[1], broker_url, host)

    children = [_start(service, broker_url, host) for service in services]
    stop_requested = _install_stop_signals()
    try:
        _wait_ready(services, host, children, stop_requested)
        if not stop_requested.is_set():
            _print_banner(services, host, infra.started())
        _supervise(children, stop_requested)
    finally:
        _stop(children)


async def _check_infrastructure(database_url: str, broker_url: str) -> list[str]:
    problems = []
    server_url = database_url.rsplit("/", 1)[0] + "/postgres"
    try:
        conn = await asyncpg.connect(server_url, timeout=5)
        await conn.close()
    except Exception as exc:  # noqa: BLE001 - reported to the user as is
        problems.append(
            f"PostgreSQL is not reachable at {redact_url(server_url)}: {redact(str(exc)) or type(exc).__name__}"
        )
    for url in split_broker_urls(broker_url):
        try:
            connection = await aio_pika.connect(url, timeout=5)
            await connection.close()
            break
        except Exception as exc:  # noqa: BLE001
            problems.append(f"RabbitMQ is not reachable at {redact_url(url)}: {redact(str(exc)) or type(exc).__name__}")
    return problems


def _child_env(service: ServiceProcess, broker_url: str, host: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=service.database_url,
        RABBITMQ_BROKER_URL=broker_url,
        SAGA_HTTP_HOST=host,
        SAGA_HTTP_PORT=str(service.port),
        OTEL_SERVICE_NAME=env.get("OTEL_SERVICE_NAME", service.name),
    )
    env.setdefault("SAGA_LOG_FORMAT", "text")  # readable in a terminal; the cluster keeps JSON
    return env


def _run_quietly(command: list[str], service: ServiceProcess, broker_url: str, host: str) -> None:
    result = subprocess.run(command, env=_child_env(service, broker_url, host), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"saga-dev: {' '.join(command[2:])} failed:\n{result.stderr}")
    print(f"saga-dev: {result.stdout.strip()}")


def _start(service: ServiceProcess, broker_url: str, host: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", service.module, "serve"],
        env=_child_env(service, broker_url, host),
        start_new_session=True,  # Ctrl-C reaches us only; we stop the children in order
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies, so nothing outlives `make run`."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _Flag:
    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


def _install_stop_signals() -> _Flag:
    flag = _Flag()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: flag.set())
    return flag


def _wait_ready(
    services: list[ServiceProcess], host: str, children: list[subprocess.Popen[bytes]], stop: _Flag
) -> None:
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = {service.name: f"http://{probe_host}:{service.port}/readyz" for service in services}
    while pending and not stop.is_set():
        for child in children:
            if child.poll() is not None:
                sys.exit(f"saga-dev: a service exited during start-up (code {child.returncode}); see its log above")
        for name, url in list(pending.items()):
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            sys.exit(f"saga-dev: not ready after {READY_TIMEOUT_S:.0f}s: {', '.join(pending)}")
        time.sleep(0.2)


def _print_banner(services: list[ServiceProcess], host: str, private: list[str]) -> None:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    order, customer = services
    infrastructure = "".join(f"  {line} (started by saga-dev)\n" for line in private)
    print(
        "\nSaga services are up:\n"
        f"  order service     http://{shown}:{order.port}      (API docs: http://{shown}:{order.port}/docs)\n"
        f"  customer service  http://{shown}:{customer.port}      (API docs: http://{shown}:{customer.port}/docs)\n"
        f"{infrastructure}"
        "Demo customers: 1 = Alice (rich, 1,000,000.00), 2 = Bob (poor, 10.00), 3 = Carol (500.00)\n"
        "Create an order, then read it back (it is fulfilled within a moment):\n"
        f"  curl -s -X POST http://{shown}:{order.port}/orders/ -H 'Content-Type: application/json' "
        f"-d '{SEED_REQUEST}'\n"
        f"  curl -s http://{shown}:{order.port}/orders/1\n"
        "Ctrl-C stops both services.\n",
        flush=True,
    )


def _supervise(children: list[subprocess.Popen[bytes]], stop: _Flag) -> None:
    while not stop.is_set():
        for child in children:
            if child.poll() is not None:
                print(f"saga-dev: a service exited (code {child.returncode}); stopping the other", file=sys.stderr)
                return
        time.sleep(0.2)


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    print("saga-dev: both services stopped.", flush=True)


if __name__ == "__main__":
    main()
