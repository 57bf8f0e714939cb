"""The HTTP edges' bounds, against the services running as processes with authentication on: a body too large,
a head too large, a client too slow, too many requests at once. Each is refused before the request costs work,
and the process's memory stays bounded while it happens.

Raw sockets where the point is what the server does before the client has finished (an HTTP client would
insist on sending the whole body first); every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import http.client
import select
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from saga_common.web.auth import CUSTOMERS_ALL, CUSTOMERS_WRITE, ORDERS_READ, ORDERS_WRITE
from saga_dev.localstack import SagaEnvironment
from tests.support import auth
from tests.support.processes import ServiceProcess, both_services
from tests.support.waiting import eventually

MAX_BODY = 64 * 1024
MAX_HEADER = 16 * 1024
REQUEST_TIMEOUT_S = 3.0
MAX_CONCURRENT = 8
RSS_GROWTH_BOUND_KB = 60 * 1024  # the chart's limit is 384 MiB; a body read into memory would be hundreds of MiB


@pytest.fixture(scope="module")
def services(saga_env_module: SagaEnvironment, idp) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    server, _ = idp
    env = server.service_env(
        SAGA_HTTP_MAX_BODY_BYTES=str(MAX_BODY),
        SAGA_HTTP_MAX_HEADER_BYTES=str(MAX_HEADER),
        SAGA_HTTP_REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
        SAGA_HTTP_MAX_CONCURRENT_REQUESTS=str(MAX_CONCURRENT),
    )
    with both_services(saga_env_module, env) as services:
        yield services


def bearer(idp, *scopes: str) -> str:
    _, key = idp
    return f"Bearer {auth.sign(key, auth.KID, scope=' '.join(scopes), jti=uuid.uuid4().hex)}"


def rss_kb(process: ServiceProcess) -> int:
    assert process.process is not None
    with open(f"/proc/{process.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def connect(process: ServiceProcess, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", process.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]
    return "\r\n".join(lines).encode()


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, str]:
    """The status and the text of the answer: its head, and the body its Content-Length announces."""
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock)
    response.begin()
    text = f"HTTP/1.1 {response.status} {response.reason}\r\n{response.headers}{response.read().decode('latin-1')}"
    return response.status, text


def stream_until_refused(sock: socket.socket, chunk: bytes, *, max_chunks: int, max_s: float) -> int:
    """Send `chunk` over and over (at most `max_chunks` times, for at most `max_s`) until the server closes the
    connection; the bytes it took."""
    sent = 0
    deadline = time.monotonic() + max_s
    sock.settimeout(2)
    for _ in range(max_chunks):
        if time.monotonic() > deadline:
            break
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            break
        sent += len(chunk)
    return sent


def chunked(size: int) -> bytes:
    return f"{size:x}\r\n".encode() + b"[" * size + b"\r\n"


def test_a_huge_body_without_a_token_is_refused_before_it_is_read(services):
    order, _ = services
    before = rss_kb(order)
    # Announced: 413 from the Content-Length alone, before one byte of the body is sent.
    with connect(order) as sock:
        sock.sendall(head("POST", "/orders/", "Content-Type: application/json", f"Content-Length: {2**30}"))
        status, text = read_response(sock)
        assert status == 413, text
        assert "connection: close" in text.lower(), text
        sent = stream_until_refused(sock, b"[" * 65536, max_chunks=4096, max_s=10)
    # Chunked, no length announced: 401 at once (the token is checked before the body), then the connection
    # closes while the client is still sending.
    with connect(order) as sock:
        sock.sendall(head("POST", "/orders/", "Content-Type: application/json", "Transfer-Encoding: chunked"))
        status, text = read_response(sock)
        assert status == 401, text
        assert 'WWW-Authenticate: Bearer realm="saga"'.lower() in text.lower(), text
        sent += stream_until_refused(sock, chunked(65536), max_chunks=4096, max_s=10)
    growth = rss_kb(order) - before
    assert growth < RSS_GROWTH_BOUND_KB, f"RSS grew by {growth} kB while refusing {sent} bytes of body"
    assert sent < 64 * 2**20, f"the service took {sent} bytes of a refused body before closing the connection"


def test_a_huge_body_with_a_token_is_413(services, idp):
    order, _ = services
    token = bearer(idp, ORDERS_WRITE, CUSTOMERS_ALL)
    before = rss_kb(order)
    with connect(order) as sock:
        sock.sendall(
            head(
                "POST",
                "/orders/",
                f"Authorization: {token}",
                "Content-Type: application/json",
                "Content-Length: 999999",
            )
        )
        status, text = read_response(sock)
        assert status == 413 and f"exceeds {MAX_BODY} bytes" in text, text
    # Streamed: counted as it arrives, refused once past the bound.
    with connect(order) as sock:
        sock.sendall(
            head(
                "POST",
                "/orders/",
                f"Authorization: {token}",
                "Content-Type: application/json",
                "Transfer-Encoding: chunked",
            )
        )
        sent = 0
        answered = False
        for _ in range(2048):  # 32 MiB at most
            try:
                sock.sendall(chunked(16384))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 16384
            if select.select([sock], [], [], 0)[0]:
                answered = True
                break
        assert answered, f"no answer after {sent} bytes of body"
        status, text = read_response(sock)
        assert status == 413, text
        # The loopback's socket buffers take a few MiB the server never read; the RSS check is the real bound.
        assert sent <= MAX_BODY + 16 * 2**20, f"refused only after {sent} bytes"
    assert rss_kb(order) - before < RSS_GROWTH_BOUND_KB


async def test_a_body_within_the_bound_is_served(client, services, idp):
    order, customer = services
    created = await client.post(
        f"{customer.base_url}/customers",
        json={"name": "limits", "balance": "10.00", "padding": "x" * (MAX_BODY // 2)},
        headers={"Authorization": bearer(idp, CUSTOMERS_WRITE, CUSTOMERS_ALL)},
    )
    assert created.status_code in (201, 422), created.text  # the body was read and judged on its content
    assert created.status_code != 413


def test_oversized_headers_are_431_and_the_service_stays_up(services, idp):
    for service in services:
        with connect(service) as sock:
            sock.sendall(head("GET", "/healthz", f"X-Padding: {'a' * (2 * MAX_HEADER)}"))
            status, text = read_response(sock)
            assert status == 431, text
        # Many headers, each small: the bound is on their sum.
        with connect(service) as sock:
            many = [f"X-Padding-{n}: {'b' * 100}" for n in range(MAX_HEADER // 100 + 10)]
            sock.sendall(head("GET", "/healthz", *many))
            status, text = read_response(sock)
            assert status == 431, text
        # Under the bound (a large token, say), served.
        response = httpx.get(
            f"{service.base_url}/orders" if service.module == "order_service" else f"{service.base_url}/customers",
            headers={
                "Authorization": bearer(idp, ORDERS_READ, "customers:read", CUSTOMERS_ALL),
                "X-Padding": "c" * 8000,
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("case", ["nothing sent", "half a request line", "half the headers trickled", "half the body"])
def test_a_slow_client_is_disconnected_within_the_request_timeout(services, idp, case):
    order, _ = services
    token = bearer(idp, ORDERS_WRITE, CUSTOMERS_ALL)
    with connect(order, timeout=REQUEST_TIMEOUT_S + 5) as sock:
        started = time.monotonic()
        if case == "half a request line":
            sock.sendall(b"GET /heal")
        elif case == "half the body":
            sock.sendall(
                head(
                    "POST",
                    "/orders/",
                    f"Authorization: {token}",
                    "Content-Type: application/json",
                    "Content-Length: 80",
                )
                + b'{"customer_id": 1,'
            )
        data = b""
        if case == "half the headers trickled":
            # One byte every 0.2 s: each arrives in time, the request never does.
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            for _ in range(int((REQUEST_TIMEOUT_S + 5) / 0.2)):
                try:
                    sock.sendall(b"z")
                except (BrokenPipeError, ConnectionResetError):
                    break
                if select.select([sock], [], [], 0.2)[0]:
                    break
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - started
    assert REQUEST_TIMEOUT_S - 0.5 <= elapsed <= REQUEST_TIMEOUT_S + 2, f"{case}: closed after {elapsed:.1f}s"
    if case == "nothing sent":
        assert data == b"", data
    else:
        assert data.startswith(b"HTTP/1.1 408 "), data[:200]


async def test_past_the_concurrency_bound_503_with_retry_after_and_service_resumes(client, services, idp):
    order, _ = services
    token = bearer(idp, ORDERS_WRITE, ORDERS_READ, CUSTOMERS_ALL)
    # Hold every slot: requests whose body never finishes (the handler waits for it).
    holders = []
    try:
        for _ in range(MAX_CONCURRENT):
            sock = connect(order)
            sock.sendall(
                head(
                    "POST",
                    "/orders/",
                    f"Authorization: {token}",
                    "Content-Type: application/json",
                    "Content-Length: 80",
                )
                + b"{"
            )
            holders.append(sock)

        async def flood_answer() -> httpx.Response:
            return await client.get(f"{order.base_url}/orders", headers={"Authorization": token})

        # The holders' requests reach the handler shortly: then the flood is refused, each at once.
        await eventually(flood_answer, until=lambda r: r.status_code == 503, timeout=5, what="a 503")
        started = time.monotonic()
        flood = await asyncio.gather(*(flood_answer() for _ in range(50)))
        elapsed = time.monotonic() - started
        refused = [r for r in flood if r.status_code == 503]
        assert len(refused) == len(flood), sorted({r.status_code for r in flood})
        assert all(r.headers.get("Retry-After") == "1" for r in refused), refused[0].headers
        assert "limit of concurrent requests" in refused[0].json()["detail"]
        assert elapsed < 5, f"50 refusals took {elapsed:.1f}s"
        # The probes are not counted: the flood never makes the pod look dead.
        assert (await client.get(f"{order.base_url}/healthz")).status_code == 200
        assert (await client.get(f"{order.base_url}/readyz")).status_code == 200
    finally:
        for sock in holders:
            sock.close()
    # The flood over, legitimate traffic is answered.
    answered = await eventually(flood_answer, until=lambda r: r.status_code == 200, timeout=REQUEST_TIMEOUT_S + 5)
    assert isinstance(answered.json(), list)
