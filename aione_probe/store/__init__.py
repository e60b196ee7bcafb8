"""The store: SQLModel tables, schema versioning and every query (see `Store`)."""

from aione_probe.store.baselines import BASELINE_FORMAT
from aione_probe.store.migrate import MIGRATIONS, SCHEMA_VERSION, SchemaVersionError
from aione_probe.store.records import (
    CheckRecord,
    ObservationRecord,
    to_check_result,
    to_observation,
)
from aione_probe.store.store import Store
from aione_probe.store.tables import (
    Baseline,
    CheckDay,
    CheckResultRow,
    Gateway,
    Model,
    ObservationDay,
    ObservationRow,
    RunStatus,
    SchemaVersion,
    SuiteRun,
    Verdict,
    VerdictKind,
)

__all__ = [
    "BASELINE_FORMAT",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Baseline",
    "CheckDay",
    "CheckRecord",
    "CheckResultRow",
    "Gateway",
    "Model",
    "ObservationDay",
    "ObservationRecord",
    "ObservationRow",
    "RunStatus",
    "SchemaVersion",
    "SchemaVersionError",
    "Store",
    "SuiteRun",
    "Verdict",
    "VerdictKind",
    "to_check_result",
    "to_observation",
]
