"""Store tests: every test runs on SQLite and, when PGHOST is set, on PostgreSQL too.

PostgreSQL: ``pg_virtualenv -v 15 .venv/bin/pytest tests/test_store.py -q``; each test
gets a fresh schema (via ``search_path``) that is dropped afterwards.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from sqlalchemy import exc, insert, inspect, text
from sqlalchemy.engine import URL

from aione_probe.errors import FailureKind
from aione_probe.store import (
    SCHEMA_VERSION,
    Baseline,
    CheckRecord,
    ObservationRecord,
    SchemaVersion,
    SchemaVersionError,
    Store,
    to_check_result,
    to_observation,
)
from aione_probe.store.engine import normalise_url
from aione_probe.store.migrate import migrate
from aione_probe.types import CheckResult, CheckValue, Observation, Usage, utcnow

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/data/store.db"
        return
    if not os.environ.get("PGHOST"):
        pytest.skip("PostgreSQL not available: PGHOST unset (run under pg_virtualenv)")
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield URL.create(
            "postgresql", query={"options": f"-csearch_path={schema}"}
        ).render_as_string()
    finally:
        with psycopg.connect(autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    s.migrate()
    yield s
    s.close()


def obs(at: datetime = T0, *, gateway: str = "gw", model: str = "m", **kw) -> Observation:
    return Observation(gateway=gateway, model=model, started_at=at, **kw)


def rec(o: Observation, *, probe: str = "p1", cost: float | None = 0.01, **kw) -> ObservationRecord:
    return ObservationRecord(o, "smoke", probe, f"hash-{probe}", cost=cost, **kw)


def check(name: str, index: int | None, value: CheckValue = CheckValue.passed) -> CheckRecord:
    return CheckRecord(CheckResult(name, value), index, "p1", "hash-p1")


def one_run(store: Store, records: list[ObservationRecord], **kw) -> int:
    gw, model = records[0].observation.gateway, records[0].observation.model
    run_id = store.start_run(gw, model, "smoke", 1, 7, True, **kw)
    store.finish_run(run_id, "ok", None, records, [])
    return run_id


# -- engine and schema --------------------------------------------------------------------


def test_sqlite_pragmas_and_parent_directory(tmp_path) -> None:
    with Store(f"sqlite:///{tmp_path}/a/b/store.db") as s:
        s.migrate()
        assert (tmp_path / "a" / "b" / "store.db").exists()
        with s.engine.connect() as conn:
            pragma = {
                p: conn.exec_driver_sql(f"PRAGMA {p}").scalar()
                for p in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
            }
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 1,
        "busy_timeout": 5000,
        "foreign_keys": 1,
    }


def test_url_normalisation_selects_psycopg_and_hides_password() -> None:
    assert normalise_url("postgresql://u:pw@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u:pw@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgresql+psycopg://h/db").drivername == "postgresql+psycopg"
    assert "pw" not in Store("postgresql://u:pw@127.0.0.1/db").url
    with pytest.raises(ValueError, match="unsupported"):
        normalise_url("mysql://h/db")


def test_schema_version_recorded_and_migrate_idempotent(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM schemaversion")).scalar() == 1
        tables = set(inspect(conn).get_table_names())
    expected = {"gateway", "model", "suiterun", "observation", "checkresult"}
    assert expected | {"verdict", "baseline", "schemaversion"} <= tables


def test_newer_schema_is_refused(store: Store, store_url: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(SchemaVersion), {"version": SCHEMA_VERSION + 1, "applied_at": utcnow()})
    with Store(store_url) as other, pytest.raises(SchemaVersionError, match="newer"):
        other.migrate()


def test_upgrade_steps_run_in_order(store: Store) -> None:
    applied: list[int] = []

    def step(version: int):
        def run(conn) -> None:
            applied.append(version)
            conn.execute(text(f"CREATE TABLE extra_{version} (x INTEGER)"))

        return run

    steps = {v: step(v) for v in (SCHEMA_VERSION + 1, SCHEMA_VERSION + 2)}
    assert migrate(store.engine, target=SCHEMA_VERSION + 2, steps=steps) == SCHEMA_VERSION + 2
    assert applied == [SCHEMA_VERSION + 1, SCHEMA_VERSION + 2]
    assert store.schema_version() == SCHEMA_VERSION + 2
    with pytest.raises(SchemaVersionError, match="no migration step"):
        migrate(store.engine, target=SCHEMA_VERSION + 3, steps=steps)
    assert store.schema_version() == SCHEMA_VERSION + 2


def test_no_secret_columns(store: Store) -> None:
    with store.engine.connect() as conn:
        insp = inspect(conn)
        names = [c["name"] for t in insp.get_table_names() for c in insp.get_columns(t)]
    assert not [n for n in names if any(w in n for w in ("key", "secret", "auth", "password"))]


# -- observations -------------------------------------------------------------------------


def full_observation() -> Observation:
    return Observation(
        gateway="gw",
        model="m",
        protocol="anthropic",
        stream=True,
        attempt=2,
        started_at=datetime(2025, 3, 1, 17, 30, 5, 123456, tzinfo=timezone(timedelta(hours=5))),
        failure=FailureKind.rate_limited,
        error_message="slow down",
        error_type="rate_limit_error",
        error_code="429x",
        status=429,
        http_version="HTTP/2",
        request_id="req-1",
        retry_after_s=1.5,
        response_id="msg-1",
        response_model="m-2025",
        system_fingerprint="fp_1",
        created=1_740_000_000,
        content="Ünïcode answer ✓",
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        content_parts=[{"type": "text", "text": "x"}],
        finish_reason="stop",
        raw_finish_reason="end_turn",
        usage=Usage(1, 11, 12, 3, 4, 5, raw={"input_tokens": 1, "output_tokens": 11}),
        usage_in_stream=True,
        headers_s=0.05,
        first_chunk_s=0.1,
        first_token_s=0.2,
        end_s=1.2,
        gaps_s=[0.1, 0.25],
        chunk_count=9,
        bytes_received=4321,
    )


def test_observation_round_trip_with_every_field(store: Store) -> None:
    o = full_observation()
    record = rec(o, sample=3, vars={"n": 17, "who": "Ada"}, cost=0.25, final=False)
    run_id = one_run(store, [record])
    [row] = store.observations()
    assert to_observation(row) == o
    assert (row.run_id, row.suite, row.probe_id, row.probe_hash) == (
        run_id,
        "smoke",
        "p1",
        "hash-p1",
    )
    assert (row.sample, row.vars, row.cost, row.final) == (3, {"n": 17, "who": "Ada"}, 0.25, False)
    assert row.failure == "rate_limited"
    assert row.tpot_s == pytest.approx(o.tpot_s) and row.tpot_s == pytest.approx(0.1)
    assert row.output_tps == pytest.approx(o.output_tokens_per_s)


def test_absent_usage_stays_absent(store: Store) -> None:
    one_run(store, [rec(obs())])
    [row] = store.observations()
    restored = to_observation(row)
    assert row.usage_raw is None and not restored.usage.present
    assert (row.tpot_s, row.output_tps, row.cost) == (None, None, 0.01)


def test_untrusted_text_is_stored_the_same_on_every_backend(store: Store) -> None:
    one_run(store, [rec(obs(content="a\x00b\ud800c", finish_reason="\x00"))])
    [row] = store.observations()
    assert row.content == "a\ufffdb?c"
    assert row.finish_reason == "\ufffd"


def test_timestamps_are_utc_aware(store: Store) -> None:
    plus5 = timezone(timedelta(hours=5))
    local = datetime(2025, 3, 2, 3, 0, tzinfo=plus5)  # 2025-03-01 22:00 UTC
    run_id = one_run(store, [rec(obs(local))], started_at=local)
    [row] = store.observations()
    assert row.started_at == local and row.started_at.tzinfo is UTC
    assert row.started_at.hour == 22
    run = store.run(run_id)
    assert run is not None and run.started_at.tzinfo is UTC and run.finished_at.tzinfo is UTC
    assert store.observations(since=datetime(2025, 3, 1, 21, 59, tzinfo=UTC)) == [row]
    assert store.observations(since=datetime(2025, 3, 1, 22, 0, 1, tzinfo=UTC)) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        store.observations(since=datetime(2025, 3, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        store.start_run("gw", "m", "smoke", 1, 0, True, started_at=datetime(2025, 3, 1))


def test_spend_follows_utc_day_boundaries(store: Store) -> None:
    midnight = datetime(2025, 3, 2, tzinfo=UTC)
    one_run(store, [rec(obs(midnight - timedelta(microseconds=1)), cost=1.0)])
    one_run(store, [rec(obs(midnight), cost=2.0), rec(obs(midnight), cost=None)])
    # 01:30 at UTC+2 is 23:30 UTC the day before.
    evening = datetime(2025, 3, 2, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    one_run(store, [rec(obs(evening), cost=4.0)])
    one_run(store, [rec(obs(midnight, gateway="other"), cost=8.0)])
    assert store.spend("gw", date(2025, 3, 1)) == pytest.approx(5.0)
    assert store.spend("gw", date(2025, 3, 2)) == pytest.approx(2.0)
    assert store.spend("gw", date(2025, 3, 3)) == 0.0
    assert store.spend("other", date(2025, 3, 2)) == pytest.approx(8.0)


def test_observation_filters(store: Store) -> None:
    one_run(store, [rec(obs(T0), probe="a"), rec(obs(T0 + timedelta(hours=1)), probe="b")])
    one_run(store, [rec(obs(T0, model="m2"), probe="a", final=False)])
    assert len(store.observations()) == 3
    assert [r.probe_id for r in store.observations(model="m")] == ["a", "b"]
    assert [r.model for r in store.observations(probe_hash="hash-a")] == ["m", "m2"]
    assert len(store.observations(final_only=True)) == 2
    assert [r.probe_id for r in store.observations(until=T0 + timedelta(hours=1))] == ["a", "a"]
    assert len(store.observations(limit=1)) == 1
    assert store.observations(suite="other") == []


# -- runs ---------------------------------------------------------------------------------


def test_finish_run_writes_observations_checks_and_summary(store: Store) -> None:
    run_id = store.start_run("gw", "m", "smoke", 3, 42, False)
    assert store.run(run_id).status == "running"
    records = [
        rec(obs(failure=FailureKind.rate_limited), cost=None, final=False),
        rec(obs(attempt=2), cost=0.5),
        rec(obs(failure=FailureKind.timeout_total), probe="p2", cost=0.0),
    ]
    checks = [check("numeric", 1), check("numeric", 2, CheckValue.unscored), check("cache", None)]
    checks[0] = CheckRecord(
        CheckResult("numeric", CheckValue.passed, {"expected": 391}, "391", "391", "ok", {"x": 1}),
        1,
        "p1",
        "hash-p1",
    )
    store.finish_run(run_id, "partial", "1 of 2 probes failed", records, checks)
    run = store.run(run_id)
    assert (run.status, run.reason, run.suite_version, run.seed, run.scheduled) == (
        "partial",
        "1 of 2 probes failed",
        3,
        42,
        False,
    )
    assert (run.n_observations, run.n_requests, run.n_failed) == (3, 2, 1)
    assert run.cost == pytest.approx(0.5)
    rows = store.check_results()
    assert [r.name for r in rows] == ["numeric", "numeric", "cache"]
    observation_ids = [o.id for o in store.observations(run_id=run_id)]
    assert [r.observation_id for r in rows] == [observation_ids[1], observation_ids[2], None]
    assert to_check_result(rows[0]) == checks[0].result
    assert {r.created_at for r in rows} == {run.started_at}
    assert {(r.gateway, r.model, r.suite, r.run_id) for r in rows} == {("gw", "m", "smoke", run_id)}
    assert [r.name for r in store.check_results(name="cache")] == ["cache"]
    assert store.check_results(since=run.started_at + timedelta(seconds=1)) == []


def test_failed_finish_run_writes_nothing_and_keeps_earlier_runs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = one_run(store, [rec(obs())])
    run_id = store.start_run("gw", "m", "smoke", 1, 1, True)
    # The bad index is found after the observations were inserted: all of it must go.
    with pytest.raises(ValueError, match="index 5"):
        store.finish_run(run_id, "ok", None, [rec(obs()), rec(obs())], [check("numeric", 5)])
    with pytest.raises(ValueError, match="other/m"):
        store.finish_run(run_id, "ok", None, [rec(obs(gateway="other"))], [])
    with pytest.raises((exc.StatementError, TypeError)):
        store.finish_run(run_id, "ok", None, [rec(obs(), vars={"bad": object()})], [])

    def explode(*_args, **_kw):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("aione_probe.store.store.check_values", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.finish_run(run_id, "ok", None, [rec(obs())], [check("numeric", 0)])
    assert store.run(run_id).status == "running"
    assert [o.run_id for o in store.observations()] == [kept]
    assert store.check_results() == []
    assert store.run(kept).n_observations == 1


def test_finish_run_rejects_unknown_run_and_status(store: Store) -> None:
    with pytest.raises(LookupError):
        store.finish_run(999, "ok", None, [], [])
    run_id = store.start_run("gw", "m", "smoke", 1, 1, True)
    with pytest.raises(ValueError):
        store.finish_run(run_id, "running", None, [], [])
    with pytest.raises(ValueError):
        store.finish_run(run_id, "great", None, [], [])


def test_skipped_and_interrupted_runs(store: Store) -> None:
    skipped = store.record_skipped_run("gw", "m", "smoke", 1, "daily spend cap reached")
    running = [store.start_run("gw", "m", s, 1, 0, True) for s in ("a", "b")]
    done = one_run(store, [rec(obs())])
    assert store.run(skipped).status == "skipped"
    assert store.run(skipped).reason == "daily spend cap reached"
    assert store.mark_interrupted_runs("interrupted by shutdown") == 2
    assert store.mark_interrupted_runs("again") == 0
    for run_id in running:
        run = store.run(run_id)
        assert (run.status, run.reason) == ("failed", "interrupted by shutdown")
        assert run.finished_at is not None
    assert store.run(done).status == "ok"


def test_runs_last_runs_and_last_success(store: Store) -> None:
    def run(model: str, suite: str, at: datetime, status: str) -> int:
        run_id = store.start_run("gw", model, suite, 1, 0, True, started_at=at)
        store.finish_run(run_id, status, None, [], [])
        return run_id

    a1 = run("m", "smoke", T0, "ok")
    a2 = run("m", "smoke", T0 + timedelta(hours=1), "failed")
    b1 = run("m", "quality", T0 + timedelta(minutes=5), "ok")
    c1 = run("m2", "smoke", T0, "partial")
    assert [r.id for r in store.last_runs()] == [b1, a2, c1]
    assert store.last_success("gw", "m", "smoke").id == a1
    assert store.last_success("gw", "m2", "smoke") is None
    assert [r.id for r in store.runs(model="m")] == [a1, b1, a2]
    assert [r.id for r in store.runs(suite="smoke", since=T0 + timedelta(minutes=1))] == [a2]
    assert [r.id for r in store.runs(status="ok")] == [a1, b1]


def test_targets_upsert(store: Store) -> None:
    store.ensure_target("gw", "http://a", "openai", "m1")
    store.ensure_target("gw", "http://b", "anthropic", "m1")
    store.ensure_target("gw", "http://b", "anthropic", "m2")
    store.ensure_target("alpha", "http://c", "openai", "m1")
    assert store.targets() == [("alpha", "m1"), ("gw", "m1"), ("gw", "m2")]
    with store.engine.connect() as conn:
        row = conn.execute(text("SELECT base_url, protocol FROM gateway WHERE name = 'gw'")).one()
    assert tuple(row) == ("http://b", "anthropic")


def test_bulk_insert(store: Store) -> None:
    run_id = store.start_run("gw", "m", "smoke", 1, 0, True)
    pairs = ((run_id, rec(obs(T0 + timedelta(seconds=i)), cost=0.5)) for i in range(2500))
    assert store.bulk_insert_observations(pairs, chunk_size=1000) == 2500
    assert len(store.observations(run_id=run_id)) == 2500
    assert store.spend("gw", T0.date()) == pytest.approx(1250.0)


def test_concurrent_writers_on_one_file(store_url: str) -> None:
    stores = [Store(store_url) for _ in range(2)]
    stores[0].migrate()
    errors: list[BaseException] = []

    def work(s: Store, gw: str) -> None:
        try:
            for i in range(20):
                s.ensure_target(gw, "http://x", "openai", f"m{i}")
                run_id = s.start_run(gw, f"m{i}", "smoke", 1, i, True)
                s.finish_run(run_id, "ok", None, [rec(obs(gateway=gw, model=f"m{i}"))], [])
        except BaseException as e:  # collected for the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s, f"g{i}")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(stores[0].targets()) == 40
    assert len(stores[0].observations()) == 40
    for s in stores:
        s.close()


def test_exclusive_is_held_by_one_process_at_a_time(store_url: str) -> None:
    """PostgreSQL: the analysis pass's lock is database-wide (two stores: two processes);
    SQLite has one instance per file and always grants it."""
    from aione_probe.analysis.run import ANALYSIS_LOCK, analyse
    from aione_probe.config import Config

    a, b = Store(store_url), Store(store_url)
    a.migrate()
    cfg = Config(gateways=[{"name": "gw", "base_url": "http://127.0.0.1:1", "auth": "none"}])
    postgres = a.engine.dialect.name == "postgresql"
    with a.exclusive(ANALYSIS_LOCK) as first:
        with b.exclusive(ANALYSIS_LOCK) as second:
            assert first and second is not postgres
        assert analyse(b, cfg) is not postgres  # a second pass does not run beside the first
    with b.exclusive(ANALYSIS_LOCK) as again:
        assert again  # released
    assert analyse(b, cfg)
    a.close()
    b.close()


def test_concurrent_pins_of_one_key_leave_one_active(store_url: str) -> None:
    """Two processes pinning the same baseline at once (an automatic pin and `baseline
    pin`): every pin succeeds and exactly one is active, the last."""
    stores = [Store(store_url) for _ in range(2)]
    stores[0].migrate()
    errors: list[BaseException] = []

    def work(s: Store) -> None:
        try:
            for _ in range(100):
                s.pin_baseline("drift", "gw", "m", "smoke", T0, T0, "race", {}, location="x")
        except BaseException as e:  # collected for the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rows = stores[0].baselines(kind="drift")
    assert len(rows) == 200
    assert [r.id for r in rows if r.active] == [max(r.id for r in rows)]
    for s in stores:
        s.close()


# -- verdicts -----------------------------------------------------------------------------


def test_verdicts_save_and_latest(store: Store) -> None:
    def save(kind: str, model: str, suite: str | None, at: datetime, verdict: str) -> int:
        return store.save_verdict(
            kind, "gw", model, suite, verdict, 0.03, 0.01, 40, None, {"p": 0.03}, created_at=at
        )

    save("authenticity", "m", None, T0, "pass")
    a2 = save("authenticity", "m", None, T0 + timedelta(hours=1), "fail")
    d1 = save("drift", "m", "smoke", T0 + timedelta(hours=2), "drift")
    d2 = save("drift", "m", "quality", T0, "stable")
    save("drift", "m", "smoke", T0 - timedelta(hours=2), "stable")
    latest = store.latest_verdicts()
    assert sorted(v.id for v in latest) == sorted([a2, d1, d2])
    assert [v.id for v in store.latest_verdicts("authenticity")] == [a2]
    v = next(v for v in latest if v.id == a2)
    assert (v.verdict, v.score, v.alpha, v.n, v.details) == ("fail", 0.03, 0.01, 40, {"p": 0.03})
    assert v.created_at == T0 + timedelta(hours=1) and v.created_at.tzinfo is UTC
    assert len(store.verdicts(kind="drift", since=T0)) == 2
    with pytest.raises(ValueError):
        save("vibes", "m", None, T0, "pass")


def test_verdict_links_baseline(store: Store) -> None:
    b = store.pin_baseline("drift", "gw", "m", "smoke", T0, T0, "auto", {})
    store.save_verdict("drift", "gw", "m", "smoke", "stable", 0.4, 0.01, 10, b, {})
    assert store.latest_verdicts("drift")[0].baseline_id == b
    with pytest.raises(exc.IntegrityError):
        store.save_verdict("drift", "gw", "m", "smoke", "stable", 0.4, 0.01, 10, b + 100, {})


# -- baselines ----------------------------------------------------------------------------


def test_pin_deactivates_previous_for_same_key_only(store: Store) -> None:
    first = store.pin_baseline(
        "drift", "gw", "m", "smoke", T0, T0 + timedelta(days=1), "auto", {"v": 1}
    )
    other = store.pin_baseline("drift", "gw", "m", "quality", T0, T0, "auto", {"v": 9})
    no_suite = store.pin_baseline("authenticity", "gw", "m", None, T0, T0, "cli", {"v": 5})
    second = store.pin_baseline("drift", "gw", "m", "smoke", T0, T0, "cli", {"v": 2})
    assert store.active_baseline("drift", "gw", "m", "smoke").id == second
    assert store.active_baseline("drift", "gw", "m", "quality").id == other
    assert store.active_baseline("authenticity", "gw", "m", None).id == no_suite
    newer = store.pin_baseline("authenticity", "gw", "m", None, T0, T0, "cli", {"v": 6})
    assert store.active_baseline("authenticity", "gw", "m", None).id == newer
    assert store.active_baseline("drift", "gw", "m2", "smoke") is None
    assert [b.id for b in store.baselines(kind="drift", suite="smoke")] == [first, second]
    assert {b.id for b in store.baselines(active_only=True)} == {other, second, newer}
    with pytest.raises(ValueError, match="before"):
        store.pin_baseline("drift", "gw", "m", "smoke", T0, T0 - timedelta(1), "cli", {})


def test_only_one_active_baseline_per_key(store: Store) -> None:
    store.pin_baseline("drift", "gw", "m", None, T0, T0, "auto", {})
    row = {
        "kind": "drift",
        "gateway": "gw",
        "model": "m",
        "suite": None,
        "window_start": T0,
        "window_end": T0,
        "pinned_at": T0,
        "source": "x",
        "data": {},
        "active": True,
    }
    with pytest.raises(exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(insert(Baseline), row)
    # Fleet mode: each location has its own active drift baseline.
    eu = store.pin_baseline("drift", "gw", "m", None, T0, T0, "auto", {}, location="eu")
    assert store.active_baseline("drift", "gw", "m", None, "eu").id == eu
    assert store.active_baseline("drift", "gw", "m", None).id != eu
    with pytest.raises(exc.IntegrityError), store.engine.begin() as conn:
        conn.execute(insert(Baseline), {**row, "location": "eu"})


def test_baseline_export_import_round_trip(store: Store, tmp_path) -> None:
    data = {"probes": {"hash-p1": {"pass": 0.9, "n": 40}}, "ttft_s": [0.1, 0.2]}
    start = datetime(2025, 2, 1, tzinfo=UTC)
    b = store.pin_baseline("drift", "gw", "m", "smoke", start, T0, "auto", data, location="eu")
    doc = store.export_baseline(b)
    assert doc["window_start"] == start.isoformat() and doc["data"] == data
    assert doc["location"] == "eu"

    with Store(f"sqlite:///{tmp_path}/other.db") as other:
        other.migrate()
        imported = other.import_baseline(doc)
        again = other.export_baseline(imported)
        assert {k: v for k, v in again.items() if k != "pinned_at"} == {
            k: v for k, v in doc.items() if k != "pinned_at"
        }
        assert other.active_baseline("drift", "gw", "m", "smoke", "eu").id == imported

    reimported = store.import_baseline(doc)
    assert store.active_baseline("drift", "gw", "m", "smoke", "eu").id == reimported != b
    with pytest.raises(LookupError):
        store.export_baseline(12345)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"format": "other"}, "not an"),
        ({"format_version": 99}, "format_version"),
        ({"kind": ""}, "kind"),
        ({"data": [1]}, "data"),
        ({"suite": 3}, "suite"),
        ({"location": ["eu"]}, "location"),
        ({"window_start": "yesterday"}, "window_start"),
        ({"window_end": "2025-03-01T00:00:00"}, "UTC offset"),
    ],
)
def test_import_rejects_bad_documents(store: Store, change: dict, reason: str) -> None:
    doc = store.export_baseline(store.pin_baseline("drift", "gw", "m", None, T0, T0, "a", {}))
    with pytest.raises(ValueError, match=reason):
        store.import_baseline(doc | change)
