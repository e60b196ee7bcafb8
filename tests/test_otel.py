"""OpenTelemetry export: real runs over loopback, decoded by an in-process OTLP receiver.

The service runs suites against the local gateway (both protocols) and the fault server,
exports through the real SDK and OTLP/HTTP exporter to `otlp_receiver`, and the test
compares what arrived with what the store recorded: every attempt one duration point and
one span, token sums equal to usage sums, the GenAI attribute set, and no secret anywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the `otel` extra is not installed")
pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the `otel` extra")

import faultserver
import otlp_receiver
from otlp_receiver import Point, span_attributes

from aione_probe.cli import main
from aione_probe.config import GatewayConfig, OtelConfig, load_config
from aione_probe.otel import DURATION_BUCKETS, OTHER, TOKEN_BUCKETS, OtelExporter
from aione_probe.redact import register_secret
from aione_probe.service import Service
from aione_probe.sim import default_sim_config, run_in_thread
from aione_probe.store import Store
from aione_probe.types import ChatRequest, Observation

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "otlp-token-7f3a9c"
# Keys the tests configure or register stay registered for the whole process (the scrubber
# redacts any 6 of their characters anywhere): letters no other test string contains.
GATEWAY_KEY = "sk-otel-WqZrTyPxVkMn"
ECHOED = "QmZxJvWrTpLkVnHd"
SPAN_KIND_CLIENT = 3  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_CLIENT
STATUS_CODE_ERROR = 2


def _gateway(name: str, base_url: str, models: str, protocol: str = "openai") -> str:
    return f"""
[[gateways]]
name = "{name}"
base_url = "{base_url}"
protocol = "{protocol}"
models = {models}
api_key_env = "OTEL_TEST_GATEWAY_KEY"
max_concurrency = 4
requests_per_minute = 6000
timeouts = {{ connect = "2s", first_token = "10s", idle = "5s", total = "30s" }}
retries = {{ max_attempts = 2, base_delay = "10ms", max_delay = "20ms" }}
"""


def _config(tmp_path: Path, gateways: str, suite: str, otel: str) -> Path:
    path = tmp_path / "otel.toml"
    path.write_text(
        f"""
probes_dir = "{ROOT / "probes"}"
{gateways}
[[suites]]
file = "{suite}"
interval = "1h"

[pricing."*"]
input = 1.0
output = 5.0

[storage]
url = "sqlite:///{tmp_path / "probe.db"}"

[reports]
dir = "{tmp_path / "reports"}"

{otel}
"""
    )
    return path


def _otel(endpoint: str, extra: str = "") -> str:
    return f"""[otel]
endpoint = "{endpoint}"
headers_env = {{ authorization = "OTEL_TEST_TOKEN" }}
interval = "1h"
{extra}"""


def _by(points: list[Point], metric: str) -> list[Point]:
    return [p for p in points if p.metric == metric]


def test_a_run_exports_genai_metrics_and_one_span_per_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TEST_TOKEN", f"Bearer {TOKEN}")
    monkeypatch.setenv("OTEL_TEST_GATEWAY_KEY", GATEWAY_KEY)
    with (
        otlp_receiver.running() as rx,
        run_in_thread(default_sim_config(time_scale=0.05)) as sim,
    ):
        gateways = _gateway("sim-openai", sim.base_url, '["sim-large"]') + _gateway(
            "sim-anthropic", sim.url, '["sim-large"]', protocol="anthropic"
        )
        cfg = _config(tmp_path, gateways, "smoke.toml", _otel(rx.endpoint))
        assert main(["run", "--config", str(cfg)]) in (0, 1)
    # `run` exits through the service's shutdown, which flushes both signals.
    assert rx.requests("/v1/metrics") and rx.requests("/v1/traces")
    for r in rx.received:
        assert r.headers["authorization"] == f"Bearer {TOKEN}"  # from the environment
        assert r.headers["content-type"] == "application/x-protobuf"
        assert faultserver.LEAKED_KEY.encode() not in r.raw

    store = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    points = rx.points()
    spans = rx.spans()
    port = int(sim.url.rsplit(":", 1)[1])
    for gateway, provider in (("sim-openai", "openai"), ("sim-anthropic", "anthropic")):
        rows = store.observations(gateway, "sim-large")
        assert len(rows) >= 9
        mine = [p for p in points if p.attributes.get("aione_probe.gateway") == gateway]
        duration = _by(mine, "gen_ai.client.operation.duration")
        # Every attempt is one duration measurement, failed ones included.
        assert sum(p.count for p in duration) == len(rows)
        for p in duration:
            assert p.unit == "s" and p.bounds == DURATION_BUCKETS
            a = p.attributes
            assert a["gen_ai.operation.name"] == "chat"
            assert a["gen_ai.provider.name"] == provider
            assert a["gen_ai.request.model"] == "sim-large"
            assert a["server.address"] == "127.0.0.1" and a["server.port"] == port
            assert a["aione_probe.suite"] == "smoke"
            assert ("error.type" in a) != ("gen_ai.response.model" in a)
        ok = [p for p in duration if "error.type" not in p.attributes]
        assert {p.attributes["gen_ai.response.model"] for p in ok} == {"sim-large"}
        assert sum(p.count for p in ok) == sum(r.failure == "ok" for r in rows)
        assert {p.attributes["gen_ai.request.stream"] for p in duration} == {True, False}
        # Token usage: input and output, summing exactly to the stored usage.
        tokens = _by(mine, "gen_ai.client.token.usage")
        assert {p.unit for p in tokens} == {"{token}"}
        assert all(p.bounds == TOKEN_BUCKETS for p in tokens)
        by_type = Counter()
        for p in tokens:
            by_type[p.attributes["gen_ai.token.type"]] += p.sum
        assert by_type["input"] == sum(r.prompt_tokens or 0 for r in rows)
        assert by_type["output"] == sum(r.completion_tokens or 0 for r in rows)
        # Time to first chunk: streamed attempts only, as the conventions ask.
        first_chunk = _by(mine, "gen_ai.client.operation.time_to_first_chunk")
        assert first_chunk and all(p.attributes["gen_ai.request.stream"] for p in first_chunk)
        streamed_ok = [r for r in rows if r.stream and r.failure == "ok" and r.first_chunk_s]
        assert sum(p.count for p in first_chunk) == len(streamed_ok)
        assert sum(p.sum for p in first_chunk) == pytest.approx(
            sum(r.first_chunk_s for r in streamed_ok)
        )
        # aione-probe's own measures ride along under their own names.
        checks = _by(mine, "aione_probe.checks")
        assert sum(p.sum for p in checks) == len(store.check_results(gateway, "sim-large"))
        runs = _by(mine, "aione_probe.suite_runs")
        assert [(p.attributes["aione_probe.run.status"], p.sum) for p in runs] == [
            (store.runs(gateway)[0].status, 1)
        ]
        finals = [r for r in rows if r.final]
        slo = Counter()
        for p in _by(mine, "aione_probe.slo.events"):
            slo[(p.attributes["aione_probe.slo.name"], p.attributes["aione_probe.slo.event"])] += (
                p.sum
            )
        assert slo[("availability", "good")] == sum(r.failure == "ok" for r in finals)
        assert slo[("availability", "good")] + slo[("availability", "bad")] == len(finals)
        assert slo[("ttft", "good")] + slo[("ttft", "bad")] == sum(r.stream for r in finals)
        cost = _by(mine, "aione_probe.cost")
        assert cost[0].unit == "{USD}"
        assert sum(p.sum for p in cost) == pytest.approx(sum(r.cost or 0 for r in rows))

        # One CLIENT span per attempt, timed like the observation.
        own = [s for s in spans if span_attributes(s)["aione_probe.gateway"] == gateway]
        assert len(own) == len(rows)
        by_response = {r.response_id: r for r in rows if r.response_id}
        for span in own:
            a = span_attributes(span)
            assert span.name == "chat sim-large" and span.kind == SPAN_KIND_CLIENT
            assert a["gen_ai.provider.name"] == provider
            row = by_response.get(a.get("gen_ai.response.id"))
            if row is None:
                continue
            assert a["aione_probe.probe.id"] == row.probe_id
            assert a["gen_ai.usage.input_tokens"] == row.prompt_tokens
            assert a["gen_ai.usage.output_tokens"] == row.completion_tokens
            assert a["gen_ai.response.finish_reasons"] == [row.finish_reason]
            assert (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9 == pytest.approx(
                row.end_s, abs=1e-6
            )
        assert sum(1 for s in own if "gen_ai.response.id" in span_attributes(s)) >= len(rows) - 1


def test_failed_attempts_carry_error_type_and_never_a_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault server answers 401 with the key in the message, and 429 (retried)."""
    monkeypatch.setenv("OTEL_TEST_TOKEN", f"Bearer {TOKEN}")
    monkeypatch.setenv("OTEL_TEST_GATEWAY_KEY", GATEWAY_KEY)
    suite = tmp_path / "faults.toml"
    suite.write_text(
        """
[suite]
id = "faults"
version = 1
description = "one plain question"

[[probe]]
id = "plain-01"
prompt = "Say ok."
max_tokens = 4
stream = false
checks = [{ name = "contains", all = ["ok"] }]
"""
    )
    with otlp_receiver.running() as rx, faultserver.running() as fs:
        models = '["ok", "status:401", "status:429"]'
        gateways = _gateway("faulty", f"http://127.0.0.1:{fs.port}/v1", models)
        cfg = _config(tmp_path, gateways, str(suite), _otel(rx.endpoint))
        assert main(["run", "--config", str(cfg)]) == 1
    for r in rx.received:
        assert faultserver.LEAKED_KEY.encode() not in r.raw
        assert b"Incorrect API key" not in r.raw and b"Rate limit reached" not in r.raw
    duration = _by(rx.points(), "gen_ai.client.operation.duration")
    errors = Counter()
    for p in duration:
        errors[(p.attributes["gen_ai.request.model"], p.attributes.get("error.type"))] += p.count
    # 429 is retried (max_attempts = 2): two attempts, two measurements.
    assert errors == {("ok", None): 1, ("status:401", "auth"): 1, ("status:429", "rate_limited"): 2}
    failed = [s for s in rx.spans() if "error.type" in span_attributes(s)]
    assert len(failed) == 3
    for span in failed:
        assert span.status.code == STATUS_CODE_ERROR
        assert span.status.message == span_attributes(span)["error.type"]
        assert span_attributes(span)["http.response.status_code"] in (401, 429)
    attempts = sorted(
        span_attributes(s)["aione_probe.attempt"]
        for s in failed
        if span_attributes(s)["gen_ai.request.model"] == "status:429"
    )
    assert attempts == [1, 2]


def test_a_collector_that_is_down_costs_no_observation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TEST_TOKEN", "x")
    monkeypatch.setenv("OTEL_TEST_GATEWAY_KEY", "k")
    with otlp_receiver.running() as rx:
        closed = rx.endpoint  # nothing listens here once the receiver has stopped
    with faultserver.running() as fs:
        gateways = _gateway("faulty", f"http://127.0.0.1:{fs.port}/v1", '["ok"]')
        cfg = _config(tmp_path, gateways, "smoke.toml", _otel(closed, 'timeout = "1s"'))
        assert main(["run", "--config", str(cfg)]) in (0, 1)
    store = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    assert len(store.observations("faulty", "ok")) >= 9
    assert store.runs("faulty")[0].status in ("ok", "partial")


def test_check_config_names_an_unset_header_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OTEL_TEST_TOKEN", raising=False)
    monkeypatch.setenv("OTEL_TEST_GATEWAY_KEY", "k")
    gateways = _gateway("gw", "http://127.0.0.1:9/v1", '["m"]')
    cfg = _config(tmp_path, gateways, "smoke.toml", _otel("http://127.0.0.1:4318"))
    assert main(["check-config", str(cfg)]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert f"{cfg}: otel.headers_env.authorization: environment variable OTEL_TEST_TOKEN" in err
    monkeypatch.setenv("OTEL_TEST_TOKEN", f"Bearer {TOKEN}")
    assert main(["check-config", str(cfg)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "otel: http://127.0.0.1:4318 every 3600s, headers authorization=$OTEL_TEST_TOKEN" in out
    assert TOKEN not in out


def test_off_by_default(tmp_path: Path) -> None:
    gateways = _gateway("gw", "http://127.0.0.1:9/v1", '["m"]')
    service = Service(load_config(_config(tmp_path, gateways, "smoke.toml", "")))
    try:
        assert service.otel is None
    finally:
        asyncio.run(service.aclose())


def test_gateway_strings_are_bounded_and_userinfo_never_exported() -> None:
    """A relay echoing a new model name per request makes at most 3 series per target."""
    register_secret(ECHOED)  # as the config does when it reads a key
    gw = GatewayConfig(name="gw", base_url="https://user:pw-secret@relay.example:8443/v1")
    with otlp_receiver.running() as rx:
        exporter = OtelExporter(OtelConfig(endpoint=rx.endpoint), [gw], headers={})
        request = ChatRequest(model="m", messages=({"role": "user", "content": "hi"},))
        for i in range(6):
            obs = Observation(gateway="gw", model="m", response_model=f"fake-{i}" + "x" * 300)
            obs.end_s, obs.response_id = 0.1, f"id-{ECHOED}"
            exporter.observe(obs, request=request, suite="s", probe_id="p", cost=None)
        exporter.shutdown()
    duration = _by(rx.points(), "gen_ai.client.operation.duration")
    models = {p.attributes["gen_ai.response.model"]: p.count for p in duration}
    assert len(models) == 4 and models[OTHER] == 3
    assert all(len(m) <= 128 for m in models)
    assert {(p.attributes["server.address"], p.attributes["server.port"]) for p in duration} == {
        ("relay.example", 8443)
    }
    for r in rx.received:
        assert b"pw-secret" not in r.raw and ECHOED[:6].encode() not in r.raw
    ids = {span_attributes(s)["gen_ai.response.id"] for s in rx.spans()}
    assert ids == {"[redacted]"}


def test_metrics_are_exported_every_interval_without_a_flush() -> None:
    """`serve` never exits between exports: the periodic reader must send on its own."""
    gw = GatewayConfig(name="gw", base_url="http://127.0.0.1:9/v1")
    with otlp_receiver.running() as rx:
        cfg = OtelConfig(endpoint=rx.endpoint, interval=1, traces=False)
        exporter = OtelExporter(cfg, [gw], headers={})
        try:
            exporter.run_finished("gw", "m", "s", "ok")
            deadline = time.monotonic() + 10
            while not rx.requests("/v1/metrics") and time.monotonic() < deadline:
                time.sleep(0.05)
            runs = _by(rx.points(), "aione_probe.suite_runs")
        finally:
            exporter.shutdown()
    assert [p.sum for p in runs] == [1]
    assert not rx.requests("/v1/traces")  # traces = false
