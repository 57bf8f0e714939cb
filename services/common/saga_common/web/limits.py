"""Bounds on what one HTTP client can make a service hold: checked before any work is done for the request.

- the request head (request line and headers): at most `http_max_header_bytes`, else 431 and the connection is
  closed (`LimitedHttpToolsProtocol`, uvicorn's httptools parser, which has no limit of its own);
- the whole request, head and body, must arrive within `http_request_timeout_s` of its first byte (or of the
  connection's opening), else 408 and the connection is closed: a client sending half a request holds nothing
  for long; an idle keep-alive connection is closed after `http_keepalive_timeout_s` (uvicorn's own timer);
- the body: at most `http_max_body_bytes`, refused with 413 from its Content-Length before a byte of it is
  read, or as soon as the bytes streamed (chunked) pass the bound (`BodyLimit`);
- requests being handled at once in the process: at most `http_max_concurrent_requests`, past it 503 with
  `Retry-After` (`ConcurrencyLimit`; probes and /metrics are not counted, so a flood never fails liveness).

Authentication is decided before the body is read too (`saga_common.web.auth.AuthenticateFirst`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


async def send_problem(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    """A JSON `{"detail": ...}` answer, as FastAPI's own HTTPException handler writes it."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (so an early answer should close the connection: the rest of the
    body is not worth reading)."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


CLOSE = (b"connection", b"close")


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the streamed body passes the bound: FastAPI re-raises an HTTPException met
    while reading a body, so the app's own handler answers 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"the request body exceeds {max_bytes} bytes", headers={"Connection": "close"})


class BodyLimit:
    """413 for a body over `max_bytes`: from Content-Length up front, or counted as the bytes stream in."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.strip().isdigit() and int(value) > self.max_bytes:
                await send_problem(send, 413, f"the request body exceeds {self.max_bytes} bytes", [CLOSE])
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            # Met outside FastAPI's body reading (which answers it itself).
            if started:
                raise
            await send_problem(send, 413, str(exc.detail), [CLOSE])


class ConcurrencyLimit:
    """At most `limit` requests handled at once by this process; past it 503 with `Retry-After`, at once and
    without reading the request. The probes and /metrics pass uncounted."""

    def __init__(self, app: ASGIApp, *, limit: int, retry_after_s: int) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = str(retry_after_s).encode()
        self.in_flight = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.refused += 1
            if self.refused % 1000 == 1:
                log.warning("%d requests in progress: refusing more with 503 (%d so far)", self.limit, self.refused)
            headers = [(b"retry-after", self.retry_after)] + ([CLOSE] if has_body(scope) else [])
            await send_problem(send, 503, "the service is at its limit of concurrent requests; retry shortly", headers)
            return
        # One event loop per process: no lock needed around the counter.
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class _HeadTooLarge(Exception):
    pass


class _LingeringClose:
    """The connection's transport, with a `close()` that lets the client read a refusal sent before the request
    was fully received (413, 431, 408). Closing a socket with unread bytes in its receive buffer makes the kernel
    answer with a reset and drop what was still to be sent: a client streaming a body we refused saw "connection
    reset" instead of our 413. So, as nginx's lingering close does: send what is buffered and a FIN, read and
    discard what still comes for at most `LINGER_S` and `LINGER_MAX_BYTES` (what a client that never reads gets
    us to take in), then close; at once when the client closes its side."""

    LINGER_S = 2.0
    LINGER_MAX_BYTES = 4 * 2**20

    def __init__(self, transport: asyncio.Transport, request_unread: Callable[[], bool]) -> None:
        self._transport = transport
        self._request_unread = request_unread
        self.lingering = False
        self._discarded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self.lingering or self._transport.is_closing()

    def close(self) -> None:
        if self.is_closing():
            return
        # The usual close, after a whole request, has nothing to wait for. TLS cannot half-close: a client reading
        # to the end would wait out the whole linger for want of a FIN, so there it closes at once too.
        if not self._request_unread() or not self._transport.can_write_eof():
            self._transport.close()
            return
        self.lingering = True
        self._transport.write_eof()
        self._transport.resume_reading()
        asyncio.get_running_loop().call_later(self.LINGER_S, self._transport.close)

    def discard(self, data: bytes) -> None:
        self._discarded += len(data)
        if self._discarded > self.LINGER_MAX_BYTES:
            self._transport.close()

    def client_closed(self) -> None:
        if self.lingering:
            self._transport.close()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request head's size and a deadline for the whole request.

    uvicorn arms no timer while a request is being received (its keep-alive timer runs only between requests),
    and the httptools parser takes headers of any size: both bounds are here. `protocol_class()` sets them."""

    max_head_bytes = 16 * 1024
    request_timeout_s = 20.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._request_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._receiving = False  # between a request's first byte and its last
        self._head_complete = False  # self.cycle is the request being received

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._lingering = _LingeringClose(transport, request_unread=lambda: self._receiving)
        super().connection_made(self._lingering)  # type: ignore[arg-type]
        self._arm_request_timer()

    def eof_received(self) -> None:
        self._lingering.client_closed()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering.lingering:  # the rest of a request already answered
            self._lingering.discard(data)
            return
        if self._refused:
            return
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # the parser error is the one our own callback raised: 431 already sent
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._receiving = True
        self._head_complete = False
        self._arm_request_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_complete = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._receiving = False
        self._cancel_request_timer()
        super().on_message_complete()

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            self._refuse(431, b"Request Header Fields Too Large")
            raise _HeadTooLarge  # stops the parser; it reports a parser error, answered by nobody (see above)

    def _arm_request_timer(self) -> None:
        if self._request_timer is None:
            self._request_timer = self.loop.call_later(self.request_timeout_s, self._request_timed_out)

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        # A connection that sent nothing yet is closed without a word; a request half received gets its 408.
        self._refuse(408 if self._receiving else None, b"Request Timeout")

    def _refuse(self, status: int | None, reason: bytes) -> None:
        """Answer `status` (if any) on the raw transport and close the connection; the request's app, if one is
        running, sees a disconnect and writes nothing more."""
        self._refused = True
        self._cancel_request_timer()
        current = self.cycle if self._head_complete else None
        if current is not None:
            # The app handling it may still write: it must not, behind our answer.
            writable = not current.response_started
        else:
            writable = self.cycle is None or self.cycle.response_complete  # not behind a pipelined answer
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if status is not None and writable:
            body = b'{"detail": "' + reason + b'"}'
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, reason, len(body), body)
            )
            log.info("request refused with %d: %s", status, reason.decode())
        self.transport.close()


def protocol_class(*, max_head_bytes: int, request_timeout_s: float) -> type[LimitedHttpToolsProtocol]:
    """The protocol uvicorn is given (`http=`), with the process's bounds."""
    return type(
        "SagaHttpProtocol",
        (LimitedHttpToolsProtocol,),
        {"max_head_bytes": max_head_bytes, "request_timeout_s": request_timeout_s},
    )
