"""An in-process OTLP/HTTP receiver on 127.0.0.1: what a collector would be sent, decoded.

It accepts ``POST /v1/metrics`` and ``POST /v1/traces`` with protobuf bodies (gzip or
not), decodes them with the opentelemetry-proto classes, answers with the protocol's
(empty) success message and keeps every request: path, headers, raw bytes, decoded message.
Helpers flatten the decoded messages into data points and spans with plain attribute dicts.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

SIGNALS: dict[str, tuple[type, type]] = {
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
}


@dataclass
class Received:
    """One export request as the receiver got it."""

    path: str
    headers: dict[str, str]
    raw: bytes
    message: Any


@dataclass
class Point:
    """One metric data point, flattened."""

    metric: str
    unit: str
    kind: str  # histogram | sum
    attributes: dict[str, Any]
    count: int = 0
    sum: float = 0.0
    bounds: tuple[float, ...] = ()


@dataclass
class Receiver:
    """The running receiver; `received` lists export requests in arrival order."""

    port: int = 0
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def endpoint(self) -> str:
        """Base URL as the `[otel] endpoint` config key takes it."""
        return f"http://127.0.0.1:{self.port}"

    def requests(self, path: str) -> list[Received]:
        """Export requests to one signal path."""
        with self.lock:
            return [r for r in self.received if r.path == path]

    def points(self) -> list[Point]:
        """Every data point of the last metrics export (cumulative temporality: the totals)."""
        exports = self.requests("/v1/metrics")
        if not exports:
            return []
        out = []
        for rm in exports[-1].message.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.HasField("histogram"):
                        for p in m.histogram.data_points:
                            out.append(
                                Point(m.name, m.unit, "histogram", _attrs(p.attributes),
                                      p.count, p.sum, tuple(p.explicit_bounds))
                            )  # fmt: skip
                    elif m.HasField("sum"):
                        for p in m.sum.data_points:
                            value = p.as_double if p.HasField("as_double") else p.as_int
                            out.append(Point(m.name, m.unit, "sum", _attrs(p.attributes), 1, value))
        return out

    def spans(self) -> list[Any]:
        """Every span received (protobuf `Span` objects)."""
        return [
            span
            for r in self.requests("/v1/traces")
            for rs in r.message.resource_spans
            for ss in rs.scope_spans
            for span in ss.spans
        ]


def span_attributes(span: Any) -> dict[str, Any]:
    """A span's attributes as a plain dict."""
    return _attrs(span.attributes)


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@contextmanager
def running() -> Iterator[Receiver]:
    """Start the receiver on a free loopback port; stop it on exit."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            signal = SIGNALS.get(self.path)
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            if signal is None:
                self.send_error(404)
                return
            body = gzip.decompress(raw) if self.headers.get("content-encoding") == "gzip" else raw
            request_cls, response_cls = signal
            message = request_cls()
            message.ParseFromString(body)
            with receiver.lock:
                receiver.received.append(
                    Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                             message)
                )  # fmt: skip
            reply = response_cls().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
