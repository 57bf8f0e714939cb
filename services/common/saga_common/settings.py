"""Settings shared by every service, read from environment variables.

The seed's names (`DATABASE_URL`, `RABBITMQ_BROKER_URL`) are kept as they were; everything else carries the
`SAGA_` prefix. OpenTelemetry is configured by its own standard `OTEL_*` variables (see `tracing.py`), so it
has no field here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from saga_common.redaction import redact_url

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"

ASYMMETRIC_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})

# Passwords that are fine on a laptop and never in a cluster.
_DEVELOPMENT_PASSWORDS = {"", "guest", "postgres", "password", "changeme"}


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGA_", populate_by_name=True, extra="ignore")

    # Each service subclass sets its own name and default database.
    service_name: str = "saga-service"
    environment: Literal["development", "production"] = "development"

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/saga",
        validation_alias=AliasChoices("DATABASE_URL", "database_url"),
        description="PostgreSQL URL of this service's own database.",
    )
    rabbitmq_broker_url: str = Field(
        DEFAULT_BROKER_URL,
        validation_alias=AliasChoices("RABBITMQ_BROKER_URL", "rabbitmq_broker_url"),
        description="AMQP URL, or a comma-separated list of URLs (one per cluster node) to fail over between.",
    )

    service_database_role: str | None = Field(
        None,
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="(`migrate`) the role the service connects as: created or updated after the migrations, with "
        "data access to this database's tables and nothing else; DATABASE_URL is then the owner's.",
    )
    service_database_password: SecretStr | None = Field(None, description="(`migrate`) that role's password.")

    http_host: str = "0.0.0.0"
    http_port: int = Field(8000, ge=1, le=65535)
    # HTTPS on the service's own listener (both or neither; docs/security.md#tls). The asyncio loop does TLS below
    # the HTTP protocol, so the request bounds below hold unchanged.
    http_tls_cert_file: Path | None = Field(
        None,
        description="PEM certificate (chain) the API serves HTTPS with, with SAGA_HTTP_TLS_KEY_FILE; unset: HTTP.",
    )
    http_tls_key_file: Path | None = Field(None, description="The PEM private key of SAGA_HTTP_TLS_CERT_FILE.")
    # Bounds on what one client can make the process hold (saga_common.web.limits, docs/security.md).
    http_max_body_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request body; a larger one is refused with 413 before it is read."
    )
    http_max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request head (request line and headers); past it 431 and the connection is closed.",
    )
    http_request_timeout_s: float = Field(
        20.0,
        gt=0,
        le=600,
        description="A request, head and body, must arrive within this many seconds of its first byte (or of the "
        "connection's opening); else 408 and the connection is closed.",
    )
    http_keepalive_timeout_s: int = Field(
        5, ge=1, le=600, description="An idle keep-alive connection is closed after this many seconds."
    )
    http_max_concurrent_requests: int = Field(
        512,
        ge=1,
        description="Requests handled at once by one process (probes and /metrics not counted); past it 503 with "
        "Retry-After.",
    )

    db_pool_size: int = Field(
        10,
        ge=1,
        description="Connections in the process's asyncpg pool, opened on demand and kept; PostgreSQL saturates at "
        "4-8 per database, so a request beyond the pool waits for a connection rather than opening one.",
    )
    db_statement_timeout_ms: int = Field(5000, ge=0)

    exchange: str = "saga.events"
    broker_topology: Literal["declare", "passive"] = Field(
        "declare",
        description="`declare`: the service declares the whole topology (development); `passive`: it comes from the "
        "broker's definitions and the service only checks that what it uses exists (a least-privilege user).",
    )
    queue_type: Literal["quorum", "classic"] = "quorum"
    consumer_prefetch: int = Field(64, ge=1, le=10_000)
    consumer_batch_size: int = Field(
        32,
        ge=1,
        le=1000,
        description="Most deliveries handled in one transaction: those already waiting when a batch starts, never "
        "held back for company; 1 gives every message its own transaction.",
    )
    consumer_concurrency: int = Field(
        4, ge=1, le=100, description="Batches (or single messages) handled at once, each on its own connection."
    )
    delivery_limit: int = Field(
        20, ge=1, description="Redeliveries (crashes mid-message) before the broker dead-letters a message."
    )
    max_attempts: int = Field(6, ge=1, description="Handler failures before a message is dead-lettered.")
    retry_delays_ms: list[int] = Field(
        default=[500, 2000, 10000],
        description="Back-off tiers; attempt n waits retry_delays_ms[min(n, len-1)].",
    )
    max_message_bytes: int = Field(256 * 1024, ge=1024)
    # Checked against the contract's versions at start-up (runtime.py): this layer does not know the contract.
    publish_versions: dict[str, int] = Field(
        default={},
        description='The version each event type is published in (JSON, e.g. {"order.created": 1}); a type not '
        "named is published in its newest. Pin the old version while consumers of the last release still run.",
    )
    newer_version_hold_s: float = Field(
        86400.0,
        gt=0,
        description="A message of a version newer than this release knows is held back (delay queue, no attempt used) "
        "for up to this long, then parked in the dead-letter queue (`newer_version`).",
    )
    broker_publishers: dict[str, str] = Field(
        default={},
        description='The broker user each producing service publishes as (JSON, e.g. {"order-service": "order", '
        '"customer-service": "customer"}): a consumed event whose broker-validated publisher is not its '
        "type's owner is dead-lettered (`wrong_publisher`). Empty: no check (one shared user, development).",
    )
    broker_heartbeat_s: int = Field(10, ge=0)
    broker_reconnect_max_delay_s: float = Field(5.0, gt=0)

    outbox_batch_size: int = Field(200, ge=1, le=5000)
    outbox_poll_interval_s: float = Field(1.0, gt=0, description="Fallback when no NOTIFY arrives.")
    relay_unready_after_s: float = Field(
        30.0, gt=0, description="An outbox relay failing every round for this long makes /readyz answer 503."
    )

    drain_timeout_s: float = Field(20.0, ge=0, description="How long SIGTERM waits for in-flight messages.")
    health_probe_interval_s: float = Field(2.0, gt=0)

    trace_consumer_parent: Literal["child", "link"] = Field(
        "child", description="Consumer span is a child of the producer span, or a new trace linked to it."
    )
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    # Bearer tokens (see saga_common.web.auth and docs/security.md).
    auth_enabled: bool | None = Field(
        None, description="Bearer tokens required on the APIs; unset: on in production, off in development."
    )
    auth_issuer: str | None = Field(None, description="The `iss` every token must carry (the identity provider).")
    auth_jwks_url: str | None = Field(
        None, description="Where the identity provider publishes its public keys (https://, or file:// for tests)."
    )
    auth_audience: str = Field("saga", min_length=1, description="The `aud` every token must carry.")
    auth_algorithms: list[str] = Field(
        default=["RS256", "ES256"], description="Accepted signature algorithms (asymmetric ones only)."
    )
    auth_leeway_s: float = Field(30.0, ge=0, le=300, description="Clock skew tolerated on `exp`, `nbf` and `iat`.")
    auth_customer_claim: str = Field(
        "customer_id", min_length=1, description="The claim that binds a token to one customer."
    )
    auth_operator_scope: str = Field("saga:operator", min_length=1, description="The scope that reads everything.")
    auth_jwks_cache_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="How long fetched keys are trusted before a refetch: a key withdrawn from the JWKS verifies no "
        "new token after this long.",
    )
    auth_token_cache_s: float = Field(
        60.0,
        ge=0,
        le=3600,
        description="How long a verified token is remembered (never past its expiry); 0 verifies every request.",
    )
    auth_jwks_min_refresh_s: float = Field(
        10.0, ge=0, description="At most one refetch per this many seconds for a token signed by an unknown key."
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        # Given as is to asyncpg, which takes these two schemes and no driver suffix (no "+asyncpg").
        scheme = urlsplit(value).scheme
        if scheme not in {"postgresql", "postgres"}:
            raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got scheme {scheme!r}")
        return value

    @field_validator("rabbitmq_broker_url")
    @classmethod
    def _amqp_urls(cls, value: str) -> str:
        urls = split_broker_urls(value)
        if not urls:
            raise ValueError("RABBITMQ_BROKER_URL is empty")
        for url in urls:
            if urlsplit(url).scheme not in {"amqp", "amqps"}:
                raise ValueError(f"RABBITMQ_BROKER_URL entries must be amqp:// URLs, got {redact_url(url)!r}")
        return value

    @field_validator("retry_delays_ms")
    @classmethod
    def _delays(cls, value: list[int]) -> list[int]:
        if not value or any(delay <= 0 for delay in value):
            raise ValueError("SAGA_RETRY_DELAYS_MS needs at least one positive delay")
        return value

    @field_validator("auth_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        # HMAC would let anyone holding the (public) verification key sign; "none" would let anyone at all.
        refused = [alg for alg in value if alg not in ASYMMETRIC_ALGORITHMS]
        if refused or not value:
            raise ValueError(f"SAGA_AUTH_ALGORITHMS accepts only {sorted(ASYMMETRIC_ALGORITHMS)}, got {value}")
        return value

    @model_validator(mode="after")
    def _no_development_database_secret_in_production(self) -> ServiceSettings:
        if self.environment == "production" and _development_password(self.database_url):
            raise ValueError(
                "DATABASE_URL uses a development password; set a real secret when SAGA_ENVIRONMENT=production"
            )
        return self

    @model_validator(mode="after")
    def _tls_certificate_with_its_key(self) -> ServiceSettings:
        if (self.http_tls_cert_file is None) != (self.http_tls_key_file is None):
            given, missing = (
                ("SAGA_HTTP_TLS_CERT_FILE", "SAGA_HTTP_TLS_KEY_FILE")
                if self.http_tls_key_file is None
                else ("SAGA_HTTP_TLS_KEY_FILE", "SAGA_HTTP_TLS_CERT_FILE")
            )
            raise ValueError(f"{given} is set without {missing}: HTTPS needs both (neither: plain HTTP)")
        return self

    @property
    def http_tls(self) -> bool:
        return self.http_tls_cert_file is not None

    def check_http_tls_files(self) -> None:
        """Serving HTTPS needs both files readable (checked apart: the other commands serve nothing)."""
        for name, path in (
            ("SAGA_HTTP_TLS_CERT_FILE", self.http_tls_cert_file),
            ("SAGA_HTTP_TLS_KEY_FILE", self.http_tls_key_file),
        ):
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a file")

    @property
    def authentication_on(self) -> bool:
        return self.auth_enabled if self.auth_enabled is not None else self.environment == "production"

    def check_broker_secrets(self) -> None:
        """Serving needs the broker: refuse its development credentials in production. (Checked apart, so
        `migrate` and `seed`, which never touch the broker, do not need its credentials.)"""
        if self.environment == "production" and any(_development_password(url) for url in self.broker_urls):
            raise ValueError(
                "RABBITMQ_BROKER_URL uses a development password; set a real secret when SAGA_ENVIRONMENT=production"
            )

    def check_authentication(self) -> None:
        """Serving in production needs an identity provider (checked apart, like the broker's secrets: `migrate`
        and `seed` serve nothing)."""
        if self.environment == "production" and self.auth_enabled is False:
            raise ValueError("SAGA_AUTH_ENABLED=false is refused when SAGA_ENVIRONMENT=production")
        if self.authentication_on and not (self.auth_issuer and self.auth_jwks_url):
            raise ValueError(
                "authentication is on (always in production) and needs SAGA_AUTH_ISSUER and SAGA_AUTH_JWKS_URL"
            )
        if self.authentication_on and self.environment == "production":
            scheme = urlsplit(self.auth_jwks_url or "").scheme
            # Keys fetched in clear text could be swapped on the way; a mounted file cannot.
            if scheme not in {"https", "file"}:
                raise ValueError(
                    "SAGA_AUTH_JWKS_URL must be an https:// (or file://) URL when SAGA_ENVIRONMENT=production"
                )

    @property
    def broker_urls(self) -> list[str]:
        return split_broker_urls(self.rabbitmq_broker_url)


def _development_password(url: str) -> bool:
    return (urlsplit(url).password or "") in _DEVELOPMENT_PASSWORDS


def split_broker_urls(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
