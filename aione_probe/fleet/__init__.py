"""Fleet mode: several instances on one PostgreSQL, each schedule slot once per location.

`slots` holds the schedule arithmetic (importable without the engine), `worker` the
Procrastinate side (imported only in fleet mode: it needs psycopg and libpq), `identity`
what instances must agree on, `status` the ``aione-probe fleet status`` table. The
database side is `aione_probe.store.fleet`.
"""

from aione_probe.errors import ProbeError


class FleetDatabaseError(ProbeError):
    """The fleet's PostgreSQL database cannot be reached (at start: exit code 2)."""


__all__ = ["FleetDatabaseError"]
