"""`helm test`: one saga end to end, through the cluster's Services.

Creates a customer with enough balance on the customer service, orders for it on the order service, and
polls the order until it is `fulfilled`. Fails if the order ends otherwise, or is still pending after
TIMEOUT_S. Standard library only: it runs in the order-service image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

ORDER_URL = os.environ["ORDER_URL"].rstrip("/")
CUSTOMER_URL = os.environ["CUSTOMER_URL"].rstrip("/")
TIMEOUT_S = float(os.environ.get("TIMEOUT_S", "60"))
DEADLINE = time.monotonic() + TIMEOUT_S


class Failed(Exception):
    pass


def mint(*scopes: str, customer: int | None = None) -> str:
    """A token signed with the development signer's key (`sagactl token`, in this image)."""
    command = ["sagactl", "token", "--subject", "helm-test", "--ttl", str(TIMEOUT_S + 120)]
    command += ["--issuer", os.environ["SAGA_AUTH_ISSUER"], "--audience", os.environ["SAGA_AUTH_AUDIENCE"]]
    for scope in scopes:
        command += ["--scope", scope]
    if customer is not None:
        command += ["--customer", str(customer)]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def call(method: str, url: str, body: dict | None = None, expect: int = 200, token: str | None = None) -> dict:
    """One JSON request; connection errors are retried until the deadline (a pod may be restarting)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    while True:
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, payload = response.status, response.read()
            break
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
            break
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if time.monotonic() > DEADLINE:
                raise Failed(f"{method} {url}: {exc}") from None
            time.sleep(1)
    if status != expect:
        raise Failed(f"{method} {url}: HTTP {status}, expected {expect}: {payload[:500].decode(errors='replace')}")
    return json.loads(payload)


def main() -> int:
    signer = bool(os.environ.get("SAGA_DEV_SIGNING_KEY"))
    admin_token = mint("customers:write", "customers:all") if signer else os.environ.get("ADMIN_TOKEN")
    # Without a token, the APIs answer 401: authentication is on.
    call("GET", f"{ORDER_URL}/orders", expect=401)
    if admin_token:
        customer = call(
            "POST", f"{CUSTOMER_URL}/customers", {"name": "helm test", "balance": "100.00"}, 201, admin_token
        )
    else:
        customer = {"id": 1}
    token = (
        mint("orders:write", "orders:read", customer=customer["id"]) if signer else os.environ.get("CUSTOMER_TOKEN")
    )
    if not token:
        print("no token for the order API (set tests.existingSecret): checked the 401 only", flush=True)
        return 0
    order = call(
        "POST",
        f"{ORDER_URL}/orders/",
        {"customer_id": customer["id"], "product_id": 1, "status": "pending", "quantity": 1, "total_price": 10.0},
        expect=201,
        token=token,
    )
    print(f"order {order['id']} for customer {customer['id']}: {order['status']}", flush=True)
    while True:
        order = call("GET", f"{ORDER_URL}/orders/{order['id']}", token=token)
        if order["status"] == "fulfilled":
            print(f"order {order['id']}: fulfilled (trace {order.get('trace_id')})", flush=True)
            return 0
        if order["status"] != "pending":
            raise Failed(f"order {order['id']} ended {order['status']}: {order.get('rejection_reason')}")
        if time.monotonic() > DEADLINE:
            raise Failed(f"order {order['id']} still pending after {TIMEOUT_S:.0f} s")
        time.sleep(1)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Failed as failure:
        print(f"saga test failed: {failure}", file=sys.stderr, flush=True)
        sys.exit(1)
