"""The store's fleet tables: instances, the shared seed salt, slot claims and the spend ledger.

Functions take the `Store` first, like its methods, so async code calls them the same way
(``await astore.call(claim_slot, ...)``). Each is one transaction. The two guarantees of
fleet mode live here, as database facts rather than timing arguments:

* **each slot once per location**: a run row is inserted per (suite, gateway, model,
  location, slot) under the unique index ``uq_suiterun_slot``; a second claim of the same
  slot finds the row and gets `ClaimOutcome.duplicate`, whoever and whenever it is;
* **spend caps across the fleet**: the ledger of a gateway's UTC day is the cost of its
  stored observations plus the ``reserved`` money of its runs that have not written their
  observations (running, or interrupted before they could). A claim checks and reserves
  under a per-gateway lock (PostgreSQL advisory lock; SQLite's single writer), so
  concurrent claims cannot all see room under the cap.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import case, func, insert, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from aione_probe.store.engine import xact_lock
from aione_probe.store.queries import window
from aione_probe.store.store import Store
from aione_probe.store.tables import FleetInstance, FleetSecret, ObservationRow, RunStatus, SuiteRun
from aione_probe.types import utcnow

_JOIN_LOCK_KEY = 0x41494F4E46  # "AIONF": one instance joins at a time


class ClaimOutcome(StrEnum):
    """What claiming a schedule slot gave."""

    run = "run"  # the slot is this instance's: run it
    duplicate = "duplicate"  # the slot already has a run in this location: do nothing
    skipped = "skipped"  # recorded as a skipped run (spend cap, previous run still going)


@dataclass(frozen=True)
class Claim:
    """The result of `claim_slot`: what to do, the run row's id and why."""

    outcome: ClaimOutcome
    run_id: int | None
    reason: str = ""


@dataclass(frozen=True)
class SlotRequest:
    """One scheduled run an instance wants to start."""

    gateway: str
    model: str
    suite: str
    suite_version: int
    seed: int
    location: str
    instance: str
    slot_at: datetime
    cap: float | None
    estimate: float
    currency: str = "USD"
    skip_reason: str = ""  # record the slot as skipped with this reason (if still free)


def _ledger(conn: Connection, gateway: str, day_start: datetime) -> float:
    """Money of `gateway`'s UTC day: stored observations plus unreleased reservations."""
    day = (day_start, day_start + timedelta(days=1))
    spent = conn.execute(
        select(func.coalesce(func.sum(ObservationRow.cost), 0.0)).where(
            col(ObservationRow.gateway) == gateway, *window(ObservationRow.started_at, *day)
        )
    ).scalar_one()
    held = conn.execute(
        select(func.coalesce(func.sum(SuiteRun.reserved), 0.0)).where(
            col(SuiteRun.gateway) == gateway, *window(SuiteRun.started_at, *day)
        )
    ).scalar_one()
    return float(spent) + float(held)


def claim_slot(store: Store, req: SlotRequest, *, live_since: datetime) -> Claim:
    """Claim one schedule slot for `req.location`, or say why not (see the module doc).

    A running run of the same job in the same location whose instance sent a heartbeat
    after `live_since` makes this slot a skipped run (no overlap); a run of a lost
    instance does not block. The spend check reserves `req.estimate` (an upper bound
    of the run's cost) until `Store.finish_run` replaces it with the observed cost.
    """
    now = utcnow()
    base = {
        "gateway": req.gateway,
        "model": req.model,
        "suite": req.suite,
        "suite_version": req.suite_version,
        "scheduled": True,
        "started_at": now,
        "location": req.location,
        "instance": req.instance,
        "slot_at": req.slot_at,
    }
    key = (
        col(SuiteRun.suite) == req.suite,
        col(SuiteRun.gateway) == req.gateway,
        col(SuiteRun.model) == req.model,
        col(SuiteRun.location) == req.location,
    )
    try:
        with store._write() as conn:
            # One lock per gateway: the spend ledger is per gateway and day.
            xact_lock(conn, f"aione-spend:{req.gateway}")
            found = conn.execute(
                select(SuiteRun.id, SuiteRun.instance, SuiteRun.status).where(
                    *key, col(SuiteRun.slot_at) == req.slot_at
                )
            ).first()
            if found is not None:
                mine = found.instance == req.instance and found.status == RunStatus.running
                if mine and not req.skip_reason:
                    # Our own claim, committed though its reply was lost: carry on with it.
                    return Claim(ClaimOutcome.run, found.id)
                return Claim(ClaimOutcome.duplicate, None, "slot already claimed")
            live = select(FleetInstance.name).where(
                col(FleetInstance.heartbeat_at) >= live_since,
                col(FleetInstance.stopped_at).is_(None),
            )
            busy = conn.execute(
                select(SuiteRun.id).where(
                    *key,
                    col(SuiteRun.status) == RunStatus.running.value,
                    col(SuiteRun.instance).in_(live),
                )
            ).first()
            reason = req.skip_reason
            if reason:
                pass
            elif busy:
                reason = "previous run still in progress"
            elif req.cap is not None:
                day = datetime.combine(now.date(), time.min, tzinfo=UTC)
                used = _ledger(conn, req.gateway, day)
                if used + req.estimate > req.cap:
                    reason = (
                        f"daily spend cap reached ({used:.4f} spent or held of "
                        f"{req.cap:.4f} {req.currency}; this run may cost {req.estimate:.4f})"
                    )
            if reason:
                values = {
                    **base,
                    "finished_at": now,
                    "status": RunStatus.skipped.value,
                    "reason": reason,
                }
                run_id = conn.execute(
                    insert(SuiteRun).values(values).returning(SuiteRun.id)
                ).scalar_one()
                return Claim(ClaimOutcome.skipped, run_id, reason)
            values = {
                **base,
                "seed": req.seed,
                "status": RunStatus.running.value,
                "reserved": req.estimate,
            }
            run_id = conn.execute(
                insert(SuiteRun).values(values).returning(SuiteRun.id)
            ).scalar_one()
            return Claim(ClaimOutcome.run, run_id)
    except IntegrityError:
        # Another location's instance cannot collide (location is in the key): this is
        # a same-location claim that won the race between our SELECT and INSERT.
        return Claim(ClaimOutcome.duplicate, None, "slot already claimed")


# -- instances ------------------------------------------------------------------------------


def join_fleet(
    store: Store,
    values: dict[str, Any],
    *,
    live_since: datetime,
    check: Callable[[list[FleetInstance]], None],
) -> int:
    """Register an instance (`values`: the `FleetInstance` columns); return its id.

    `check` sees the live instances first (heartbeat after `live_since`, not stopped) and
    raises to refuse the newcomer; instances join one at a time, so two that disagree
    cannot both get in.
    """
    with store._write() as conn:
        xact_lock(conn, _JOIN_LOCK_KEY)
        rows = conn.execute(
            select(FleetInstance).where(
                col(FleetInstance.heartbeat_at) >= live_since,
                col(FleetInstance.stopped_at).is_(None),
            )
        ).all()
        check([FleetInstance.model_validate(r._mapping) for r in rows])
        now = utcnow()
        row = {**values, "started_at": now, "heartbeat_at": now}
        return conn.execute(
            insert(FleetInstance).values(row).returning(FleetInstance.id)
        ).scalar_one()


def heartbeat(store: Store, instance_id: int) -> bool:
    """Refresh the instance's heartbeat; return False if others had presumed it lost.

    A lost instance that comes back is live again from here on: its runs that others
    marked interrupted stay so, but runs it still finishes write their observations.
    """
    with store._write() as conn:
        lost = conn.execute(
            select(FleetInstance.lost).where(col(FleetInstance.id) == instance_id)
        ).scalar_one()
        conn.execute(
            update(FleetInstance)
            .where(col(FleetInstance.id) == instance_id)
            .values(heartbeat_at=utcnow(), lost=False, stopped_at=None)
        )
        return not lost


def leave_fleet(store: Store, instance_id: int) -> None:
    """Record a clean exit."""
    with store._write() as conn:
        conn.execute(
            update(FleetInstance)
            .where(col(FleetInstance.id) == instance_id)
            .values(stopped_at=utcnow())
        )


def recover_lost(store: Store, *, stale_before: datetime) -> tuple[list[str], int]:
    """Presume instances silent since `stale_before` lost; interrupt their running runs.

    Returns the names of the instances newly presumed lost and how many runs were marked
    interrupted. Their reservations stay in the spend ledger: what an interrupted run
    spent is unknown, so the cap counts the most it could have spent.
    """
    now = utcnow()
    with store._write() as conn:
        lost = (
            conn.execute(
                select(FleetInstance.name).where(
                    col(FleetInstance.heartbeat_at) < stale_before,
                    col(FleetInstance.stopped_at).is_(None),
                )
            )
            .scalars()
            .all()
        )
        if lost:
            conn.execute(
                update(FleetInstance)
                .where(col(FleetInstance.name).in_(lost), col(FleetInstance.stopped_at).is_(None))
                .values(stopped_at=now, lost=True)
            )
        # Instance names are unique per process (`name#token`), so a restarted process
        # never shelters the runs of the one that died.
        stopped = select(FleetInstance.name).where(col(FleetInstance.stopped_at).is_not(None))
        result = conn.execute(
            update(SuiteRun)
            .where(
                col(SuiteRun.status) == RunStatus.running.value,
                col(SuiteRun.instance).in_(stopped),
            )
            .values(
                status=RunStatus.failed.value,
                reason="interrupted: its instance was lost (no heartbeat); not retried",
                finished_at=now,
            )
        )
        return list(lost), result.rowcount


def seed_salt(store: Store) -> bytes:
    """The fleet's shared seed key, created by the first instance that asks."""
    with store._write() as conn:
        stmt = Store._upsert_insert(conn, FleetSecret).values(
            name="seed_salt", value=secrets.token_hex(16)
        )
        conn.execute(stmt.on_conflict_do_nothing(index_elements=["name"]))
        value = conn.execute(
            select(FleetSecret.value).where(col(FleetSecret.name) == "seed_salt")
        ).scalar_one()
    return bytes.fromhex(value)


# -- status ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstanceStatus:
    """One instance as `fleet status` shows it."""

    name: str
    location: str
    host: str
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    lost: bool
    running: int


def instances(store: Store, *, since: datetime) -> list[InstanceStatus]:
    """Instances live or stopped after `since`, with their runs in flight, by location."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(FleetInstance).where(
                (col(FleetInstance.stopped_at).is_(None)) | (col(FleetInstance.stopped_at) >= since)
            )
        ).all()
        running = dict(
            conn.execute(
                select(SuiteRun.instance, func.count())
                .where(col(SuiteRun.status) == RunStatus.running.value)
                .group_by(col(SuiteRun.instance))
            ).all()
        )
    out = []
    for r in rows:
        i = FleetInstance.model_validate(r._mapping)
        out.append(
            InstanceStatus(
                i.name, i.location, i.host, i.version, i.started_at, i.heartbeat_at,
                i.stopped_at, i.lost, running.get(i.name, 0),
            )
        )  # fmt: skip
    return sorted(out, key=lambda s: (s.location, s.name, s.started_at))


def queue_counts(store: Store) -> dict[tuple[str, str], int]:
    """Procrastinate's jobs per (queue, status); empty before the queue schema exists."""
    with store.engine.connect() as conn:
        if (
            conn.dialect.name != "postgresql"
            or not conn.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar()
        ):
            return {}
        rows = conn.execute(
            text(
                "SELECT queue_name, status::text, count(*) FROM procrastinate_jobs "
                "GROUP BY queue_name, status"
            )
        ).all()
    return {(q, s): n for q, s, n in rows}


@dataclass(frozen=True)
class LocationLatency:
    """Time to first token of one target as seen from one location."""

    location: str
    gateway: str
    model: str
    n: int
    ttft_p50_s: float
    ttft_p90_s: float


def latency_by_location(store: Store, *, since: datetime) -> list[LocationLatency]:
    """TTFT percentiles per (location, gateway, model) of successful final attempts since
    `since` (streamed: first token; plain: the whole body), for comparing vantage points.

    PostgreSQL only (fleet mode): the percentiles are computed in the database.
    """
    ttft = case(
        (col(ObservationRow.stream), col(ObservationRow.first_token_s)),
        else_=col(ObservationRow.end_s),
    )
    key = (col(ObservationRow.location), col(ObservationRow.gateway), col(ObservationRow.model))
    stmt = (
        select(
            *key,
            func.count(),
            func.percentile_cont(0.5).within_group(ttft),
            func.percentile_cont(0.9).within_group(ttft),
        )
        .where(
            col(ObservationRow.location).is_not(None),
            col(ObservationRow.final).is_(True),
            col(ObservationRow.failure) == "ok",
            ttft.is_not(None),
            *window(ObservationRow.started_at, since, None),
        )
        .group_by(*key)
        .order_by(*key)
    )
    with store.engine.connect() as conn:
        return [LocationLatency(*row) for row in conn.execute(stmt)]
