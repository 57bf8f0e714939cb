"""The `helm test` hook: its script, exactly as the chart's ConfigMap carries it, run against a stand-in of
the two APIs (no cluster here) that verifies its bearer tokens as the services do (the chart's development
signer: the certificate the services mount, the key the test pod mounts), and the routes it calls checked
against the services' real apps."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from order_service.settings import OrderSettings
from saga_common.web.auth import Authenticator, AuthError
from saga_dev.tls import Authority, TlsFiles
from tests.support.chart import rendered_variant
from tests.support.routes import has_route


def hook_objects() -> tuple[dict[str, Any], dict[str, Any]]:
    rendered = rendered_variant("defaults")
    pod = next(p for p in rendered.of_kind("Pod") if p["metadata"]["annotations"]["helm.sh/hook"] == "test")
    config_map = rendered.get("ConfigMap", pod["spec"]["volumes"][0]["configMap"]["name"])
    assert config_map["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert int(config_map["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        pod["metadata"]["annotations"]["helm.sh/hook-weight"]
    ), "the script exists before the pod"
    return pod, config_map


class FakeApis:
    """The order and customer APIs as far as the smoke test sees them; the order ends `outcome`."""

    def __init__(self, outcome: str, signer: Path, pending_reads: int = 1) -> None:
        self.outcome = outcome
        self.pending_reads = pending_reads
        self.requests: list[tuple[str, str, Any]] = []
        self.principals: list[tuple[frozenset[str], int | None]] = []
        env = pod_env()
        self.settings = OrderSettings(
            auth_enabled=True,
            auth_issuer=env["SAGA_AUTH_ISSUER"],
            auth_audience=env["SAGA_AUTH_AUDIENCE"],
            auth_jwks_url=(signer / "certificate.pem").as_uri(),
        )

    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        try:
            principal = asyncio.run(Authenticator(self.settings).principal(header.removeprefix("Bearer ")))
        except AuthError:
            return False
        self.principals.append((principal.scopes, principal.customer_id))
        return True

    def handler(self) -> type[BaseHTTPRequestHandler]:
        apis = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                apis.requests.append(("POST", self.path, body))
                if not apis.authorized(self.headers.get("Authorization")):
                    self._reply(401, {"detail": "a bearer token is required"})
                    return
                if self.path == "/customers":
                    self._reply(201, {"id": 7, "name": body["name"], "balance": body["balance"]})
                elif self.path == "/orders/":
                    self._reply(201, {"id": 3, "status": "pending", **body})
                else:
                    self._reply(404, {"detail": "not found"})

            def do_GET(self) -> None:
                apis.requests.append(("GET", self.path, None))
                if not apis.authorized(self.headers.get("Authorization")):
                    self._reply(401, {"detail": "a bearer token is required"})
                    return
                if self.path != "/orders/3":
                    self._reply(404, {"detail": "not found"})
                    return
                apis.pending_reads -= 1
                status = "pending" if apis.pending_reads >= 0 else apis.outcome
                self._reply(200, {"id": 3, "status": status, "rejection_reason": "insufficient_balance"})

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def pod_env() -> dict[str, str]:
    pod, _ = hook_objects()
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}


@pytest.fixture
def signer(tmp_path: Path) -> Path:
    """The development signer, as the chart renders it: the key the test pod mounts, the certificate (a Secret
    of its own) the services mount."""
    rendered = rendered_variant("defaults")
    pod, _ = hook_objects()
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "signer")
    service = rendered.service_workloads()[0]
    verifier = next(v for v in service.spec["volumes"] if v["name"] == "token-verifier")
    directory = tmp_path / "signer"
    directory.mkdir()
    for secret_volume in (volume, verifier):
        secret = rendered.get("Secret", secret_volume["secret"]["secretName"])
        for key, value in secret["data"].items():
            (directory / key).write_bytes(base64.b64decode(value))
    return directory


@pytest.fixture
def script(tmp_path: Path) -> Path:
    _, config_map = hook_objects()
    path = tmp_path / "saga_smoke.py"
    path.write_text(config_map["data"]["saga_smoke.py"])
    return path


def serve(apis: FakeApis, tls: TlsFiles | None = None) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), apis.handler())
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert, tls.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run(
    script: Path, url: str, signer: Path, timeout: str = "20", extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = pod_env() | {"ORDER_URL": url, "CUSTOMER_URL": url + "/", "TIMEOUT_S": timeout} | (extra_env or {})
    # sagactl, as in the order-service image; the key where the pod mounts it.
    env["PATH"] = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    env["SAGA_DEV_SIGNING_KEY"] = str(signer / Path(env["SAGA_DEV_SIGNING_KEY"]).name)
    env["HOME"] = os.environ.get("HOME", "/tmp")
    return subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)


def test_the_test_creates_a_customer_orders_and_waits_for_fulfilment(script: Path, signer: Path) -> None:
    apis = FakeApis("fulfilled", signer)
    for url in serve(apis):
        result = run(script, url, signer)
    assert result.returncode == 0, result.stderr
    assert apis.requests.pop(0) == ("GET", "/orders", None), "first: no token, a 401"
    assert apis.requests[0] == ("POST", "/customers", {"name": "helm test", "balance": "100.00"})
    # Every request but the first carried a token the services accept: an admin one, then one bound to the customer.
    assert apis.principals[0] == (frozenset({"customers:write", "customers:all"}), None)
    assert set(apis.principals[1:]) == {(frozenset({"orders:write", "orders:read"}), 7)}
    assert len(apis.principals) == len(apis.requests)
    assert apis.requests[1] == (
        "POST",
        "/orders/",
        {"customer_id": 7, "product_id": 1, "status": "pending", "quantity": 1, "total_price": 10.0},
    )
    assert [r[:2] for r in apis.requests[2:]] == [("GET", "/orders/3")] * 2
    assert "fulfilled" in result.stdout


def test_over_https_the_test_verifies_the_apis_with_ssl_cert_file(script: Path, signer: Path, tmp_path: Path) -> None:
    """With tls.enabled the pod gets https:// URLs and SSL_CERT_FILE (tests/chart/test_tls.py): the script's
    urllib verifies the APIs with that CA, and without it refuses them."""
    tls = Authority.create("helm test CA").write_server_files(tmp_path / "tls", ["127.0.0.1"])
    apis = FakeApis("fulfilled", signer)
    for url in serve(apis, tls):
        result = run(script, url, signer, extra_env={"SSL_CERT_FILE": str(tls.ca)})
        assert result.returncode == 0, result.stderr
        assert "fulfilled" in result.stdout
        untrusted = run(script, url, signer, timeout="2")
    assert untrusted.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted.stderr


@pytest.mark.parametrize(("outcome", "message"), [("rejected", "ended rejected"), ("pending", "still pending")])
def test_the_test_fails_when_the_saga_does_not_fulfil(script: Path, signer: Path, outcome: str, message: str) -> None:
    apis = FakeApis(outcome, signer)
    for url in serve(apis):
        result = run(script, url, signer, timeout="10")
    assert result.returncode == 1
    assert message in result.stderr


def test_the_test_calls_real_routes_on_the_real_services() -> None:
    pod, _ = hook_objects()
    rendered = rendered_variant("defaults")
    env = pod_env()
    for variable, component in (("ORDER_URL", "order-service"), ("CUSTOMER_URL", "customer-service")):
        host, port = env[variable].removeprefix("http://").split(":")
        service = rendered.get("Service", host.split(".")[0])
        assert service["metadata"]["labels"]["app.kubernetes.io/component"] == component
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    assert has_route("customer-service", "POST", "/customers")
    assert has_route("order-service", "POST", "/orders/")
    assert has_route("order-service", "GET", "/orders/3")
    image = pod["spec"]["containers"][0]["image"]
    assert image == rendered.workload("order-service").containers()[0]["image"], "the order-service image, for Python"
    assert int(env["TIMEOUT_S"]) + 30 <= pod["spec"]["activeDeadlineSeconds"]
