"""Bearer tokens on the APIs: who is calling, with which scopes, on behalf of which customer.

A token is a JWT signed by an identity provider with an asymmetric key (RS256/ES256 by default); the public
keys come from the provider's JWKS URL, cached, refetched when they expire and, at most once per
`auth_jwks_min_refresh_s`, when a token names a key id the cache does not know (the provider rotated its
keys). Issuer, audience and expiry are checked with a small leeway for clock skew. `alg: none` and HMAC are
refused before any key is looked at: only the algorithms configured (asymmetric ones, see settings) pass.

Scopes come from the `scope` claim (space-separated, RFC 8693) or `scp` (a list, as some providers send).
A token that carries the customer claim (`customer_id` by default, a JSON integer from 1 to 2^63-1) is bound
to that customer: it sees only that customer's orders and record; anything else answers 404, as if it did not
exist. Binding fails closed: a token acts for every customer only through the back-office scope
`customers:all` (or reads everything with the operator scope); a token with neither and no customer claim is
refused (403), and a claim that is not a customer id (null, a float, a string, a bool, out of range) makes the
token invalid (401). With authentication off (development only) every request is the development principal.

The token is checked before the request's body is read (`AuthenticateFirst`, an ASGI middleware): a request
without a valid token costs a header parse and a signature check, never a body.

Nothing here logs or returns a token: errors name what was wrong, never what was sent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from saga_common.settings import ServiceSettings
from saga_common.web.limits import CLOSE, has_body, send_problem

log = logging.getLogger(__name__)

ORDERS_WRITE = "orders:write"
ORDERS_READ = "orders:read"
ORDERS_CANCEL = "orders:cancel"
ORDERS_OPERATE = "orders:operate"  # an operator's actions on one saga: expire it, resend its last event
CUSTOMERS_WRITE = "customers:write"
CUSTOMERS_READ = "customers:read"
CUSTOMERS_ALL = "customers:all"  # back office: acts for every customer (no customer claim)
SCOPES = (ORDERS_WRITE, ORDERS_READ, ORDERS_CANCEL, ORDERS_OPERATE, CUSTOMERS_WRITE, CUSTOMERS_READ, CUSTOMERS_ALL)
READ_SCOPES = frozenset({ORDERS_READ, CUSTOMERS_READ})

REALM = "saga"
JWKS_FETCH_TIMEOUT_S = 5.0
MAX_JWKS_BYTES = 512 * 1024
MAX_REMEMBERED_TOKENS = 10_000
MAX_CUSTOMER_ID = 2**63 - 1  # the databases' bigint
PRINCIPAL_SCOPE_KEY = "saga.principal"  # where AuthenticateFirst leaves the verified principal in the ASGI scope


class AuthError(Exception):
    """A token that proves nothing: 401."""


class NotBound(Exception):
    """A valid token bound to no customer and without the scope to act for all of them: 403."""


@dataclass(frozen=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    customer_id: int | None = None
    operator: bool = False
    all_customers: bool = False

    def __post_init__(self) -> None:
        # Fail closed: a principal bound to nobody may not exist (it would see everybody).
        if self.customer_id is None and not (self.operator or self.all_customers):
            raise ValueError("a principal is bound to a customer, or holds the operator or customers:all scope")

    def sees_customer(self, customer_id: int) -> bool:
        """Whether this caller may see (or act on) what belongs to `customer_id`."""
        if self.customer_id is not None:
            return self.customer_id == customer_id
        return self.operator or self.all_customers

    @property
    def customer_filter(self) -> int | None:
        """The customer a listing is restricted to (None: every customer, for the operator and back office)."""
        return self.customer_id


DEVELOPMENT_PRINCIPAL = Principal(
    subject="development (authentication off)", scopes=frozenset(SCOPES), operator=True, all_customers=True
)


class JwksCache:
    """The identity provider's public keys by key id, fetched from its JWKS URL."""

    def __init__(
        self,
        url: str,
        *,
        algorithms: list[str],
        cache_s: float,
        min_refresh_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._algorithms = algorithms
        self._cache_s = cache_s
        self._min_refresh_s = min_refresh_s
        self._clock = clock
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key(self, kid: str | None) -> jwt.PyJWK:
        now = self._clock()
        expired = self._fetched_at is None or now - self._fetched_at >= self._cache_s
        unknown = self._lookup(kid) is None
        may_refresh = self._fetched_at is None or now - self._fetched_at >= self._min_refresh_s
        if expired or (unknown and may_refresh):
            async with self._lock:
                # Another request may have refreshed while this one waited.
                if self._fetched_at is None or self._clock() - self._fetched_at >= min(
                    self._min_refresh_s, self._cache_s
                ):
                    await self._refresh()
        found = self._lookup(kid)
        if found is None:
            raise AuthError("the token is signed by an unknown key")
        return found

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            # A provider with one key may leave `kid` out; with several, a token must name its key.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        try:
            document = await asyncio.to_thread(_read_url, self._url)
            keys = _parse_jwks(document, self._algorithms)
        except Exception as exc:  # noqa: BLE001 - keep the keys we had: the provider may be down for a moment
            log.warning("cannot fetch the JWKS (%s); keeping %d cached keys", type(exc).__name__, len(self._keys))
            if self._fetched_at is None:
                raise AuthError("the signing keys are unavailable") from None
            # Try again after min_refresh_s, not on every request.
            self._fetched_at = self._clock() - self._cache_s + self._min_refresh_s
            return
        self._keys = keys
        self._fetched_at = self._clock()
        self.fetches += 1
        log.info("JWKS fetched: %d usable keys", len(keys))


def _read_url(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=JWKS_FETCH_TIMEOUT_S) as response:
        return bytes(response.read(MAX_JWKS_BYTES + 1))


def key_id(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint of a public JWK: the same key always gets the same id."""
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def public_jwk(public_key: Any) -> dict[str, Any]:
    """A public key (RSA or EC P-256) as a JWK with its algorithm and its thumbprint as `kid`."""
    if isinstance(public_key, rsa.RSAPublicKey):
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(public_key)) | {"alg": "RS256"}
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        jwk = json.loads(ECAlgorithm.to_jwk(public_key)) | {"alg": "ES256"}
    else:
        raise ValueError("only RSA and EC keys sign tokens here")
    return jwk | {"use": "sig", "kid": key_id(jwk)}


def _pem_keys(document: bytes) -> dict[str, Any]:
    """A PEM certificate or public key instead of a JWKS (what a Helm chart can generate): one key."""
    if b"CERTIFICATE" in document.split(b"\n", 1)[0]:
        public_key = x509.load_pem_x509_certificate(document).public_key()
    else:
        public_key = serialization.load_pem_public_key(document)
    return {"keys": [public_jwk(public_key)]}


def _parse_jwks(document: bytes, algorithms: list[str]) -> dict[str | None, jwt.PyJWK]:
    if len(document) > MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    data = _pem_keys(document) if document.lstrip().startswith(b"-----BEGIN") else json.loads(document)
    keys: dict[str | None, jwt.PyJWK] = {}
    for entry in data.get("keys", []):
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig" or entry.get("kty") not in {"RSA", "EC"}:
            continue  # encryption keys, symmetric keys ("oct") and whatever else is not a signing key
        if "d" in entry:
            continue  # a private key published by mistake is not used
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        if entry.get("alg") and entry["alg"] not in algorithms:
            continue
        keys[entry.get("kid")] = key
    return keys


class Authenticator:
    def __init__(self, settings: ServiceSettings) -> None:
        self.enabled = settings.authentication_on
        self._settings = settings
        self._jwks = (
            JwksCache(
                settings.auth_jwks_url or "",
                algorithms=settings.auth_algorithms,
                cache_s=settings.auth_jwks_cache_s,
                min_refresh_s=settings.auth_jwks_min_refresh_s,
            )
            if self.enabled
            else None
        )
        self._verified: dict[str, tuple[Principal, float]] = {}

    @property
    def jwks(self) -> JwksCache | None:
        return self._jwks

    async def principal(self, token: str) -> Principal:
        """The token's principal: verified once, then remembered until it expires or `auth_token_cache_s`
        passes, whichever is first (a signature check costs 100-150 µs here, a fifth of an order's CPU; the
        bound keeps a key withdrawn from the JWKS effective within that time)."""
        now = time.time()
        remembered = self._verified.get(token)
        if remembered is not None:
            principal, until = remembered
            if now < until:
                return principal
            del self._verified[token]
        principal, expires_at = await self._verify(token)
        if self._settings.auth_token_cache_s > 0:
            if len(self._verified) >= MAX_REMEMBERED_TOKENS:
                self._verified.clear()  # rare and cheap: each token is verified again once
            self._verified[token] = (principal, min(expires_at, now + self._settings.auth_token_cache_s))
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        """The principal of a token whose signature, issuer, audience and times check out; when it expires."""
        assert self._jwks is not None
        settings = self._settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("the token is malformed") from None
        algorithm = header.get("alg")
        if algorithm not in settings.auth_algorithms:
            raise AuthError("the token's signature algorithm is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("the token is malformed")
        key = await self._jwks.key(kid)
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=settings.auth_audience,
                issuer=settings.auth_issuer,
                leeway=settings.auth_leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise AuthError("the token is not meant for this API (audience)") from None
        except jwt.InvalidIssuerError:
            raise AuthError("the token comes from an issuer this API does not trust") from None
        except jwt.InvalidSignatureError:
            raise AuthError("the token's signature does not verify") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token is not valid yet") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"the token lacks the {exc.claim!r} claim") from None
        except Exception:  # noqa: BLE001 - e.g. an ES256 header over an RSA key: nothing verifies, nothing more to say
            raise AuthError("the token is invalid") from None
        return self._principal_from(claims), float(claims["exp"]) + settings.auth_leeway_s

    def _principal_from(self, claims: dict[str, Any]) -> Principal:
        scopes = _scopes_of(claims)
        claim = self._settings.auth_customer_claim
        customer_id = parse_customer_claim(claims, claim)
        operator = self._settings.auth_operator_scope in scopes and customer_id is None
        all_customers = CUSTOMERS_ALL in scopes and customer_id is None
        if customer_id is None and not (operator or all_customers):
            raise NotBound(
                f"the token is bound to no customer: it needs a {claim!r} claim (a customer id) "
                f"or the {CUSTOMERS_ALL} scope"
            )
        return Principal(
            subject=str(claims["sub"]),
            scopes=scopes,
            customer_id=customer_id,
            operator=operator,
            all_customers=all_customers,
        )


def parse_customer_claim(claims: dict[str, Any], claim: str) -> int | None:
    """The customer id a token is bound to, None when it has no such claim; AuthError when the claim is there
    but is not a JSON integer from 1 to 2^63-1 (null, a bool, a float such as 7.0, a string, anything else):
    a claim the provider did not mean is never read as a customer, nor as "no customer"."""
    if claim not in claims:
        return None
    raw = claims[claim]
    if type(raw) is not int or not 1 <= raw <= MAX_CUSTOMER_ID:
        raise AuthError(f"the token's {claim!r} claim is not a customer id (an integer from 1 to {MAX_CUSTOMER_ID})")
    return raw


def _scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    scopes: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(item for item in value if isinstance(item, str))
    return frozenset(scopes)


_bearer = HTTPBearer(auto_error=False, description="A JWT from the identity provider (see docs/security.md)")


def _unauthorized(reason: str | None) -> HTTPException:
    challenge = f'Bearer realm="{REALM}"'
    if reason is not None:
        challenge += f', error="invalid_token", error_description="{reason}"'
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        reason or "a bearer token is required",
        headers={"WWW-Authenticate": challenge},
    )


def _forbidden(reason: str, scopes: list[str]) -> HTTPException:
    return HTTPException(
        status.HTTP_403_FORBIDDEN,
        reason,
        headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", scope="{" ".join(scopes)}"'},
    )


async def _verified_principal(authenticator: Authenticator, token: str | None, method: str, path: str) -> Principal:
    """The token's principal, or the HTTPException (401, or 403 for a token bound to no customer) to answer."""
    if not token:
        raise _unauthorized(None)
    try:
        return await authenticator.principal(token)
    except AuthError as exc:
        log.info("%s %s: token refused: %s", method, path, exc)
        raise _unauthorized(str(exc)) from None
    except NotBound as exc:
        log.info("%s %s: token refused: %s", method, path, exc)
        raise _forbidden(str(exc), [CUSTOMERS_ALL]) from None


def _bearer_token(authorization: bytes | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def authenticated(
    request: Request,
    security_scopes: SecurityScopes,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller, holding every scope the route asks for (`Security(authenticated, scopes=[...])`)."""
    authenticator: Authenticator = request.app.state.authenticator
    if not authenticator.enabled:
        return DEVELOPMENT_PRINCIPAL
    principal: Principal | None = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is None:  # AuthenticateFirst did not run (an app without it, or a route it did not know)
        usable = credentials is not None and credentials.scheme.lower() == "bearer" and credentials.credentials
        token = credentials.credentials if usable and credentials is not None else None
        principal = await _verified_principal(authenticator, token, request.method, request.url.path)
    missing = [scope for scope in security_scopes.scopes if not _grants(principal, scope)]
    if missing:
        raise _forbidden(f"the token lacks the scope {' '.join(missing)}", missing)
    return principal


# What answers without a token (the probes, /metrics, the service's card and its API documents): every other
# path needs one, so a route added later is covered without a list to keep up to date.
OPEN_PATHS = frozenset(
    {"/", "/healthz", "/readyz", "/metrics", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
)


class AuthenticateFirst:
    """Verify the bearer token before anything reads the request's body: without a valid token the answer is
    the same 401 (or 403 for a token bound to no customer) the routes' dependency gives, but the body is never
    read nor parsed. The principal is left in the scope for the dependency, which still checks the route's
    scopes. Fails closed: every path but `OPEN_PATHS` needs a token (an unknown one too: 401, not 404)."""

    def __init__(self, app: ASGIApp, *, service_app: Starlette) -> None:
        self.app = app
        self.service_app = service_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authenticator: Authenticator | None = getattr(self.service_app.state, "authenticator", None)
        if scope["type"] != "http" or authenticator is None or not authenticator.enabled or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        try:
            principal = await _verified_principal(
                authenticator, _bearer_token(authorization), scope["method"], scope["path"]
            )
        except HTTPException as exc:
            headers = [
                (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (exc.headers or {}).items()
            ]
            # The body, if any, is left unread: close the connection rather than read it to keep it alive.
            await send_problem(
                send, exc.status_code, str(exc.detail), [*headers, *([CLOSE] if has_body(scope) else [])]
            )
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)


def _grants(principal: Principal, scope: str) -> bool:
    return scope in principal.scopes or (principal.operator and scope in READ_SCOPES)


def requires(*scopes: str) -> Any:
    """A route parameter's annotation: the caller, holding `scopes`."""
    return Annotated[Principal, Security(authenticated, scopes=list(scopes))]


OrdersWriter = requires(ORDERS_WRITE)
OrdersReader = requires(ORDERS_READ)
OrdersCanceller = requires(ORDERS_CANCEL)
OrdersOperator = requires(ORDERS_OPERATE)
CustomersWriter = requires(CUSTOMERS_WRITE)
CustomersReader = requires(CUSTOMERS_READ)

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "No bearer token, or one that is malformed, expired, wrongly signed or not meant for "
        "this API; `WWW-Authenticate` says which"
    },
    403: {
        "description": "The token lacks a scope this operation needs, or is bound to no customer without the "
        "`customers:all` scope"
    },
}
