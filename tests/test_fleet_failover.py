"""The fleet failure test: three real instances on a real PostgreSQL, one SIGKILLed mid-run.

Two instances in location ``alpha``, one in ``beta``; a suite every 20 s on three models
of a loopback gateway whose answers take about 3-5 s, so runs are in flight at any
moment. Half way through the window one ``alpha`` instance is killed with SIGKILL and
restarted a few seconds later. Afterwards, for every (job, slot, location) of the window:

* exactly one run row exists (the database's unique index makes a second impossible;
  the test counts rows anyway, and cross-checks the gateway's own request log);
* it ran (ok/partial), unless it was in flight on the killed instance: then it is
  ``failed`` with an ``interrupted`` reason and was not retried (the stated rule);
* or it was ``skipped`` because the same job's previous run was still in flight (the
  stated overlap rule; on a loaded machine a cold first run can outlast the interval):
  accepted only when the rows prove it, i.e. that previous run started before the skip
  and finished after it;
* every observation committed before the kill is still there.

The window is ``AIONE_FLEET_WINDOW_S`` seconds (default 600, the CI value). It takes that
long, so `.ci/run` runs it as its own pytest process beside the main suite (marker
``fleet``; the main run deselects it).
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import faultserver
import pytest
from fleetharness import CuttableProxy, Instance, fresh_database, write_config, write_suite
from sqlalchemy import text

from aione_probe.store import Store
from aione_probe.types import utcnow

pytestmark = [pytest.mark.postgres, pytest.mark.fleet]

INTERVAL_S = 20
MODELS = ["timing:3000", "timing:4000", "timing:5000"]  # runs of about 3-5 s


def _window_s() -> float:
    return float(os.environ.get("AIONE_FLEET_WINDOW_S", "600"))


def _slot_after(t: float) -> float:
    return (int(t) // INTERVAL_S + 1) * INTERVAL_S


@pytest.fixture
def database():
    if not os.environ.get("PGHOST"):
        pytest.skip("PostgreSQL not available: PGHOST unset (run under pg_virtualenv)")
    with fresh_database() as url:
        yield url


def test_three_instances_one_killed_every_slot_once_per_location(
    database: str, tmp_path: Path
) -> None:
    window_s = _window_s()
    suite = write_suite(tmp_path)
    with faultserver.running() as gateway:
        gw_url = f"http://127.0.0.1:{gateway.port}/v1"

        def instance(location: str, name: str) -> Instance:
            return write_config(
                tmp_path, url=database, location=location, name=name, gateway_url=gw_url,
                models=MODELS, suites=[(suite.name, "fleet")], interval_s=INTERVAL_S,
            )  # fmt: skip

        fleet = [instance("alpha", "a1"), instance("alpha", "a2"), instance("beta", "b1")]
        victim = fleet[0]
        try:
            for inst in fleet:
                inst.start()
            for inst in fleet:
                inst.wait_healthy()
            # The window opens one slot after everyone joined: the instances' first, cold
            # runs (imports, connections) fall before it.
            start = _slot_after(time.time()) + INTERVAL_S
            end = start + window_s
            middle = start + (len(_slots(start, window_s)) // 2) * INTERVAL_S
            time.sleep(max(0.0, middle - time.time()))
            store = Store(database)
            # Kill while the victim has runs in flight (its /healthz says how many).
            deadline = time.time() + 3 * INTERVAL_S
            while time.time() < deadline:
                body = victim.health() or {}
                if body.get("runs_in_progress", 0) >= 1:
                    break
                time.sleep(0.1)
            committed_before_kill = _observation_ids(store)
            victim.kill()
            killed_at = time.time()
            time.sleep(5)
            victim.start()
            victim.wait_healthy()
            # Let the last slot of the window finish (runs take < 5 s), then stop cleanly.
            time.sleep(max(0.0, end - time.time()) + 8)
        finally:
            codes = [inst.stop() for inst in fleet]
        seen_by_location = Counter(s.headers.get("x-fleet-location") for s in gateway.seen)

    assert codes == [0, 0, 0], [inst.log.read_text()[-2000:] for inst in fleet]
    runs = _runs(store, start, end)
    all_runs = _runs(store, 0, 2e10)
    slots = _slots(start, window_s)
    jobs = [(m, loc) for m in MODELS for loc in ("alpha", "beta")]
    by_key: dict[tuple[str, str, float], list[dict]] = defaultdict(list)
    for r in runs:
        by_key[(r["model"], r["location"], r["slot"])].append(r)

    missing = [(m, loc, s) for m, loc in jobs for s in slots if not by_key[(m, loc, s)]]
    twice = {k: len(v) for k, v in by_key.items() if len(v) > 1}
    ran = [r for r in runs if r["status"] in ("ok", "partial")]
    interrupted = [r for r in runs if (r["reason"] or "").startswith("interrupted")]
    overlapped = [r for r in runs if _justified_overlap_skip(r, all_runs)]
    other = [r for r in runs if r not in ran and r not in interrupted and r not in overlapped]
    in_flight_at_kill = [
        r for r in interrupted
        if r["instance"].startswith(victim.name + "#") and r["started"] <= killed_at
    ]  # fmt: skip
    lost = committed_before_kill - _observation_ids(store)
    requests = sum(r["n_requests"] for r in ran)
    gateway_saw = seen_by_location["alpha"] + seen_by_location["beta"]
    expected = len(jobs) * len(slots)
    print(
        f"\nfleet failure test: window {window_s:.0f}s, {len(slots)} slots x {len(jobs)} "
        f"(job, location) = {expected} expected runs"
        f"\n  ran exactly once: {len(ran)}"
        f"\n  interrupted by the SIGKILL (in flight, not retried): {len(interrupted)}"
        f" ({len(in_flight_at_kill)} started on the killed instance before the kill)"
        f"\n  skipped, previous run still in flight (checked against its rows): "
        f"{len(overlapped)}"
        f"\n  other (skipped/failed): {len(other)} {[(r['status'], r['reason']) for r in other]}"
        f"\n  missing slots: {len(missing)} {missing[:5]}"
        f"\n  slots run twice: {len(twice)}"
        f"\n  observations committed before the kill: {len(committed_before_kill)}, lost: "
        f"{len(lost)}"
        f"\n  requests stored for completed runs: {requests}; requests the gateway saw: "
        f"{gateway_saw} (difference: requests of interrupted runs and of runs outside the "
        "window)"
    )
    assert not missing
    assert not twice
    assert not other
    assert len(ran) + len(interrupted) + len(overlapped) == expected
    assert interrupted == in_flight_at_kill
    assert interrupted, "the kill hit no run in flight: the test did not test recovery"
    assert all(r["location"] == "alpha" for r in interrupted)
    assert not lost
    assert committed_before_kill
    # Each location sent its own requests: no location ran the other's slots.
    beta_runs = [r for r in all_runs if r["location"] == "beta"]
    assert seen_by_location["beta"] >= sum(r["n_requests"] for r in beta_runs)
    store.close()


def _slots(start: float, window_s: float) -> list[float]:
    return [start + i * INTERVAL_S for i in range(int(window_s // INTERVAL_S))]


def _justified_overlap_skip(run: dict, all_runs: list[dict]) -> bool:
    """True when `run` was skipped for overlap and the previous run of its job proves it."""
    if run["status"] != "skipped" or run["reason"] != "previous run still in progress":
        return False
    before = [
        r for r in all_runs
        if (r["model"], r["location"]) == (run["model"], run["location"])
        and r["slot"] < run["slot"] and r["status"] != "skipped"
    ]  # fmt: skip
    if not before:
        return False
    previous = max(before, key=lambda r: r["slot"])
    return previous["started"] <= run["started"] and (
        previous["finished"] is None or previous["finished"] >= run["started"]
    )


def _observation_ids(store: Store) -> set[int]:
    with store.engine.connect() as conn:
        return set(conn.execute(text("SELECT id FROM observation")).scalars())


def _runs(store: Store, start: float, end: float) -> list[dict]:
    lo = datetime.fromtimestamp(start, UTC)
    hi = datetime.fromtimestamp(end, UTC)
    out = []
    for r in store.runs():
        if r.slot_at is None or not lo <= r.slot_at < hi:
            continue
        out.append(
            {
                "model": r.model,
                "location": r.location,
                "slot": r.slot_at.timestamp(),
                "status": r.status,
                "reason": r.reason,
                "instance": r.instance or "",
                "started": r.started_at.timestamp(),
                "finished": r.finished_at.timestamp() if r.finished_at else None,
                "n_requests": r.n_requests,
            }
        )
    return out


def test_database_lost_mid_run_keeps_observations_and_reports_unhealthy(
    database: str, tmp_path: Path
) -> None:
    """The instance's database connection is cut while runs are in flight, then restored:
    /healthz says unhealthy meanwhile, the runs in flight write their observations once
    it is back, and no slot runs twice."""
    proxy = CuttableProxy()
    suite = write_suite(tmp_path)
    with faultserver.running() as gateway:
        inst = write_config(
            tmp_path, url=proxy.url(database), location="alpha", name="p1",
            gateway_url=f"http://127.0.0.1:{gateway.port}/v1", models=MODELS,
            suites=[(suite.name, "fleet")], interval_s=INTERVAL_S,
        )  # fmt: skip
        try:
            inst.start()
            inst.wait_healthy()
            time.sleep(max(0.0, _slot_after(time.time()) - time.time()))
            while (inst.health() or {}).get("runs_in_progress", 0) < 1:
                time.sleep(0.1)
            cut_at = time.time()
            proxy.cut()
            states = []
            while time.time() < cut_at + 2 * INTERVAL_S:
                body = inst.health() or {}
                states.append((body.get("status"), (body.get("fleet") or {}).get("database")))
                time.sleep(1)
            proxy.restore()
            back = inst.wait_healthy(timeout_s=90)
            restored_at = time.time()
            time.sleep(max(0.0, _slot_after(time.time()) + 8 - time.time()))
        finally:
            code = inst.stop()
    store = Store(database)
    runs = [r for r in store.runs() if r.slot_at is not None]
    in_flight = [
        r for r in runs
        if r.started_at.timestamp() <= cut_at <= (r.finished_at or utcnow()).timestamp()
    ]  # fmt: skip
    keys = Counter((r.model, r.slot_at) for r in runs)
    after = [r for r in runs if r.slot_at.timestamp() >= restored_at]
    print(
        f"\ndatabase lost for {2 * INTERVAL_S}s: /healthz states {Counter(states)}; "
        f"{len(in_flight)} runs in flight at the cut wrote "
        f"{sum(r.n_observations for r in in_flight)} observations; {len(after)} runs after "
        f"the restore; slots run twice: {sum(1 for n in keys.values() if n > 1)}"
    )
    assert code == 0, inst.log.read_text()[-3000:]
    assert ("unhealthy", "unreachable") in states
    assert back["fleet"]["database"] == "ok"
    assert in_flight and all(r.status in ("ok", "partial") for r in in_flight)
    assert all(r.n_observations > 0 for r in in_flight)
    assert max(keys.values()) == 1
    assert after and all(r.status in ("ok", "partial") for r in after)
    store.close()
