"""Collect the numbers of a verification report from the store, for one period.

Aggregates are computed in SQL (counts and sums grouped by target and UTC day), so a
report over a million observations reads a few thousand grouped rows, not a million
objects. Latency percentiles need the raw values: only the two latency columns of final,
successful observations are selected, and when a target has more than
`LATENCY_SAMPLE_CAP` of them in the period a systematic 1-in-k sample by row id is read
instead (the report states the stride). Evidence rows are read with small LIMIT queries.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any, cast

import numpy as np
from sqlalchemy import Table, and_, case, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from aione_probe.report.model import (
    PERCENTILES,
    CacheStats,
    Count,
    EvidenceRow,
    LatencyDay,
    PassRate,
    ReportData,
    SignalRow,
    TargetReport,
    VerdictView,
    Violation,
    category_of,
    is_conformance_check,
    slug,
)
from aione_probe.store.tables import CheckResultRow, ObservationRow, Verdict
from aione_probe.types import CheckValue, utcnow

LATENCY_SAMPLE_CAP = 20_000
EVIDENCE_ROWS = 40
VIOLATION_ROWS = 30
EXCERPT_CHARS = 240

OBSERVATION = cast(Table, ObservationRow.__table__)
CHECKRESULT = cast(Table, CheckResultRow.__table__)
VERDICT = cast(Table, Verdict.__table__)


def _day(value: Any) -> date:
    """A day from SQL ``date()``: a string on SQLite, a date on PostgreSQL."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return value if value is not None else {}


def _opt_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _opt_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class _Query:
    """The period and target filters shared by every query of one report."""

    def __init__(
        self,
        conn: Connection,
        since: datetime,
        until: datetime,
        gateways: Sequence[str] | None,
        models: Sequence[str] | None,
    ) -> None:
        self.conn = conn
        self.since = since
        self.until = until
        self.gateways = gateways
        self.models = models
        self.postgres = conn.dialect.name == "postgresql"

    def day(self, column: Any) -> ColumnElement[Any]:
        """The UTC calendar day of a timestamp column (PostgreSQL converts from timestamptz)."""
        if self.postgres:
            return func.date(func.timezone("UTC", column))
        return func.substr(column, 1, 10)  # stored as "YYYY-MM-DD HH:MM:SS…" UTC text

    def where(self, table: Table, time_col: str) -> Any:
        conds = [table.c[time_col] >= self.since, table.c[time_col] < self.until]
        if self.gateways:
            conds.append(table.c.gateway.in_(list(self.gateways)))
        if self.models:
            conds.append(table.c.model.in_(list(self.models)))
        return and_(*conds)


def build_report_data(
    store: Any,
    *,
    since: datetime,
    until: datetime,
    gateways: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
) -> ReportData:
    """Collect every number of the report for the half-open period [since, until).

    Args:
        store: an `aione_probe.store.Store`; only its SQLAlchemy engine is used.
        since: start of the period (UTC).
        until: end of the period (UTC), exclusive.
        gateways: restrict to these gateway names (default: all).
        models: restrict to these model names (default: all).

    Returns:
        The report's data; targets are every (gateway, model) with an observation, a check
        result or a verdict in the period, sorted by gateway then model.
    """
    data = ReportData(since=since, until=until, generated_at=utcnow())
    targets: dict[tuple[str, str], TargetReport] = {}

    def target(gateway: str, model: str) -> TargetReport:
        key = (gateway, model)
        if key not in targets:
            targets[key] = TargetReport(gateway=gateway, model=model)
        return targets[key]

    with store.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA threads=2")  # lets GROUP BY sorts use a helper thread
        q = _Query(conn, since, until, gateways, models)
        _observation_totals(q, target)
        _latency(q, targets)
        present, failing = _check_totals(q, target)
        _verdicts(q, target)
        for key, t in targets.items():
            if "cache" in present.get(key, ()):
                _cache(q, t)
            _violations(q, t, failing.get(key, set()))
            t.evidence = _evidence(q, t, failing.get(key, set()))
    data.targets = [targets[k] for k in sorted(targets)]
    used: set[str] = set()
    for t in data.targets:
        name, i = slug(t.gateway, t.model), 1
        while name.lower() in used:  # distinct targets may sanitise alike
            i += 1
            name = f"{slug(t.gateway, t.model)}-{i}"
        used.add(name.lower())
        t.page = f"{name}.html"
    return data


def _observation_totals(q: _Query, target: Any) -> None:
    obs = OBSERVATION
    day = q.day(obs.c.started_at)
    final_ok = and_(obs.c.final, obs.c.failure == "ok")
    # Only failure classes and echoed models that differ from the request are group keys,
    # so the common case (ok, echo matches) collapses to one group per target and day.
    failure = case((obs.c.failure != "ok", obs.c.failure), else_=None)
    other_model = case(
        (
            and_(final_ok, obs.c.response_model.is_distinct_from(obs.c.model)),
            func.coalesce(obs.c.response_model, ""),
        ),
        else_=None,
    )
    keys = (obs.c.gateway, obs.c.model, day, obs.c.final, failure, other_model)
    stmt = (
        select(*keys, func.count(), func.sum(obs.c.cost))
        .where(q.where(obs, "started_at"))
        .group_by(*keys)
    )
    spend: dict[tuple[str, str], dict[date, float]] = defaultdict(lambda: defaultdict(float))
    errors: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    errors_final: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    echoed: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for gw, model, d, final, failed, other, n, cost in q.conn.execute(stmt):
        t = target(gw, model)
        key = (gw, model)
        t.attempts += n
        spend[key][_day(d)] += cost or 0.0
        if failed is not None:
            errors[key][failed] += n
            errors_final[key][failed] += n if final else 0
        elif final:
            t.final_ok += n
            echoed[key][model if other is None else other or "(not echoed)"] += n
        t.final += n if final else 0
    for key, by_day in spend.items():
        t = target(*key)
        t.spend_by_day = sorted(by_day.items())
        t.spend = sum(by_day.values())
        t.errors = [
            Count(label, n, errors_final[key][label]) for label, n in errors[key].most_common()
        ]
        t.response_models = [Count(label, n) for label, n in echoed[key].most_common()]


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {f"p{p}": None for p in PERCENTILES}
    found = np.percentile(values, PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, found, strict=True)}


def _latency(q: _Query, targets: dict[tuple[str, str], TargetReport]) -> None:
    obs = OBSERVATION
    strides = {
        key: max(1, math.ceil(t.final_ok / LATENCY_SAMPLE_CAP))
        for key, t in targets.items()
        if t.final_ok
    }
    if not strides:
        return
    sampled = [k for k, stride in strides.items() if stride > 1]
    day = q.day(obs.c.started_at)
    ttft = case((obs.c.stream, obs.c.first_token_s), else_=obs.c.end_s)
    stmt = select(obs.c.gateway, obs.c.model, day, ttft, obs.c.end_s).where(
        q.where(obs, "started_at"), obs.c.final, obs.c.failure == "ok"
    )
    if sampled:
        stride_of = case(
            *[
                (and_(obs.c.gateway == gw, obs.c.model == model), strides[(gw, model)])
                for gw, model in sampled
            ],
            else_=1,
        )
        stmt = stmt.where(obs.c.id % stride_of == 0)
    rows: dict[tuple[str, str], dict[date, list[tuple[Any, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for gw, model, d, first, end in q.conn.execute(stmt):
        rows[(gw, model)][_day(d)].append((first, end))
    for key, by_day in rows.items():
        t = targets[key]
        t.latency_stride = strides[key]
        all_values: list[tuple[Any, Any]] = []
        for d in sorted(by_day):
            pairs = np.array(by_day[d], dtype=float)
            all_values.extend(by_day[d])
            t.latency.append(
                LatencyDay(d, len(pairs), _percentiles(pairs[:, 0]), _percentiles(pairs[:, 1]))
            )
        pairs = np.array(all_values, dtype=float)
        t.latency_n = len(pairs)
        ttft_p, e2e_p = _percentiles(pairs[:, 0]), _percentiles(pairs[:, 1])
        t.ttft_p50, t.ttft_p99 = ttft_p["p50"], ttft_p["p99"]
        t.e2e_p50, t.e2e_p99 = e2e_p["p50"], e2e_p["p99"]


_SCORED = (CheckValue.passed, CheckValue.partial, CheckValue.failed, CheckValue.missing)


def _add(rate: PassRate, counts: Sequence[Any]) -> None:
    passed, partial, failed, missing = (int(n or 0) for n in counts)
    rate.passed += passed
    rate.partial += partial
    rate.failed += failed
    rate.missing += missing


def _check_totals(
    q: _Query, target: Any
) -> tuple[dict[tuple[str, str], set[str]], dict[tuple[str, str], set[str]]]:
    """Pass counts by day, category and conformance check.

    Returns:
        Per target, the check names present and the names with a failed or missing outcome.
    """
    cr = CHECKRESULT
    day = q.day(cr.c.created_at)
    # A probe's category is one value, so it is an aggregate rather than a group key.
    category = func.max(cr.c["metadata"]["category"].as_string())
    counts = [func.sum(case((cr.c.value == v.value, 1), else_=0)) for v in _SCORED]
    keys = (cr.c.gateway, cr.c.model, cr.c.name, day, cr.c.probe_id)
    stmt = select(*keys, category, *counts).where(q.where(cr, "created_at")).group_by(*keys)
    by_day: dict[tuple[str, str], dict[date, PassRate]] = defaultdict(dict)
    by_cat: dict[tuple[str, str], dict[str, PassRate]] = defaultdict(dict)
    by_name: dict[tuple[str, str], dict[str, PassRate]] = defaultdict(dict)
    present: dict[tuple[str, str], set[str]] = defaultdict(set)
    failing: dict[tuple[str, str], set[str]] = defaultdict(set)
    for gw, model, name, d, probe_id, cat, *values in q.conn.execute(stmt):
        key = (gw, model)
        target(gw, model)
        present[key].add(name)
        if values[2] or values[3]:
            failing[key].add(name)
        if is_conformance_check(name):
            if name != "cache":  # cache results have their own section
                _add(by_name[key].setdefault(name, PassRate(name)), values)
            continue
        day_ = _day(d)
        _add(by_day[key].setdefault(day_, PassRate(day_.isoformat())), values)
        label = category_of(probe_id, cat)
        _add(by_cat[key].setdefault(label, PassRate(label)), values)
    for key, days in by_day.items():
        target(*key).pass_by_day = [days[d] for d in sorted(days)]
    for key, cats in by_cat.items():
        target(*key).pass_by_category = [cats[c] for c in sorted(cats)]
    for key, names in by_name.items():
        target(*key).conformance = [names[n] for n in sorted(names)]
    return present, failing


def _violations(q: _Query, t: TargetReport, failing: set[str]) -> None:
    cr = CHECKRESULT
    # One query per failing check name walks the (gateway, model, name, created_at) index.
    for name in sorted(n for n in failing if n == "finish_reason" or n.startswith("usage")):
        stmt = (
            select(
                cr.c.created_at,
                cr.c.name,
                cr.c.probe_id,
                cr.c.value,
                cr.c.expected,
                cr.c.answer,
                cr.c.explanation,
            )
            .where(
                cr.c.gateway == t.gateway,
                cr.c.model == t.model,
                cr.c.name == name,
                q.where(cr, "created_at"),
                cr.c.value.in_([CheckValue.failed.value, CheckValue.missing.value]),
            )
            .order_by(cr.c.created_at.desc(), cr.c.id.desc())
            .limit(VIOLATION_ROWS)
        )
        t.violations.extend(
            Violation(
                at=row.created_at,
                name=row.name,
                probe_id=row.probe_id,
                value=row.value,
                expected=row.expected,
                observed=row.answer,
                explanation=row.explanation or "",
            )
            for row in q.conn.execute(stmt)
        )
    t.violations.sort(key=lambda v: v.at, reverse=True)
    del t.violations[VIOLATION_ROWS:]


def _cache(q: _Query, t: TargetReport) -> None:
    cr = CHECKRESULT
    stmt = select(cr.c["metadata"]).where(
        cr.c.gateway == t.gateway,
        cr.c.model == t.model,
        cr.c.name == "cache",
        q.where(cr, "created_at"),
    )
    ratios: list[float] = []
    saved, currency, n = 0.0, None, 0
    for meta in q.conn.scalars(stmt):
        meta = _json(meta)
        n += 1
        ratio = _opt_float(meta.get("hit_ratio"))
        if ratio is not None:
            ratios.append(ratio)
        saved += _opt_float(meta.get("saved")) or 0.0
        currency = meta.get("currency") or currency
    if n:
        hit_ratio = sum(ratios) / len(ratios) if ratios else None
        t.cache = CacheStats(n=n, hit_ratio=hit_ratio, saved=saved, currency=currency)


def _signals(details: dict[str, Any]) -> list[SignalRow]:
    raw = details.get("signals") or []
    out = []
    for item in raw if isinstance(raw, list) else []:
        if not isinstance(item, dict):
            continue
        out.append(
            SignalRow(
                signal=str(item.get("signal", "")),
                test=item.get("test"),
                statistic=_opt_float(item.get("statistic")),
                p_value=_opt_float(item.get("p_value")),
                n=_opt_int(item.get("n")),
                baseline_id=None if item.get("baseline_id") is None else str(item["baseline_id"]),
                result=item.get("result"),
                note=item.get("note"),
            )
        )
    return out


def _drift_metrics(details: dict[str, Any]) -> list[SignalRow]:
    """Drift details list one test per metric, as a list or as a {metric: test} mapping."""
    raw = details.get("metrics")
    if isinstance(raw, dict):
        items: Iterable[dict[str, Any]] = (
            {"signal": name, **value} for name, value in raw.items() if isinstance(value, dict)
        )
    elif isinstance(raw, list):
        items = ({"signal": i.get("metric", i.get("signal", "")), **i} for i in raw)
    else:
        return []
    return _signals({"signals": list(items)})


def _verdicts(q: _Query, target: Any) -> None:
    v = VERDICT
    stmt = (
        select(v)
        .where(q.where(v, "created_at"), v.c.kind.in_(["authenticity", "drift"]))
        .order_by(v.c.created_at, v.c.id)
    )
    latest: dict[tuple[str, str, str, str | None], Any] = {}
    for row in q.conn.execute(stmt):
        latest[(row.kind, row.gateway, row.model, row.suite)] = row
    for (kind, gw, model, suite), row in sorted(latest.items(), key=lambda kv: str(kv[0])):
        details = _json(row.details)
        view = VerdictView(
            kind=kind,
            verdict=row.verdict,
            suite=suite,
            created_at=row.created_at,
            score=_opt_float(row.score),
            alpha=_opt_float(row.alpha),
            n=_opt_int(row.n),
            baseline_id=None if row.baseline_id is None else str(row.baseline_id),
            method=details.get("method"),
            needed=_opt_int(details.get("needed")),
        )
        t = target(gw, model)
        if kind == "authenticity":
            view.signals = _signals(details)
            if t.authenticity is None or view.created_at >= t.authenticity.created_at:
                t.authenticity = view
        else:
            view.signals = _drift_metrics(details)
            t.drift.append(view)


def _evidence(q: _Query, t: TargetReport, failing: set[str]) -> list[EvidenceRow]:
    obs, cr = OBSERVATION, CHECKRESULT
    mine = and_(obs.c.gateway == t.gateway, obs.c.model == t.model, q.where(obs, "started_at"))
    half = EVIDENCE_ROWS // 2
    failed_checks: list[tuple[datetime, int]] = []
    for name in sorted(failing):
        stmt = (
            select(cr.c.created_at, cr.c.observation_id)
            .where(
                cr.c.gateway == t.gateway,
                cr.c.model == t.model,
                cr.c.name == name,
                q.where(cr, "created_at"),
                cr.c.observation_id.is_not(None),
                cr.c.value.in_([CheckValue.failed.value, CheckValue.missing.value]),
            )
            .order_by(cr.c.created_at.desc(), cr.c.id.desc())
            .limit(half)
        )
        failed_checks.extend((at, obs_id) for at, obs_id in q.conn.execute(stmt))
    failed_checks.sort(reverse=True)
    ids = [obs_id for _, obs_id in failed_checks[:half]]
    failed = select(obs.c.id).where(mine, obs.c.failure != "ok")
    ids.extend(q.conn.scalars(failed.order_by(obs.c.started_at.desc()).limit(half)))
    recent = select(obs.c.id).where(mine, obs.c.final)
    ids.extend(q.conn.scalars(recent.order_by(obs.c.started_at.desc()).limit(EVIDENCE_ROWS)))
    wanted = list(dict.fromkeys(ids))
    if not wanted:
        return []
    runs = list(q.conn.scalars(select(obs.c.run_id).where(obs.c.id.in_(wanted)).distinct()))
    checks: dict[int, list[str]] = defaultdict(list)
    stmt = (
        select(cr.c.observation_id, cr.c.name, cr.c.value)
        .where(cr.c.run_id.in_(runs), cr.c.observation_id.in_(wanted))  # run_id is indexed
        .order_by(cr.c.id)
    )
    for obs_id, name, value in q.conn.execute(stmt):
        checks[obs_id].append(f"{name}:{value}")
    stmt = select(
        obs.c.id,
        obs.c.probe_id,
        obs.c.probe_hash,
        obs.c.started_at,
        obs.c.response_id,
        obs.c.response_model,
        obs.c.prompt_tokens,
        obs.c.completion_tokens,
        obs.c.cached_tokens,
        obs.c.finish_reason,
        obs.c.failure,
        func.substr(obs.c.content, 1, EXCERPT_CHARS),
    ).where(obs.c.id.in_(wanted))
    rows = [
        EvidenceRow(
            observation_id=r[0],
            probe_id=r[1],
            probe_hash=r[2],
            at=r[3],
            response_id=r[4],
            response_model=r[5],
            prompt_tokens=r[6],
            completion_tokens=r[7],
            cached_tokens=r[8],
            finish_reason=r[9],
            failure=r[10],
            checks=checks.get(r[0], []),
            excerpt=r[11] or "",
        )
        for r in q.conn.execute(stmt)
    ]
    rows.sort(key=lambda e: e.at, reverse=True)
    rows.sort(key=lambda e: not e.flagged)
    return rows[:EVIDENCE_ROWS]
