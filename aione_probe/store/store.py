"""`Store`: every read and write of the database.

All methods are synchronous and block on I/O: async code calls them from a worker thread
(`aione_probe.asyncstore.AsyncStore`), never on the event loop that times probes. Each
method is one transaction; a method that raises has written nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import Select, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from aione_probe.errors import FailureKind
from aione_probe.redact import scrub_value
from aione_probe.store import rollup
from aione_probe.store.baselines import parse_document, to_document
from aione_probe.store.engine import WRITE_OPTION, lock_key, make_engine, normalise_url, xact_lock
from aione_probe.store.migrate import current_version, migrate
from aione_probe.store.queries import R, aware, baseline_key, equal, latest, window
from aione_probe.store.records import (
    CheckRecord,
    ObservationRecord,
    check_values,
    observation_values,
)
from aione_probe.store.tables import (
    Baseline,
    CheckResultRow,
    Gateway,
    Model,
    ObservationRow,
    RunStatus,
    SuiteRun,
    Verdict,
    VerdictKind,
)
from aione_probe.types import utcnow

_FINISHED = frozenset({RunStatus.ok, RunStatus.failed, RunStatus.partial, RunStatus.skipped})
_OBSERVATIONS = ObservationRow.__table__  # type: ignore[attr-defined]
_CHECKS = CheckResultRow.__table__  # type: ignore[attr-defined]


def _insert_ids(conn: Connection, table: Any, values: list[dict[str, Any]]) -> list[int]:
    """Insert `values` into `table`; return the new row ids."""
    return list(conn.execute(insert(table).returning(table.c.id), values).scalars())


class Store:
    """The database of runs, observations, check results, verdicts and baselines.

    ``Store("sqlite:///var/aione.db")`` or ``Store("postgresql://user@host/db")``; call
    `migrate` once at startup before anything else. Every method blocks: async code runs
    them on a worker thread (`AsyncStore`). Row objects returned are detached snapshots;
    changing them changes nothing in the database. Time bounds ``since``/``until`` are
    timezone-aware and half-open: ``since <= t < until``.
    """

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        self._writer = self.engine.execution_options(**{WRITE_OPTION: True})
        self.url = normalise_url(url).render_as_string(hide_password=True)
        """The URL with any password masked (safe to log)."""

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema; return the schema version now in the database.

        Raises:
            SchemaVersionError: the database was written by a newer aione-probe.
        """
        return migrate(self.engine)

    def schema_version(self) -> int | None:
        """The schema version recorded in the database (None before `migrate`)."""
        with self.engine.connect() as conn:
            return current_version(conn)

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """Hold the database-wide lock `name` for the block, without waiting for it: yields
        True when this process holds it, False when another process does.

        PostgreSQL: a session advisory lock on a connection of its own, so every process
        of a fleet sees it (released by the server if the connection dies). SQLite: always
        True: one instance owns the file and its store thread runs one call at a time.
        """
        if self.engine.dialect.name != "postgresql":
            yield True
            return
        key = {"key": lock_key(name)}
        with self.engine.connect() as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar())
            conn.commit()  # the lock is the session's: no transaction left open meanwhile
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), key)
                    conn.commit()

    def _write(self) -> AbstractContextManager[Connection]:
        """A connection in a write transaction (commits on exit, rolls back on error)."""
        return self._writer.begin()

    def _all(self, stmt: Select[tuple[R]]) -> list[R]:
        with Session(self.engine, expire_on_commit=False) as session:
            return list(session.scalars(stmt))

    def _first(self, stmt: Select[tuple[R]]) -> R | None:
        found = self._all(stmt.limit(1))
        return found[0] if found else None

    @staticmethod
    def _upsert_insert(conn: Connection, entity: type[SQLModel]) -> Any:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        return dialect.insert(entity)

    # -- targets --------------------------------------------------------------------------

    def ensure_target(self, gateway: str, base_url: str, protocol: str, model: str) -> None:
        """Record that `gateway` (at `base_url`, speaking `protocol`) serves `model`.

        Updates the gateway's URL and protocol if they changed; idempotent.
        """
        with self._write() as conn:
            gw = self._upsert_insert(conn, Gateway).values(
                name=gateway, base_url=base_url, protocol=protocol
            )
            conn.execute(
                gw.on_conflict_do_update(
                    index_elements=["name"], set_={"base_url": base_url, "protocol": protocol}
                )
            )
            gateway_id = conn.execute(
                select(Gateway.id).where(col(Gateway.name) == gateway)
            ).scalar_one()
            conn.execute(
                self._upsert_insert(conn, Model)
                .values(gateway_id=gateway_id, name=model)
                .on_conflict_do_nothing(index_elements=["gateway_id", "name"])
            )

    def targets(self) -> list[tuple[str, str]]:
        """Every known (gateway, model) pair, sorted."""
        stmt = (
            select(Gateway.name, Model.name)
            .join(Model, col(Model.gateway_id) == col(Gateway.id))
            .order_by(col(Gateway.name), col(Model.name))
        )
        with self.engine.connect() as conn:
            return [(g, m) for g, m in conn.execute(stmt)]

    # -- runs -----------------------------------------------------------------------------

    def start_run(
        self,
        gateway: str,
        model: str,
        suite: str,
        suite_version: int,
        seed: int | None,
        scheduled: bool,
        *,
        started_at: datetime | None = None,
        location: str | None = None,
    ) -> int:
        """Record a run that starts now (status ``running``); return its id.

        `location` is the fleet location running it (None for a single instance).
        """
        values = {
            "gateway": gateway,
            "model": model,
            "suite": suite,
            "suite_version": suite_version,
            "seed": seed,
            "scheduled": scheduled,
            "started_at": aware(started_at, "started_at") or utcnow(),
            "status": RunStatus.running.value,
            "location": location,
        }
        with self._write() as conn:
            return conn.execute(insert(SuiteRun).values(values).returning(SuiteRun.id)).scalar_one()

    def finish_run(
        self,
        run_id: int,
        status: str,
        reason: str | None,
        observations: Sequence[ObservationRecord],
        checks: Sequence[CheckRecord],
        *,
        finished_at: datetime | None = None,
    ) -> None:
        """Write a run's observations, their check results and its summary, atomically.

        Check results are timestamped with the run's start; the daily rollups
        (`aione_probe.store.rollup`) count them in the same transaction. If anything
        fails (bad index, an observation of another target, a database error) nothing of
        this run is written and the run stays as it was.

        Raises:
            LookupError: no run `run_id`.
            ValueError: `status` is not a finished `RunStatus`, a check's
                `observation_index` is out of range, or an observation belongs to another
                gateway or model.
        """
        if RunStatus(status) not in _FINISHED:
            raise ValueError(f"finish_run status must be one of {sorted(_FINISHED)}, not {status}")
        at = aware(finished_at, "finished_at") or utcnow()
        with self._write() as conn:
            run = conn.execute(select(SuiteRun).where(col(SuiteRun.id) == run_id)).one_or_none()
            if run is None:
                raise LookupError(f"no suite run {run_id}")
            if run.n_observations and run.status != RunStatus.running.value:
                # Already written: a retry after a commit whose reply was lost (fleet mode
                # retries writes while the database is unreachable) must not add it twice.
                return
            for rec in observations:
                obs = rec.observation
                if (obs.gateway, obs.model) != (run.gateway, run.model):
                    raise ValueError(
                        f"observation of {obs.gateway}/{obs.model} in run {run_id} "
                        f"of {run.gateway}/{run.model}"
                    )
            ids: list[int] = []
            if observations:
                stmt = insert(_OBSERVATIONS).returning(
                    _OBSERVATIONS.c.id, sort_by_parameter_order=True
                )
                values = [
                    {**observation_values(rec, run_id), "location": run.location}
                    for rec in observations
                ]
                ids = list(conn.execute(stmt, values).scalars())
            check_rows = []
            for rec in checks:
                index = rec.observation_index
                if index is not None and not 0 <= index < len(ids):
                    raise ValueError(f"check {rec.result.name}: no observation at index {index}")
                check_rows.append(
                    check_values(
                        rec,
                        run_id=run_id,
                        observation_id=None if index is None else ids[index],
                        gateway=run.gateway,
                        model=run.model,
                        suite=run.suite,
                        created_at=run.started_at,
                    )
                )
            rollup.add_observations(conn, ids)
            if check_rows:
                rollup.add_checks(conn, _insert_ids(conn, _CHECKS, check_rows))
            finals = [rec for rec in observations if rec.final]
            conn.execute(
                update(SuiteRun)
                .where(col(SuiteRun.id) == run_id)
                .values(
                    status=RunStatus(status).value,
                    reason=reason,
                    finished_at=at,
                    n_observations=len(observations),
                    n_requests=len(finals),
                    n_failed=sum(1 for r in finals if r.observation.failure != FailureKind.ok),
                    cost=sum(r.cost for r in observations if r.cost is not None),
                    reserved=0.0,  # the spend ledger now counts the observations instead
                )
            )

    def record_skipped_run(
        self,
        gateway: str,
        model: str,
        suite: str,
        suite_version: int,
        reason: str,
        *,
        scheduled: bool = True,
        location: str | None = None,
    ) -> int:
        """Record a run that was not made (spend cap, previous run still going); return its id."""
        now = utcnow()
        values = {
            "location": location,
            "gateway": gateway,
            "model": model,
            "suite": suite,
            "suite_version": suite_version,
            "scheduled": scheduled,
            "started_at": now,
            "finished_at": now,
            "status": RunStatus.skipped.value,
            "reason": reason,
        }
        with self._write() as conn:
            return conn.execute(insert(SuiteRun).values(values).returning(SuiteRun.id)).scalar_one()

    def mark_interrupted_runs(self, reason: str, *, instance: str | None = None) -> int:
        """Mark every run still ``running`` as ``failed`` with `reason`; return how many.

        For startup recovery and shutdown: such runs wrote no observations. With
        `instance`, only that fleet instance's runs (the others belong to live instances).
        """
        where = [col(SuiteRun.status) == RunStatus.running.value]
        if instance is not None:
            where.append(col(SuiteRun.instance) == instance)
        with self._write() as conn:
            result = conn.execute(
                update(SuiteRun)
                .where(*where)
                .values(status=RunStatus.failed.value, reason=reason, finished_at=utcnow())
            )
            return result.rowcount

    def run(self, run_id: int) -> SuiteRun | None:
        """The run `run_id`, if any."""
        return self._first(select(SuiteRun).where(col(SuiteRun.id) == run_id))

    def runs(
        self,
        gateway: str | None = None,
        model: str | None = None,
        suite: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
        *,
        location: str | None = None,
    ) -> list[SuiteRun]:
        """Runs started in ``[since, until)`` matching the filters, oldest first.

        `location` narrows to one fleet location (None: every location pooled).
        """
        where = equal(
            SuiteRun, gateway=gateway, model=model, suite=suite, status=status, location=location
        )
        stmt = select(SuiteRun).where(
            *where,
            *window(SuiteRun.started_at, since, until),
        )
        return self._all(stmt.order_by(col(SuiteRun.started_at), col(SuiteRun.id)))

    def last_runs(self, *, location: str | None = None) -> list[SuiteRun]:
        """The latest run (any status) of every (gateway, model, suite), sorted by that key.

        `location` narrows to one fleet location's runs (None: every run).
        """
        key = (SuiteRun.gateway, SuiteRun.model, SuiteRun.suite)
        where = equal(SuiteRun, location=location)
        return self._all(latest(SuiteRun, SuiteRun.started_at, key, where))

    def last_success(self, gateway: str, model: str, suite: str) -> SuiteRun | None:
        """The latest run of (gateway, model, suite) with status ``ok``, if any."""
        stmt = select(SuiteRun).where(
            *equal(SuiteRun, gateway=gateway, model=model, suite=suite),
            col(SuiteRun.status) == RunStatus.ok.value,
        )
        return self._first(stmt.order_by(col(SuiteRun.started_at).desc(), col(SuiteRun.id).desc()))

    def spend(self, gateway: str, day: date) -> float:
        """Cost of every observation of `gateway` started on the UTC calendar day `day`.

        Observations are written when their run finishes, so a run in progress is not
        counted yet; unpriced observations (cost NULL) count as 0.
        """
        start = datetime.combine(day, time.min, tzinfo=UTC)
        stmt = select(func.coalesce(func.sum(ObservationRow.cost), 0.0)).where(
            col(ObservationRow.gateway) == gateway,
            *window(ObservationRow.started_at, start, start + timedelta(days=1)),
        )
        with self.engine.connect() as conn:
            return float(conn.execute(stmt).scalar_one())

    # -- observations and check results ---------------------------------------------------

    def observations(
        self,
        gateway: str | None = None,
        model: str | None = None,
        suite: str | None = None,
        probe_hash: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        final_only: bool = False,
        limit: int | None = None,
        *,
        run_id: int | None = None,
        location: str | None = None,
    ) -> list[ObservationRow]:
        """Observations started in ``[since, until)`` matching the filters, oldest first.

        `location` narrows to one fleet location; None pools every location (what the
        authenticity audits want: the served model is the same wherever it is called
        from). `to_observation` turns a row back into an `Observation`.
        """
        filters = equal(
            ObservationRow,
            gateway=gateway,
            model=model,
            suite=suite,
            probe_hash=probe_hash,
            run_id=run_id,
            location=location,
        )
        if final_only:
            filters.append(col(ObservationRow.final).is_(True))
        stmt = select(ObservationRow).where(
            *filters, *window(ObservationRow.started_at, since, until)
        )
        stmt = stmt.order_by(col(ObservationRow.started_at), col(ObservationRow.id)).limit(limit)
        return self._all(stmt)

    def check_results(
        self,
        gateway: str | None = None,
        model: str | None = None,
        suite: str | None = None,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        probe_hash: str | None = None,
        run_id: int | None = None,
    ) -> list[CheckResultRow]:
        """Check results created in ``[since, until)`` matching the filters, oldest first.

        `to_check_result` turns a row back into a `CheckResult`.
        """
        stmt = select(CheckResultRow).where(
            *equal(
                CheckResultRow,
                gateway=gateway,
                model=model,
                suite=suite,
                name=name,
                probe_hash=probe_hash,
                run_id=run_id,
            ),
            *window(CheckResultRow.created_at, since, until),
        )
        return self._all(stmt.order_by(col(CheckResultRow.created_at), col(CheckResultRow.id)))

    def bulk_insert_observations(
        self, rows: Iterable[tuple[int, ObservationRecord]], *, chunk_size: int = 10_000
    ) -> int:
        """Insert ``(run_id, record)`` pairs fast (benchmarks, imports); return the count.

        Each chunk of `chunk_size` rows is one transaction (so a failure keeps the chunks
        before it), daily rollups included. Run summaries are not updated.
        """
        total = 0
        it: Iterator[tuple[int, ObservationRecord]] = iter(rows)
        while chunk := list(islice(it, chunk_size)):
            with self._write() as conn:
                values = [observation_values(rec, run_id) for run_id, rec in chunk]
                rollup.add_observations(conn, _insert_ids(conn, _OBSERVATIONS, values))
            total += len(chunk)
        return total

    def bulk_insert_check_results(
        self, rows: Iterable[tuple[int, int | None, CheckRecord]], *, chunk_size: int = 10_000
    ) -> int:
        """Insert ``(run_id, observation_id, record)`` triples fast; return the count.

        As in `finish_run`, each result takes its run's gateway, model and suite and is
        timestamped with the run's start; the observation is named by its id (None for a
        group check) and ``record.observation_index`` is not used. Each chunk of
        `chunk_size` rows is one transaction.

        Raises:
            LookupError: a run id does not exist (its chunk is not written).
        """
        total = 0
        runs: dict[int, Any] = {}
        it: Iterator[tuple[int, int | None, CheckRecord]] = iter(rows)
        while chunk := list(islice(it, chunk_size)):
            with self._write() as conn:
                wanted = {run_id for run_id, _, _ in chunk} - runs.keys()
                if wanted:
                    stmt = select(SuiteRun).where(col(SuiteRun.id).in_(wanted))
                    runs.update((row.id, row) for row in conn.execute(stmt))
                    if missing := wanted - runs.keys():
                        raise LookupError(f"no suite run {min(missing)}")
                values = []
                for run_id, observation_id, rec in chunk:
                    run = runs[run_id]
                    values.append(
                        check_values(
                            rec,
                            run_id=run_id,
                            observation_id=observation_id,
                            gateway=run.gateway,
                            model=run.model,
                            suite=run.suite,
                            created_at=run.started_at,
                        )
                    )
                rollup.add_checks(conn, _insert_ids(conn, _CHECKS, values))
            total += len(chunk)
        return total

    # -- verdicts -------------------------------------------------------------------------

    def save_verdict(
        self,
        kind: str,
        gateway: str,
        model: str,
        suite: str | None,
        verdict: str,
        score: float | None,
        alpha: float | None,
        n: int,
        baseline_id: int | None,
        details: dict[str, Any],
        *,
        comparison: str | None = None,
        location: str | None = None,
        created_at: datetime | None = None,
    ) -> int:
        """Store one verdict (`kind` is a `VerdictKind` value); return its id.

        `comparison` is set by authenticity verdicts only, `location` by drift verdicts of
        a fleet location (see the table's docs).
        `details` may quote a gateway (reconciliation keeps its dashboard's unknown fields):
        it is scrubbed of secrets like every observation.
        """
        values = {
            "kind": VerdictKind(kind).value,
            "gateway": gateway,
            "model": model,
            "suite": suite,
            "comparison": comparison,
            "location": location,
            "created_at": aware(created_at, "created_at") or utcnow(),
            "verdict": verdict,
            "score": score,
            "alpha": alpha,
            "n": n,
            "baseline_id": baseline_id,
            "details": scrub_value(details),
        }
        with self._write() as conn:
            return conn.execute(insert(Verdict).values(values).returning(Verdict.id)).scalar_one()

    def latest_verdicts(self, kind: str | None = None) -> list[Verdict]:
        """The latest verdict of every (kind, gateway, model, suite, comparison, location),
        optionally of one kind."""
        key = (
            Verdict.kind, Verdict.gateway, Verdict.model, Verdict.suite, Verdict.comparison,
            Verdict.location,
        )  # fmt: skip
        where = [] if kind is None else [col(Verdict.kind) == VerdictKind(kind).value]
        return self._all(latest(Verdict, Verdict.created_at, key, where))

    def verdicts(
        self,
        kind: str | None = None,
        gateway: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Verdict]:
        """Verdicts created in ``[since, until)`` matching the filters, oldest first."""
        stmt = select(Verdict).where(
            *equal(Verdict, kind=kind, gateway=gateway, model=model),
            *window(Verdict.created_at, since, until),
        )
        return self._all(stmt.order_by(col(Verdict.created_at), col(Verdict.id)))

    # -- baselines ------------------------------------------------------------------------

    def pin_baseline(
        self,
        kind: str,
        gateway: str,
        model: str,
        suite: str | None,
        window_start: datetime,
        window_end: datetime,
        source: str,
        data: dict[str, Any],
        *,
        location: str | None = None,
    ) -> int:
        """Store a baseline as the active one for its key, deactivating the previous one.

        `location` is the fleet location a drift baseline was learnt from (None: a single
        instance, or authenticity).

        Raises:
            ValueError: the window is naive or ends before it starts.
        """
        aware(window_start, "window_start")
        aware(window_end, "window_end")
        if window_end < window_start:
            raise ValueError("baseline window_end is before window_start")
        key = baseline_key(kind, gateway, model, suite, location)
        with self._write() as conn:
            # Two pins of one key at once: the second waits, then deactivates the first's
            # row (without the lock its UPDATE would miss that row and its INSERT would
            # break the one-active index).
            xact_lock(conn, f"aione-baseline:{kind}:{gateway}:{model}:{suite}:{location}")
            conn.execute(
                update(Baseline).where(*key, col(Baseline.active).is_(True)).values(active=False)
            )
            values = {
                "kind": kind,
                "gateway": gateway,
                "model": model,
                "suite": suite,
                "location": location,
                "window_start": window_start,
                "window_end": window_end,
                "pinned_at": utcnow(),
                "source": source,
                "data": data,
                "active": True,
            }
            return conn.execute(insert(Baseline).values(values).returning(Baseline.id)).scalar_one()

    def active_baseline(
        self, kind: str, gateway: str, model: str, suite: str | None, location: str | None = None
    ) -> Baseline | None:
        """The active baseline for (kind, gateway, model, suite, location), if one is pinned."""
        key = baseline_key(kind, gateway, model, suite, location)
        return self._first(select(Baseline).where(*key, col(Baseline.active).is_(True)))

    def baseline(self, baseline_id: int) -> Baseline | None:
        """The baseline `baseline_id`, if any."""
        return self._first(select(Baseline).where(col(Baseline.id) == baseline_id))

    def baselines(
        self,
        kind: str | None = None,
        gateway: str | None = None,
        model: str | None = None,
        suite: str | None = None,
        active_only: bool = False,
    ) -> list[Baseline]:
        """Baselines matching the filters (None = any), oldest pin first."""
        filters = equal(Baseline, kind=kind, gateway=gateway, model=model, suite=suite)
        if active_only:
            filters.append(col(Baseline.active).is_(True))
        stmt = select(Baseline).where(*filters)
        return self._all(stmt.order_by(col(Baseline.pinned_at), col(Baseline.id)))

    def export_baseline(self, baseline_id: int) -> dict[str, Any]:
        """The baseline `baseline_id` as a JSON-ready document (for `import_baseline`).

        Raises:
            LookupError: no such baseline.
        """
        row = self.baseline(baseline_id)
        if row is None:
            raise LookupError(f"no baseline {baseline_id}")
        return to_document(row)

    def import_baseline(self, doc: dict[str, Any]) -> int:
        """Pin the baseline of an `export_baseline` document here; return its new id.

        It becomes the active baseline for its key; its source is kept.

        Raises:
            ValueError: `doc` is not a valid baseline document (the message says why).
        """
        b = parse_document(doc)
        window = (b.window_start, b.window_end)
        return self.pin_baseline(
            b.kind, b.gateway, b.model, b.suite, *window, b.source, b.data, location=b.location
        )
