"""HTTPS on the services' own listeners (SAGA_HTTP_TLS_CERT_FILE / SAGA_HTTP_TLS_KEY_FILE), against both services
running as processes with a certificate signed by a CA the test makes (saga_dev.tls): a client verifying that CA
is answered and runs a saga; a plain-HTTP client and a client that does not trust the CA get no HTTP answer. The
request bounds (saga_common.web.limits) hold over TLS: the event loop decrypts below the HTTP protocol."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from saga_dev.localstack import SagaEnvironment, ServiceProcess
from saga_dev.tls import Authority
from tests.support.processes import both_services
from tests.support.saga_client import SagaClient
from tests.support.sagactl import sagactl

MAX_HEADER = 16 * 1024
REQUEST_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """(CA, server certificate, server key, another CA that signed nothing here)."""
    folder = tmp_path_factory.mktemp("https")
    files = Authority.create("saga https test CA").write_server_files(folder / "server", ["127.0.0.1", "localhost"])
    other = folder / "other-ca.pem"
    other.write_bytes(Authority.create("someone else's CA").pem)
    return files.ca, files.cert, files.key, other


@pytest.fixture(scope="module")
def services(saga_env_module: SagaEnvironment, certificates) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    ca, cert, key, _ = certificates
    env = {
        "SAGA_HTTP_TLS_CERT_FILE": str(cert),
        "SAGA_HTTP_TLS_KEY_FILE": str(key),
        "SAGA_HTTP_MAX_HEADER_BYTES": str(MAX_HEADER),
        "SAGA_HTTP_REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S),
    }
    # Each start waits for /readyz over HTTPS, verifying the CA.
    with both_services(saga_env_module, env, tls_ca=ca) as services:
        yield services


@pytest.fixture
async def client(services) -> AsyncIterator[httpx.AsyncClient]:
    order, _ = services
    async with httpx.AsyncClient(timeout=20, verify=order.verify()) as http:
        yield http


def tls_connect(service: ServiceProcess, timeout: float = 10, server_hostname: str = "127.0.0.1") -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=service.tls_ca)
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=timeout)
    try:
        return context.wrap_socket(sock, server_hostname=server_hostname)
    except BaseException:
        sock.close()
        raise


def read_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    return data


async def test_https_answers_a_client_that_verifies_the_ca(client, services):
    for service in services:
        assert service.base_url.startswith("https://")
        response = await client.get(f"{service.base_url}/healthz")
        assert response.status_code == 200, response.text
    with tls_connect(services[0]) as sock:
        assert sock.version() in {"TLSv1.2", "TLSv1.3"}
        assert set(sock.getpeercert()["subjectAltName"]) == {("DNS", "localhost"), ("IP Address", "127.0.0.1")}


def test_plain_http_to_the_https_port_gets_no_http_answer(services):
    for service in services:
        with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            data = read_all(sock)
        # The TLS layer refuses the bytes before any HTTP is parsed: at most a TLS alert, then the connection closes.
        assert not data.startswith(b"HTTP/"), data[:200]
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{service.port}/healthz", timeout=10)


def test_a_client_that_does_not_trust_the_ca_is_refused_verification(services, certificates):
    _, _, _, other_ca = certificates
    for service in services:
        # The default trust store (certifi's public CAs), and another private CA: neither verifies the certificate.
        for verify in (True, ssl.create_default_context(cafile=other_ca)):
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(f"{service.base_url}/healthz", timeout=10, verify=verify)
        # The CA trusted, but a host name the certificate does not carry.
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
            tls_connect(service, server_hostname="saga.invalid").close()


async def test_a_saga_goes_through_over_https(client, services):
    order, customer = services
    saga = SagaClient(order.base_url, customer.base_url, client)
    customer_id = await saga.create_customer("100.00")
    created = await saga.create_order(customer_id, "30.00")
    fulfilled = await saga.wait_for_status(created["id"], {"fulfilled", "rejected"})
    assert fulfilled["status"] == "fulfilled", fulfilled
    assert Decimal(str((await saga.customer(customer_id))["balance"])) == Decimal("70.00")


def test_the_head_limit_holds_over_tls(services):
    for service in services:
        with tls_connect(service) as sock:
            padding = "a" * (2 * MAX_HEADER)
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: {padding}\r\n\r\n".encode())
            data = read_all(sock)
        assert data.startswith(b"HTTP/1.1 431 "), data[:200]


@pytest.mark.parametrize("case", ["nothing sent after the handshake", "half a request"])
def test_the_request_deadline_holds_over_tls(services, case):
    order, _ = services
    with tls_connect(order, timeout=REQUEST_TIMEOUT_S + 5) as sock:
        # The deadline starts once the handshake is done (the protocol's connection_made).
        started = time.monotonic()
        if case == "half a request":
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        data = read_all(sock)
        elapsed = time.monotonic() - started
    assert REQUEST_TIMEOUT_S - 0.5 <= elapsed <= REQUEST_TIMEOUT_S + 2, f"{case}: closed after {elapsed:.1f}s"
    if case == "half a request":
        assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    else:
        assert data == b"", data


async def test_sagactl_reaches_the_https_apis_with_ssl_cert_file(client, services, saga_env_module):
    """The project's own caller: sagactl's httpx clients trust the CA that SSL_CERT_FILE names (and, without it,
    the public CAs only, which do not verify these APIs)."""
    order, customer = services
    saga = SagaClient(order.base_url, customer.base_url, client)
    created = await saga.create_order(await saga.create_customer("10.00"), "3.00")
    await saga.wait_for_status(created["id"], {"fulfilled"})

    def readiness(**extra_env: str) -> list[dict]:
        environ = {"CUSTOMER_SERVICE_URL": customer.base_url} | extra_env
        result = sagactl(
            saga_env_module, "why", str(created["id"]), "--json", order_url=order.base_url, extra_env=environ
        )
        assert result.returncode in (0, 3), result.stderr
        return json.loads(result.stdout)["facts"]["services"]

    assert [(s["answered"], s["ready"]) for s in readiness(SSL_CERT_FILE=str(order.tls_ca)).values()] == [
        (True, True)
    ] * 2
    refused = readiness().values()
    assert [s["answered"] for s in refused] == [False, False]
    assert all("CERTIFICATE_VERIFY_FAILED" in s["error"] for s in refused), refused
