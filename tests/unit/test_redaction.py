"""URLs shown redacted and text scrubbed of known secrets (saga_common.redaction): a password in every place a
URL can hold one, and in URLs that do not parse."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from order_service.settings import OrderSettings
from saga_common import redaction
from saga_common.redaction import MASK, redact, redact_url, register_environment, secrets_in, settings_error
from saga_tools.sagactl import SagactlSettings

SECRET = "Hx7Secret9"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql://u:{SECRET}@db:5432/orders", "postgresql://u:***@db:5432/orders"),
        (f"postgresql://u@db/orders?password={SECRET}", "postgresql://u@db/orders?password=***"),
        (
            f"postgresql://u@db/orders?sslmode=verify-full&sslpassword={SECRET}&application_name=x",
            "postgresql://u@db/orders?sslmode=verify-full&sslpassword=***&application_name=x",
        ),
        (f"amqps://u@mq/vh?heartbeat=10&password={SECRET}", "amqps://u@mq/vh?heartbeat=10&password=***"),
        # The parameter's name percent-encoded ("passw%6Frd" is "password").
        (f"postgresql://u@db/orders?passw%6Frd={SECRET}", "postgresql://u@db/orders?passw%6Frd=***"),
        (f"postgresql://u:{SECRET[:4]}%40%2F{SECRET[4:]}@db/orders", "postgresql://u:***@db/orders"),
        # Unencoded "@", "/", "#", "?" and a space in the password: all of it up to the host's "@".
        (f"postgresql://u:{SECRET[:3]}@/#?{SECRET[3:]} x@db/orders", "postgresql://u:***@db/orders"),
        (f"amqp://u:{SECRET[:3]},{SECRET[3:]}@mq/", "amqp://u:***@mq/"),
        (f"amqp://a:{SECRET}@mq1/, amqp://b:{SECRET}2@mq2/", "amqp://a:***@mq1/, amqp://b:***@mq2/"),
        (f"postgresql://u:{SECRET}@[::1/orders", "postgresql://u:***@[::1/orders"),  # urlsplit refuses it
        (f"postgres:{SECRET}@db/orders", "postgres:***@db/orders"),  # no "//"
        (f"host=db password={SECRET} dbname=orders", "host=db password=*** dbname=orders"),
        ("postgresql://u@db:5432/orders?sslmode=require", "postgresql://u@db:5432/orders?sslmode=require"),
        ("amqp://mq:5672/", "amqp://mq:5672/"),
    ],
)
def test_redact_url_hides_the_password_wherever_it_is(url, shown):
    assert redact_url(url) == shown
    assert SECRET[:4] not in redact_url(url) and SECRET[4:] not in redact_url(url)


def test_secrets_in_finds_each_password():
    assert secrets_in(f"amqp://a:{SECRET}@mq1/,amqp://b@mq2/?password=other123") == {SECRET, "other123"}


def test_known_secrets_are_scrubbed_from_any_text_in_every_form(monkeypatch):
    monkeypatch.setattr(redaction, "_known", set())
    register_environment(
        {
            "DATABASE_URL": "postgresql://u:Ab12%2FCd34%40Ef56@db/orders",
            "SAGA_SERVICE_DATABASE_PASSWORD": "Role5Pass",
            "PATH": "/usr/bin",
        }
    )
    # How a driver might quote a DSN it could not use: decoded, in pieces, JSON-escaped.
    text = 'connect to "Ab12/Cd34@Ef56" failed; port "Ab12%2FCd34%40Ef56"; host Ef56; role "Role5Pass"'
    scrubbed = redact(text)
    for piece in ("Ab12", "Cd34", "Ef56", "Role5Pass"):
        assert piece not in scrubbed, scrubbed
    assert scrubbed.count(MASK) >= 4
    assert "/usr/bin" not in {*redaction._known}


def test_development_passwords_are_left_to_the_patterns(monkeypatch):
    monkeypatch.setattr(redaction, "_known", set())
    register_environment({"RABBITMQ_BROKER_URL": "amqp://guest:guest@mq/"})
    assert redact("user guest, amqp://guest:guest@mq/") == "user guest, amqp://guest:***@mq/"


def test_settings_errors_name_the_setting_and_echo_no_value(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"mysql://u:{SECRET}@db/orders")
    monkeypatch.setenv("RABBITMQ_BROKER_URL", f"http://u:{SECRET}@mq/")
    monkeypatch.setenv("SAGA_HTTP_PORT", f"postgresql://u:{SECRET}@db/x")
    with pytest.raises(ValidationError) as raised:
        OrderSettings()
    assert SECRET in str(raised.value)  # what pydantic would print
    text = settings_error(raised.value, OrderSettings)
    assert SECRET not in text
    for name in ("DATABASE_URL", "RABBITMQ_BROKER_URL", "SAGA_HTTP_PORT"):
        assert f"  {name}: " in text, text


def test_sagactl_settings_errors_use_its_variable_names(monkeypatch):
    monkeypatch.setenv("ORDER_DATABASE_URL", "x")
    monkeypatch.setenv("SAGA_DEADLINE_S", f"amqp://u:{SECRET}@mq/")
    with pytest.raises(ValidationError) as raised:
        SagactlSettings()
    text = settings_error(raised.value, SagactlSettings)
    assert "SAGA_DEADLINE_S" in text and SECRET not in text
