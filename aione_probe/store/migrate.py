"""Schema versioning: create a fresh schema, upgrade an old one, refuse a newer one.

A fresh database gets every table from the current models and is stamped
`SCHEMA_VERSION`. An existing one at version ``v`` runs ``MIGRATIONS[v + 1]`` …
``MIGRATIONS[SCHEMA_VERSION]`` in order. To change the schema: edit the models, bump
`SCHEMA_VERSION`, and add ``MIGRATIONS[new] = step`` where ``step(conn)`` turns a
database at ``new - 1`` into one matching the models (``ALTER TABLE``…). Everything runs
in one transaction, under a lock, so two processes starting together migrate once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine, func, insert, inspect, select, text
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from aione_probe.errors import ProbeError
from aione_probe.store import rollup
from aione_probe.store.engine import WRITE_OPTION
from aione_probe.store.tables import (
    TABLES,
    Baseline,
    CheckDay,
    FleetInstance,
    FleetSecret,
    ObservationDay,
    ObservationRow,
    SchemaVersion,
    SuiteRun,
    Verdict,
)
from aione_probe.types import utcnow

SCHEMA_VERSION = 5
"""The schema version this code reads and writes."""

Migration = Callable[[Connection], None]


def _add_daily_rollups(conn: Connection) -> None:
    """Version 2: the ``observationday`` and ``checkday`` rollups, filled from every row,
    and the observation index that covers the report's latency read."""
    rollups = [ObservationDay.__table__, CheckDay.__table__]  # type: ignore[attr-defined]
    SQLModel.metadata.create_all(conn, tables=rollups)
    rollup.rebuild(conn)
    conn.execute(text("DROP INDEX ix_observation_target_started"))
    timing = next(
        i
        for i in ObservationRow.__table__.indexes  # type: ignore[attr-defined]
        if i.name == "ix_observation_target_timing"
    )
    timing.create(conn)


def _add_columns(conn: Connection, table: Any, names: tuple[str, ...]) -> None:
    """``ALTER TABLE … ADD COLUMN`` for the model columns `names`, typed per dialect
    (a column that exists already is left alone)."""
    present = {c["name"] for c in inspect(conn).get_columns(table.name)}
    for name in names:
        if name in present:
            continue
        column = table.c[name]
        ddl = f"ALTER TABLE {table.name} ADD COLUMN {name} "
        ddl += column.type.compile(dialect=conn.dialect)
        if not column.nullable:
            # Every non-NULL column added here is a number defaulting to zero.
            ddl += " NOT NULL DEFAULT 0"
        conn.execute(text(ddl))


def _add_fleet(conn: Connection) -> None:
    """Version 3: fleet mode. Runs and observations get their location; runs their
    instance, schedule slot and spend reservation, and a 64-bit seed; the unique slot
    index and the ``fleetinstance`` and ``fleetsecret`` tables are created."""
    runs = SuiteRun.__table__  # type: ignore[attr-defined]
    if conn.dialect.name == "postgresql":
        # Run seeds are 62-bit; SQLite's INTEGER already holds them.
        conn.execute(text("ALTER TABLE suiterun ALTER COLUMN seed TYPE BIGINT"))
    _add_columns(conn, runs, ("location", "instance", "slot_at", "reserved"))
    _add_columns(conn, ObservationRow.__table__, ("location",))  # type: ignore[attr-defined]
    next(i for i in runs.indexes if i.name == "uq_suiterun_slot").create(conn, checkfirst=True)
    fleet = [FleetInstance.__table__, FleetSecret.__table__]  # type: ignore[attr-defined]
    SQLModel.metadata.create_all(conn, tables=fleet)


def _add_verdict_comparison(conn: Connection) -> None:
    """Version 4: ``verdict.comparison`` (what an authenticity verdict compared with).

    Older authenticity rows packed it into ``suite`` (``reference:…``, ``baseline:<id>``);
    they move to the new column so a re-pinned baseline keeps one label."""
    _add_columns(conn, Verdict.__table__, ("comparison",))  # type: ignore[attr-defined]
    conn.execute(
        text(
            "UPDATE verdict SET comparison = CASE WHEN suite LIKE 'baseline:%' THEN 'baseline' "
            "ELSE suite END, suite = NULL WHERE kind = 'authenticity' AND suite IS NOT NULL"
        )
    )
    conn.execute(
        text(
            "UPDATE verdict SET comparison = 'overall' WHERE kind = 'authenticity' "
            "AND comparison IS NULL"
        )
    )


def _add_drift_location(conn: Connection) -> None:
    """Version 5: drift is per fleet location. Verdicts and baselines get ``location``
    (NULL on every older row: a single instance, or a fleet's pooled drift), and the
    one-active-baseline index takes it into its key."""
    baselines = Baseline.__table__  # type: ignore[attr-defined]
    _add_columns(conn, Verdict.__table__, ("location",))  # type: ignore[attr-defined]
    _add_columns(conn, baselines, ("location",))
    conn.execute(text("DROP INDEX IF EXISTS uq_baseline_active"))
    next(i for i in baselines.indexes if i.name == "uq_baseline_active").create(conn)


MIGRATIONS: dict[int, Migration] = {
    2: _add_daily_rollups,
    3: _add_fleet,
    4: _add_verdict_comparison,
    5: _add_drift_location,
}
"""Upgrade steps: ``MIGRATIONS[v]`` upgrades a database at version ``v - 1`` to ``v``."""

_PG_LOCK_KEY = 0x41494F4E45  # arbitrary constant: "AIONE"


class SchemaVersionError(ProbeError):
    """The database schema cannot be used by this code (newer, or no upgrade path)."""


def current_version(conn: Connection) -> int | None:
    """Schema version recorded in the database, or None when it has none yet."""
    if not inspect(conn).has_table(SchemaVersion.__tablename__):
        return None
    return conn.execute(select(func.max(SchemaVersion.version))).scalar()


def migrate(
    engine: Engine,
    *,
    target: int = SCHEMA_VERSION,
    steps: Mapping[int, Migration] = MIGRATIONS,
) -> int:
    """Bring the database at `engine` to schema version `target`; return that version.

    Raises:
        SchemaVersionError: the database is newer than `target`, or a step is missing.
    """
    with engine.connect().execution_options(**{WRITE_OPTION: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        found = current_version(conn)
        if found is None:
            # No version row: a fresh database, or a first creation that died half-way
            # (create_all skips the tables that exist).
            SQLModel.metadata.create_all(conn, tables=TABLES)
            _stamp(conn, target)
            return target
        if found > target:
            raise SchemaVersionError(
                f"database schema version {found} is newer than this aione-probe "
                f"supports ({target}); upgrade aione-probe"
            )
        for version in range(found + 1, target + 1):
            step = steps.get(version)
            if step is None:
                raise SchemaVersionError(f"no migration step to schema version {version}")
            step(conn)
            _stamp(conn, version)
        return target


def _stamp(conn: Connection, version: int) -> None:
    conn.execute(insert(SchemaVersion), {"version": version, "applied_at": utcnow()})
