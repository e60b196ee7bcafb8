"""SQLModel tables of the store, and the column types they share.

Every timestamp is a timezone-aware UTC `datetime` in Python (`UTCDateTime`), whatever the
backend; every JSON column is SQL NULL when the Python value is None (`JSONColumn`); every
string column goes through `SafeText`, which makes untrusted gateway text storable on any
backend. No table has a column for an API key.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Date, DateTime, Dialect, Index, Text, text
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class RunStatus(StrEnum):
    """Status of a suite run; `running` until `Store.finish_run` (or recovery) settles it."""

    ok = "ok"
    failed = "failed"
    partial = "partial"
    skipped = "skipped"
    running = "running"


class VerdictKind(StrEnum):
    """What a verdict judges."""

    authenticity = "authenticity"
    drift = "drift"
    cross_protocol = "cross_protocol"
    reconcile = "reconcile"


class UTCDateTime(TypeDecorator[datetime]):
    """A `DateTime(timezone=True)` that only accepts aware datetimes and returns UTC ones.

    SQLite has no timezone type: values are stored as naive UTC text (which sorts in time
    order) and read back with `UTC` attached. PostgreSQL stores ``timestamptz``; values are
    converted to UTC on the way out whatever the session time zone is.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; the store needs UTC-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class SafeText(TypeDecorator[str]):
    """Unbounded text that any backend accepts.

    Gateway output is untrusted: PostgreSQL refuses NUL characters in text and no UTF-8
    codec accepts lone surrogates, either of which would make a whole run's transaction
    fail. NUL becomes U+FFFD and unencodable characters become ``?``, on every backend
    so that both store the same value.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or (value.isascii() and "\x00" not in value):
            return value
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value


class JSONColumn(TypeDecorator[Any]):
    """JSON that stores Python None as SQL NULL (not the JSON literal ``null``)."""

    impl = JSON(none_as_null=True)
    cache_ok = True


def _text_field(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(
        default=None if nullable else ..., sa_type=SafeText, nullable=nullable, index=index
    )


class Gateway(SQLModel, table=True):
    """Table ``gateway``: one row per configured gateway, keyed by its config name.

    Columns: ``id``, ``name`` (unique), ``base_url``, ``protocol`` (``openai`` or
    ``anthropic``). Never a key or any other secret.
    """

    __tablename__ = "gateway"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_type=SafeText, unique=True)
    base_url: str = Field(sa_type=SafeText)
    protocol: str = Field(sa_type=SafeText)


class Model(SQLModel, table=True):
    """Table ``model``: a model name served by a gateway (unique per gateway).

    Columns: ``id``, ``gateway_id`` (-> ``gateway.id``), ``name``.
    """

    __tablename__ = "model"
    __table_args__ = (Index("uq_model_gateway_name", "gateway_id", "name", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    gateway_id: int = Field(foreign_key="gateway.id")
    name: str = Field(sa_type=SafeText)


class SuiteRun(SQLModel, table=True):
    """Table ``suiterun``: one (gateway, model, suite) run at one time.

    ``status`` is a `RunStatus` value; ``reason`` says why a run is not ``ok`` (or why it
    was skipped). The summary is written with the observations, in one transaction:
    ``n_observations`` counts every stored attempt, ``n_requests`` the final attempts
    (one per request), ``n_failed`` the final attempts that failed, ``cost`` sums the
    priced attempts. ``seed`` drove the templated probes; ``scheduled`` is False for
    manual runs.

    Fleet mode (schema 3) adds ``location`` (the running instance's location; NULL for a
    single instance), ``instance`` (its name), ``slot_at`` (the schedule slot the run
    belongs to) and ``reserved`` (the money held against the spend cap while it runs).
    At most one row per (suite, gateway, model, location, slot) exists: a unique index
    makes "each slot once per location" a database constraint.
    """

    __tablename__ = "suiterun"
    __table_args__ = (
        Index("ix_suiterun_target_started", "gateway", "model", "suite", "started_at"),
        Index(
            "uq_suiterun_slot",
            "suite",
            "gateway",
            "model",
            "location",
            "slot_at",
            unique=True,
            sqlite_where=text("slot_at IS NOT NULL"),
            postgresql_where=text("slot_at IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    gateway: str = Field(sa_type=SafeText)
    model: str = Field(sa_type=SafeText)
    suite: str = Field(sa_type=SafeText)
    suite_version: int
    # Seeds are 62-bit: PostgreSQL's INTEGER is 32 (schema 3 widened it).
    seed: int | None = Field(default=None, sa_type=BigInteger)
    scheduled: bool = True
    started_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    status: str = Field(sa_type=SafeText, index=True)
    reason: str | None = _text_field()
    n_observations: int = 0
    n_requests: int = 0
    n_failed: int = 0
    cost: float = 0.0
    location: str | None = _text_field()
    instance: str | None = _text_field()
    slot_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reserved: float = 0.0


class ObservationRow(SQLModel, table=True):
    """Table ``observation``: one attempt of one request (the columns of `types.Observation`).

    Usage is flattened (``prompt_tokens`` … ``cache_creation_tokens``, ``usage_raw`` is
    the usage object as sent, NULL when absent); ``tpot_s`` and ``output_tps`` are the
    derived `Observation.tpot_s` / `output_tokens_per_s` stored for querying. ``suite``,
    ``probe_id``, ``probe_hash``, ``sample`` and ``vars`` say which probe instance it
    measured; ``cost`` is NULL when no price was known; ``final`` marks the last attempt
    of a request (the one the checks judged). ``failure`` is a `FailureKind` value.
    ``location`` is its run's location (fleet mode; NULL for a single instance).
    """

    __tablename__ = "observation"
    __table_args__ = (
        # Covers the report's latency read (one target's successful final attempts in
        # time order) as well as every (gateway, model, time range) lookup.
        Index(
            "ix_observation_target_timing",
            "gateway",
            "model",
            "started_at",
            "final",
            "failure",
            "stream",
            "first_token_s",
            "end_s",
        ),
        Index("ix_observation_probe_started", "suite", "probe_hash", "started_at"),
        Index("ix_observation_run", "run_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="suiterun.id")
    gateway: str = Field(sa_type=SafeText)
    model: str = Field(sa_type=SafeText)
    suite: str = Field(sa_type=SafeText)
    probe_id: str = Field(sa_type=SafeText)
    probe_hash: str = Field(sa_type=SafeText)
    sample: int = 0
    attempt: int = 1
    started_at: datetime = Field(sa_type=UTCDateTime)
    protocol: str = Field(sa_type=SafeText)
    stream: bool = False
    failure: str = Field(sa_type=SafeText)
    status: int | None = None
    error_type: str | None = _text_field()
    error_code: str | None = _text_field()
    error_message: str | None = _text_field()
    http_version: str | None = _text_field()
    request_id: str | None = _text_field()
    retry_after_s: float | None = None
    response_id: str | None = _text_field()
    response_model: str | None = _text_field()
    system_fingerprint: str | None = _text_field()
    created: int | None = Field(default=None, sa_type=BigInteger)
    content: str = Field(default="", sa_type=SafeText)
    tool_calls: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONColumn)
    content_parts: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONColumn)
    finish_reason: str | None = _text_field()
    raw_finish_reason: str | None = _text_field()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_creation_tokens: int | None = None
    usage_raw: dict[str, Any] | None = Field(default=None, sa_type=JSONColumn)
    usage_in_stream: bool | None = None
    headers_s: float | None = None
    first_chunk_s: float | None = None
    first_token_s: float | None = None
    end_s: float | None = None
    tpot_s: float | None = None
    output_tps: float | None = None
    gaps_s: list[float] | None = Field(default=None, sa_type=JSONColumn)
    chunk_count: int = 0
    bytes_received: int = Field(default=0, sa_type=BigInteger)
    cost: float | None = None
    vars: dict[str, Any] | None = Field(default=None, sa_type=JSONColumn)
    final: bool = True
    location: str | None = _text_field()


class CheckResultRow(SQLModel, table=True):
    """Table ``checkresult``: one check's judgement (the fields of `types.CheckResult`).

    ``observation_id`` is NULL for group checks (judged over several observations).
    ``created_at`` is the start of the run that measured it, so all results of a run fall
    in the same time window as the run. ``value`` is a `CheckValue` value; ``params`` the
    check's parameters (so drift compares like with like); the ``metadata`` column is the
    ``meta`` attribute (SQLModel reserves ``metadata``).
    """

    __tablename__ = "checkresult"
    __table_args__ = (
        Index("ix_checkresult_target_name_created", "gateway", "model", "name", "created_at"),
        Index("ix_checkresult_run", "run_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    observation_id: int | None = Field(default=None, foreign_key="observation.id")
    run_id: int = Field(foreign_key="suiterun.id")
    gateway: str = Field(sa_type=SafeText)
    model: str = Field(sa_type=SafeText)
    suite: str = Field(sa_type=SafeText)
    probe_id: str = Field(sa_type=SafeText)
    probe_hash: str = Field(sa_type=SafeText)
    name: str = Field(sa_type=SafeText)
    params: dict[str, Any] | None = Field(default=None, sa_type=JSONColumn)
    value: str = Field(sa_type=SafeText)
    answer: str | None = _text_field()
    expected: str | None = _text_field()
    explanation: str = Field(default="", sa_type=SafeText)
    meta: dict[str, Any] | None = Field(default=None, sa_column=Column("metadata", JSONColumn))
    created_at: datetime = Field(sa_type=UTCDateTime)


class ObservationDay(SQLModel, table=True):
    """Table ``observationday``: observations counted per target, UTC day and outcome.

    A rollup of ``observation`` kept in the same transaction as the rows it counts
    (`aione_probe.store.rollup`), so reports over long periods read a few rows per day.
    Key: ``day`` (UTC date of ``started_at``), ``gateway``, ``model``, ``final``,
    ``failure`` and ``echoed`` (for final successful attempts the echoed model name,
    ``''`` when none was echoed; ``''`` for every other attempt). ``n`` counts the
    observations, ``cost`` sums their non-NULL costs.
    """

    __tablename__ = "observationday"
    __table_args__ = (
        Index(
            "uq_observationday_key",
            "day",
            "gateway",
            "model",
            "final",
            "failure",
            "echoed",
            unique=True,
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    day: date = Field(sa_type=Date)
    gateway: str = Field(sa_type=SafeText)
    model: str = Field(sa_type=SafeText)
    final: bool
    failure: str = Field(sa_type=SafeText)
    echoed: str = Field(sa_type=SafeText)
    n: int = 0
    cost: float = 0.0


class CheckDay(SQLModel, table=True):
    """Table ``checkday``: check results counted per target, check, UTC day and probe.

    A rollup of ``checkresult`` kept like `ObservationDay`. Key: ``day`` (UTC date of
    ``created_at``), ``gateway``, ``model``, ``name``, ``probe_id`` and ``category`` (the
    ``category`` of the result's metadata, ``''`` when absent); one count per
    `CheckValue` value.
    """

    __tablename__ = "checkday"
    __table_args__ = (
        Index(
            "uq_checkday_key", "day", "gateway", "model", "name", "probe_id", "category",
            unique=True,
        ),
    )  # fmt: skip

    id: int | None = Field(default=None, primary_key=True)
    day: date = Field(sa_type=Date)
    gateway: str = Field(sa_type=SafeText)
    model: str = Field(sa_type=SafeText)
    name: str = Field(sa_type=SafeText)
    probe_id: str = Field(sa_type=SafeText)
    category: str = Field(sa_type=SafeText)
    passed: int = 0
    partial: int = 0
    failed: int = 0
    missing: int = 0
    unscored: int = 0


class Verdict(SQLModel, table=True):
    """Table ``verdict``: one judgement of a target by analysis.

    ``kind`` is a `VerdictKind` value; ``suite`` is NULL when the verdict spans suites;
    ``comparison`` says what an authenticity verdict compared the target with
    (``reference:<gw>/<model>``, ``baseline``, ``profile:<id>``, ``overall``; NULL for
    other kinds), stable when a baseline is re-pinned; ``location`` is the fleet location
    a drift verdict judges (schema 5; NULL for a single instance and for other kinds);
    ``verdict`` is the outcome label, ``score`` its statistic (e.g. a p-value), ``alpha``
    the significance level used, ``n`` the sample size, ``baseline_id`` the baseline
    compared against (if any), ``details`` whatever the analysis wants to show.
    """

    __tablename__ = "verdict"
    __table_args__ = (
        Index("ix_verdict_kind_target_created", "kind", "gateway", "model", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(sa_type=SafeText)
    gateway: str = Field(sa_type=SafeText)
    model: str = Field(sa_type=SafeText)
    suite: str | None = _text_field()
    comparison: str | None = _text_field()
    location: str | None = _text_field()
    created_at: datetime = Field(sa_type=UTCDateTime)
    verdict: str = Field(sa_type=SafeText)
    score: float | None = None
    alpha: float | None = None
    n: int = 0
    baseline_id: int | None = Field(default=None, foreign_key="baseline.id")
    details: dict[str, Any] | None = Field(default=None, sa_type=JSONColumn)


class Baseline(SQLModel, table=True):
    """Table ``baseline``: a pinned reference that drift or authenticity compares against.

    ``data`` holds the reference itself (kind-specific); ``window_start``/``window_end``
    is the time range it summarises; ``source`` says where it came from (``auto``,
    ``cli``, ``import``…). ``location`` is the fleet location a drift baseline was learnt
    from (schema 5; NULL for a single instance and for authenticity). At most one row per
    (kind, gateway, model, suite, location) is ``active`` (a partial unique index enforces
    it; NULL suite or location counts as one value).
    """

    __tablename__ = "baseline"
    __table_args__ = (
        Index(
            "uq_baseline_active",
            "kind",
            "gateway",
            "model",
            text("coalesce(suite, '')"),
            text("coalesce(location, '')"),
            unique=True,
            sqlite_where=text("active"),
            postgresql_where=text("active"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(sa_type=SafeText)
    gateway: str = Field(sa_type=SafeText)
    model: str = Field(sa_type=SafeText)
    suite: str | None = _text_field()
    location: str | None = _text_field()
    window_start: datetime = Field(sa_type=UTCDateTime)
    window_end: datetime = Field(sa_type=UTCDateTime)
    pinned_at: datetime = Field(sa_type=UTCDateTime)
    source: str = Field(sa_type=SafeText)
    data: dict[str, Any] | None = Field(default=None, sa_type=JSONColumn)
    active: bool = True


class FleetInstance(SQLModel, table=True):
    """Table ``fleetinstance``: one row per fleet process that joined (schema 3).

    ``name`` is unique per process (the configured name and a random token, ``eu-1#3fa2c1``)
    and ``location`` comes from ``[fleet]``; ``heartbeat_at`` is refreshed every
    heartbeat; ``stopped_at`` is set when it leaves cleanly, or when another instance
    presumes it lost (``lost`` True). ``config`` is the fleet-relevant part of its
    configuration (`aione_probe.fleet.identity`), compared when another instance joins.
    """

    __tablename__ = "fleetinstance"
    __table_args__ = (Index("ix_fleetinstance_live", "stopped_at", "location"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_type=SafeText)
    location: str = Field(sa_type=SafeText)
    host: str = Field(sa_type=SafeText)
    pid: int
    version: str = Field(sa_type=SafeText)
    started_at: datetime = Field(sa_type=UTCDateTime)
    heartbeat_at: datetime = Field(sa_type=UTCDateTime)
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lost: bool = False
    config: dict[str, Any] | None = Field(default=None, sa_type=JSONColumn)


class FleetSecret(SQLModel, table=True):
    """Table ``fleetsecret``: values every instance of a fleet shares (schema 3).

    ``seed_salt`` keys the per-slot run seeds, so every instance derives the same seed
    for a slot and target and reference runs pair across instances and locations.
    """

    __tablename__ = "fleetsecret"

    name: str = Field(sa_type=SafeText, primary_key=True)
    value: str = Field(sa_type=SafeText)


class SchemaVersion(SQLModel, table=True):
    """Table ``schemaversion``: one row per schema version applied; the highest is current."""

    __tablename__ = "schemaversion"

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    applied_at: datetime = Field(sa_type=UTCDateTime)


TABLES = [
    t.__table__  # type: ignore[attr-defined]
    for t in (
        Gateway,
        Model,
        SuiteRun,
        ObservationRow,
        CheckResultRow,
        Baseline,
        Verdict,
        SchemaVersion,
        ObservationDay,
        CheckDay,
        FleetInstance,
        FleetSecret,
    )
]
"""Every table of the store, in dependency order."""
