"""Build the SQLAlchemy engine for a store URL (SQLite or PostgreSQL via psycopg 3)."""

from __future__ import annotations

import json
import math
import sqlite3
import zlib
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import StaticPool

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=5000",
    "PRAGMA foreign_keys=ON",
)
WRITE_OPTION = "aione_write"
"""Execution option marking a connection that will write (SQLite: ``BEGIN IMMEDIATE``)."""


def lock_key(name: str | int) -> int:
    """The PostgreSQL advisory-lock key of `name` (an int is used as it is)."""
    return name if isinstance(name, int) else zlib.crc32(name.encode())


def xact_lock(conn: Connection, name: str | int) -> None:
    """PostgreSQL: wait for the advisory lock `name`, held until the transaction ends.

    SQLite needs none: a writing connection's ``BEGIN IMMEDIATE`` already serialises
    every writer of the file.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})


def normalise_url(url: str) -> URL:
    """Parse `url`; ``postgresql://`` and ``postgres://`` select the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(
            f"unsupported storage URL {parsed.render_as_string()!r}: use sqlite or postgresql"
        )
    return parsed


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_dumps(value: Any) -> str:
    """Serialise a JSON column value; NaN and infinities become null (PostgreSQL refuses them)."""
    try:
        return json.dumps(value, allow_nan=False, default=_json_default)
    except ValueError:
        return json.dumps(_jsonable(value), allow_nan=False, default=_json_default)


def make_engine(url: str) -> Engine:
    """Create the engine for `url`.

    SQLite: the parent directory is created; every connection gets WAL, synchronous=NORMAL,
    a 5 s busy timeout and foreign keys; transactions are issued explicitly (``BEGIN``, or
    ``BEGIN IMMEDIATE`` on connections with `WRITE_OPTION`) so DDL is transactional and a
    writer never fails upgrading a read lock. An in-memory database uses one shared
    connection (tests only).
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "postgresql":
        return create_engine(parsed, json_serializer=json_dumps, pool_pre_ping=True)
    database = parsed.database or ""
    memory = database in ("", ":memory:") or database.startswith("file::memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = StaticPool
    else:
        path = Path(database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        parsed = parsed.set(database=str(path))
    engine = create_engine(parsed, json_serializer=json_dumps, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        for pragma in SQLITE_PRAGMAS:
            dbapi_conn.execute(pragma)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine
