"""Fleet mode: config, identity, slot claims and the spend ledger on a real PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fleetharness import ROOT, free_port, fresh_database, write_config, write_suite

from aione_probe.config import config_from_dict, load_config, slot_cron
from aione_probe.errors import ConfigError
from aione_probe.fleet import identity
from aione_probe.service import load_suites
from aione_probe.store import ObservationRecord, Store
from aione_probe.store import fleet as fleetdb
from aione_probe.store.tables import FleetInstance
from aione_probe.types import Observation, utcnow

SLOT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _cfg(tmp_path: Path, **fleet: object) -> dict:
    return {
        "gateways": [
            {"name": "gw", "base_url": "http://127.0.0.1:1/v1", "auth": "none", "models": ["m"]}
        ],
        "suites": [{"file": "smoke.toml", "interval": "20s"}],
        "fleet": {"url": "postgresql://h/db", "location": "eu-west", **fleet},
    }


# -- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "cron"),
    [(20, "* * * * * */20"), (60, "*/1 * * * * 0"), (300, "*/5 * * * * 0"),
     (7200, "0 */2 * * * 0"), (86400, "0 0 * * * 0"), (45, None), (420, None), (1.5, None)],
)  # fmt: skip
def test_intervals_become_epoch_aligned_cron_lines(interval: float, cron: str | None) -> None:
    assert slot_cron(interval) == cron


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        ({"fleet": {"url": "sqlite:///x.db", "location": "eu"}}, "fleet.url", "postgresql"),
        ({"fleet": {"url": "postgresql://h/db", "location": "EU West"}}, "fleet.location", "a-z"),
        ({"fleet": {"url": "postgresql://h/db"}}, "fleet.location", "required"),
        ({"suites": [{"file": "smoke.toml", "interval": "45s"}]}, "(top level)", "45s"),
        ({"storage": {"url": "sqlite:///other.db"}}, "(top level)", "fleet.url"),
        (
            {"fleet": {"url": "postgresql://h/db", "location": "eu", "heartbeat": "20s"}},
            "fleet",
            "twice",
        ),
    ],
)
def test_bad_fleet_config_names_key_and_reason(
    tmp_path: Path, change: dict, key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        config_from_dict({**_cfg(tmp_path), **change}, tmp_path / "c.toml")
    assert exc.value.key == key, str(exc.value)
    assert reason in str(exc.value)


def test_fleet_mode_stores_in_the_fleet_database(tmp_path: Path) -> None:
    cfg = config_from_dict(_cfg(tmp_path), tmp_path / "c.toml")
    assert cfg.storage_url() == "postgresql://h/db"
    assert cfg.fleet is not None and cfg.fleet.location == "eu-west"


async def test_a_long_analysis_pass_does_not_hold_up_slot_claims(tmp_path: Path) -> None:
    """Fleet mode: analysis and reports have a store thread of their own, so a store call
    of a run (a claim, a finished run's write) is not queued behind a pass."""
    import asyncio

    from aione_probe.service import Service

    write_suite(tmp_path, "fleet")
    data = _cfg(tmp_path)
    data["suites"] = [{"file": str(tmp_path / "fleet.toml"), "interval": "20s"}]
    service = Service(config_from_dict(data, tmp_path / "c.toml"))
    release = threading.Event()
    try:
        pass_ = asyncio.ensure_future(service.analysis_store.call(lambda _s: release.wait(10)))
        await asyncio.sleep(0.05)  # the "pass" now holds its thread
        claim = await asyncio.wait_for(service.astore.call(lambda _s: "claimed"), timeout=2)
        assert claim == "claimed" and not pass_.done()
    finally:
        release.set()
        await service.aclose()
    assert await pass_


def test_an_instance_with_another_suite_version_is_refused_naming_the_difference(
    tmp_path: Path,
) -> None:
    def described(version: int, models: list[str]) -> tuple:
        folder = tmp_path / f"v{version}-{len(models)}"
        folder.mkdir()
        write_suite(folder, "fleet", version)
        data = _cfg(folder)
        data["gateways"][0]["models"] = models
        data["suites"] = [{"file": str(folder / "fleet.toml"), "interval": "20s"}]
        cfg = config_from_dict(data, folder / "c.toml")
        return cfg, identity.describe(cfg, load_suites(cfg))

    cfg1, one = described(1, ["m"])
    cfg2, two = described(2, ["m"])
    _, other_models = described(1, ["m", "n"])
    live = [FleetInstance(name="a#1", location="eu-west", host="h", pid=1, version="0",
                          started_at=utcnow(), heartbeat_at=utcnow(), config=one)]  # fmt: skip
    with pytest.raises(ConfigError) as exc:
        identity.refuse_if_different(cfg2, two, "eu-west", live)
    assert "suites.fleet.version: fleet has 1, this instance 2" in str(exc.value)
    assert "a#1" in str(exc.value)
    identity.refuse_if_different(cfg1, one, "eu-west", live)  # same config: accepted
    # Coverage may differ between locations, not within one.
    identity.refuse_if_different(cfg1, other_models, "us-east", live)
    with pytest.raises(ConfigError, match=r"gateways\.gw\.models"):
        identity.refuse_if_different(cfg1, other_models, "eu-west", live)


def test_unreachable_database_at_start_is_a_clear_error_and_exit_2(tmp_path: Path) -> None:
    suite = write_suite(tmp_path)
    inst = write_config(
        tmp_path, url=f"postgresql://127.0.0.1:{free_port()}/nowhere", location="eu",
        name="x", gateway_url="http://127.0.0.1:9/v1", models=["m"],
        suites=[(suite.name, "fleet")], interval_s=20,
    )  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "aione_probe", "serve", "--config", str(inst.config)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "fleet database" in proc.stderr and "unreachable" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the database side (real PostgreSQL) ----------------------------------------------------


@pytest.fixture
def store():
    if not os.environ.get("PGHOST"):
        pytest.skip("PostgreSQL not available: PGHOST unset (run under pg_virtualenv)")
    with fresh_database() as url:
        s = Store(url)
        s.migrate()
        yield s
        s.close()


def _req(slot: datetime = SLOT, **kw: object) -> fleetdb.SlotRequest:
    values: dict = dict(gateway="gw", model="m", suite="smoke", suite_version=1, seed=2**61,
                        location="eu", instance="a#1", slot_at=slot, cap=None,
                        estimate=0.0)  # fmt: skip
    values.update(kw)
    return fleetdb.SlotRequest(**values)


def _join(store: Store, name: str, location: str = "eu") -> int:
    values = {"name": name, "location": location, "host": "h", "pid": 1, "version": "0",
              "config": {}}  # fmt: skip
    return fleetdb.join_fleet(
        store, values, live_since=utcnow() - timedelta(seconds=30), check=lambda _live: None
    )


def _concurrently(n: int, fn) -> list:
    out: list = [None] * n
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        barrier.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_a_slot_is_claimed_once_per_location_under_concurrency(store: Store) -> None:
    live = utcnow() - timedelta(seconds=30)
    claims = _concurrently(
        16,
        lambda i: fleetdb.claim_slot(
            store, _req(instance=f"a#{i}", location="eu" if i % 2 else "us"), live_since=live
        ),
    )
    outcomes = sorted(c.outcome.value for c in claims)
    assert outcomes.count("run") == 2  # one per location
    assert outcomes.count("duplicate") == 14
    runs = store.runs()
    assert sorted(r.location for r in runs) == ["eu", "us"]
    assert {r.seed for r in runs} == {2**61}  # 62-bit seeds fit


def test_spend_cap_holds_across_concurrent_claims(store: Store) -> None:
    live = utcnow() - timedelta(seconds=30)
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    claims = _concurrently(
        12,
        lambda i: fleetdb.claim_slot(
            store,
            _req(slot=today + timedelta(minutes=i), instance=f"a#{i}", cap=1.0, estimate=0.3),
            live_since=live,
        ),
    )
    ran = [c for c in claims if c.outcome is fleetdb.ClaimOutcome.run]
    skipped = [c for c in claims if c.outcome is fleetdb.ClaimOutcome.skipped]
    assert len(ran) == 3 and len(skipped) == 9
    assert all("daily spend cap reached" in c.reason for c in skipped)
    # A finished run releases its reservation; the ledger then counts what it spent.
    obs = Observation(gateway="gw", model="m", started_at=utcnow())
    record = ObservationRecord(obs, "smoke", "p", "h", cost=0.1)
    store.finish_run(ran[0].run_id, "ok", None, [record], [])
    again = fleetdb.claim_slot(
        store, _req(slot=today + timedelta(hours=1), cap=1.0, estimate=0.3), live_since=live
    )
    assert again.outcome is fleetdb.ClaimOutcome.run  # 0.1 + 2 x 0.3 held + 0.3 <= 1.0


def test_lost_instances_runs_are_interrupted_and_stop_blocking(store: Store) -> None:
    me = _join(store, "a#1")
    fleetdb.heartbeat(store, me)
    live = utcnow() - timedelta(seconds=30)
    first = fleetdb.claim_slot(store, _req(instance="a#1", estimate=0.2, cap=5.0), live_since=live)
    assert first.outcome is fleetdb.ClaimOutcome.run
    busy = fleetdb.claim_slot(
        store, _req(slot=SLOT + timedelta(seconds=20), instance="a#2"), live_since=live
    )
    assert busy.outcome is fleetdb.ClaimOutcome.skipped
    assert busy.reason == "previous run still in progress"
    lost, n = fleetdb.recover_lost(store, stale_before=utcnow() + timedelta(seconds=1))
    assert lost == ["a#1"] and n == 1
    run = store.run(first.run_id)
    assert run is not None and run.status == "failed" and run.reason.startswith("interrupted")
    assert run.reserved == pytest.approx(0.2)  # what it spent is unknown: the cap keeps it
    after = fleetdb.claim_slot(
        store, _req(slot=SLOT + timedelta(seconds=40), instance="a#2"), live_since=live
    )
    assert after.outcome is fleetdb.ClaimOutcome.run
    assert fleetdb.heartbeat(store, me) is False  # it was presumed lost; now live again


def test_the_seed_salt_is_shared(store: Store) -> None:
    assert fleetdb.seed_salt(store) == fleetdb.seed_salt(store)
    assert len(fleetdb.seed_salt(store)) == 16


def test_joining_is_refused_by_the_check_and_writes_nothing(store: Store) -> None:
    _join(store, "a#1")

    def refuse(live: list[FleetInstance]) -> None:
        assert [i.name for i in live] == ["a#1"]
        raise ConfigError("c.toml", "fleet", "differs")

    values = {"name": "b#1", "location": "eu", "host": "h", "pid": 2, "version": "0",
              "config": {}}  # fmt: skip
    with pytest.raises(ConfigError):
        fleetdb.join_fleet(store, values, live_since=utcnow() - timedelta(60), check=refuse)
    names = [i.name for i in fleetdb.instances(store, since=utcnow() - timedelta(hours=1))]
    assert names == ["a#1"]


# -- metrics, compose -----------------------------------------------------------------------


def test_every_served_sample_carries_the_instances_location() -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.exposition import generate_latest

    from aione_probe.server import _Exposition

    registry = CollectorRegistry()
    Counter("aione_probe_x_total", "x", ["gateway"], registry=registry).labels("gw").inc()
    Histogram("aione_probe_y_seconds", "y", registry=registry).observe(0.3)
    body = _Exposition(registry, 0.0, "eu-west").body(generate_latest, "text/plain").decode()
    samples = [line for line in body.splitlines() if line and not line.startswith("#")]
    assert samples and all('location="eu-west"' in line for line in samples), samples
    plain = _Exposition(registry, 0.0).body(generate_latest, "text/plain").decode()
    assert "location" not in plain  # a single instance exports no location label


def test_compose_fleet_profile_is_two_instances_on_postgres(tmp_path: Path) -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "./examples/fleet.toml:/etc/aione-probe/config.toml" in compose
    config = (ROOT / "examples" / "fleet.toml").read_text()
    config = config.replace('"/app/probes"', json.dumps(str(ROOT / "probes")))
    (tmp_path / "fleet.toml").write_text(config)
    cfg = load_config(tmp_path / "fleet.toml")
    assert cfg.fleet is not None and cfg.fleet.url.startswith("postgresql://")
    for suite in cfg.suites:
        assert cfg.suite_path(suite).exists(), suite.file
    if shutil.which("docker-compose") is None:
        pytest.skip("no docker-compose client on this machine")
    proc = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "fleet",
         "config", "--services"], capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert {"postgres", "fleet-1", "fleet-2", "sim"} <= set(proc.stdout.split())
    rendered = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "fleet",
         "config"], capture_output=True, text=True, timeout=120, cwd=ROOT,
    ).stdout  # fmt: skip
    assert rendered.count("/etc/aione-probe/config.toml") >= 3  # demo + two fleet instances
    assert rendered.count("condition: service_healthy") == 2


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_url(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/old.db"
        return
    if not os.environ.get("PGHOST"):
        pytest.skip("PostgreSQL not available: PGHOST unset (run under pg_virtualenv)")
    with fresh_database() as url:
        yield url


def test_schema_2_databases_upgrade_to_fleet_columns(any_url: str) -> None:
    from sqlalchemy import inspect, text

    from aione_probe.store.migrate import SCHEMA_VERSION

    store = Store(any_url)
    store.migrate()
    run_id = store.start_run("gw", "m", "smoke", 1, 5, True)
    # Take the database back to schema 2: what an aione-probe before fleet mode left.
    with store.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE suiterun ALTER COLUMN seed TYPE INTEGER"))
        conn.execute(text("DROP INDEX uq_suiterun_slot"))
        for column in ("location", "instance", "slot_at", "reserved"):
            conn.execute(text(f"ALTER TABLE suiterun DROP COLUMN {column}"))
        conn.execute(text("ALTER TABLE observation DROP COLUMN location"))
        conn.execute(text("DROP TABLE fleetinstance"))
        conn.execute(text("DROP TABLE fleetsecret"))
        conn.execute(text("ALTER TABLE verdict DROP COLUMN comparison"))  # schema 4
        conn.execute(text("DROP INDEX uq_baseline_active"))  # schema 5: location in its key
        conn.execute(text("ALTER TABLE verdict DROP COLUMN location"))
        conn.execute(text("ALTER TABLE baseline DROP COLUMN location"))
        conn.execute(text("CREATE UNIQUE INDEX uq_baseline_active ON baseline "
                          "(kind, gateway, model, coalesce(suite, '')) WHERE active"))  # fmt: skip
        conn.execute(text("UPDATE schemaversion SET version = 2 WHERE version = :v"),
                     {"v": SCHEMA_VERSION})  # fmt: skip
    assert store.schema_version() == 2
    assert store.migrate() == SCHEMA_VERSION == 5
    with store.engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("suiterun")}
        assert {"location", "instance", "slot_at", "reserved"} <= columns
        for table in ("observation", "verdict", "baseline"):
            assert "location" in {c["name"] for c in inspect(conn).get_columns(table)}
    run = store.run(run_id)
    assert run is not None and run.location is None and run.reserved == 0.0
    store.start_run("gw", "m", "smoke", 1, 2**61, True)  # 62-bit seeds fit after the upgrade
    for location in ("eu", "us"):  # the re-created active-baseline index keys on location
        store.pin_baseline("drift", "gw", "m", "smoke", SLOT, SLOT, "auto", {}, location=location)
    assert fleetdb.seed_salt(store)  # the fleet tables exist
    store.close()


def test_fleet_status_lists_instances_runs_in_flight_and_the_queue(
    store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from aione_probe.cli import main

    a = _join(store, "eu-1#aa", "eu-west")
    _join(store, "us-1#bb", "us-east")
    fleetdb.heartbeat(store, a)
    live = utcnow() - timedelta(seconds=30)
    done = fleetdb.claim_slot(
        store, _req(slot=SLOT - timedelta(seconds=20), instance="eu-1#aa", location="eu-west"),
        live_since=live,
    )  # fmt: skip
    seen = Observation(gateway="gw", model="m", started_at=utcnow(), stream=True,
                       first_token_s=0.25, end_s=0.5)  # fmt: skip
    store.finish_run(done.run_id, "ok", None, [ObservationRecord(seen, "smoke", "p", "h")], [])
    assert store.observations(location="eu-west")[0].location == "eu-west"
    assert store.observations(location="us-east") == []
    fleetdb.claim_slot(store, _req(instance="eu-1#aa", location="eu-west"), live_since=live)
    suite = write_suite(tmp_path)
    inst = write_config(
        tmp_path, url=store.url, location="eu-west", name="cli", gateway_url="http://x/v1",
        models=["m"], suites=[(suite.name, "fleet")], interval_s=20,
    )  # fmt: skip
    assert main(["fleet", "status", "--config", str(inst.config)]) == 0
    out = capsys.readouterr().out
    assert "eu-1#aa" in out and "us-1#bb" in out and "us-east" in out
    eu = next(line for line in out.splitlines() if "eu-1#aa" in line)
    assert "live" in eu and eu.rstrip(" │").endswith("1")  # one run in flight
    assert "queue" in out
    latency = out[out.index("time to first token by location") :]
    assert "eu-west" in latency and "0.250s" in latency  # TTFT by location
