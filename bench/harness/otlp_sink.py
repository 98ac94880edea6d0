"""A stand-in OpenTelemetry collector for benchmarks: accepts OTLP/HTTP protobuf exports on
127.0.0.1 (`POST /v1/traces`), answers each with an empty ExportTraceServiceResponse, and counts
requests and bytes. It decodes nothing: what is measured is the exporting server's cost, and a
real collector would add its own on another machine."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    requests: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, n: int) -> None:
        with self.lock:
            self.requests += 1
            self.bytes += n


@contextmanager
def otlp_sink() -> Iterator[tuple[str, Received]]:
    """Yields (the endpoint to give `--otlp-endpoint`, the running counts)."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n)
            received.add(n)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
