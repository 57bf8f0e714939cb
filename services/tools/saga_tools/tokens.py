"""A local signing key for development and tests: mint tokens as an identity provider would.

`sagactl token` signs with a private key kept in a file (ES256 with P-256, created on first use; or an RSA
key, RS256, such as the one the chart generates); the services
verify with its public half only, published as a JWKS document next to it (`<key>.jwks.json`), which the
services read through `SAGA_AUTH_JWKS_URL=file://...` (or a test serves over HTTP). The private key never
goes anywhere else: not into a service's settings, not into the chart's service pods.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from saga_common.web import auth

DEFAULT_KEY_PATH = Path(".saga") / "dev-signing-key.pem"
DEFAULT_ISSUER = "saga-dev"
DEFAULT_AUDIENCE = "saga"


def jwks_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".jwks.json")


SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def ensure_key(key_path: Path) -> SigningKey:
    """The private key at `key_path` (EC P-256 or RSA), created as EC (mode 0600) if it does not exist; its
    public JWKS is written beside it."""
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"{key_path} is neither an EC nor an RSA private key")
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        key_path.parent.mkdir(parents=True, exist_ok=True)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
    try:
        jwks_path(key_path).write_text(json.dumps(jwks_of(key), indent=2) + "\n")
    except OSError:
        pass  # a read-only mount (the chart's test pod): the services get the public half elsewhere
    return key


def public_jwk(key: SigningKey) -> dict[str, Any]:
    return auth.public_jwk(key.public_key())


def jwks_of(*keys: SigningKey) -> dict[str, Any]:
    return {"keys": [public_jwk(key) for key in keys]}


def mint(
    key: SigningKey,
    *,
    subject: str,
    scopes: list[str],
    customer_id: int | None = None,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    ttl_s: float = 3600,
    customer_claim: str = "customer_id",
    now: float | None = None,
) -> str:
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl_s),
        "jti": uuid.uuid4().hex,
        "scope": " ".join(scopes),
    }
    if customer_id is not None:
        claims[customer_claim] = customer_id
    jwk = public_jwk(key)
    return jwt.encode(claims, key, algorithm=jwk["alg"], headers={"kid": jwk["kid"]})


class LocalIdentity:
    """An identity provider of one's own for a local stack (tests, the benchmark): a fresh key in `directory`,
    the services' settings that trust it, and tokens signed with it."""

    def __init__(self, directory: Path, *, issuer: str = DEFAULT_ISSUER, audience: str = DEFAULT_AUDIENCE) -> None:
        self.key_path = directory / "signing-key.pem"
        self.key = ensure_key(self.key_path)
        self.issuer = issuer
        self.audience = audience

    @property
    def jwks_url(self) -> str:
        return jwks_path(self.key_path).resolve().as_uri()

    def service_env(self) -> dict[str, str]:
        return {
            "SAGA_AUTH_ENABLED": "true",
            "SAGA_AUTH_ISSUER": self.issuer,
            "SAGA_AUTH_JWKS_URL": self.jwks_url,
            "SAGA_AUTH_AUDIENCE": self.audience,
        }

    def token(self, scopes: list[str] | tuple[str, ...], *, customer_id: int | None = None, **claims: Any) -> str:
        return mint(
            self.key,
            subject=claims.pop("subject", "local-test"),
            scopes=list(scopes),
            customer_id=customer_id,
            issuer=self.issuer,
            audience=self.audience,
            **claims,
        )

    def headers(self, scopes: list[str] | tuple[str, ...], *, customer_id: int | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scopes, customer_id=customer_id)}"}
