"""The config model: one TOML file, validated at load, every default a named value.

Like blackbox_exporter's config, unknown keys are refused and every error names the
file, the key path and the reason (``examples/demo.toml: gateways[0].timeouts.conect:
unknown key``). Secrets are never stored here: a gateway names the environment variable
or file that holds its key, and `GatewayConfig.api_key()` reads it at call time.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aione_probe.cost import Price
from aione_probe.errors import ConfigError, config_errors
from aione_probe.redact import register_secret
from aione_probe.slo import Objectives

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

DEFAULT_STORAGE_URL = "sqlite:///aione-probe.db"
DEFAULT_LISTEN = "127.0.0.1:9464"


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as ``"500ms"``, ``"30s"``, ``"5m"``, ``"1h"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30 or '30s', got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(
            f"expected a duration such as 30, '500ms', '30s', '5m', '1h', got {value!r}"
        )
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Model):
    """Per-phase deadlines in seconds."""

    connect: Duration = 10.0
    first_token: Duration = 60.0
    idle: Duration = 30.0
    total: Duration = 300.0

    @model_validator(mode="after")
    def _ordered(self) -> Timeouts:
        if min(self.connect, self.first_token, self.idle, self.total) <= 0:
            raise ValueError("every timeout must be greater than zero")
        if self.first_token > self.total:
            raise ValueError(
                f"first_token ({self._shown('first_token')}) cannot exceed total "
                f"({self._shown('total')}): set first_token at most total"
            )
        return self

    def _shown(self, name: str) -> str:
        """A value for a message, saying when it is the default (the user never wrote it)."""
        value = f"{getattr(self, name):g} s"
        return value if name in self.model_fields_set else f"{value}, the default"


class RetryPolicy(_Model):
    """Retries for 429 and 5xx: attempts include the first; delays in seconds."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    base_delay: Duration = 1.0
    max_delay: Duration = 30.0


class Limits(_Model):
    """Caps that keep a hostile or broken gateway from exhausting memory."""

    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_event_bytes: int = Field(default=1024 * 1024, ge=256)
    max_events: int = Field(default=100_000, ge=1)


class Discovery(_Model):
    """Which models from ``GET /v1/models`` to probe when `models` is not set."""

    include: list[str] = ["*"]
    exclude: list[str] = []
    max_models: int = Field(default=20, ge=1, le=1000)

    def select(self, ids: list[str]) -> list[str]:
        """Apply include/exclude patterns and the hard cap, keeping the server's order."""
        chosen = [
            i
            for i in ids
            if any(fnmatch.fnmatchcase(i, p) for p in self.include)
            and not any(fnmatch.fnmatchcase(i, p) for p in self.exclude)
        ]
        return chosen[: self.max_models]


class ManagementConfig(_Model):
    """A gateway's management API (AIone's usage dashboard), for reconciliation."""

    base_url: str
    api_key_env: str | None = None
    api_key_file: Path | None = None
    range_days: int = Field(default=1, ge=1, le=90)

    def api_key(self) -> str | None:
        """The management key, read now from the environment or the file."""
        return _read_secret(self.api_key_env, self.api_key_file)

    def key_problem(self) -> tuple[str, str] | None:
        """Why the configured management key cannot be used; None if it can."""
        return _secret_problem(self.api_key_env, self.api_key_file)


class GatewayConfig(_Model):
    """One gateway: where it is, how to authenticate, how hard to push it."""

    name: str
    base_url: str
    protocol: Literal["openai", "anthropic"] = "openai"
    api_key_env: str | None = None
    api_key_file: Path | None = None
    auth: Literal["bearer", "x-api-key", "none"] | None = None
    anthropic_version: str = "2023-06-01"
    headers: dict[str, str] = {}
    timeouts: Timeouts = Timeouts()
    max_concurrency: int = Field(default=4, ge=1, le=512)
    requests_per_minute: int | None = Field(default=60, ge=1)
    http2: bool = False
    retries: RetryPolicy = RetryPolicy()
    limits: Limits = Limits()
    models: list[str] | None = None
    discovery: Discovery = Discovery()
    management: ManagementConfig | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be lowercase letters, digits, '-', '_' or '.' (a metric label)")
        return v

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must start with http:// or https:// and name a host")
        return v.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if key.lower() in ("authorization", "x-api-key"):
                raise ValueError(f"{key!r} must not be set here: use api_key_env or api_key_file")
        return v

    @model_validator(mode="after")
    def _key_source(self) -> GatewayConfig:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set api_key_env or api_key_file, not both")
        if self.auth == "none" and (self.api_key_env or self.api_key_file):
            raise ValueError('auth = "none" sends no key: remove api_key_env / api_key_file')
        if self.models is not None and not self.models:
            raise ValueError("models is empty: list models or remove the key to discover them")
        return self

    @property
    def auth_scheme(self) -> str:
        """How the key is sent: Bearer for OpenAI, x-api-key for Anthropic unless set."""
        if self.auth:
            return self.auth
        return "x-api-key" if self.protocol == "anthropic" else "bearer"

    def api_key(self) -> str | None:
        """The API key, read now from the environment or the file (None if none is set)."""
        if self.auth == "none":
            return None
        return _read_secret(self.api_key_env, self.api_key_file)

    def key_problem(self) -> tuple[str, str] | None:
        """Why the configured key cannot be used, as (key path, reason); None if it can.

        Only a gateway declared keyless (``auth = "none"``) may have no key source: a
        forgotten key is an error, not a gateway silently probed without one. Requests to
        a gateway with a problem are never sent (see `GatewayClient`).
        """
        if self.auth == "none":
            return None
        if not (self.api_key_env or self.api_key_file):
            return "auth", (
                'no API key source: set api_key_env or api_key_file, or auth = "none" '
                "for a gateway that takes no key"
            )
        return _secret_problem(self.api_key_env, self.api_key_file)


class SuiteConfig(_Model):
    """A scheduled suite: which probe file, how often, against which targets."""

    file: str
    name: str | None = None
    interval: Duration | None = None
    cron: str | None = None
    jitter: Duration = 0.0
    gateways: list[str] = []
    models: list[str] = []
    enabled: bool = True
    cheap_only: bool = False

    @model_validator(mode="after")
    def _schedule(self) -> SuiteConfig:
        if (self.interval is None) == (self.cron is None):
            raise ValueError("set exactly one of interval or cron")
        if self.interval is not None and self.interval < 1:
            raise ValueError("interval must be at least 1 second")
        if self.cron is not None and len(self.cron.split()) != 5:
            raise ValueError("cron must have five fields: minute hour day month weekday")
        return self

    @property
    def job_name(self) -> str:
        """The suite's name in jobs and metrics: `name`, or the file's stem."""
        return self.name or Path(self.file).stem

    def covers(self, gateway: str, model: str) -> bool:
        """Whether this suite runs against (gateway, model)."""
        if self.gateways and gateway not in self.gateways:
            return False
        return not self.models or any(fnmatch.fnmatchcase(model, p) for p in self.models)


class PriceConfig(_Model):
    """Prices per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    currency: str = "USD"


class Budget(_Model):
    """Spend cap per gateway per UTC day (None: no cap)."""

    daily_cap: float | None = Field(default=None, ge=0)
    per_gateway: dict[str, float] = {}
    currency: str = "USD"

    def cap_for(self, gateway: str) -> float | None:
        """The cap that applies to `gateway`."""
        return self.per_gateway.get(gateway, self.daily_cap)


class Storage(_Model):
    """Where observations live: a SQLAlchemy URL (SQLite file by default)."""

    url: str = DEFAULT_STORAGE_URL


class FleetConfig(_Model):
    """Fleet mode: several instances share one PostgreSQL database, grouped by location.

    Every instance with the same `location` shares that location's work; each location
    runs every job. `url` is the PostgreSQL database of both the work queue (Procrastinate)
    and the store. `instance` names this process in `fleet status` (default: host-pid).
    An instance whose last heartbeat is older than `stalled_after` is presumed lost: its
    runs in flight are recorded as interrupted.
    """

    url: str
    location: str
    instance: str | None = None
    concurrency: int = Field(default=200, ge=1, le=10_000)
    heartbeat: Duration = 5.0
    stalled_after: Duration = 30.0

    @field_validator("url")
    @classmethod
    def _postgres(cls, v: str) -> str:
        if not v.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise ValueError("must be a postgresql:// URL (fleet mode needs PostgreSQL)")
        return v

    @field_validator("location")
    @classmethod
    def _location(cls, v: str) -> str:
        # A metric label value: short and from a small alphabet keeps its cardinality bounded.
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", v):
            raise ValueError("must be 1-32 characters of a-z, 0-9, '-' or '_' (e.g. eu-west)")
        return v

    @model_validator(mode="after")
    def _timing(self) -> FleetConfig:
        if self.heartbeat <= 0 or self.stalled_after < 2 * self.heartbeat:
            raise ValueError("stalled_after must be at least twice heartbeat (and heartbeat > 0)")
        return self


class Server(_Model):
    """The HTTP endpoint for /metrics, /healthz and the latest report."""

    listen: str = DEFAULT_LISTEN

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        return v

    @property
    def host(self) -> str:
        """Host part of `listen`."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """Port part of `listen`."""
        return int(self.listen.rpartition(":")[2])


class Reports(_Model):
    """Where HTML reports are written, and the default period they cover."""

    dir: str = "reports"
    period: Duration = 7 * 86400.0


class ReferencePair(_Model):
    """Compare (gateway, model) with the same model behind a trusted endpoint."""

    gateway: str
    model: str
    reference_gateway: str
    reference_model: str | None = None


class AuthenticityConfig(_Model):
    """Settings of the authenticity verdicts (anytime-valid monitoring, see README).

    `false_alarms_per_year` is the budget of false ``substituted`` verdicts per target
    per year, shared by its comparisons; `suspect_alarms_per_year` the looser one for
    ``suspect``. `runs_per_year` is how many fingerprint runs a year the thresholds assume
    (default: from the fingerprint suite's interval; 4,380 for a cron schedule).
    `window` bounds the runs the share estimate and the explanation use; `history` the
    reference runs the greedy tolerance is learned from, and `min_null_pairs` how many of
    the reference's repeated greedy answers it needs first. A trust-on-first-use baseline is
    pinned only after `baseline_min_runs` runs spanning `baseline_min_span`. `alpha` is the
    level of the window-level tests shown beside the monitor (they never page).
    """

    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    window: Duration = 7 * 86400.0
    history: Duration = 30 * 86400.0
    false_alarms_per_year: float = Field(default=0.04, gt=0)
    suspect_alarms_per_year: float = Field(default=4.0, gt=0)
    runs_per_year: float | None = Field(default=None, gt=0)
    baseline_min_runs: int = Field(default=12, ge=1)
    baseline_min_span: Duration = 86400.0
    min_null_pairs: int = Field(default=40, ge=2)
    references: list[ReferencePair] = []


#: Smallest change per drift metric worth a page (see `DriftConfig`).
DRIFT_MIN_CHANGE: dict[str, float] = {
    "pass_rate": 0.08,
    "ttft_seconds": 0.5,
    "e2e_seconds": 0.5,
    "output_tokens": 0.25,
    "error_share": 0.05,
}


class DriftConfig(_Model):
    """Settings of the sequential run-level drift detectors (`aione_probe.analysis.drift`).

    `false_alarms_per_quarter` is the budget of one model (gateway x model): expected
    false ``regressed`` verdicts per 90 days of continuous monitoring, split evenly over all
    its suites and metrics. A baseline is pinned automatically once a suite has
    `baseline_runs` usable runs spanning at least `baseline_span` (two weeks, so the
    day-of-week offsets of latency see every weekday twice). `min_change` is the
    smallest change per metric worth a page (pass rate and error share in absolute
    points, latency and output length relative); each detector's reference value is half
    of it. `bench/drift.py` measures the resulting false-alarm rate and detection delay.
    """

    false_alarms_per_quarter: float = Field(default=1.0, gt=0, le=100)
    baseline_runs: int = Field(default=72, ge=8)
    baseline_span: Duration = 14 * 86400.0
    bootstrap_reps: int = Field(default=100, ge=20, le=10_000)
    min_change: dict[str, float] = Field(default_factory=lambda: dict(DRIFT_MIN_CHANGE))

    @field_validator("min_change")
    @classmethod
    def _min_change(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(DRIFT_MIN_CHANGE))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown} (known: {sorted(DRIFT_MIN_CHANGE)})")
        bad = sorted(k for k, x in v.items() if not 0 < x < 10)
        if bad:
            raise ValueError(f"min_change of {bad} must lie in (0, 10)")
        return {**DRIFT_MIN_CHANGE, **v}


_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OtelConfig(_Model):
    """OpenTelemetry export of every observation (OTLP over HTTP/protobuf); off when absent.

    `endpoint` is the collector's base URL (``http://collector:4318``); ``/v1/metrics`` and
    ``/v1/traces`` are appended. Header values come only from the environment
    (`headers_env` maps a header name to the variable holding its value), so a
    collector's token is never written in the config file.
    """

    endpoint: str
    headers_env: dict[str, str] = {}
    interval: Duration = 60.0
    timeout: Duration = 10.0
    traces: bool = True
    service_name: str = "aione-probe"

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must start with http:// or https:// and name a host")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials: put them in headers_env")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        v = v.rstrip("/")
        if v.endswith(("/v1/metrics", "/v1/traces")):
            raise ValueError("give the base URL: /v1/metrics and /v1/traces are appended")
        return v

    @field_validator("headers_env")
    @classmethod
    def _headers_env(cls, v: dict[str, str]) -> dict[str, str]:
        for header, env in v.items():
            if not _HEADER_NAME.match(header):
                raise ValueError(f"{header!r} is not an HTTP header name")
            if not _ENV_NAME.match(env):
                raise ValueError(f"{header}: {env!r} is not an environment variable name")
        return v

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: float) -> float:
        if v < 1:
            raise ValueError("must be at least 1 second")
        return v

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be greater than zero")
        return v

    def header_problems(self, source: Path) -> list[ConfigError]:
        """Every header variable that is not set now (`check-config` lists them all)."""
        return [
            ConfigError(
                str(source), f"otel.headers_env.{header}", f"environment variable {env} is not set"
            )
            for header, env in self.headers_env.items()
            if not os.environ.get(env, "").strip()
        ]

    def headers(self, source: Path) -> dict[str, str]:
        """The export headers, read now from the environment.

        Raises:
            ConfigError: a named variable is not set (naming `source` and the key).
        """
        if problems := self.header_problems(source):
            raise config_errors(problems)
        return {header: os.environ[env].strip() for header, env in self.headers_env.items()}


_TargetRatio = Annotated[float, Field(gt=0, le=1)]


class LatencyObjective(_Model):
    """`target` share of a target's answers within `threshold` seconds."""

    threshold: Duration
    target: _TargetRatio = 0.99

    @field_validator("threshold")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be greater than zero")
        return v


_DEFAULT = Objectives()


class SloConfig(_Model):
    """Objectives for the targets it covers; the first ``[[slos]]`` entry that covers a
    target applies, and unset keys take AIone's defaults (see `slo.Objectives`)."""

    gateways: list[str] = []
    models: list[str] = []
    availability: _TargetRatio = _DEFAULT.availability_target
    ttft: LatencyObjective = LatencyObjective(
        threshold=_DEFAULT.ttft_s, target=_DEFAULT.ttft_target
    )
    e2e: LatencyObjective = LatencyObjective(threshold=_DEFAULT.e2e_s, target=_DEFAULT.e2e_target)

    def covers(self, gateway: str, model: str) -> bool:
        """Whether this entry applies to (gateway, model)."""
        if self.gateways and gateway not in self.gateways:
            return False
        return not self.models or any(fnmatch.fnmatchcase(model, p) for p in self.models)

    def objectives(self) -> Objectives:
        """The objectives as the metrics and SLI counting use them."""
        return Objectives(
            availability_target=self.availability,
            ttft_s=self.ttft.threshold,
            ttft_target=self.ttft.target,
            e2e_s=self.e2e.threshold,
            e2e_target=self.e2e.target,
        )


class Config(_Model):
    """The whole configuration."""

    path: Path = Path("<memory>")
    probes_dir: str = "probes"
    gateways: list[GatewayConfig]
    suites: list[SuiteConfig] = []
    pricing: dict[str, PriceConfig] = {}
    budget: Budget = Budget()
    storage: Storage = Storage()
    fleet: FleetConfig | None = None
    server: Server = Server()
    reports: Reports = Reports()
    authenticity: AuthenticityConfig = AuthenticityConfig()
    drift: DriftConfig = DriftConfig()
    slos: list[SloConfig] = []
    otel: OtelConfig | None = None

    @model_validator(mode="after")
    def _cross_refs(self) -> Config:
        names = [g.name for g in self.gateways]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate gateway name(s): {', '.join(sorted(dup))}")
        if not self.gateways:
            raise ValueError("at least one [[gateways]] entry is required")
        for i, s in enumerate(self.suites):
            for g in s.gateways:
                if g not in names:
                    raise ValueError(f"suites[{i}].gateways names unknown gateway {g!r}")
        jobs = [s.job_name for s in self.suites]
        if len(set(jobs)) != len(jobs):
            raise ValueError("two suites share a name: give one a distinct `name`")
        for i, slo in enumerate(self.slos):
            for g in slo.gateways:
                if g not in names:
                    raise ValueError(f"slos[{i}].gateways names unknown gateway {g!r}")
        for g in self.budget.per_gateway:
            if g not in names:
                raise ValueError(f"budget.per_gateway names unknown gateway {g!r}")
        if self.fleet is not None:
            if self.storage.url not in (DEFAULT_STORAGE_URL, self.fleet.url):
                raise ValueError(
                    "fleet mode stores in the fleet's database: drop storage.url or set it "
                    "to fleet.url"
                )
            for i, s in enumerate(self.suites):
                if s.interval is not None and slot_cron(s.interval) is None:
                    raise ValueError(
                        f"suites[{i}].interval {s.interval:g}s: in fleet mode an interval "
                        "must divide a minute, an hour or a day (slots are cron-aligned)"
                    )
        for i, r in enumerate(self.authenticity.references):
            for g in (r.gateway, r.reference_gateway):
                if g not in names:
                    raise ValueError(f"authenticity.references[{i}] names unknown gateway {g!r}")
        return self

    def gateway(self, name: str) -> GatewayConfig:
        """The gateway called `name` (KeyError if none)."""
        for g in self.gateways:
            if g.name == name:
                return g
        raise KeyError(name)

    def objectives_for(self, gateway: str, model: str) -> Objectives:
        """The SLOs of (gateway, model): the first covering ``[[slos]]`` entry, or defaults."""
        for slo in self.slos:
            if slo.covers(gateway, model):
                return slo.objectives()
        return Objectives()

    def price_for(self, model: str) -> Price | None:
        """The model's price: an exact key first, then the longest matching glob pattern."""
        p = self.pricing.get(model)
        if p is None:
            matches = [k for k in self.pricing if fnmatch.fnmatchcase(model, k)]
            if not matches:
                return None
            p = self.pricing[max(matches, key=len)]
        cached = p.cached_input if p.cached_input is not None else p.input
        return Price(input=p.input, output=p.output, cached_input=cached, currency=p.currency)

    def resolve(self, relative: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        path = Path(relative)
        return path if path.is_absolute() else self.path.parent / path

    def suite_path(self, suite: SuiteConfig) -> Path:
        """The probe file of `suite`: absolute, or under `probes_dir` (relative to the config)."""
        path = Path(suite.file)
        if path.is_absolute():
            return path
        beside = self.resolve(suite.file)
        return beside if beside.exists() else self.resolve(self.probes_dir) / path

    def storage_url(self) -> str:
        """The storage URL with a relative SQLite path made relative to the config file.

        In fleet mode it is the fleet's PostgreSQL database.
        """
        if self.fleet is not None:
            return self.fleet.url
        url = self.storage.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.resolve(url[len(prefix) :]))
        return url


def slot_cron(interval_s: float) -> str | None:
    """A cron line (six fields, seconds last) firing every `interval_s` on epoch-aligned
    slots, or None when no cron line can (an interval that divides no minute, hour or day).
    """
    n = int(interval_s)
    if n != interval_s or n < 1:
        return None
    if n < 60 and 60 % n == 0:
        return f"* * * * * */{n}"
    if n % 60 == 0 and n < 3600 and 3600 % n == 0:
        return f"*/{n // 60} * * * * 0"
    if n % 3600 == 0 and n <= 86400 and 86400 % n == 0:
        return "0 0 * * * 0" if n == 86400 else f"0 */{n // 3600} * * * 0"
    return None


def _read_secret(env: str | None, file: Path | None) -> str | None:
    # Every key read is registered with the redactor, so no output can show it.
    if env:
        value = os.environ.get(env)
        register_secret(value)
        return value.strip() if value else None
    if file:
        try:
            value = file.read_text(encoding="utf-8").strip()
            register_secret(value)
            return value or None
        except OSError as exc:
            # The path is config, not a secret; the content is never shown.
            raise ConfigError(str(file), "api_key_file", f"cannot read: {exc.strerror}") from None
    return None


def _secret_problem(env: str | None, file: Path | None) -> tuple[str, str] | None:
    if env:
        value = os.environ.get(env)
        if value is None:
            return "api_key_env", f"environment variable {env} is not set"
        return None if value.strip() else ("api_key_env", f"environment variable {env} is empty")
    if file:
        try:
            value = _read_secret(None, file)
        except ConfigError as exc:
            return "api_key_file", f"{file}: {exc.reason}"
        return None if value else ("api_key_file", f"{file} is empty")
    return None


def key_problems(cfg: Config) -> list[ConfigError]:
    """Every configured key that cannot be read now, naming gateway, variable or file, and
    why; `check-config` exits 2 on any, `run` and `serve` refuse to send to that gateway."""
    out = []
    for i, gw in enumerate(cfg.gateways):
        for where, owner in (("", gw), (".management", gw.management)):
            problem = owner.key_problem() if owner is not None else None
            if problem is not None:
                key, reason = problem
                out.append(
                    ConfigError(
                        str(cfg.path), f"gateways[{i}]{where}.{key}", f"gateway {gw.name}: {reason}"
                    )
                )
    return out


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _reason(err: dict[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        return "required key is missing"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def config_from_dict(data: dict[str, Any], path: Path) -> Config:
    """Validate an already parsed config; errors name `path`, the key and the reason."""
    try:
        return Config.model_validate({**data, "path": path})
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if p not in ("function-after", "function-before"))
            # pydantic puts the type name in the location of model-level validators.
            loc = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper()))
            errors.append(ConfigError(str(path), _key_path(loc), _reason(err)))
        # Every mistake at once, so fixing one never reveals the next.
        raise config_errors(errors) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file.

    Raises:
        ConfigError: the file is missing, not TOML, or invalid; the message reads
            ``file: key: reason``.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(str(p), "(file)", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(p), "(syntax)", f"not valid TOML: {exc}") from None
    if "path" in data:
        raise ConfigError(str(p), "path", "unknown key")
    return config_from_dict(data, p)
