"""Daily rollups of observations and check results (tables ``observationday``, ``checkday``).

A rollup row counts the rows of one group: `observation_days` and `check_days` are the
GROUP BY queries that define the groups. Every store write that inserts observations or
check results adds exactly the rows it inserted (selected by id, with the same queries)
to the rollups in the same transaction, and the schema migration that created the
rollups filled them from every row; so at every commit a rollup equals its GROUP BY over
the stored rows. Rows are never updated or deleted, so nothing else has to keep up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Select, Table, and_, case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from aione_probe.store.tables import CheckDay, CheckResultRow, ObservationDay, ObservationRow
from aione_probe.types import CheckValue

OBSERVATION = cast(Table, ObservationRow.__table__)
CHECKRESULT = cast(Table, CheckResultRow.__table__)
OBSERVATION_DAY = cast(Table, ObservationDay.__table__)
CHECK_DAY = cast(Table, CheckDay.__table__)

OBSERVATION_KEYS = ("day", "gateway", "model", "final", "failure", "echoed")
CHECK_KEYS = ("day", "gateway", "model", "name", "probe_id", "category")
CHECK_COUNTS = {
    "passed": CheckValue.passed,
    "partial": CheckValue.partial,
    "failed": CheckValue.failed,
    "missing": CheckValue.missing,
    "unscored": CheckValue.unscored,
}
"""Count column of `CheckDay` per check outcome."""

_IDS_PER_STATEMENT = 5_000  # well under SQLite's 32,766 bound parameters


def utc_day(column: Any, dialect: str) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp column, as SQL.

    SQLite stores timestamps as naive UTC text ("YYYY-MM-DD HH:MM:SS…"): the day is its
    first ten characters. PostgreSQL converts the ``timestamptz`` to UTC first.
    """
    if dialect == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.substr(column, 1, 10)


def observation_days(dialect: str, *where: ColumnElement[bool]) -> Select[Any]:
    """The ``observationday`` rows of the observations matching `where` (GROUP BY)."""
    obs = OBSERVATION
    echoed = case(
        (and_(obs.c.final, obs.c.failure == "ok"), func.coalesce(obs.c.response_model, "")),
        else_="",
    )
    keys = (
        utc_day(obs.c.started_at, dialect),
        obs.c.gateway,
        obs.c.model,
        obs.c.final,
        obs.c.failure,
        echoed,
    )
    sums = (func.count(), func.coalesce(func.sum(obs.c.cost), 0.0))
    labelled = [k.label(name) for k, name in zip(keys, OBSERVATION_KEYS, strict=True)]
    return (
        select(*labelled, sums[0].label("n"), sums[1].label("cost")).where(*where).group_by(*keys)
    )


def check_days(dialect: str, *where: ColumnElement[bool]) -> Select[Any]:
    """The ``checkday`` rows of the check results matching `where` (GROUP BY)."""
    cr = CHECKRESULT
    category = func.coalesce(cr.c["metadata"]["category"].as_string(), "")
    keys = (
        utc_day(cr.c.created_at, dialect),
        cr.c.gateway,
        cr.c.model,
        cr.c.name,
        cr.c.probe_id,
        category,
    )
    counts = [
        func.sum(case((cr.c.value == value.value, 1), else_=0)).label(name)
        for name, value in CHECK_COUNTS.items()
    ]
    labelled = [k.label(name) for k, name in zip(keys, CHECK_KEYS, strict=True)]
    return select(*labelled, *counts).where(*where).group_by(*keys)


def _add(
    conn: Connection, table: Table, query: Select[Any], keys: Sequence[str], sums: Sequence[str]
) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).from_select([*keys, *sums], query)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(keys),
        set_={name: table.c[name] + stmt.excluded[name] for name in sums},
    )
    conn.execute(stmt)


def add_observations(conn: Connection, ids: Sequence[int]) -> None:
    """Add the observations `ids`, just inserted in this transaction, to the rollup."""
    for i in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = OBSERVATION.c.id.in_(ids[i : i + _IDS_PER_STATEMENT])
        query = observation_days(conn.dialect.name, chunk)
        _add(conn, OBSERVATION_DAY, query, OBSERVATION_KEYS, ("n", "cost"))


def add_checks(conn: Connection, ids: Sequence[int]) -> None:
    """Add the check results `ids`, just inserted in this transaction, to the rollup."""
    for i in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = CHECKRESULT.c.id.in_(ids[i : i + _IDS_PER_STATEMENT])
        query = check_days(conn.dialect.name, chunk)
        _add(conn, CHECK_DAY, query, CHECK_KEYS, tuple(CHECK_COUNTS))


def rebuild(conn: Connection) -> None:
    """Recompute both rollups from every stored row (schema migration, repair)."""
    dialect = conn.dialect.name
    conn.execute(delete(OBSERVATION_DAY))
    conn.execute(delete(CHECK_DAY))
    obs_cols = [*OBSERVATION_KEYS, "n", "cost"]
    conn.execute(OBSERVATION_DAY.insert().from_select(obs_cols, observation_days(dialect)))
    check_cols = [*CHECK_KEYS, *CHECK_COUNTS]
    conn.execute(CHECK_DAY.insert().from_select(check_cols, check_days(dialect)))
