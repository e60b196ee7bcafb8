"""Registered checks: pure functions of an observation, and group checks over samples.

Importing this package registers every built-in check (one module per family: match,
numeric, structured, instructions, protocol, plausible, cache, consistency, image,
model_name).
"""

from aione_probe.checks import (  # noqa: F401  (imported to register their checks)
    cache,
    consistency,
    image,
    instructions,
    match,
    model_name,
    numeric,
    plausible,
    protocol,
    structured,
)
from aione_probe.checks._registry import (
    CheckContext,
    CheckDef,
    CheckSpecError,
    check,
    group_check,
    is_quality_check,
    registered_checks,
    result,
    run_checks,
    run_group_checks,
    validate_check_spec,
)

__all__ = [
    "CheckContext",
    "CheckDef",
    "CheckSpecError",
    "check",
    "group_check",
    "is_quality_check",
    "registered_checks",
    "result",
    "run_checks",
    "run_group_checks",
    "validate_check_spec",
]
