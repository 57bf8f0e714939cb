"""Secrets never printed (issue 25, item 5): the real command-line processes (`order-service migrate`, `serve`,
`sagactl`) given broken URLs with a password in every place a URL can hold one (userinfo, a query parameter,
percent-encoded, unencoded odd characters, in a list of broker URLs, a URL that does not parse) print the
setting's name and never the password, in any part of it, on stdout or stderr."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from urllib.parse import quote, urlsplit

import pytest

from saga_dev.localstack import SagaEnvironment, ServiceProcess
from tests.support.waiting import eventually


def _halves() -> tuple[str, str]:
    """A password in two unique halves: either half in the output is a leak (a parser that stops at an odd
    character in the middle prints one half)."""
    return f"Lk{uuid.uuid4().hex[:10]}", f"Qz{uuid.uuid4().hex[:10]}"


def assert_no_secret(output: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in output, f"the password {secret!r} is printed:\n{output[-3000:]}"


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)


def _database_cases(server: str) -> list[tuple[str, str, str, str]]:
    """(case, DATABASE_URL, half, half) against the test's PostgreSQL host, each broken its own way."""
    host = urlsplit(server).netloc.rsplit("@", 1)[-1]
    cases = []
    for case, template in [
        ("userinfo, wrong scheme", "mysql://postgres:{a}{b}@{host}/orders"),
        ("userinfo, port that is no number", "postgresql://postgres:{a}{b}@127.0.0.1:notaport/orders"),
        ("query parameter", "postgresql://postgres@{host}/orders?password={a}{b}&sslmode=bogus"),
        ("sslpassword query parameter", "postgresql://postgres@{host}/orders?sslpassword={a}{b}&sslmode=bogus"),
        ("percent-encoded", "postgresql://postgres:{a}%2F%40{b}@127.0.0.1:notaport/orders"),
        ("unencoded slash and hash", "postgresql://postgres:{a}/#{b}@{host}/orders"),
        ("unencoded @", "postgresql://postgres:{a}@{b}@127.0.0.1:1/orders"),
        ("does not parse", "postgresql://postgres:{a}{b}@[::1/orders"),
        ("no scheme at all", "postgres:{a}{b}@{host}/orders"),
    ]:
        a, b = _halves()
        cases.append((case, template.format(a=a, b=b, host=host), a, b))
    return cases


def _env(saga_env: SagaEnvironment, **overrides: str) -> dict[str, str]:
    env = saga_env.order_service().env()
    env.update(overrides)
    return env


def test_migrate_with_a_broken_database_url_names_the_setting_and_prints_no_password(saga_env: SagaEnvironment):
    for case, url, *secrets in _database_cases(saga_env.databases.order_url):
        done = run([sys.executable, "-m", "order_service", "migrate"], _env(saga_env, DATABASE_URL=url))
        output = done.stdout + done.stderr
        assert done.returncode != 0, f"{case}: migrate succeeded with {url!r}:\n{output}"
        assert "order-service" in output, f"{case}: the error does not say who failed:\n{output}"
        assert_no_secret(output, *secrets)


def test_a_broken_broker_url_list_is_refused_by_name_with_no_password(saga_env: SagaEnvironment):
    a, b, c, d = *_halves(), *_halves()
    urls = f"amqp://guest:{a}{b}@127.0.0.1:1/, http://guest:{c}{d}@mq/"
    done = run([sys.executable, "-m", "order_service", "migrate"], _env(saga_env, RABBITMQ_BROKER_URL=urls))
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "RABBITMQ_BROKER_URL" in output, output
    assert "input_value" not in output, output
    assert_no_secret(output, a, b, c, d)


def test_a_setting_of_the_wrong_type_names_the_setting_and_echoes_no_value(saga_env: SagaEnvironment):
    a, b = _halves()
    # pydantic's own text would quote the input; the value here is a URL someone pasted in the wrong variable.
    env = _env(saga_env, SAGA_HTTP_PORT=f"postgresql://postgres:{a}{b}@db/orders")
    done = run([sys.executable, "-m", "order_service", "migrate"], env)
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "SAGA_HTTP_PORT" in output, output
    assert_no_secret(output, a, b)


async def test_serve_with_unreachable_brokers_logs_them_redacted(saga_env: SagaEnvironment):
    vhost = urlsplit(saga_env.broker_url)
    secrets = [*_halves(), *_halves(), *_halves()]
    a, b, c, d, e, f = secrets
    brokers = ", ".join(
        [
            # The real broker, a wrong password (percent-encoded odd characters): refused at login.
            f"amqp://{vhost.username}:{a}%3A%40{b}@{vhost.hostname}:{vhost.port}{vhost.path}",
            # No broker listens here; the password is a query parameter (and one of amqp's own names).
            f"amqp://guest@127.0.0.1:1/?password={c}{d}&heartbeat=5",
            f"amqps://guest:{e}{quote('#/', safe='')}{f}@127.0.0.1:2/vh",
        ]
    )
    service = ServiceProcess(
        "order_service", saga_env.databases.order_url, brokers, extra_env={"SAGA_LOG_LEVEL": "DEBUG"}
    )
    await asyncio.to_thread(service.start, False)
    try:
        # Every URL tried at least once (the supervisor goes round the list).
        await eventually(
            service.log_text,
            until=lambda text: text.count("cannot reach RabbitMQ") >= 3,
            timeout=60,
            what="the service to report every broker it cannot reach",
        )
    finally:
        service.stop()
    output = service.log_text()
    assert "127.0.0.1:1" in output and "127.0.0.1:2" in output, output[-3000:]
    assert_no_secret(output, *secrets)


async def test_serve_with_a_database_it_cannot_log_in_to_prints_no_password(saga_env: SagaEnvironment):
    a, b = _halves()
    server = urlsplit(saga_env.databases.order_url)
    # A role that does not exist, so the server refuses whatever the authentication method.
    url = f"postgresql://nobody_{uuid.uuid4().hex[:8]}:{a}%40{b}@{server.hostname}:{server.port}{server.path}"
    service = ServiceProcess("order_service", url, saga_env.broker_url, extra_env={"SAGA_LOG_LEVEL": "DEBUG"})
    await asyncio.to_thread(service.start, False)
    try:
        await eventually(
            lambda: (
                (service.process is not None and service.process.poll() is not None) or "nobody_" in service.log_text()
            ),
            timeout=60,
            what="the service to report the database that refuses it",
        )
    finally:
        service.stop()
    assert_no_secret(service.log_text(), a, b, f"{a}@{b}")


@pytest.mark.parametrize("variable", ["ORDER_DATABASE_URL", "CUSTOMER_DATABASE_URL"])
def test_sagactl_with_a_broken_database_url_prints_no_password(saga_env: SagaEnvironment, variable: str):
    for case, url, *secrets in _database_cases(saga_env.databases.order_url):
        env = _env(
            saga_env,
            ORDER_DATABASE_URL=saga_env.databases.order_url,
            CUSTOMER_DATABASE_URL=saga_env.databases.customer_url,
        )
        env[variable] = url
        done = run([sys.executable, "-m", "saga_tools.sagactl", "prune", "--dry-run"], env)
        output = done.stdout + done.stderr
        assert done.returncode != 0, f"{case}: sagactl succeeded with {url!r}:\n{output}"
        assert_no_secret(output, *secrets)
