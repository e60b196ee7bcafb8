"""The HTTP endpoint: `MetricsServer` renders /metrics one family at a time and shares it
briefly; `MetricsProcess` serves a probe process' metrics from a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.exposition import generate_latest as om_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families

from aione_probe import server as server_module
from aione_probe.metrics import ProbeMetrics
from aione_probe.server import MetricsProcess, MetricsServer
from aione_probe.slo import Objectives
from aione_probe.types import Observation, Usage


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


# --------------------------------------------------------------------- the server process
def _samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
    return {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is pending


@pytest.fixture
def probe_metrics() -> ProbeMetrics:
    pm = ProbeMetrics(CollectorRegistry())
    pm.set_build_info("9.9.9")
    pm.set_suite_config("aione", "gpt-x", "smoke", 60.0)
    return pm


@pytest.fixture
def child(probe_metrics: ProbeMetrics, tmp_path: Path) -> Iterator[MetricsProcess]:
    srv = MetricsProcess("127.0.0.1", 0, probe_metrics, tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def _observe(pm: ProbeMetrics, **kw: Any) -> None:
    obs = Observation(
        gateway="aione",
        model="gpt-x",
        stream=True,
        first_chunk_s=0.2,
        first_token_s=0.4,
        end_s=1.5,
        gaps_s=[0.01, 0.3],
        usage=Usage(prompt_tokens=10, completion_tokens=5, raw={}),
        response_model="gpt-x-2025",
        **kw,
    )
    pm.observe(obs, suite="smoke", cost=0.25)


def test_child_process_serves_what_this_process_records(
    child: MetricsProcess, probe_metrics: ProbeMetrics, tmp_path: Path
) -> None:
    _observe(probe_metrics)
    probe_metrics.run_finished("aione", "gpt-x", "smoke", "ok", datetime.now(UTC))
    verdict = SimpleNamespace(
        kind="drift", gateway="aione", model="gpt-x", suite="smoke", verdict="ok", score=None,
        details={"metrics": [{"metric": "pass_rate", "statistic": 0.5, "threshold": 1.0}]},
        created_at=None,
    )  # fmt: skip
    probe_metrics.refresh(SimpleNamespace(latest_verdicts=lambda: [verdict], last_runs=lambda: []))
    expected = _samples(generate_latest(probe_metrics.registry).decode())
    assert ("aione_probe_drift_statistic", (("gateway", "aione"), ("metric", "pass_rate"),
            ("model", "gpt-x"), ("suite", "smoke")), 0.5) in expected  # fmt: skip

    def served() -> str:
        time.sleep(server_module.METRICS_MIN_INTERVAL_S)  # past the shared rendering
        return _get(f"{child.url}/metrics")[1].decode()

    _wait_for(lambda: _samples(served()) == expected)
    assert "_created" not in served()
    assert child.pid is not None and child.pid != os.getpid()

    def health() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"{child.url}/healthz") as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:  # 503 until a body with status ok arrives
            return exc.code, exc.read()

    assert health()[0] == 503
    body = {"status": "ok", "version": "9.9.9", "jobs": 2, "runs_in_progress": 0}
    child.publish_health(body)
    _wait_for(lambda: health() == (200, json.dumps(body).encode()))
    (tmp_path / "index.html").write_text("<p>report</p>")
    assert _get(f"{child.url}/report/")[1] == b"<p>report</p>"


def test_stop_ends_the_child_and_restores_in_memory_values(
    probe_metrics: ProbeMetrics, tmp_path: Path
) -> None:
    srv = MetricsProcess("127.0.0.1", 0, probe_metrics, tmp_path)
    srv.start()
    pid, shared = srv.pid, Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    assert pid is not None and _alive(pid) and shared.is_dir()
    srv.stop()
    assert not _alive(pid) and not shared.exists()
    assert values.ValueClass is values.MutexValue
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    _observe(probe_metrics)  # still counts after the server is gone
    labels = {"gateway": "aione", "model": "gpt-x", "suite": "smoke", "stream": "true"}
    value = probe_metrics.registry.get_sample_value("aione_probe_requests_total",
                                                    {**labels, "outcome": "ok"})  # fmt: skip
    assert value == 1


def test_share_refuses_metrics_that_already_counted(
    probe_metrics: ProbeMetrics, tmp_path: Path
) -> None:
    _observe(probe_metrics)
    with pytest.raises(RuntimeError, match="before any attempt"):
        MetricsProcess("127.0.0.1", 0, probe_metrics, tmp_path).start()
    assert values.ValueClass is values.MutexValue


PARENT = """
import os, sys, time
from pathlib import Path
from aione_probe.metrics import ProbeMetrics
from aione_probe.server import MetricsProcess
server = MetricsProcess("127.0.0.1", 0, ProbeMetrics(), Path(sys.argv[1]))
server.start()
print(server.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"], flush=True)
time.sleep(60)
"""


def test_child_exits_and_cleans_up_when_the_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pid, shared = parent.stdout.readline().split()
        assert _alive(int(pid)) and Path(shared).is_dir()
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        _wait_for(lambda: not _alive(int(pid)) and not Path(shared).exists())
    finally:
        parent.kill()
        parent.wait()


def test_series_declared_at_zero_are_served_by_the_child(
    probe_metrics: ProbeMetrics, tmp_path: Path
) -> None:
    probe_metrics.declare_job(
        "aione", "gpt-x", "smoke", streams=[True], checks=["finish_reason"],
        objectives=Objectives(),
    )  # fmt: skip
    srv = MetricsProcess("127.0.0.1", 0, probe_metrics, tmp_path)
    srv.start()  # declared zeros are not "already counted"
    try:
        time.sleep(server_module.METRICS_MIN_INTERVAL_S)
        samples = _samples(_get(f"{srv.url}/metrics")[1].decode())
    finally:
        srv.stop()
    labels = (("class", "http_5xx"), ("gateway", "aione"), ("model", "gpt-x"),
              ("stream", "true"), ("suite", "smoke"))  # fmt: skip
    errors = ("aione_probe_errors_total", labels, 0.0)
    assert errors in samples
    slo = (("gateway", "aione"), ("model", "gpt-x"), ("outcome", "bad"), ("slo", "ttft"))
    assert ("aione_probe_slo_events_total", slo, 0.0) in samples
