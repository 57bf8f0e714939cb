"""An identity provider for tests: keys, a JWKS served over HTTP on 127.0.0.1, good tokens and forged ones."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://idp.saga.test/"
AUDIENCE = "saga"
KID = "test-key"  # the key id the e2e identity provider publishes its one key under


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        return jwk | {"kid": kid, "use": "sig", "alg": "RS256"}
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return jwk | {"kid": kid, "use": "sig", "alg": "ES256"}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "test-user", "iat": now, "exp": now + 600, "scope": ""}
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def sign(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, **overrides: Any) -> str:
    return sign_claims(key, kid, claims(**overrides))


def sign_claims(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, payload: dict[str, Any]) -> str:
    """Exactly `payload` signed (a claim may be JSON null here, which `sign` would drop)."""
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(kid: str, **overrides: Any) -> str:
    """`alg: none`: a token anyone can write."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": kid}).encode())
    return f"{header}.{_b64(json.dumps(claims(**overrides)).encode())}."


def hmac_with_public_key(key: rsa.RSAPrivateKey, kid: str, **overrides: Any) -> str:
    """HS256 keyed with the (public) verification key: the classic algorithm-confusion forgery."""
    secret = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(claims(**overrides)).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class JwksServer:
    """Serves `document` at /jwks.json; tests swap it to rotate keys and read `fetches`."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps(owner.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"

    def publish(self, *keys: tuple[rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, str]) -> None:
        self.document = {"keys": [public_jwk(key, kid) for key, kid in keys]}

    def service_env(self, **extra: str) -> dict[str, str]:
        return {
            "SAGA_AUTH_ENABLED": "true",
            "SAGA_AUTH_ISSUER": ISSUER,
            "SAGA_AUTH_JWKS_URL": self.url,
            "SAGA_AUTH_AUDIENCE": AUDIENCE,
            **extra,
        }


@contextmanager
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    server._thread.start()
    try:
        yield server
    finally:
        server._server.shutdown()
        server._server.server_close()
