"""The service's HTTP endpoint: ``/metrics``, ``/healthz`` and the latest report.

It runs in its own thread with the standard library's threading HTTP server, so a
scrape never runs on the event loop that times probes; the metrics it serves are
in-memory values (store-derived gauges are refreshed elsewhere on a timer).
"""

from __future__ import annotations

import json
import mimetypes
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

HealthFn = Callable[[], dict[str, Any]]


class MetricsServer:
    """Serve metrics, health and reports from a background thread.

    Example:
        >>> server = MetricsServer("127.0.0.1", 0, registry, health, Path("reports"))
        >>> server.start(); server.url
        'http://127.0.0.1:54321'
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: HealthFn,
        reports_dir: Path,
    ) -> None:
        handler = _make_handler(registry, health, reports_dir.resolve())
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="aione-http", daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL the server listens on."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        """Start serving in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()


def _make_handler(
    registry: CollectorRegistry, health: HealthFn, reports_dir: Path
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "aione-probe"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, content_type, encoder(registry))
            elif path == "/healthz":
                body = health()
                status = 200 if body.get("status") == "ok" else 503
                self._send(status, "application/json", json.dumps(body).encode())
            elif path == "/" or path.startswith("/report"):
                self._report(path.removeprefix("/report").lstrip("/") or "index.html")
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _report(self, name: str) -> None:
            target = (reports_dir / name).resolve()
            if not target.is_relative_to(reports_dir) or not target.is_file():
                msg = b"no report yet: it is written after the first runs\n"
                self._send(404, "text/plain; charset=utf-8", msg)
                return
            ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype == "application/json":
                ctype += "; charset=utf-8"
            self._send(200, ctype, target.read_bytes())

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes every few seconds would drown the service log.
            pass

    return Handler
