"""Settings: the seed's variable names, broker URL lists, and no development secrets in production."""

import pytest
from pydantic import ValidationError

from order_service.settings import OrderSettings
from saga_common.contract.topology import ServiceQueues


def test_seed_variable_names(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/orders")
    monkeypatch.setenv("RABBITMQ_BROKER_URL", "amqp://u:p@mq:5672/")
    settings = OrderSettings()
    assert settings.database_url == "postgresql://u:p@db:5432/orders"
    assert settings.broker_urls == ["amqp://u:p@mq:5672/"]
    assert settings.http_port == 8001


def test_a_list_of_broker_urls_is_one_per_node():
    settings = OrderSettings(rabbitmq_broker_url="amqp://a:5672/, amqp://b:5673/,amqp://c:5674/")
    assert settings.broker_urls == ["amqp://a:5672/", "amqp://b:5673/", "amqp://c:5674/"]


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("database_url", "mysql://x/y", "postgresql"),
        # The URL goes to asyncpg as written: SQLAlchemy's driver suffix is not a URL asyncpg reads.
        ("database_url", "postgresql+asyncpg://x@h/db", "postgresql://"),
        ("rabbitmq_broker_url", "http://x/", "amqp"),
        ("rabbitmq_broker_url", " , ", "empty"),
        ("retry_delays_ms", [], "positive"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(field, value, says):
    with pytest.raises(ValidationError, match=says):
        OrderSettings(**{field: value})


def test_production_refuses_development_passwords():
    with pytest.raises(ValidationError, match="development password"):
        OrderSettings(environment="production", database_url="postgresql://postgres@db/orders")
    # `migrate` never touches the broker: only serving checks its credentials.
    migrating = OrderSettings(
        environment="production",
        database_url="postgresql://app:s3cret-Long@db/orders",
        rabbitmq_broker_url="amqp://guest:guest@mq/",
    )
    with pytest.raises(ValueError, match="RABBITMQ_BROKER_URL uses a development password"):
        migrating.check_broker_secrets()
    OrderSettings(
        environment="production",
        database_url="postgresql://app:s3cret-Long@db/orders",
        rabbitmq_broker_url="amqp://app:an0ther-Long@mq/,amqp://app:an0ther-Long@mq2/",
    ).check_broker_secrets()


def test_retry_tiers_grow_then_repeat_the_last():
    queues = ServiceQueues("svc", (500, 2000, 10000))
    assert [queues.retry_for_attempt(n) for n in (1, 2, 3, 4, 9)] == [
        "svc.retry.500ms",
        "svc.retry.2000ms",
        "svc.retry.10000ms",
        "svc.retry.10000ms",
        "svc.retry.10000ms",
    ]


def test_https_needs_the_certificate_and_its_key(tmp_path, monkeypatch):
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("certificate")
    key.write_text("key")
    assert not OrderSettings().http_tls
    pairs = (
        ("SAGA_HTTP_TLS_CERT_FILE", "SAGA_HTTP_TLS_KEY_FILE", cert),
        ("SAGA_HTTP_TLS_KEY_FILE", "SAGA_HTTP_TLS_CERT_FILE", key),
    )
    for given, missing, path in pairs:
        with monkeypatch.context() as env:
            env.setenv(given, str(path))
            with pytest.raises(ValidationError, match=f"{given} is set without {missing}"):
                OrderSettings()
    monkeypatch.setenv("SAGA_HTTP_TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("SAGA_HTTP_TLS_KEY_FILE", str(tmp_path / "missing.key"))
    # Read only by `serve` (the chart's other pods have no such files; the contract tests build these settings).
    with pytest.raises(ValueError, match=r"SAGA_HTTP_TLS_KEY_FILE: .*missing\.key is not a file"):
        OrderSettings().check_http_tls_files()
    monkeypatch.setenv("SAGA_HTTP_TLS_KEY_FILE", str(key))
    assert OrderSettings().http_tls
    OrderSettings().check_http_tls_files()
