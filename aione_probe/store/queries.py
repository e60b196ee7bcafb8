"""Statement builders shared by the `Store` queries (pure: no connection, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlmodel import SQLModel, col

from aione_probe.store.tables import Baseline

R = TypeVar("R", bound=SQLModel)


def aware(value: datetime | None, name: str) -> datetime | None:
    """Return `value`, refusing a naive datetime with a `ValueError` that names `name`."""
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value.isoformat()}")
    return value


def equal(entity: type[SQLModel], **values: Any) -> list[ColumnElement[bool]]:
    """``column = value`` for every keyword whose value is not None."""
    return [col(getattr(entity, k)) == v for k, v in values.items() if v is not None]


def window(
    column: Any, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    """``since <= column < until`` (either bound optional, both timezone-aware)."""
    bounds = []
    if aware(since, "since") is not None:
        bounds.append(col(column) >= since)
    if aware(until, "until") is not None:
        bounds.append(col(column) < until)
    return bounds


def baseline_key(
    kind: str, gateway: str, model: str, suite: str | None, location: str | None = None
) -> list[ColumnElement[bool]]:
    """Rows of one baseline key; a None suite or location matches NULL."""
    nullable = ((col(Baseline.suite), suite), (col(Baseline.location), location))
    return [
        col(Baseline.kind) == kind,
        col(Baseline.gateway) == gateway,
        col(Baseline.model) == model,
        *(column.is_(None) if value is None else column == value for column, value in nullable),
    ]


def latest(
    entity: type[R],
    moment: Any,
    key: Sequence[Any],
    where: Sequence[ColumnElement[bool]] = (),
) -> Select[tuple[R]]:
    """The newest row (by `moment`, then id) of every `key` group, sorted by `key`."""
    row_id = col(entity.id)  # type: ignore[attr-defined]
    rank = (
        func.row_number()
        .over(partition_by=list(key), order_by=(col(moment).desc(), row_id.desc()))
        .label("rank")
    )
    ranked = select(row_id.label("id"), rank).where(*where).subquery()
    return (
        select(entity)
        .join(ranked, row_id == ranked.c.id)
        .where(ranked.c.rank == 1)
        .order_by(*(col(k) for k in key))
    )
