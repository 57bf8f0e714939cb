"""A local OTLP/HTTP endpoint: accepts trace exports and hands each body to a callback (or drops it).

The benchmark points the services at it to measure what exporting spans costs them; the tests decode what
arrives to check the traces.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

# An empty ExportTraceServiceResponse: the exporter only needs a 200 with a protobuf body.
_EMPTY_RESPONSE = b""


class OtlpSink:
    def __init__(self, on_export: Callable[[bytes], None] | None = None) -> None:
        self._on_export = on_export
        self._server: ThreadingHTTPServer | None = None
        self.exports = 0

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                sink.exports += 1
                if sink._on_export is not None:
                    sink._on_export(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(_EMPTY_RESPONSE)))
                self.end_headers()
                self.wfile.write(_EMPTY_RESPONSE)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
