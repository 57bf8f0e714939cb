"""`make run`'s launcher as a user meets it: it prepares everything, serves the seed's request, stops clean."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from saga_dev.localstack import Databases, Vhost, free_port, unique_name
from saga_dev.probes import port_open
from tests.support.saga_client import SEED_ORDER
from tests.support.waiting import TimedOut, wait_until

LAUNCHER = str(Path(sys.executable).parent / "saga-dev")


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def launcher_env():
    databases, vhost = Databases.fresh("sagarun"), Vhost(unique_name("saga-run")).create()
    ports = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAGA_"))}
    env.update(
        ORDER_DATABASE_URL=databases.order_url,
        CUSTOMER_DATABASE_URL=databases.customer_url,
        RABBITMQ_BROKER_URL=vhost.url,
        ORDER_PORT=str(ports[0]),
        CUSTOMER_PORT=str(ports[1]),
    )
    try:
        yield env, ports
    finally:
        vhost.delete()
        databases.drop()


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([LAUNCHER], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def read_until(process: subprocess.Popen[str], marker: str, timeout: float = 60) -> str:
    seen: list[str] = []
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)

    def printed_or_exited() -> bool:
        # Reads what is there, up to the marker's line: later lines stay for the next read_until.
        while line := process.stdout.readline():
            seen.append(line)
            if marker in line:
                return True
        return process.poll() is not None

    with contextlib.suppress(TimedOut):
        wait_until(printed_or_exited, timeout=timeout, what=f"{marker!r} printed")
    if not any(marker in line for line in seen):
        raise AssertionError(f"{marker!r} not printed; output so far:\n{''.join(seen)}")
    return "".join(seen)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_make_run_serves_the_seed_request_and_stops_without_orphans(launcher_env, stop_signal):
    env, (order_port, customer_port) = launcher_env
    process = start(env)
    try:
        banner = read_until(process, "Ctrl-C stops both services")
        assert f"http://127.0.0.1:{order_port}" in banner and f"http://127.0.0.1:{customer_port}" in banner
        assert "curl -s -X POST" in banner and "/orders/" in banner
        children = children_of(process.pid)
        assert len(children) == 2, f"expected two service processes, found {children}"

        created = httpx.post(f"http://127.0.0.1:{order_port}/orders/", json=SEED_ORDER, timeout=5)
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        order = wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{order_port}/orders/{order_id}", timeout=5).json(),
            until=lambda order: order["status"] != "pending",
            timeout=2.0,
            what="the seed order's outcome within two seconds",
        )
        assert order["status"] == "fulfilled", order

        process.send_signal(stop_signal)
        output = read_until(process, "both services stopped", timeout=40)
        assert process.wait(10) == 0, output
        assert not [pid for pid in children if alive(pid)], "a service outlived make run"
    finally:
        if process.poll() is None:
            process.kill()


def test_children_die_with_a_killed_launcher(launcher_env):
    env, _ = launcher_env
    process = start(env)
    try:
        read_until(process, "Ctrl-C stops both services")
        children = children_of(process.pid)
        process.kill()  # kill -9: no chance to clean up; PDEATHSIG must
        process.wait(10)
        wait_until(
            lambda: [pid for pid in children if alive(pid)],
            until=lambda survivors: not survivors,
            timeout=30,
            interval=0.1,
            what="both services gone with their launcher",
        )
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize(
    ("override", "named", "not_named"),
    [
        (
            {"RABBITMQ_BROKER_URL": "amqp://guest:guest@127.0.0.1:1/", "SAGA_DEV_PRIVATE_SERVERS": "0"},
            "RabbitMQ is not reachable at amqp://guest:***@127.0.0.1:1/",
            "PostgreSQL",
        ),
        (
            {"ORDER_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/orders", "SAGA_DEV_PRIVATE_SERVERS": "0"},
            "PostgreSQL is not reachable at postgresql://postgres@127.0.0.1:1/postgres",
            "RabbitMQ",
        ),
    ],
    ids=["rabbitmq", "postgresql"],
)
def test_missing_infrastructure_is_named_with_its_url_and_a_way_to_get_it(launcher_env, override, named, not_named):
    env, _ = launcher_env
    result = subprocess.run([LAUNCHER], env=env | override, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert named in result.stderr
    assert not_named not in result.stderr.split("How to get it")[0], f"{not_named} is reachable: do not blame it"
    assert "docker/compose.yaml" in result.stderr and "make kind-up" in result.stderr
    assert "Traceback" not in result.stderr


def _processes_mentioning(text: str) -> list[int]:
    """Processes whose command line or environment names `text` (the private servers inherit SAGA_DEV_HOME)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if text.encode() in (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes() and alive(
                int(proc.name)
            ):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.fixture
def bare_machine_env():
    """URLs at which nothing answers, and a home for the private servers (traversable by postgres/rabbitmq)."""
    home = Path(tempfile.mkdtemp(prefix="saga-dev-home-", dir="/var/tmp"))
    home.chmod(0o755)
    postgres, rabbitmq, order, customer = (free_port() for _ in range(4))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SAGA_"))}
    env.update(
        ORDER_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{postgres}/orders",
        CUSTOMER_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{postgres}/customers",
        RABBITMQ_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{rabbitmq}/",
        ORDER_PORT=str(order),
        CUSTOMER_PORT=str(customer),
        SAGA_DEV_HOME=str(home / "data"),
    )
    try:
        yield env, home, (postgres, rabbitmq, order)
    finally:
        for pid in _processes_mentioning(str(home)):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.timeout(300)
def test_with_nothing_running_make_run_starts_private_servers_keeps_their_data_and_stops_them(bare_machine_env):
    env, home, (postgres_port, rabbitmq_port, order_port) = bare_machine_env
    first_order = None
    for run in ("first", "second"):
        process = start(env)
        try:
            banner = read_until(process, "Ctrl-C stops both services", timeout=150)
            assert f"PostgreSQL on 127.0.0.1:{postgres_port}: private" in banner, banner
            assert f"RabbitMQ on 127.0.0.1:{rabbitmq_port}: private" in banner, banner
            created = httpx.post(f"http://127.0.0.1:{order_port}/orders/", json=SEED_ORDER, timeout=5)
            assert created.status_code == 201, created.text
            order_url = f"http://127.0.0.1:{order_port}/orders/{created.json()['id']}?wait=5"
            order = wait_until(
                lambda url=order_url: httpx.get(url, timeout=10).json(),
                until=lambda order: order["status"] != "pending",
                timeout=15,
                what=f"the seed order's outcome ({run} start)",
            )
            assert order["status"] == "fulfilled", order
            if first_order is not None:  # the demo data survived the restart of the private servers
                kept = httpx.get(f"http://127.0.0.1:{order_port}/orders/{first_order}", timeout=5).json()
                assert kept["status"] == "fulfilled", kept
            first_order = first_order or order["id"]

            process.send_signal(signal.SIGINT)
            output = read_until(process, "private PostgreSQL and RabbitMQ stopped", timeout=60)
            assert process.wait(10) == 0, output
        finally:
            if process.poll() is None:
                process.kill()
        assert not _processes_mentioning(str(home)), f"a private server outlived make run ({run} start)"
        assert not port_open(postgres_port) and not port_open(rabbitmq_port)
