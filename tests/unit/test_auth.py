"""Authentication settings and the JWKS cache, without a service around them."""

import asyncio
import json
import time

import pytest
from pydantic import ValidationError

from customer_service.settings import CustomerSettings
from order_service.settings import OrderSettings
from saga_common.web.auth import (
    MAX_CUSTOMER_ID,
    Authenticator,
    AuthError,
    JwksCache,
    NotBound,
    Principal,
    parse_customer_claim,
)
from tests.support import auth

PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql://order:s3cret@db/orders",
}


def test_development_has_authentication_off_unless_switched_on():
    assert not OrderSettings().authentication_on
    assert not CustomerSettings(environment="development").authentication_on
    on = OrderSettings(auth_enabled=True, auth_issuer="https://idp/", auth_jwks_url="http://127.0.0.1:1/jwks")
    assert on.authentication_on


@pytest.mark.parametrize("settings_class", [OrderSettings, CustomerSettings])
def test_production_refuses_to_start_without_an_identity_provider(settings_class):
    # `migrate` and `seed` serve nothing: only serving needs the identity provider.
    with pytest.raises(ValueError, match="SAGA_AUTH_ISSUER and SAGA_AUTH_JWKS_URL"):
        settings_class(**PRODUCTION).check_authentication()
    with pytest.raises(ValueError, match="SAGA_AUTH_ENABLED=false is refused"):
        settings_class(
            **PRODUCTION, auth_enabled=False, auth_issuer="https://idp/", auth_jwks_url="https://idp/k"
        ).check_authentication()
    with pytest.raises(ValueError, match="https://"):
        settings_class(**PRODUCTION, auth_issuer="https://idp/", auth_jwks_url="http://idp/keys").check_authentication()
    good = settings_class(**PRODUCTION, auth_issuer="https://idp/", auth_jwks_url="https://idp/keys")
    good.check_authentication()
    assert good.authentication_on


def test_production_refusal_through_the_environment(monkeypatch):
    monkeypatch.setenv("SAGA_ENVIRONMENT", "production")
    monkeypatch.setenv("DATABASE_URL", "postgresql://order:s3cret@db/orders")
    with pytest.raises(ValueError, match="SAGA_AUTH_ISSUER"):
        OrderSettings().check_authentication()
    monkeypatch.setenv("SAGA_AUTH_ISSUER", "https://idp.example/")
    monkeypatch.setenv("SAGA_AUTH_JWKS_URL", "https://idp.example/.well-known/jwks.json")
    assert OrderSettings().authentication_on


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], ["RS256", "HS512"], []])
def test_only_asymmetric_algorithms_can_be_configured(algorithms):
    with pytest.raises(ValidationError, match="SAGA_AUTH_ALGORITHMS"):
        OrderSettings(auth_algorithms=algorithms)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_jwks(path, *keys):
    path.write_text(json.dumps({"keys": [auth.public_jwk(key, kid) for key, kid in keys]}))


async def test_jwks_cache_refetches_for_a_new_key_at_most_once_per_interval(tmp_path):
    path = tmp_path / "jwks.json"
    first, second = auth.rsa_key(), auth.ec_key()
    write_jwks(path, (first, "a"))
    clock = Clock()
    cache = JwksCache(path.as_uri(), algorithms=["RS256", "ES256"], cache_s=300, min_refresh_s=10, clock=clock)
    assert (await cache.key("a")).key_id == "a"
    assert cache.fetches == 1
    write_jwks(path, (first, "a"), (second, "b"))
    # Within the refresh interval, an unknown kid does not refetch.
    clock.now += 5
    with pytest.raises(AuthError):
        await cache.key("b")
    assert cache.fetches == 1
    clock.now += 6
    assert (await cache.key("b")).key_id == "b"
    assert cache.fetches == 2
    for _ in range(20):
        with pytest.raises(AuthError):
            await cache.key("nobody")
    assert cache.fetches == 2
    # Expired: refetched even for a known kid; a key withdrawn by the provider is gone.
    write_jwks(path, (second, "b"))
    clock.now += 301
    with pytest.raises(AuthError):
        await cache.key("a")
    assert cache.fetches == 3


async def test_jwks_cache_keeps_its_keys_when_the_provider_is_down(tmp_path):
    path = tmp_path / "jwks.json"
    key = auth.rsa_key()
    write_jwks(path, (key, "a"))
    clock = Clock()
    cache = JwksCache(path.as_uri(), algorithms=["RS256"], cache_s=60, min_refresh_s=1, clock=clock)
    await cache.key("a")
    path.unlink()
    clock.now += 61
    assert (await cache.key("a")).key_id == "a"


async def test_jwks_entries_that_are_not_public_signing_keys_are_ignored(tmp_path):
    path = tmp_path / "jwks.json"
    key = auth.rsa_key()
    private = json.loads(__import__("jwt").algorithms.RSAAlgorithm.to_jwk(key)) | {"kid": "private"}
    document = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            private,
            auth.public_jwk(key, "enc") | {"use": "enc"},
            auth.public_jwk(key, "good"),
        ]
    }
    path.write_text(json.dumps(document))
    cache = JwksCache(path.as_uri(), algorithms=["RS256"], cache_s=60, min_refresh_s=1)
    assert (await cache.key("good")).key_id == "good"
    for kid in ("hmac", "private", "enc"):
        with pytest.raises(AuthError):
            await cache.key(kid)


async def test_the_authenticator_never_returns_the_token_in_its_errors(tmp_path):
    path = tmp_path / "jwks.json"
    key = auth.rsa_key()
    write_jwks(path, (key, "a"))
    settings = OrderSettings(auth_enabled=True, auth_issuer=auth.ISSUER, auth_jwks_url=path.as_uri())
    authenticator = Authenticator(settings)
    token = auth.sign(key, "a", aud="elsewhere", scope="orders:read")
    with pytest.raises(AuthError) as refused:
        await authenticator.principal(token)
    assert token not in str(refused.value)
    principal = await authenticator.principal(auth.sign(key, "a", scope="orders:read", customer_id=42))
    assert principal.customer_id == 42
    assert principal.scopes == {"orders:read"}
    for bad in (True, "abc", "42", -1, 0):
        with pytest.raises(AuthError, match="'customer_id' claim is not a customer id"):
            await authenticator.principal(auth.sign(key, "a", scope="orders:read", customer_id=bad))


def test_the_service_refuses_to_start_in_production_without_an_identity_provider(monkeypatch):
    from order_service.main import create_app

    monkeypatch.setenv("RABBITMQ_BROKER_URL", "amqp://order:an0ther-Long@mq/")
    with pytest.raises(ValueError, match="SAGA_AUTH_ISSUER and SAGA_AUTH_JWKS_URL"):
        create_app(OrderSettings(**PRODUCTION, rabbitmq_broker_url="amqp://order:an0ther-Long@mq/"))


async def test_a_pem_certificate_serves_as_the_key_set(tmp_path):
    """What the chart's development signer gives the services: a self-signed certificate, no JWKS."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from saga_tools import tokens

    key = auth.rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "saga-dev-token-signer")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "certificate.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file = tmp_path / "signing-key.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    settings = OrderSettings(auth_enabled=True, auth_issuer="saga-dev", auth_jwks_url=pem.as_uri())
    token = tokens.mint(
        tokens.ensure_key(key_file), subject="t", scopes=["orders:read", "customers:all"], issuer="saga-dev"
    )
    principal = await Authenticator(settings).principal(token)
    assert principal.scopes == {"orders:read", "customers:all"}


async def test_a_verified_token_is_remembered_until_it_expires_or_the_cache_time_passes(tmp_path, monkeypatch):
    path = tmp_path / "jwks.json"
    key = auth.rsa_key()
    write_jwks(path, (key, "a"))
    settings = OrderSettings(
        auth_enabled=True,
        auth_issuer=auth.ISSUER,
        auth_jwks_url=path.as_uri(),
        auth_token_cache_s=0.5,
        auth_leeway_s=0,
    )
    authenticator = Authenticator(settings)
    verifications = []
    real_verify = authenticator._verify

    async def counted(token):
        verifications.append(token)
        return await real_verify(token)

    monkeypatch.setattr(authenticator, "_verify", counted)
    token = auth.sign(key, "a", scope="orders:read customers:all")
    first = await authenticator.principal(token)
    assert await authenticator.principal(token) == first
    assert len(verifications) == 1
    await asyncio.sleep(0.6)  # past the cache time: verified again
    assert await authenticator.principal(token) == first
    assert len(verifications) == 2
    # A refused token is never remembered.
    wrong = auth.sign(auth.rsa_key(), "a", scope="orders:read")
    for _ in range(2):
        with pytest.raises(AuthError):
            await authenticator.principal(wrong)
    assert len(verifications) == 4
    # Never past its own expiry, however long the cache time.
    authenticator._settings = settings.model_copy(update={"auth_token_cache_s": 3600})
    short = auth.sign(key, "a", scope="orders:read customers:all", exp=int(time.time()) + 1)
    await authenticator.principal(short)
    await asyncio.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))
    with pytest.raises(AuthError, match="expired"):
        await authenticator.principal(short)


@pytest.mark.parametrize("value", [1, 42, MAX_CUSTOMER_ID])
def test_a_customer_claim_is_a_json_integer_in_range(value):
    assert parse_customer_claim({"customer_id": value}, "customer_id") == value


def test_no_customer_claim_is_none_and_another_claim_name_is_no_claim():
    assert parse_customer_claim({}, "customer_id") is None
    assert parse_customer_claim({"customerId": 5, "customer": 5}, "customer_id") is None
    assert parse_customer_claim({"cid": 5}, "cid") == 5


@pytest.mark.parametrize(
    "value",
    [
        None,
        1.0,
        1.5,
        "1",
        "42",
        "\u0661",
        "\uff11",
        "1_0",
        " 1",
        "",
        0,
        -1,
        -(2**63),
        MAX_CUSTOMER_ID + 1,
        2**200,
        True,
        False,
        [1],
        {"id": 1},
    ],
    ids=repr,
)
def test_anything_else_in_the_customer_claim_is_refused(value):
    with pytest.raises(AuthError, match="'customer_id' claim is not a customer id"):
        parse_customer_claim({"customer_id": value}, "customer_id")


async def test_a_token_bound_to_nobody_needs_customers_all(tmp_path):
    path = tmp_path / "jwks.json"
    key = auth.rsa_key()
    write_jwks(path, (key, "a"))
    settings = OrderSettings(auth_enabled=True, auth_issuer=auth.ISSUER, auth_jwks_url=path.as_uri())
    authenticator = Authenticator(settings)
    for scope in ("orders:read orders:write customers:write", "orders:read customers:al", ""):
        with pytest.raises(NotBound, match="customers:all"):
            await authenticator.principal(auth.sign(key, "a", scope=scope))
    back_office = await authenticator.principal(auth.sign(key, "a", scope="orders:read customers:all"))
    assert back_office.sees_customer(1) and back_office.sees_customer(2) and back_office.customer_filter is None
    operator = await authenticator.principal(auth.sign(key, "a", scope="saga:operator"))
    assert operator.operator and operator.sees_customer(3)
    # A claim narrows customers:all to that customer.
    narrowed = await authenticator.principal(auth.sign(key, "a", scope="orders:read customers:all", customer_id=7))
    assert not narrowed.all_customers and narrowed.customer_filter == 7
    assert narrowed.sees_customer(7) and not narrowed.sees_customer(8)
    # A principal bound to nobody cannot even be built.
    with pytest.raises(ValueError):
        Principal(subject="x", scopes=frozenset())


def test_the_jwks_cache_bound_is_what_the_docs_promise():
    # docs/security.md: a key withdrawn from the JWKS verifies no new token after SAGA_AUTH_JWKS_CACHE_S (60 s).
    assert OrderSettings().auth_jwks_cache_s == 60
