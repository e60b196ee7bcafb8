"""The service's HTTP endpoint: ``/metrics``, ``/healthz`` and the latest report.

It runs in its own thread with the standard library's threading HTTP server, so a
scrape never runs on the event loop that times probes; the metrics it serves are
in-memory values (store-derived gauges are refreshed elsewhere on a timer). Rendering
still holds the GIL that the loop's thread needs, so it yields it between metric
families, and scrapes within `METRICS_MIN_INTERVAL_S` of each other share one rendering.
"""

from __future__ import annotations

import json
import mimetypes
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.exposition import choose_encoder

HealthFn = Callable[[], dict[str, Any]]
METRICS_MIN_INTERVAL_S = 1.0
"""Scrapes within this many seconds of a render get the same body."""


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


class _Family:
    """One collected metric family posing as a collector, so an encoder renders it alone."""

    def __init__(self, family: Metric) -> None:
        self._family = family

    def collect(self) -> list[Metric]:
        return [self._family]


class _Exposition:
    """The rendered /metrics body per content type, shared by scrapes close together.

    Rendering thousands of series is pure Python that holds the GIL; the probe loop runs
    on another thread of this process, so rendering goes one family at a time and yields
    the GIL in between, and scrapes arriving within `min_interval_s` of a render share it.
    """

    def __init__(self, registry: CollectorRegistry, min_interval_s: float) -> None:
        self._registry = registry
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._bodies: dict[str, tuple[float, bytes]] = {}

    def body(self, encoder: Callable[[Any], bytes], content_type: str) -> bytes:
        with self._lock:
            cached = self._bodies.get(content_type)
            if cached is not None and time.monotonic() - cached[0] < self._min_interval_s:
                return cached[1]
            parts = []
            for family in self._registry.collect():
                parts.append(encoder(_Family(family)).removesuffix(_EOF))
                time.sleep(0)  # releases the GIL: the probe loop's thread may run
            if content_type.startswith("application/openmetrics-text"):
                parts.append(_EOF)
            body = b"".join(parts)
            self._bodies[content_type] = (time.monotonic(), body)
            return body


_EOF = b"# EOF\n"  # OpenMetrics ends the exposition (each one-family rendering) with it


def _make_handler(
    registry: CollectorRegistry, health: HealthFn, reports_dir: Path
) -> type[BaseHTTPRequestHandler]:
    exposition = _Exposition(registry, METRICS_MIN_INTERVAL_S)

    class Handler(BaseHTTPRequestHandler):
        server_version = "aione-probe"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, content_type, exposition.body(encoder, content_type))
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
