"""Daily rollups: always equal to a GROUP BY of the stored rows; the report reads them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, inspect, select, text
from sqlalchemy.engine import URL

from aione_probe.errors import FailureKind
from aione_probe.report import build_report_data
from aione_probe.report.data import split_period
from aione_probe.store import CheckRecord, ObservationRecord, SchemaVersion, Store
from aione_probe.store.migrate import SCHEMA_VERSION
from aione_probe.store.rollup import (
    CHECK_DAY,
    CHECK_KEYS,
    OBSERVATION_DAY,
    OBSERVATION_KEYS,
    check_days,
    observation_days,
)
from aione_probe.types import CheckResult, CheckValue, Observation, Usage

DAY0 = datetime(2025, 3, 1, tzinfo=UTC)
TARGETS = (("gw-a", "m1"), ("gw-a", "m2"), ("gw-b", "m1"))
VALUES = (CheckValue.passed, CheckValue.failed, CheckValue.partial, CheckValue.missing)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'probe.db'}") as st:
        st.migrate()
        yield st


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store on SQLite, and on PostgreSQL when PGHOST is set (pg_virtualenv)."""
    if request.param == "sqlite":
        with Store(f"sqlite:///{tmp_path / 'probe.db'}") as st:
            st.migrate()
            yield st
        return
    if not os.environ.get("PGHOST"):
        pytest.skip("PostgreSQL not available: PGHOST unset (run under pg_virtualenv)")
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = URL.create("postgresql", query={"options": f"-csearch_path={schema}"})
    try:
        with Store(url.render_as_string()) as st:
            st.migrate()
            yield st
    finally:
        with psycopg.connect(autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _obs(target: tuple[str, str], at: datetime, i: int) -> Observation:
    failure = FailureKind.http_5xx if i % 7 == 0 else FailureKind.ok
    echoed = [target[1], "other-model", None][i % 3]
    return Observation(
        gateway=target[0],
        model=target[1],
        stream=i % 2 == 0,
        started_at=at,
        failure=failure,
        response_model=echoed,
        content=f"answer {i}",
        usage=Usage(prompt_tokens=10, completion_tokens=i % 5 + 1, total_tokens=11 + i % 5),
        first_token_s=0.1 + i / 1000,
        end_s=0.5 + i / 100,
    )


def _run(store: Store, target: tuple[str, str], at: datetime, n: int, seed: int) -> None:
    """One run of `n` requests spread over four hours from `at`; every 5th is retried."""
    run_id = store.start_run(*target, "golden", 1, seed, True, started_at=at)
    observations: list[ObservationRecord] = []
    checks: list[CheckRecord] = []
    for i in range(n):
        when = at + timedelta(minutes=i * 240 // n)
        if i % 5 == 0:
            retry = _obs(target, when, 7)
            observations.append(ObservationRecord(retry, "golden", f"p-{i % 4}", "h", final=False))
        obs = _obs(target, when, i + seed)
        cost = None if i % 6 == 0 else 0.001 * (i + 1)
        observations.append(ObservationRecord(obs, "golden", f"p-{i % 4}", "h", cost=cost))
        meta: dict[str, Any] = {"category": "maths"} if i % 4 == 1 else {}
        name = "finish_reason" if i % 9 == 0 else "numeric"
        value = VALUES[(i + seed) % 4] if obs.ok else CheckValue.unscored
        result = CheckResult(name, value, metadata=meta)
        checks.append(CheckRecord(result, len(observations) - 1, f"p-{i % 4}", "h"))
    checks.append(CheckRecord(CheckResult("cache", CheckValue.passed), None, "cache-01", "c"))
    store.finish_run(run_id, "ok", None, observations, checks, finished_at=at)


def populate(store: Store) -> None:
    for day in range(3):
        for hour in (0, 9, 21):
            for k, target in enumerate(TARGETS):
                _run(store, target, DAY0 + timedelta(days=day, hours=hour), 12, day * 10 + k)
    # The bulk paths, across a day boundary.
    run_id = store.start_run(
        "gw-b", "m2", "smoke", 1, 0, True, started_at=DAY0 + timedelta(hours=23)
    )
    pairs = [
        (run_id, ObservationRecord(_obs(("gw-b", "m2"), DAY0 + timedelta(hours=23, minutes=i), i),
                                   "smoke", "s-1", "hs", cost=0.5))
        for i in range(150)
    ]  # fmt: skip
    store.bulk_insert_observations(pairs, chunk_size=40)
    with store.engine.connect() as conn:
        ids = list(
            conn.scalars(text("SELECT id FROM observation WHERE run_id = :r"), {"r": run_id})
        )
    triples = [
        (
            run_id,
            obs_id,
            CheckRecord(CheckResult("usage_total", VALUES[obs_id % 4]), None, "s-1", "hs"),
        )
        for obs_id in ids
    ]
    store.bulk_insert_check_results(triples, chunk_size=33)


def _table(
    store: Store, table: Any, keys: tuple[str, ...]
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(table)).mappings().all()
    return {tuple(str(r[k]) for k in keys): tuple(r[c] for c in r if c not in (*keys, "id"))
            for r in rows}  # fmt: skip


def _recomputed(
    store: Store, query: Any, keys: tuple[str, ...]
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    with store.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    return {tuple(str(r[k]) for k in keys): tuple(r[c] for c in r if c not in keys) for r in rows}


def assert_rollups_match_rows(store: Store) -> None:
    obs_rollup = _table(store, OBSERVATION_DAY, OBSERVATION_KEYS)
    dialect = store.engine.dialect.name
    obs_rows = _recomputed(store, observation_days(dialect), OBSERVATION_KEYS)
    assert obs_rollup.keys() == obs_rows.keys()
    for key, (n, cost) in obs_rows.items():
        assert obs_rollup[key][0] == n
        assert obs_rollup[key][1] == pytest.approx(cost, rel=1e-12)
    assert _table(store, CHECK_DAY, CHECK_KEYS) == _recomputed(
        store, check_days(dialect), CHECK_KEYS
    )


def test_rollups_equal_a_group_by_of_the_rows(any_store: Store) -> None:
    store = any_store
    populate(store)
    assert_rollups_match_rows(store)
    with store.engine.connect() as conn:
        total = conn.execute(text("SELECT sum(n) FROM observationday")).scalar()
        rows = conn.execute(text("SELECT count(*) FROM observation")).scalar()
        checks = conn.execute(
            text("SELECT sum(passed + partial + failed + missing + unscored) FROM checkday")
        ).scalar()
        check_rows = conn.execute(text("SELECT count(*) FROM checkresult")).scalar()
    assert total == rows > 0
    assert checks == check_rows > 0


def test_a_failed_write_leaves_the_rollups_alone(any_store: Store) -> None:
    store = any_store
    populate(store)
    before = _table(store, OBSERVATION_DAY, OBSERVATION_KEYS)
    run_id = store.start_run("gw-a", "m1", "golden", 1, 0, True, started_at=DAY0)
    obs = ObservationRecord(_obs(("gw-a", "m1"), DAY0, 1), "golden", "p", "h")
    bad = CheckRecord(CheckResult("numeric", CheckValue.passed), 5, "p", "h")
    with pytest.raises(ValueError, match="no observation at index 5"):
        store.finish_run(run_id, "ok", None, [obs], [bad])
    with pytest.raises(LookupError, match="no suite run 999"):
        store.bulk_insert_check_results([(999, None, bad)])
    assert _table(store, OBSERVATION_DAY, OBSERVATION_KEYS) == before
    assert_rollups_match_rows(store)


def test_migration_from_version_1_fills_the_rollups(store: Store, tmp_path: Path) -> None:
    populate(store)
    expected = _table(store, CHECK_DAY, CHECK_KEYS)
    with store.engine.begin() as conn:  # back to the version 1 schema, rows kept
        conn.execute(text("DROP TABLE observationday"))
        conn.execute(text("DROP TABLE checkday"))
        conn.execute(text("DROP INDEX ix_observation_target_timing"))
        conn.execute(text("CREATE INDEX ix_observation_target_started "
                          "ON observation (gateway, model, started_at)"))  # fmt: skip
        conn.execute(delete(SchemaVersion))
        conn.execute(insert(SchemaVersion), {"version": 1, "applied_at": DAY0})
    with Store(store.url) as again:
        assert again.schema_version() == 1
        assert again.migrate() == SCHEMA_VERSION
        with again.engine.connect() as conn:
            indexes = {i["name"] for i in inspect(conn).get_indexes("observation")}
        assert "ix_observation_target_timing" in indexes
        assert "ix_observation_target_started" not in indexes
        assert _table(again, CHECK_DAY, CHECK_KEYS) == expected
        assert_rollups_match_rows(again)
        _run(again, TARGETS[0], DAY0 + timedelta(days=1, hours=3), 5, 99)
        assert_rollups_match_rows(again)


def test_latency_index_covers_the_report_query(store: Store) -> None:
    populate(store)
    stmt = (
        "EXPLAIN QUERY PLAN SELECT substr(started_at, 1, 10), first_token_s, end_s "
        "FROM observation WHERE gateway = 'gw-a' AND model = 'm1' AND started_at >= '2025' "
        "AND started_at < '2026' AND final AND failure = 'ok' ORDER BY started_at"
    )
    with store.engine.connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(stmt))
    assert "COVERING INDEX ix_observation_target_timing" in plan


@pytest.mark.parametrize(
    ("since", "until", "days", "partial"),
    [
        ((0, 0), (3, 0), ((0, 3)), []),
        ((0, 6), (3, 0), ((1, 3)), [((0, 6), (1, 0))]),
        ((0, 6), (2, 18), ((1, 2)), [((0, 6), (1, 0)), ((2, 0), (2, 18))]),
        ((0, 6), (0, 18), None, [((0, 6), (0, 18))]),
        ((0, 6), (1, 6), None, [((0, 6), (1, 6))]),
        ((1, 0), (1, 0), None, []),
    ],
)
def test_split_period(since: Any, until: Any, days: Any, partial: Any) -> None:
    def at(d: int, h: int) -> datetime:
        return DAY0 + timedelta(days=d, hours=h)

    found_days, found_partial = split_period(at(*since), at(*until))
    want_days = None if days is None else (at(days[0], 0).date(), at(days[1], 0).date())
    assert found_days == want_days
    assert found_partial == [(at(*a), at(*b)) for a, b in partial]


def test_split_period_converts_to_utc() -> None:
    from datetime import timezone

    plus2 = timezone(timedelta(hours=2))
    days, partial = split_period(datetime(2025, 3, 2, 2, tzinfo=plus2), DAY0 + timedelta(days=2))
    assert days == ((DAY0 + timedelta(days=1)).date(), (DAY0 + timedelta(days=2)).date())
    assert partial == []


@pytest.mark.parametrize("hours", [(0, 72), (5, 67), (10, 30), (21, 23), (23, 49)])
def test_report_counts_equal_the_rows_for_any_window(
    any_store: Store, hours: tuple[int, int]
) -> None:
    store = any_store
    populate(store)
    since, until = DAY0 + timedelta(hours=hours[0]), DAY0 + timedelta(hours=hours[1])
    data = build_report_data(store, since=since, until=until)
    got = {(t.gateway, t.model): t for t in data.targets}
    rows = store.observations(since=since, until=until)
    checks = store.check_results(since=since, until=until)
    keys = {(r.gateway, r.model) for r in rows} | {(c.gateway, c.model) for c in checks}
    assert set(got) == keys
    for key, t in got.items():
        mine = [r for r in rows if (r.gateway, r.model) == key]
        assert t.attempts == len(mine)
        assert t.final == sum(r.final for r in mine)
        assert t.final_ok == sum(r.final and r.failure == "ok" for r in mine)
        assert t.spend == pytest.approx(sum(r.cost or 0.0 for r in mine))
        errors = {e.label: e.count for e in t.errors}
        assert errors == {
            f: sum(r.failure == f for r in mine) for f in {r.failure for r in mine} - {"ok"}
        }
        echoed = {e.label: e.count for e in t.response_models}
        finals = [r for r in mine if r.final and r.failure == "ok"]
        want: dict[str, int] = {}
        for r in finals:
            label = r.response_model if r.response_model is not None else "(not echoed)"
            want[label] = want.get(label, 0) + 1
        assert echoed == want
        scored = [c for c in checks if (c.gateway, c.model) == key and c.name == "numeric"]
        by_day = {p.label: p.passed + p.failed + p.partial + p.missing for p in t.pass_by_day}
        want_day: dict[str, int] = {}
        for c in scored:
            if c.value != "unscored":
                day = c.created_at.date().isoformat()
                want_day[day] = want_day.get(day, 0) + 1
        assert {d: n for d, n in by_day.items() if n} == want_day
        cats = {p.label for p in t.pass_by_category}
        assert cats <= {"maths", "p"}
        assert t.latency_n == len(finals)
