"""An OTLP/HTTP trace receiver: each export to /v1/traces becomes one JSON line on stdout."""

import base64
import gzip
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        print(json.dumps({"otlp_traces": base64.b64encode(body).decode()}), flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


# PID 1 in its container: SIGTERM (docker stop) has no default action there.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
address = os.environ.get("OTLP_LISTEN_ADDRESS", "0.0.0.0")
print(f"OTLP/HTTP receiver on {address}:4318", flush=True)
ThreadingHTTPServer((address, 4318), Handler).serve_forever()
