"""OpenTelemetry export: every observation as OTLP metrics and one span, GenAI conventions.

The runner hands each attempt here right where it feeds the Prometheus instruments, so both
exports see the same observations. Names and attributes follow the OpenTelemetry GenAI
semantic conventions (client metrics and inference spans, development status, as of
semantic-conventions v1.41.0): ``gen_ai.client.operation.duration`` (every attempt, failed ones
with ``error.type``), ``gen_ai.client.token.usage`` (``gen_ai.token.type`` input/output),
``gen_ai.client.operation.time_to_first_chunk`` and ``time_per_output_chunk`` (streamed
attempts), with ``gen_ai.operation.name``, ``gen_ai.provider.name`` (the wire protocol:
``openai`` or ``anthropic``), ``gen_ai.request.model``, ``gen_ai.response.model``,
``server.address`` and ``server.port``. What the conventions do not name (TTFT to the first
*content* token, TPOT, output speed, cost, checks, runs) is exported under ``aione_probe.*``.

Attributes are built from an allow-list: names from the config, small enums and the few
strings the gateway echoed (model, response id, finish reason), scrubbed of keys and
bounded. Never a URL path or query, a header, an error message, a prompt or an answer.
The exporter is OTLP over HTTP/protobuf (`opentelemetry-exporter-otlp-proto-http`), on
background threads of the SDK; a collector that is down costs logged export errors, never
a probe.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from aione_probe import __version__
from aione_probe.config import GatewayConfig, OtelConfig
from aione_probe.metrics import RESPONSE_MODELS_PER_TARGET, _bounded, _valid
from aione_probe.redact import scrub
from aione_probe.slo import Objectives, sli_events
from aione_probe.types import ChatRequest, CheckResult, CheckValue, Observation

log = logging.getLogger(__name__)

SCOPE = "aione_probe"
OPERATION = "chat"
OTHER = "_OTHER"
"""What `gen_ai.response.model` becomes past `RESPONSE_MODELS_PER_TARGET` distinct values."""

# The conventions' recommended boundaries (seconds, and tokens).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304,
                 16777216, 67108864)  # fmt: skip
TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1)
SPEED_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)

HISTOGRAMS: dict[str, tuple[str, str, str, tuple[float, ...]]] = {
    # key: (name, unit, description, bucket boundaries)
    "duration": ("gen_ai.client.operation.duration", "s", "GenAI operation duration.",
                 DURATION_BUCKETS),
    "tokens": ("gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.",
               TOKEN_BUCKETS),
    "first_chunk": ("gen_ai.client.operation.time_to_first_chunk", "s",
                    "Time to receive the first chunk of a streamed response.", DURATION_BUCKETS),
    "per_chunk": ("gen_ai.client.operation.time_per_output_chunk", "s",
                  "Time between consecutive chunks of a streamed response.", DURATION_BUCKETS),
    "ttft": ("aione_probe.client.time_to_first_token", "s",
             "Time to the first content token (streamed) or to the full body (plain).",
             DURATION_BUCKETS),
    "tpot": ("aione_probe.client.time_per_output_token", "s",
             "(e2e - ttft) / (completion_tokens - 1) of a streamed response.", TPOT_BUCKETS),
    "speed": ("aione_probe.client.output_tokens_per_second", "{token}/s",
              "Output speed after the first token of a streamed response.", SPEED_BUCKETS),
}  # fmt: skip


def _server(base_url: str) -> dict[str, Any]:
    """`server.address` and `server.port` of a gateway: host and port only, never userinfo."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"server.address": parts.hostname or "", "server.port": port}


def _untrusted(text: str) -> str:
    """A string the gateway sent, as an attribute: keys scrubbed (it may echo one), bounded."""
    return _bounded(scrub(text))


def _finite(value: float | int | None) -> float | None:
    # A dishonest gateway may send nonsense numbers; they are dropped, never raised on.
    return float(value) if value is not None and _valid(value) else None


class OtelExporter:
    """OTLP metrics and spans for the observations of one service.

    Providers are this object's own (never the global ones), like the explicit Prometheus
    registry. The public methods only queue their arguments: one worker thread records them,
    because the SDK's per-measurement attribute handling costs tens of microseconds (a long
    stream's chunk gaps add up to milliseconds) and must not hold up the event loop that
    times other streams. `force_flush` and `shutdown` drain that queue first.
    """

    def __init__(
        self,
        cfg: OtelConfig,
        gateways: Iterable[GatewayConfig],
        *,
        headers: dict[str, str],
        currency: str = "USD",
        objectives: Callable[[str, str], Objectives] | None = None,
    ) -> None:
        resource = Resource.create(
            {"service.name": cfg.service_name, "service.version": __version__}
        )
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(
                endpoint=f"{cfg.endpoint}/v1/metrics", headers=headers, timeout=cfg.timeout
            ),
            export_interval_millis=cfg.interval * 1000,
            export_timeout_millis=cfg.timeout * 1000,
        )
        self._meters = MeterProvider(resource=resource, metric_readers=[reader])
        self._tracers: TracerProvider | None = None
        if cfg.traces:
            self._tracers = TracerProvider(resource=resource)
            self._tracers.add_span_processor(
                BatchSpanProcessor(
                    OTLPSpanExporter(
                        endpoint=f"{cfg.endpoint}/v1/traces", headers=headers, timeout=cfg.timeout
                    ),
                    export_timeout_millis=cfg.timeout * 1000,
                )
            )
        self._gateways = {g.name: (g.protocol, _server(g.base_url)) for g in gateways}
        self._seen_models: dict[tuple[str, str], list[str]] = {}
        meter = self._meters.get_meter(SCOPE, __version__)
        self._h = {
            key: meter.create_histogram(
                name, unit, what, explicit_bucket_boundaries_advisory=buckets
            )
            for key, (name, unit, what, buckets) in HISTOGRAMS.items()
        }
        self._cost = meter.create_counter(
            "aione_probe.cost", f"{{{currency}}}", "Cost of every attempt at the price table."
        )
        self._checks = meter.create_counter(
            "aione_probe.checks", "{check}", "Check results by check name and outcome."
        )
        self._runs = meter.create_counter(
            "aione_probe.suite_runs", "{run}", "Finished suite runs by status."
        )
        self._slo_events = meter.create_counter(
            "aione_probe.slo.events", "{event}", "SLI events of final attempts, good or bad."
        )
        self._objectives = objectives or (lambda _gateway, _model: Objectives())
        self._tracer = self._tracers.get_tracer(SCOPE, __version__) if self._tracers else None
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._record, name="aione-otel", daemon=True)
        self._worker.start()

    # ----------------------------------------------------------------- recording (queued)
    def observe(
        self,
        obs: Observation,
        *,
        request: ChatRequest,
        suite: str,
        probe_id: str,
        cost: float | None,
    ) -> None:
        """Record one attempt: its metrics and one CLIENT span with the attempt's own times."""
        self._submit(self._observe, obs, request, suite, probe_id, cost)

    def observe_request(self, final: Observation, *, suite: str) -> None:
        """Count one request's SLI events (availability, TTFT, e2e) from its final attempt."""
        self._submit(self._observe_request, final, suite)

    def observe_checks(
        self, gateway: str, model: str, suite: str, results: list[CheckResult]
    ) -> None:
        """Count check results by check name and outcome."""
        self._submit(self._observe_checks, gateway, model, suite, list(results))

    def run_finished(self, gateway: str, model: str, suite: str, status: str) -> None:
        """Count a finished (or skipped) suite run by status."""
        self._submit(self._run_finished, gateway, model, suite, status)

    def _submit(self, fn: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        self._jobs.put(functools.partial(fn, *args, **kwargs))

    def _record(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception:  # a bad value must never stop the export
                log.exception("OpenTelemetry recording failed")

    def _drain(self) -> None:
        """Wait until every queued measurement is recorded."""
        if not self._worker.is_alive():
            return
        done = threading.Event()
        self._jobs.put(done.set)
        done.wait()

    # ----------------------------------------------------------------- recording (worker)
    def _observe(
        self, obs: Observation, request: ChatRequest, suite: str, probe_id: str, cost: float | None
    ) -> None:
        attrs = self._attributes(obs, suite)
        duration = _finite(obs.end_s)
        if duration is not None:
            self._h["duration"].record(duration, attrs)
        for kind, value in (
            ("input", obs.usage.prompt_tokens),
            ("output", obs.usage.completion_tokens),
        ):
            if (tokens := _finite(value)) is not None:
                self._h["tokens"].record(int(tokens), {**attrs, "gen_ai.token.type": kind})
        if obs.ok:
            self._timings(obs, attrs)
        if (amount := _finite(cost)) is not None:
            self._cost.add(amount, attrs)
        if self._tracer is not None:
            self._span(obs, request, attrs, probe_id)

    def _observe_request(self, final: Observation, suite: str) -> None:
        base = self._target(final.gateway, final.model, suite)
        for slo, good in sli_events(final, self._objectives(final.gateway, final.model)):
            self._slo_events.add(
                1,
                {
                    **base,
                    "aione_probe.slo.name": slo,
                    "aione_probe.slo.event": "good" if good else "bad",
                },
            )

    def _observe_checks(
        self, gateway: str, model: str, suite: str, results: list[CheckResult]
    ) -> None:
        base = self._target(gateway, model, suite)
        for r in results:
            self._checks.add(
                1,
                {
                    **base,
                    "aione_probe.check.name": _bounded(r.name),
                    "aione_probe.check.outcome": CheckValue(r.value).value,
                },
            )

    def _run_finished(self, gateway: str, model: str, suite: str, status: str) -> None:
        self._runs.add(1, {**self._target(gateway, model, suite), "aione_probe.run.status": status})

    def force_flush(self, timeout_s: float = 10.0) -> None:
        """Export everything recorded so far now (metrics and spans)."""
        self._drain()
        millis = int(timeout_s * 1000)
        self._meters.force_flush(millis)
        if self._tracers is not None:
            self._tracers.force_flush(millis)

    def shutdown(self) -> None:
        """Record what is queued, flush what is pending and stop the export threads."""
        self._drain()
        self._jobs.put(None)
        self._worker.join()
        if self._tracers is not None:
            self._tracers.shutdown()
        self._meters.shutdown()

    # ----------------------------------------------------------------- helpers
    def _target(self, gateway: str, model: str, suite: str) -> dict[str, Any]:
        protocol, server = self._gateways.get(gateway, ("openai", {}))
        return {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": protocol,
            "gen_ai.request.model": model,
            **server,
            "aione_probe.gateway": gateway,
            "aione_probe.suite": suite,
        }

    def _attributes(self, obs: Observation, suite: str) -> dict[str, Any]:
        attrs = self._target(obs.gateway, obs.model, suite)
        attrs["gen_ai.request.stream"] = obs.stream
        if obs.response_model:
            attrs["gen_ai.response.model"] = self._response_model(obs)
        if not obs.ok:
            attrs["error.type"] = obs.failure.value
        return attrs

    def _response_model(self, obs: Observation) -> str:
        # Gateway-controlled: a relay that echoes a new name per request must not create a
        # new time series each time (the same bound the Prometheus info metric keeps).
        name = _untrusted(obs.response_model or "")
        seen = self._seen_models.setdefault((obs.gateway, obs.model), [])
        if name in seen:
            return name
        if len(seen) >= RESPONSE_MODELS_PER_TARGET:
            return OTHER
        seen.append(name)
        return name

    def _timings(self, obs: Observation, attrs: dict[str, Any]) -> None:
        if (ttft := _finite(obs.ttft_s)) is not None:
            self._h["ttft"].record(ttft, attrs)
        if not obs.stream:
            return
        for instrument, value in (
            (self._h["first_chunk"], obs.first_chunk_s),
            (self._h["tpot"], obs.tpot_s),
            (self._h["speed"], obs.output_tokens_per_s),
        ):
            if (v := _finite(value)) is not None:
                instrument.record(v, attrs)
        for gap in obs.gaps_s:
            if (v := _finite(gap)) is not None:
                self._h["per_chunk"].record(v, attrs)

    def _span(
        self, obs: Observation, request: ChatRequest, attrs: dict[str, Any], probe_id: str
    ) -> None:
        assert self._tracer is not None
        start_ns = int(obs.started_at.timestamp() * 1e9)
        end_ns = start_ns + int((_finite(obs.end_s) or 0.0) * 1e9)
        span_attrs: dict[str, Any] = {
            **attrs,
            "aione_probe.probe.id": _bounded(probe_id),
            "aione_probe.attempt": obs.attempt,
        }
        optional: dict[str, Any] = {
            "gen_ai.request.max_tokens": request.max_tokens,
            "gen_ai.request.temperature": request.temperature,
            "gen_ai.request.top_p": request.top_p,
            "gen_ai.request.seed": request.seed,
            "gen_ai.response.id": _untrusted(obs.response_id) if obs.response_id else None,
            "gen_ai.usage.input_tokens": obs.usage.prompt_tokens,
            "gen_ai.usage.output_tokens": obs.usage.completion_tokens,
            "gen_ai.usage.cache_read.input_tokens": obs.usage.cached_tokens,
            "gen_ai.usage.cache_creation.input_tokens": obs.usage.cache_creation_tokens,
            "gen_ai.usage.reasoning.output_tokens": obs.usage.reasoning_tokens,
            "http.response.status_code": obs.status,
        }
        if request.response_format:
            optional["gen_ai.output.type"] = "json"
        if obs.finish_reason:
            optional["gen_ai.response.finish_reasons"] = [_untrusted(obs.finish_reason)]
        if obs.stream and obs.first_chunk_s is not None:
            optional["gen_ai.response.time_to_first_chunk"] = _finite(obs.first_chunk_s)
        span_attrs.update({k: v for k, v in optional.items() if v is not None})
        span = self._tracer.start_span(
            f"{OPERATION} {request.model}",
            kind=SpanKind.CLIENT,
            attributes=span_attrs,
            start_time=start_ns,
        )
        if not obs.ok:
            # The class only: an error message is gateway text and may echo a key.
            span.set_status(Status(StatusCode.ERROR, obs.failure.value))
        span.end(end_time=end_ns)
