"""/metrics as `MetricsServer` serves it: rendered one family at a time, shared briefly."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.exposition import generate_latest as om_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from aione_probe import server as server_module
from aione_probe.server import MetricsServer


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def requests(registry: CollectorRegistry) -> Counter:
    counter = Counter("probe_requests", "Requests.", ["gateway"], registry=registry)
    latency = Histogram("probe_seconds", "Latency.", ["gateway"], registry=registry)
    for i in range(30):
        counter.labels(f"gw-{i}").inc(i)
        latency.labels(f"gw-{i}").observe(i / 10)
    return counter


@pytest.fixture
def serve(
    registry: CollectorRegistry, requests: Counter, tmp_path: Path
) -> Iterator[MetricsServer]:
    srv = MetricsServer("127.0.0.1", 0, registry, lambda: {"status": "ok"}, tmp_path)
    srv.start()
    yield srv
    srv.stop()


def _get(url: str, accept: str = "") -> tuple[str, bytes]:
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req) as resp:
        return resp.headers["Content-Type"], resp.read()


def test_text_format_equals_one_piece_rendering(
    serve: MetricsServer, registry: CollectorRegistry
) -> None:
    ctype, body = _get(f"{serve.url}/metrics")
    assert ctype.startswith("text/plain")
    assert body == generate_latest(registry)
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"probe_requests", "probe_seconds"} <= names


def test_openmetrics_ends_once_with_eof(serve: MetricsServer, registry: CollectorRegistry) -> None:
    ctype, body = _get(f"{serve.url}/metrics", CONTENT_TYPE_LATEST)
    assert ctype.startswith("application/openmetrics-text")
    assert body.count(b"# EOF\n") == 1 and body.endswith(b"# EOF\n")
    assert body == om_latest(registry)
    assert {f.name for f in om_parse(body.decode())} >= {"probe_requests", "probe_seconds"}


def test_scrapes_close_together_share_a_render(
    serve: MetricsServer, requests: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _get(f"{serve.url}/metrics")[1]
    requests.labels("late").inc()
    assert _get(f"{serve.url}/metrics")[1] == first
    monkeypatch.setattr(server_module.time, "monotonic", lambda: 1e12)
    fresh = _get(f"{serve.url}/metrics")[1]
    assert b'gateway="late"' in fresh and fresh != first
