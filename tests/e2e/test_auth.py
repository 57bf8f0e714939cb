"""Bearer tokens on both APIs, the services running as processes with authentication on.

The identity provider is this test: its keys, its JWKS on 127.0.0.1, the tokens it signs and the ones it
forges. Each refused case checks the status and the `WWW-Authenticate` challenge; the binding of a token to a
customer is checked on every route that reads or changes an order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from saga_common.web.auth import (
    CUSTOMERS_ALL,
    CUSTOMERS_READ,
    CUSTOMERS_WRITE,
    ORDERS_CANCEL,
    ORDERS_READ,
    ORDERS_WRITE,
    SCOPES,
)
from saga_dev.localstack import SagaEnvironment
from tests.support import auth
from tests.support.processes import ServiceProcess, both_services
from tests.support.waiting import eventually, unchanged_for

OPERATOR = "saga:operator"
JWKS_CACHE_S = 3  # how long the services trust fetched keys here: a withdrawn key stops within this


@pytest.fixture(scope="module")
def services(saga_env_module: SagaEnvironment, idp) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    server, _ = idp
    env = server.service_env(
        SAGA_AUTH_JWKS_MIN_REFRESH_S="1", SAGA_AUTH_TOKEN_CACHE_S="1", SAGA_AUTH_JWKS_CACHE_S=str(JWKS_CACHE_S)
    )
    with both_services(saga_env_module, env) as services:
        yield services


def token(idp, *scopes: str, customer_id: int | None = None, **claims) -> dict[str, str]:
    _, key = idp
    return auth.bearer(auth.sign(key, auth.KID, scope=" ".join(scopes), customer_id=customer_id, **claims))


async def new_customer(client, customers_url: str, idp, balance: str = "100.00") -> int:
    response = await client.post(
        f"{customers_url}/customers",
        json={"name": "auth test", "balance": balance},
        headers=token(idp, CUSTOMERS_WRITE, CUSTOMERS_ALL),
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


async def new_order(client, order_url: str, headers: dict[str, str], customer_id: int, price: str = "10.00"):
    body = {"customer_id": customer_id, "product_id": 1, "quantity": 1, "total_price": price}
    return await client.post(f"{order_url}/orders/", json=body, headers=headers)


def routes(services) -> list[tuple[str, str, dict | None]]:
    order, customer = services
    return [
        ("POST", f"{order.base_url}/orders/", {"customer_id": 1, "product_id": 1, "quantity": 1, "total_price": "1"}),
        ("GET", f"{order.base_url}/orders/1", None),
        ("GET", f"{order.base_url}/orders/1/saga", None),
        ("GET", f"{order.base_url}/orders", None),
        ("POST", f"{order.base_url}/orders/1/cancel", None),
        ("POST", f"{customer.base_url}/customers", {"name": "x", "balance": "1000000.00"}),
        ("GET", f"{customer.base_url}/customers", None),
        ("GET", f"{customer.base_url}/customers/1", None),
        ("GET", f"{customer.base_url}/customers/1/reservations", None),
    ]


async def test_probes_and_metrics_stay_open(client, services):
    for service in services:
        for path in ("/", "/healthz", "/readyz", "/metrics"):
            response = await client.get(f"{service.base_url}{path}")
            assert response.status_code == 200, (service.module, path, response.text)


async def test_no_token_is_401_with_a_challenge_on_every_route(client, services):
    for method, url, body in routes(services):
        response = await client.request(method, url, json=body)
        assert response.status_code == 401, (method, url, response.status_code, response.text)
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="saga"'), url


async def test_another_scheme_is_401(client, services):
    order, _ = services
    response = await client.get(f"{order.base_url}/orders", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


def forged_tokens(idp) -> dict[str, str]:
    _, key = idp
    scopes = " ".join([*SCOPES, OPERATOR])
    stranger = auth.rsa_key()
    now = int(time.time())
    return {
        "expired": auth.sign(key, auth.KID, scope=scopes, exp=now - 120, iat=now - 720),
        "wrong audience": auth.sign(key, auth.KID, scope=scopes, aud="another-api"),
        "wrong issuer": auth.sign(key, auth.KID, scope=scopes, iss="https://evil.test/"),
        "bad signature": auth.sign(stranger, auth.KID, scope=scopes),
        "alg none": auth.unsigned(auth.KID, scope=scopes),
        "HMAC with the public key": auth.hmac_with_public_key(key, auth.KID, scope=scopes),
        "unknown key id": auth.sign(stranger, "no-such-key", scope=scopes),
        "malformed": "not.a.jwt",
        "garbage": "x" * 40,
        "no expiry": auth.sign(key, auth.KID, scope=scopes, exp=None),
        "not valid yet": auth.sign(key, auth.KID, scope=scopes, nbf=now + 600),
        "tampered claims": _tamper(auth.sign(key, auth.KID, scope=ORDERS_READ), scope=scopes),
    }


def _tamper(token: str, **overrides) -> str:
    header, _, signature = token.split(".")
    return f"{header}.{auth.unsigned(auth.KID, **overrides).split('.')[1]}.{signature}"


@pytest.mark.parametrize(
    "case",
    [
        "expired",
        "wrong audience",
        "wrong issuer",
        "bad signature",
        "alg none",
        "HMAC with the public key",
        "unknown key id",
        "malformed",
        "garbage",
        "no expiry",
        "not valid yet",
        "tampered claims",
    ],
)
async def test_bad_tokens_are_401_invalid_token(client, services, idp, case):
    bad = forged_tokens(idp)[case]
    for method, url, body in routes(services):
        response = await client.request(method, url, json=body, headers=auth.bearer(bad))
        assert response.status_code == 401, (case, method, url, response.status_code, response.text)
        challenge = response.headers["WWW-Authenticate"]
        assert 'error="invalid_token"' in challenge, (case, challenge)
        assert bad not in response.text and bad not in challenge


async def test_clock_skew_within_the_leeway_is_accepted(client, services, idp):
    order, _ = services
    now = int(time.time())
    response = await client.get(
        f"{order.base_url}/orders", headers=token(idp, ORDERS_READ, CUSTOMERS_ALL, exp=now - 5, iat=now - 600)
    )
    assert response.status_code == 200, response.text


async def test_missing_scope_is_403(client, services, idp):
    order, customer = services
    cases = [
        (
            "POST",
            f"{order.base_url}/orders/",
            ORDERS_READ,
            {"customer_id": 1, "product_id": 1, "quantity": 1, "total_price": "1"},
        ),
        ("GET", f"{order.base_url}/orders/1", ORDERS_WRITE, None),
        ("GET", f"{order.base_url}/orders", ORDERS_CANCEL, None),
        ("POST", f"{order.base_url}/orders/1/cancel", ORDERS_READ, None),
        ("POST", f"{customer.base_url}/customers", CUSTOMERS_READ, {"name": "x", "balance": "1.00"}),
        ("GET", f"{customer.base_url}/customers/1", ORDERS_READ, None),
    ]
    for method, url, scope, body in cases:
        response = await client.request(method, url, json=body, headers=token(idp, scope, CUSTOMERS_ALL))
        assert response.status_code == 403, (method, url, response.text)
        assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


async def test_the_saga_runs_with_tokens(client, services, idp):
    order, customer = services
    customer_id = await new_customer(client, customer.base_url, idp)
    headers = token(idp, ORDERS_WRITE, ORDERS_READ, customer_id=customer_id)
    created = await new_order(client, order.base_url, headers, customer_id, "30.00")
    assert created.status_code == 201, created.text
    done = await client.get(f"{order.base_url}/orders/{created.json()['id']}?wait=15", headers=headers)
    assert done.json()["status"] == "fulfilled", done.text
    mine = await client.get(
        f"{customer.base_url}/customers/{customer_id}", headers=token(idp, CUSTOMERS_READ, customer_id=customer_id)
    )
    assert mine.status_code == 200 and mine.json()["balance"] == "70.00", mine.text


async def test_a_customer_token_sees_and_changes_only_its_own_orders(client, services, idp):
    order, customer = services
    alice = await new_customer(client, customer.base_url, idp)
    bob = await new_customer(client, customer.base_url, idp)
    as_alice = token(idp, ORDERS_WRITE, ORDERS_READ, ORDERS_CANCEL, CUSTOMERS_READ, customer_id=alice)
    backend = token(idp, ORDERS_WRITE, ORDERS_READ, CUSTOMERS_ALL)

    alice_order = (await new_order(client, order.base_url, as_alice, alice)).json()["id"]
    bob_order = await new_order(client, order.base_url, backend, bob)
    assert bob_order.status_code == 201, bob_order.text
    bob_order_id = bob_order.json()["id"]
    await client.get(f"{order.base_url}/orders/{bob_order_id}?wait=15", headers=backend)

    # Ordering for someone else is refused outright.
    refused = await new_order(client, order.base_url, as_alice, bob)
    assert refused.status_code == 403, refused.text

    # Bob's order does not exist for Alice: 404 like an order that never existed, on every route.
    missing_id = 2**62
    for path in (f"/orders/{bob_order_id}", f"/orders/{bob_order_id}/saga", f"/orders/{bob_order_id}?wait=1"):
        theirs = await client.get(f"{order.base_url}{path}", headers=as_alice)
        never = await client.get(
            f"{order.base_url}{path.replace(str(bob_order_id), str(missing_id))}", headers=as_alice
        )
        assert theirs.status_code == 404 == never.status_code, (path, theirs.text)
        assert theirs.json()["detail"].replace(str(bob_order_id), "N") == never.json()["detail"].replace(
            str(missing_id), "N"
        )
    cancel = await client.post(f"{order.base_url}/orders/{bob_order_id}/cancel", headers=as_alice)
    assert cancel.status_code == 404, cancel.text
    assert (await client.get(f"{order.base_url}/orders/{bob_order_id}", headers=backend)).json()["status"] == (
        "fulfilled"
    )

    # Listings hold only Alice's orders, whatever filter she asks for.
    listed = await client.get(f"{order.base_url}/orders?limit=100", headers=as_alice)
    assert {o["customer_id"] for o in listed.json()} == {alice}
    assert alice_order in {o["id"] for o in listed.json()}
    asked = await client.get(f"{order.base_url}/orders?customer_id={bob}", headers=as_alice)
    assert asked.json() == []

    # Her own order she reads and cancels.
    assert (await client.get(f"{order.base_url}/orders/{alice_order}?wait=15", headers=as_alice)).status_code == 200
    assert (await client.post(f"{order.base_url}/orders/{alice_order}/cancel", headers=as_alice)).status_code == 202

    # The customer API: her record, not Bob's.
    assert (await client.get(f"{customer.base_url}/customers/{alice}", headers=as_alice)).status_code == 200
    for path in (f"/customers/{bob}", f"/customers/{bob}/reservations"):
        assert (await client.get(f"{customer.base_url}{path}", headers=as_alice)).status_code == 404, path
    assert [c["id"] for c in (await client.get(f"{customer.base_url}/customers", headers=as_alice)).json()] == [alice]
    created = await client.post(
        f"{customer.base_url}/customers",
        json={"name": "mallory", "balance": "1000000.00"},
        headers=token(idp, CUSTOMERS_WRITE, customer_id=alice),
    )
    assert created.status_code == 403, created.text


async def test_the_operator_reads_everything_and_changes_nothing(client, services, idp):
    order, customer = services
    someone = await new_customer(client, customer.base_url, idp)
    placed = await new_order(client, order.base_url, token(idp, ORDERS_WRITE, CUSTOMERS_ALL), someone)
    operator = token(idp, OPERATOR)
    assert (await client.get(f"{order.base_url}/orders/{placed.json()['id']}", headers=operator)).status_code == 200
    assert (await client.get(f"{customer.base_url}/customers/{someone}", headers=operator)).status_code == 200
    assert (
        await client.post(f"{order.base_url}/orders/{placed.json()['id']}/cancel", headers=operator)
    ).status_code == 403
    assert (await new_order(client, order.base_url, operator, someone)).status_code == 403


async def test_keys_rotate_without_a_restart_and_unknown_keys_cannot_flood_the_provider(client, services, idp):
    server, old_key = idp
    order, _ = services
    new_key = auth.ec_key()
    new_kid = f"key-{uuid.uuid4().hex[:6]}"
    server.publish((old_key, auth.KID), (new_key, new_kid))
    rotated = auth.bearer(auth.sign(new_key, new_kid, scope=f"{ORDERS_READ} {CUSTOMERS_ALL}"))
    # The first request with the new kid makes the service refetch the JWKS (at most once a second).
    await eventually(
        lambda: client.get(f"{order.base_url}/orders", headers=rotated),
        until=lambda answer: answer.status_code == 200,
        interval=0.2,
        what="a token of the new key accepted",
    )

    # Tokens naming keys nobody published: refused, and the JWKS is not fetched once per request.
    before = server.fetches
    started = time.monotonic()
    for _ in range(30):
        stranger = auth.bearer(auth.sign(auth.ec_key(), uuid.uuid4().hex, scope=ORDERS_READ))
        assert (await client.get(f"{order.base_url}/orders", headers=stranger)).status_code == 401
    elapsed = time.monotonic() - started
    assert server.fetches - before <= elapsed / 1.0 + 2, (server.fetches - before, elapsed)

    # The old key retired: once the provider stops publishing it, its tokens stop working (a token verified
    # before is remembered for SAGA_AUTH_TOKEN_CACHE_S, 1 s here).
    server.publish((new_key, new_kid))
    old = auth.bearer(auth.sign(old_key, auth.KID, scope=f"{ORDERS_READ} {CUSTOMERS_ALL}"))
    unknown = auth.bearer(auth.sign(auth.ec_key(), "trigger-refresh", scope=ORDERS_READ))

    async def old_key_refused() -> bool:
        if (await client.get(f"{order.base_url}/orders", headers=old)).status_code == 401:
            return True
        await client.get(f"{order.base_url}/orders", headers=unknown)  # an unknown kid makes it refetch the JWKS
        return False

    await eventually(old_key_refused, interval=0.3, what="a token of the retired key refused")
    # Put the module's provider back as the other tests expect it, and wait until the services trust the key
    # again (a token naming it makes them refetch, at most once per SAGA_AUTH_JWKS_MIN_REFRESH_S).
    server.publish((old_key, auth.KID), (new_key, new_kid))
    await eventually(
        lambda: client.get(f"{order.base_url}/orders", headers=old),
        until=lambda answer: answer.status_code == 200,
        interval=0.3,
        what="a token of the restored key accepted",
    )


# Customer binding fails closed: only a JSON integer in 1..2^63-1 binds; no claim acts for every customer only
# with customers:all (or reads, with the operator scope); a claim that is there but is no customer id is invalid.
CLAIM_CASES = {
    "missing": (None, 403),
    "misspelled": ({"customerId": 1}, 403),
    "null": ({"customer_id": None}, 401),
    "float": ({"customer_id": 1.0}, 401),
    "string": ({"customer_id": "1"}, 401),
    "non-ASCII digits": ({"customer_id": "\u0661"}, 401),
    "underscore": ({"customer_id": "1_0"}, 401),
    "huge": ({"customer_id": 2**64}, 401),
    "negative": ({"customer_id": -1}, 401),
    "zero": ({"customer_id": 0}, 401),
    "bool": ({"customer_id": True}, 401),
    "list": ({"customer_id": [1]}, 401),
}
NOT_ALL_CUSTOMERS = " ".join(scope for scope in SCOPES if scope != CUSTOMERS_ALL)


def claim_token(idp, extra: dict | None, scope: str = NOT_ALL_CUSTOMERS) -> dict[str, str]:
    _, key = idp
    payload = auth.claims(scope=scope, jti=uuid.uuid4().hex) | (extra or {})
    return auth.bearer(auth.sign_claims(key, auth.KID, payload))


@pytest.mark.parametrize("case", list(CLAIM_CASES))
async def test_a_token_without_a_valid_customer_claim_acts_for_nobody(client, services, idp, case):
    order, customer = services
    extra, expected = CLAIM_CASES[case]
    headers = claim_token(idp, extra)
    someone = await new_customer(client, customer.base_url, idp)
    attempts = [
        ("GET", f"{order.base_url}/orders", None),
        ("GET", f"{order.base_url}/orders/1", None),
        (
            "POST",
            f"{order.base_url}/orders/",
            {"customer_id": someone, "product_id": 1, "quantity": 1, "total_price": "1"},
        ),
        ("GET", f"{customer.base_url}/customers", None),
        ("GET", f"{customer.base_url}/customers/{someone}", None),
        ("POST", f"{customer.base_url}/customers", {"name": "mallory", "balance": "1000000.00"}),
    ]
    for method, url, body in attempts:
        response = await client.request(method, url, json=body, headers=headers)
        assert response.status_code == expected, (case, method, url, response.status_code, response.text)
        challenge = response.headers["WWW-Authenticate"]
        if expected == 401:
            assert 'error="invalid_token"' in challenge and "customer_id" in response.json()["detail"], challenge
        else:
            assert 'error="insufficient_scope", scope="customers:all"' in challenge, challenge
            assert "bound to no customer" in response.json()["detail"], response.text


async def test_an_invalid_customer_claim_is_refused_even_with_customers_all(client, services, idp):
    order, _ = services
    for extra in ({"customer_id": None}, {"customer_id": "7"}, {"customer_id": 7.0}):
        response = await client.get(
            f"{order.base_url}/orders", headers=claim_token(idp, extra, f"{ORDERS_READ} {CUSTOMERS_ALL}")
        )
        assert response.status_code == 401, (extra, response.text)


async def test_customers_all_acts_for_every_customer_and_a_claim_narrows_it(client, services, idp):
    order, customer = services
    alice = await new_customer(client, customer.base_url, idp)
    bob = await new_customer(client, customer.base_url, idp)
    back_office = token(idp, ORDERS_WRITE, ORDERS_READ, CUSTOMERS_READ, CUSTOMERS_ALL)
    for someone in (alice, bob):
        assert (await new_order(client, order.base_url, back_office, someone)).status_code == 201
        assert (await client.get(f"{customer.base_url}/customers/{someone}", headers=back_office)).status_code == 200
    # customers:all and a customer claim: the claim wins, the token is Alice's only.
    narrowed = token(idp, ORDERS_WRITE, ORDERS_READ, CUSTOMERS_READ, CUSTOMERS_ALL, customer_id=alice)
    assert (await new_order(client, order.base_url, narrowed, bob)).status_code == 403
    assert (await client.get(f"{customer.base_url}/customers/{bob}", headers=narrowed)).status_code == 404
    listed = await client.get(f"{order.base_url}/orders?limit=100", headers=narrowed)
    assert {o["customer_id"] for o in listed.json()} == {alice}, listed.text


async def test_a_key_withdrawn_from_the_jwks_verifies_no_new_token_after_the_cache_time(client, services, idp):
    """No token naming an unknown key is sent here: the withdrawal must be seen by the cache's expiry alone."""
    server, old_key = idp
    order, _ = services
    extra_key, extra_kid = auth.ec_key(), f"withdrawn-{uuid.uuid4().hex[:6]}"

    def fresh() -> dict[str, str]:  # a new token each time: none is answered from the verified-token cache
        scope = f"{ORDERS_READ} {CUSTOMERS_ALL}"
        return auth.bearer(auth.sign(extra_key, extra_kid, scope=scope, jti=uuid.uuid4().hex))

    async def status() -> int:
        return (await client.get(f"{order.base_url}/orders", headers=fresh())).status_code

    server.publish((old_key, auth.KID), (extra_key, extra_kid))
    await eventually(status, until=lambda code: code == 200, timeout=10, interval=0.2, what="the new key trusted")
    server.publish((old_key, auth.KID))
    withdrawn = time.monotonic()
    await eventually(status, until=lambda code: code == 401, timeout=JWKS_CACHE_S + 10, interval=0.2)
    elapsed = time.monotonic() - withdrawn
    assert elapsed <= JWKS_CACHE_S + 1.5, f"the withdrawn key verified new tokens for {elapsed:.1f}s"


async def test_no_token_leaks_into_logs_metrics_timelines_or_error_bodies(client, services, idp):
    """Scan what a saga run with tokens produced: the services' logs, /metrics, the saga timeline, and the answers
    to good and bad tokens."""
    order, customer = services
    customer_id = await new_customer(client, customer.base_url, idp)
    headers = token(idp, ORDERS_WRITE, ORDERS_READ, ORDERS_CANCEL, customer_id=customer_id)
    secret = headers["Authorization"].removeprefix("Bearer ")
    signature = secret.rsplit(".", 1)[1]
    placed = await new_order(client, order.base_url, headers, customer_id, "5.00")
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]
    produced = [placed.text, placed.headers.get("WWW-Authenticate", "")]
    produced.append((await client.get(f"{order.base_url}/orders/{order_id}?wait=15", headers=headers)).text)
    produced.append((await client.post(f"{order.base_url}/orders/{order_id}/cancel", headers=headers)).text)
    produced.append((await client.get(f"{order.base_url}/orders/{order_id}/saga", headers=headers)).text)
    expired = auth.sign(idp[1], auth.KID, scope=ORDERS_READ, exp=int(time.time()) - 600)
    refused = await client.get(f"{order.base_url}/orders", headers=auth.bearer(expired))
    produced += [refused.text, refused.headers["WWW-Authenticate"]]
    for service in services:
        produced.append((await client.get(f"{service.base_url}/metrics")).text)
    for service in services:  # once its log has its last lines
        produced.append(await eventually(service.log_text, until=unchanged_for(0.5), what="the log quiet"))
    text = "\n".join(produced)
    for leaked in (secret, signature, expired, expired.rsplit(".", 1)[1]):
        assert leaked not in text
    assert "Bearer ey" not in text
