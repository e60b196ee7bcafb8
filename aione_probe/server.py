"""The service's HTTP endpoint: ``/metrics``, ``/healthz`` and the latest report.

`MetricsProcess` runs it in a child process, so a scrape never competes for the GIL with
the event loop that times probes: the child reads the live instruments from
prometheus_client's multiprocess mmap files and keeps its own copy of the cached state and
of the health body, sent to it as pickled messages on its stdin. Inside the child,
`MetricsServer` serves a registry from a thread with the standard library's threading HTTP
server; rendering yields the GIL between metric families (the child's message reader needs
it too) and scrapes within `METRICS_MIN_INTERVAL_S` of each other share one rendering.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mimetypes
import os
import pickle
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

from aione_probe.metrics import Op, ProbeMetrics, Snapshot, SnapshotCollector

log = logging.getLogger(__name__)

HealthFn = Callable[[], dict[str, Any]]
METRICS_MIN_INTERVAL_S = 1.0
"""Scrapes within this many seconds of a render get the same body."""
STOP_TIMEOUT_S = 10.0
"""How long `MetricsProcess.stop` waits for the child to exit before killing it."""


class MetricsProcess:
    """Serve `metrics`, health and reports from a child process.

    `start` shares `metrics` (`ProbeMetrics.share`) through a fresh temporary directory; a
    sender thread pickles messages to the child's stdin, so publishing never blocks the
    caller. The child exits when that pipe closes, on `stop` or when this process dies, and
    removes the directory.

    Example:
        >>> server = MetricsProcess("127.0.0.1", 0, metrics, Path("reports"))
        >>> server.start(); server.publish_health({"status": "ok"}); server.url
        'http://127.0.0.1:54321'
    """

    def __init__(
        self,
        host: str,
        port: int,
        metrics: ProbeMetrics,
        reports_dir: Path,
        *,
        location: str | None = None,
    ) -> None:
        self._address = (host, port)
        self._location = location
        self._metrics = metrics
        self._reports_dir = reports_dir
        self._messages: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._sender: threading.Thread | None = None
        self.url = ""

    @property
    def pid(self) -> int | None:
        """The child's process id, once started."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Share the metrics, start the child and wait until it listens.

        Raises:
            RuntimeError: the child exited before listening (e.g. the port is taken).
        """
        self._dir = Path(tempfile.mkdtemp(prefix="aione-probe-metrics-"))
        try:
            self._metrics.share(self._dir, self._messages.put)
            host, port = self._address
            cmd = [sys.executable, "-m", "aione_probe.server", host, str(port), str(self._dir),
                   str(self._reports_dir), self._location or ""]  # fmt: skip
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self.url = self._proc.stdout.readline().decode().strip()
            if not self.url:
                raise RuntimeError(f"the metrics server exited ({self._proc.wait()}) at start")
        except BaseException:
            self.stop()
            raise
        self._sender = threading.Thread(
            target=self._send, args=(self._proc.stdin,), name="aione-metrics-pipe", daemon=True
        )
        self._sender.start()

    def publish_health(self, body: dict[str, Any]) -> None:
        """Replace the /healthz body the child serves."""
        self._messages.put(("health", (body,)))

    def stop(self) -> None:
        """Close the pipe, wait for the child to exit and remove the shared directory."""
        self._messages.put(None)
        if self._sender is not None:
            self._sender.join(STOP_TIMEOUT_S)
        if self._proc is not None:
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            try:
                self._proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("the metrics server did not exit in %.0fs; killing it", STOP_TIMEOUT_S)
                self._proc.kill()
                self._proc.wait()
        self._metrics.unshare()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _send(self, pipe: IO[bytes]) -> None:
        try:
            while (message := self._messages.get()) is not None:
                pickle.dump(message, pipe, protocol=pickle.HIGHEST_PROTOCOL)
                pipe.flush()
        except OSError as exc:
            log.error("the metrics server process is gone (%s); /metrics is down", exc)
        finally:
            with contextlib.suppress(OSError):
                pipe.close()


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
        *,
        location: str | None = None,
    ) -> None:
        handler = _make_handler(registry, health, reports_dir.resolve(), location)
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

    def __init__(
        self, registry: CollectorRegistry, min_interval_s: float, location: str | None = None
    ) -> None:
        self._registry = registry
        self._location = location
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
                if self._location:
                    _add_label(family, "location", self._location)
                parts.append(encoder(_Family(family)).removesuffix(_EOF))
                time.sleep(0)  # releases the GIL: the probe loop's thread may run
            if content_type.startswith("application/openmetrics-text"):
                parts.append(_EOF)
            body = b"".join(parts)
            self._bodies[content_type] = (time.monotonic(), body)
            return body


def _add_label(family: Metric, name: str, value: str) -> None:
    """Give every sample of `family` the label ``name=value`` (fleet mode's ``location``:
    one value per instance, so the label adds no series within an instance)."""
    family.samples = [s._replace(labels={**s.labels, name: value}) for s in family.samples]


_EOF = b"# EOF\n"  # OpenMetrics ends the exposition (each one-family rendering) with it


#: The policy of a served file that declares none (report.json, a page without the tag).
STRICT_CSP = "default-src 'none'"
_META_CSP = re.compile(
    rb"<meta\s+http-equiv=[\"']Content-Security-Policy[\"']\s+content=\"([^\"]*)\"", re.I
)


def report_csp(body: bytes) -> str:
    """The Content-Security-Policy header for a report file: the policy its own
    ``<meta http-equiv>`` tag declares (so header and file always agree), else `STRICT_CSP`."""
    match = _META_CSP.search(body[:4096])
    return match.group(1).decode("ascii", "replace") if match else STRICT_CSP


def _make_handler(
    registry: CollectorRegistry, health: HealthFn, reports_dir: Path, location: str | None
) -> type[BaseHTTPRequestHandler]:
    exposition = _Exposition(registry, METRICS_MIN_INTERVAL_S, location)

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
            body = target.read_bytes()
            self._send(200, ctype, body, csp=report_csp(body))

        def _send(
            self, status: int, content_type: str, body: bytes, csp: str | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if csp is not None:
                self.send_header("Content-Security-Policy", csp)
                self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes every few seconds would drown the service log.
            pass

    return Handler


def serve_child(
    host: str, port: int, directory: Path, reports_dir: Path, location: str | None = None
) -> None:
    """The child process of `MetricsProcess`: serve until stdin closes, then remove `directory`.

    It ignores SIGINT and SIGTERM (a Ctrl-C or a stop signal reaches the whole process
    group): the parent drains its runs while /metrics stays up, then closes the pipe.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # Rendering is CPU-bound; when cores are scarce the probe process should win them.
    os.nice(10)
    snapshot = Snapshot()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    registry.register(SnapshotCollector(snapshot))
    health: list[dict[str, Any]] = [{"status": "starting"}]
    server = MetricsServer(host, port, registry, lambda: health[0], reports_dir, location=location)
    server.start()
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    try:
        while True:
            op: Op = pickle.load(sys.stdin.buffer)
            if op[0] == "health":
                health[0] = op[1][0]
            else:
                snapshot.apply(op)
    except (EOFError, pickle.UnpicklingError):  # closed, or cut short by the parent's death
        pass
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    where = sys.argv[5] if len(sys.argv) > 5 else ""
    serve_child(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), where or None)
