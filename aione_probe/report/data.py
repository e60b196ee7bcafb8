"""Collect the numbers of a verification report from the store, for one period.

Counts and sums come from the store's daily rollups (``observationday``, ``checkday``,
kept equal to a GROUP BY of the rows by `aione_probe.store.rollup`): whole UTC days of the
period are read from them, and the partial days at either end are grouped from the rows
with the same queries, so a report over a million observations reads a few thousand
grouped rows. Latency percentiles need the raw values: per target, only the two latency
columns of final, successful observations are read (an index covers them), and when a
target has more than `LATENCY_SAMPLE_CAP` of them in the period a systematic 1-in-k
sample by row id is read instead (the report states the stride). Evidence rows are read
with small LIMIT queries.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
from sqlalchemy import Table, and_, case, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from aione_probe.analysis.run import series_name
from aione_probe.checks import is_quality_check
from aione_probe.checks.cache import CLAIMS
from aione_probe.fingerprint.verdict import AuthenticityVerdict
from aione_probe.report.model import (
    PERCENTILES,
    CacheStats,
    Count,
    DriftDetail,
    DriftGap,
    DriftProbe,
    EvidenceRow,
    LatencyDay,
    PassRate,
    ReportData,
    SignalRow,
    TargetReport,
    VerdictView,
    Violation,
    category_of,
    slug,
)
from aione_probe.store.rollup import (
    CHECK_COUNTS,
    CHECK_DAY,
    CHECKRESULT,
    OBSERVATION,
    OBSERVATION_DAY,
    OBSERVATION_KEYS,
    check_days,
    observation_days,
    utc_day,
)
from aione_probe.store.tables import Verdict
from aione_probe.types import CheckValue, utcnow

LATENCY_SAMPLE_CAP = 10_000
EVIDENCE_ROWS = 40
VIOLATION_ROWS = 30
EXCERPT_CHARS = 240

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
        self.days, self.partial = split_period(since, until)

    def day(self, column: Any) -> ColumnElement[Any]:
        """The UTC calendar day of a timestamp column (PostgreSQL converts from timestamptz)."""
        return utc_day(column, self.conn.dialect.name)

    def targets(self, table: Table) -> list[ColumnElement[bool]]:
        conds = []
        if self.gateways:
            conds.append(table.c.gateway.in_(list(self.gateways)))
        if self.models:
            conds.append(table.c.model.in_(list(self.models)))
        return conds

    def where(
        self,
        table: Table,
        time_col: str,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Any:
        start = self.since if since is None else since
        end = self.until if until is None else until
        conds = [table.c[time_col] >= start, table.c[time_col] < end, *self.targets(table)]
        return and_(*conds)

    def _rollup(self, table: Table, since: datetime, until: datetime, *keys: str) -> Any:
        """`keys` of the rollup rows of the days that [since, until) touches."""
        last = (until - timedelta(microseconds=1)).date()
        return select(*(table.c[k] for k in keys)).where(
            table.c.day >= since.date(), table.c.day <= last, *self.targets(table)
        )

    def observation_days(self) -> Iterator[Sequence[Any]]:
        """Rows shaped like ``observationday`` for the period: whole UTC days from the
        rollup, the partial days at either end grouped from the observations."""
        od = OBSERVATION_DAY
        if self.days is not None:
            first, end = self.days
            stmt = select(*(od.c[k] for k in (*OBSERVATION_KEYS, "n", "cost"))).where(
                od.c.day >= first, od.c.day < end, *self.targets(od)
            )
            yield from self.conn.execute(stmt).all()
        for since, until in self.partial:
            # The rollup names the targets present on the partial day, so the grouping
            # walks the (gateway, model, started_at) index instead of the whole table.
            found = self.conn.execute(
                self._rollup(od, since, until, "gateway", "model").distinct()
            ).all()
            if not found:
                continue
            restrict = (
                OBSERVATION.c.gateway.in_(sorted({g for g, _ in found})),
                OBSERVATION.c.model.in_(sorted({m for _, m in found})),
            )
            where = self.where(OBSERVATION, "started_at", since, until)
            yield from self.conn.execute(
                observation_days(self.conn.dialect.name, where, *restrict)
            ).all()

    def check_days(self) -> tuple[list[Any], list[Any], list[Any]]:
        """Check counts for the period, read like `observation_days`.

        Returns:
            From the rollup, over the whole days: totals per (gateway, model, name,
            probe_id) with the largest category, and totals per (gateway, model, name,
            day); and rows shaped like ``checkday`` grouped from the partial days.
        """
        cd = CHECK_DAY
        sums = [func.sum(cd.c[k]) for k in _SCORED_COLUMNS]
        totals: list[Any] = []
        by_day: list[Any] = []
        if self.days is not None:
            first, end = self.days
            where = (cd.c.day >= first, cd.c.day < end, *self.targets(cd))
            keys = (cd.c.gateway, cd.c.model, cd.c.name, cd.c.probe_id)
            stmt = select(*keys, func.max(cd.c.category), *sums).where(*where).group_by(*keys)
            totals = list(self.conn.execute(stmt))
            keys = (cd.c.gateway, cd.c.model, cd.c.name, cd.c.day)
            by_day = list(self.conn.execute(select(*keys, *sums).where(*where).group_by(*keys)))
        partial: list[Any] = []
        for since, until in self.partial:
            found = self.conn.execute(
                self._rollup(cd, since, until, "gateway", "model", "name").distinct()
            ).all()
            if not found:
                continue
            restrict = (
                CHECKRESULT.c.gateway.in_(sorted({g for g, _, _ in found})),
                CHECKRESULT.c.model.in_(sorted({m for _, m, _ in found})),
                CHECKRESULT.c.name.in_(sorted({n for _, _, n in found})),
            )
            where_rows = self.where(CHECKRESULT, "created_at", since, until)
            stmt = check_days(self.conn.dialect.name, where_rows, *restrict)
            partial.extend(self.conn.execute(stmt))
        return totals, by_day, partial


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def split_period(
    since: datetime, until: datetime
) -> tuple[tuple[date, date] | None, list[tuple[datetime, datetime]]]:
    """Split [since, until) into whole UTC days and the partial days around them.

    Returns:
        ``(first, end)``, the whole days ``first <= day < end`` (None when there are
        none), and the ``[start, stop)`` pieces of partial days, in time order.
    """
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if since >= until:
        return None, []
    first = since.date() if since == _midnight(since.date()) else since.date() + timedelta(days=1)
    end = until.date()
    if first >= end:
        return None, [(since, until)]
    partial = []
    if since < _midnight(first):
        partial.append((since, _midnight(first)))
    if _midnight(end) < until:
        partial.append((_midnight(end), until))
    return (first, end), partial


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
        _verdicts(q, target, targets)
        for key, t in targets.items():
            if present.get(key, set()) & {"cache", CLAIMS}:
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
    # The rollup has one row per (day, target, final, failure, echoed model), so the
    # common case (ok, echo matches) is one row per target and day.
    spend: dict[tuple[str, str], dict[date, float]] = defaultdict(lambda: defaultdict(float))
    errors: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    errors_final: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    echoed: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for d, gw, model, final, failure, echo, n, cost in q.observation_days():
        t = target(gw, model)
        key = (gw, model)
        t.attempts += n
        spend[key][_day(d)] += cost or 0.0
        if failure != "ok":
            errors[key][failure] += n
            errors_final[key][failure] += n if final else 0
        elif final:
            t.final_ok += n
            echoed[key][model if echo == model else echo or "(not echoed)"] += n
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
    day = q.day(obs.c.started_at)
    ttft = case((obs.c.stream, obs.c.first_token_s), else_=obs.c.end_s)
    for (gw, model), t in sorted(targets.items()):
        if not t.final_ok:
            continue
        stride = max(1, math.ceil(t.final_ok / LATENCY_SAMPLE_CAP))
        # One target's rows in time order: a range of the (gateway, model, started_at, …)
        # index, which covers every column read here.
        stmt = select(day, ttft, obs.c.end_s).where(
            obs.c.gateway == gw,
            obs.c.model == model,
            q.where(obs, "started_at"),
            obs.c.final,
            obs.c.failure == "ok",
        )
        if stride > 1:
            stmt = stmt.where(obs.c.id % stride == 0)
        rows = q.conn.execute(stmt.order_by(obs.c.started_at)).all()
        if not rows:
            continue
        days, firsts, ends = zip(*rows, strict=True)
        ttfts = np.array(firsts, dtype=float)  # NULL becomes NaN, which percentiles skip
        e2es = np.array(ends, dtype=float)
        t.latency_stride = stride
        lo = 0
        for d, group in itertools.groupby(days):  # rows are in time order
            hi = lo + sum(1 for _ in group)
            ttft_p, e2e_p = _percentiles(ttfts[lo:hi]), _percentiles(e2es[lo:hi])
            t.latency.append(LatencyDay(_day(d), hi - lo, ttft_p, e2e_p))
            lo = hi
        t.latency_n = len(rows)
        ttft_p, e2e_p = _percentiles(ttfts), _percentiles(e2es)
        t.ttft_p50, t.ttft_p99 = ttft_p["p50"], ttft_p["p99"]
        t.e2e_p50, t.e2e_p99 = e2e_p["p50"], e2e_p["p99"]


_SCORED = (CheckValue.passed, CheckValue.partial, CheckValue.failed, CheckValue.missing)
_COUNT_INDEX = {value: i for i, value in enumerate(CHECK_COUNTS.values())}
_SCORED_COLUMNS = [name for value in _SCORED for name, v in CHECK_COUNTS.items() if v == value]


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
    # A probe's category is one value: the largest stored one stands for the probe.
    totals: dict[tuple[str, str, str, str], tuple[str, list[int]]] = {}
    per_day: dict[tuple[str, str, str, date], list[int]] = {}

    def count(key: tuple[str, str, str, str], category: str | None, values: list[int]) -> None:
        cat, before = totals.get(key, ("", [0] * len(_SCORED)))
        summed = [a + b for a, b in zip(before, values, strict=True)]
        totals[key] = (max(cat, category or ""), summed)

    def count_day(key: tuple[str, str, str, date], values: list[int]) -> None:
        before = per_day.get(key, [0] * len(_SCORED))
        per_day[key] = [a + b for a, b in zip(before, values, strict=True)]

    whole, whole_by_day, partial = q.check_days()
    for gw, model, name, probe_id, category, *values in whole:
        count((gw, model, name, probe_id), category, [int(v or 0) for v in values])
    for gw, model, name, d, *values in whole_by_day:
        count_day((gw, model, name, _day(d)), [int(v or 0) for v in values])
    for d, gw, model, name, probe_id, category, *counts in partial:
        values = [int(counts[_COUNT_INDEX[v]] or 0) for v in _SCORED]
        count((gw, model, name, probe_id), category, values)
        count_day((gw, model, name, _day(d)), values)
    by_day: dict[tuple[str, str], dict[date, PassRate]] = defaultdict(dict)
    by_cat: dict[tuple[str, str], dict[str, PassRate]] = defaultdict(dict)
    by_name: dict[tuple[str, str], dict[str, PassRate]] = defaultdict(dict)
    present: dict[tuple[str, str], set[str]] = defaultdict(set)
    failing: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (gw, model, name, probe_id), (cat, values) in totals.items():
        key = (gw, model)
        target(gw, model)
        present[key].add(name)
        if values[2] or values[3]:
            failing[key].add(name)
        if not is_quality_check(name):
            if name not in ("cache", CLAIMS):  # cache results have their own section
                _add(by_name[key].setdefault(name, PassRate(name)), values)
            continue
        label = category_of(probe_id, cat or None)
        _add(by_cat[key].setdefault(label, PassRate(label)), values)
    for (gw, model, name, day_), values in per_day.items():
        if is_quality_check(name):
            _add(by_day[(gw, model)].setdefault(day_, PassRate(day_.isoformat())), values)
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
        cr.c.name.in_(("cache", CLAIMS)),  # claims outside the cache probe: same rule
        q.where(cr, "created_at"),
    )
    ratios: list[float] = []
    saved, unverified, currency, n, n_unverified = 0.0, 0.0, None, 0, 0
    for meta in q.conn.scalars(stmt):
        meta = _json(meta)
        n += 1
        ratio = _opt_float(meta.get("hit_ratio"))
        if ratio is not None:
            ratios.append(ratio)
        amount = _opt_float(meta.get("saved")) or 0.0
        # A saving counts only where timing showed the hits were real.
        if meta.get("verified") or amount < 0:
            saved += amount
        elif amount:
            unverified += amount
            n_unverified += 1
        currency = meta.get("currency") or currency
    if n:
        hit_ratio = sum(ratios) / len(ratios) if ratios else None
        t.cache = CacheStats(
            n=n,
            hit_ratio=hit_ratio,
            saved=saved,
            currency=currency,
            unverified=unverified,
            unverified_runs=n_unverified,
        )


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
    """One row per run-level detector: its statistic, threshold, alarm and latest run."""
    raw = details.get("metrics")
    if isinstance(raw, dict):  # {metric: row}
        raw = [{"metric": name, **v} for name, v in raw.items() if isinstance(v, dict)]
    rows = []
    for m in raw if isinstance(raw, list) else []:
        if not isinstance(m, dict):
            continue
        parts = []
        if _opt_float(m.get("threshold")) is not None:
            parts.append(f"threshold {_opt_float(m['threshold']):.4g}")
        if m.get("alarm_since"):
            parts.append(f"alarm since {m['alarm_since']}")
        recent, base = _opt_float(m.get("recent_value")), _opt_float(m.get("baseline_value"))
        if recent is not None and base is not None:
            parts.append(f"last run {recent:.4g} vs baseline {base:.4g}")
        rows.append(
            SignalRow(
                signal=str(m.get("metric", m.get("signal", ""))),
                test=m.get("test"),
                statistic=_opt_float(m.get("statistic")),
                p_value=_opt_float(m.get("p_value")),
                n=_opt_int(m.get("n")),
                baseline_id=None if m.get("baseline_id") is None else str(m["baseline_id"]),
                result=m.get("result"),
                note=" · ".join(parts) or m.get("note"),
            )
        )
    return rows


def _drift_detail(suite: str, details: dict[str, Any]) -> DriftDetail:
    """Tripped metrics, probes below baseline, budget and gaps of a drift verdict's
    details."""
    monitor = details.get("monitor") if isinstance(details.get("monitor"), dict) else {}
    gaps = [g for g in monitor.get("gaps") or [] if isinstance(g, dict)]
    if isinstance(details.get("open_gap"), dict):
        gaps.append({**details["open_gap"], "end": None})
    budget = details.get("budget") if isinstance(details.get("budget"), dict) else {}
    text = ""
    if budget:
        text = (
            f"{budget.get('false_alarms_per_quarter')} false alarm(s) per model per quarter "
            f"over {budget.get('detectors')} detectors, {budget.get('horizon_runs')} runs "
            "per quarter"
        )
    return DriftDetail(
        suite=suite,
        tripped=[str(t) for t in details.get("tripped") or []],
        note=str(details.get("note") or ""),
        budget=text,
        missed_runs=_opt_int(monitor.get("missed_runs")) or 0,
        gaps=[
            DriftGap(
                start=g.get("start"),
                end=g.get("end"),
                missed_runs=_opt_int(g.get("missed_runs")) or 0,
                reasons=", ".join(f"{k} ×{v}" for k, v in (g.get("reasons") or {}).items()),
            )
            for g in gaps[-10:]
        ],
        probes=[
            DriftProbe(str(p.get("probe", "")), base, _opt_int(p.get("passed")) or 0, scored)
            for p in details.get("probes_below_baseline") or []
            if isinstance(p, dict)
            and (base := _opt_float(p.get("baseline"))) is not None
            and (scored := _opt_int(p.get("scored")))
        ],
    )


def _verdicts(q: _Query, target: Any, targets: dict[tuple[str, str], TargetReport]) -> None:
    v = VERDICT
    stmt = (
        select(v)
        .where(
            q.where(v, "created_at"),
            v.c.kind.in_(["authenticity", "drift", "cross_protocol", "reconcile"]),
        )
        .order_by(v.c.created_at, v.c.id)
    )
    latest: dict[tuple[str, str, str, str | None, str | None, str | None], Any] = {}
    # Drift: each stored verdict is one point of every detector's statistic / threshold.
    history: dict[tuple[str, str, str], dict[str, list[tuple[datetime, float]]]] = {}
    for row in q.conn.execute(stmt):
        latest[(row.kind, row.gateway, row.model, row.suite, row.comparison, row.location)] = row
        if row.kind == "drift":
            series = series_name(row.suite, row.location)
            points = history.setdefault((row.gateway, row.model, series), {})
            for m in _json(row.details).get("metrics") or []:
                ratio = _opt_float(m.get("ratio")) if isinstance(m, dict) else None
                if ratio is not None:
                    points.setdefault(str(m.get("metric")), []).append((row.created_at, ratio))
    gateway_wide: list[tuple[str, VerdictView]] = []
    for (kind, gw, model, suite, _, location), row in sorted(
        latest.items(), key=lambda kv: str(kv[0])
    ):
        details = _json(row.details)
        if kind == "drift":  # one drift series per suite, and per location in fleet mode
            suite = series_name(suite, location)
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
        if kind == "reconcile":
            view.signals = _reconcile_checks(details)
            if model == "*":  # the gateway as a whole: shown on each of its targets' pages
                gateway_wide.append((gw, view))
                continue
        t = target(gw, model)
        if kind == "authenticity":
            _authenticity_view(view, row, details)
            if view.comparison != "overall":  # one comparison (reference, baseline, profile)
                t.comparisons.append(view)
            else:  # the overall verdict: the worst comparison
                t.authenticity = view
        elif kind == "drift":
            view.signals = _drift_metrics(details)
            t.drift.append(view)
            detail = _drift_detail(suite or "", details)
            detail.history = history.get((gw, model, suite or ""), {})
            t.drift_detail[suite or ""] = detail
        else:
            if kind == "cross_protocol":
                view.signals = _signals(details)
            t.consistency.append(view)
    for gw, view in gateway_wide:
        for t in [t for (g, _), t in targets.items() if g == gw]:
            t.consistency.append(view)


def _authenticity_view(view: VerdictView, row: Any, details: dict[str, Any]) -> None:
    """Fill an authenticity view from the typed verdict (`AuthenticityVerdict`)."""
    v = AuthenticityVerdict.from_row(SimpleNamespace(**{**row._mapping, "details": details}))
    view.comparison = v.comparison
    view.reason = v.reason
    needed = details.get("needed")
    view.needed = needed if isinstance(needed, int | str) and needed != "" else None
    view.threshold = v.threshold
    view.suspect_threshold = v.suspect_threshold
    view.share = v.share
    view.budget = v.budget
    view.note = v.note
    view.method = "e-detector (e-CUSUM)"
    view.score = None
    ln10 = math.log(10)
    view.evidence = [
        (str(h[0]), float(h[3]) / ln10)
        for h in v.history
        if len(h) >= 4 and h[3] is not None and math.isfinite(float(h[3]))
    ]
    view.signals = [
        SignalRow(
            signal=str(s.get("signal", "")),
            test="per-run e-values",
            statistic=_opt_float(s.get("log_e")) and float(s["log_e"]) / ln10,
            p_value=_opt_float(s.get("p_min")),
            n=_opt_int(s.get("runs")),
            result=s.get("status"),
            note=s.get("note"),
        )
        for s in v.signals
        if isinstance(s, dict)
    ]


def _reconcile_checks(details: dict[str, Any]) -> list[SignalRow]:
    """Reconciliation checks as table rows: the gateway's number against the probe's."""
    out = []
    for c in details.get("checks") or []:
        if not isinstance(c, dict):
            continue
        meta = c.get("metadata") if isinstance(c.get("metadata"), dict) else {}
        what = " ".join(str(meta[k]) for k in ("model", "field") if meta.get(k))
        note = f"gateway {meta.get('gateway_value')} vs probe {meta.get('probe_value')}"
        if meta.get("tolerance") is not None:
            note += f" (tolerance {meta['tolerance']})"
        out.append(
            SignalRow(
                signal=f"{c.get('name', '')} {what}".strip(),
                test="equality" if meta.get("tolerance") in (None, 0, "0") else "tolerance",
                result=c.get("value"),
                note=note if "gateway_value" in meta else c.get("explanation"),
            )
        )
    return out


_THUMBNAIL = re.compile(r"data:image/png;base64,[A-Za-z0-9+/]+=*")


def _thumbnails(parts: Any) -> list[str]:
    """The stored thumbnails of images that decoded (never the gateway's own data URI)."""
    parts = _json(parts) if isinstance(parts, str) else parts
    out = []
    for part in parts if isinstance(parts, list) else []:
        thumb = part.get("thumbnail") if isinstance(part, dict) else None
        if isinstance(thumb, str) and _THUMBNAIL.fullmatch(thumb):
            out.append(thumb)
    return out


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
        obs.c.content_parts,
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
            thumbnails=_thumbnails(r[12]),
        )
        for r in q.conn.execute(stmt)
    ]
    rows.sort(key=lambda e: e.at, reverse=True)
    rows.sort(key=lambda e: not e.flagged)
    return rows[:EVIDENCE_ROWS]
