"""The check registry and the code that runs registered checks.

A check is a pure function ``(obs, params, ctx) -> CheckResult`` registered under a name
with `check`; a group check judges all samples of one probe together and is registered
with `group_check`. Registration wraps the function so that a failed observation always
yields ``unscored`` (an outage is never a wrong answer) and the result carries the check's
name and the parameters it was given.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from aione_probe.cost import Price
from aione_probe.types import ChatRequest, CheckResult, CheckValue, Observation

if TYPE_CHECKING:
    from aione_probe.suites import CheckSpec, ProbeInstance

log = logging.getLogger(__name__)

CheckFn = Callable[[Observation, dict[str, Any], "CheckContext"], CheckResult]
GroupCheckFn = Callable[[list[Observation], dict[str, Any], "CheckContext"], list[CheckResult]]
ValidateFn = Callable[[dict[str, Any]], None]
AppliesFn = Callable[[ChatRequest], bool]


class CheckSpecError(ValueError):
    """A check's parameters are invalid; `param` names the offending one when known."""

    def __init__(self, reason: str, param: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.param = param


@dataclass(frozen=True)
class CheckContext:
    """What a check may know besides the observation.

    Attributes:
        instance: the probe instance the observation answers.
        request: the request that was sent.
        price: the model's price, or None when the price table has no entry.
        listed_models: the ids the gateway's ``GET /v1/models`` returned (None: unknown).
        text_tokens: the answer's length in the gateway's own tokens, measured by the
            runner for ``usage_completion_plausible`` (None: not measured).
    """

    instance: ProbeInstance
    request: ChatRequest
    price: Price | None = None
    listed_models: tuple[str, ...] | None = None
    text_tokens: int | None = None


@dataclass(frozen=True)
class CheckDef:
    """A registered check.

    Attributes:
        name: the name suite files use.
        group: True for group checks (judging all samples of a probe together).
        fn: the wrapped check function.
        validate: raises `CheckSpecError` for invalid parameters (None: no parameters).
        applies: whether the check applies to a request; a check that does not apply is
            skipped rather than reported (e.g. ``usage_in_stream`` on a plain request).
    """

    name: str
    group: bool
    fn: Callable[..., Any]
    validate: ValidateFn | None
    applies: AppliesFn | None


_REGISTRY: dict[str, CheckDef] = {}

#: Checks about the protocol and the bill rather than answer quality: reported apart and
#: never counted in golden pass rates or quality drift.
PROTOCOL_CHECKS = frozenset(
    {"finish_reason", "cache", "cache_claims", "prompt_tokens_consistent", "image", "model_name"}
)


def is_quality_check(name: str) -> bool:
    """Whether a check scores answer quality (and so counts in golden pass rates)."""
    return name not in PROTOCOL_CHECKS and not name.startswith("usage_")


def result(
    value: CheckValue,
    *,
    answer: Any = None,
    expected: Any = None,
    explanation: str = "",
    **metadata: Any,
) -> CheckResult:
    """A CheckResult without name and params (the registry fills those in).

    `answer` and `expected` are stored as text; extra keyword arguments become metadata.
    """
    return CheckResult(
        name="",
        value=value,
        answer=None if answer is None else str(answer),
        expected=None if expected is None else str(expected),
        explanation=explanation,
        metadata=metadata,
    )


def _register(defn: CheckDef) -> None:
    if defn.name in _REGISTRY:
        raise ValueError(f"check {defn.name!r} is registered twice")
    _REGISTRY[defn.name] = defn


def check(
    name: str, *, validate: ValidateFn | None = None, applies: AppliesFn | None = None
) -> Callable[[CheckFn], CheckFn]:
    """Register a check of one observation under `name`.

    Args:
        name: the name suite files use.
        validate: called with the parameters at suite load; raises `CheckSpecError`.
            None means the check takes no parameters.
        applies: predicate on the request; the check is skipped when it is False.

    Returns:
        A decorator; the decorated function returns ``unscored`` for a failed
        observation and stamps `name` and the params on its result.
    """

    def decorate(fn: CheckFn) -> CheckFn:
        @functools.wraps(fn)
        def wrapped(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
            if not obs.ok:
                res = result(
                    CheckValue.unscored,
                    explanation=f"request failed ({obs.failure.value}); nothing to judge",
                )
            else:
                res = fn(obs, params, ctx)
            return replace(res, name=name, params=dict(params))

        _register(CheckDef(name, False, wrapped, validate, applies))
        return wrapped

    return decorate


def group_check(
    name: str, *, validate: ValidateFn | None = None
) -> Callable[[GroupCheckFn], GroupCheckFn]:
    """Register a check over all samples of one probe under `name`.

    The function receives the final observation of every sample, in sample order, and
    handles failed observations itself (it decides how many it needs).
    """

    def decorate(fn: GroupCheckFn) -> GroupCheckFn:
        @functools.wraps(fn)
        def wrapped(
            observations: list[Observation], params: dict[str, Any], ctx: CheckContext
        ) -> list[CheckResult]:
            return [
                replace(r, name=name, params=dict(params)) for r in fn(observations, params, ctx)
            ]

        _register(CheckDef(name, True, wrapped, validate, None))
        return wrapped

    return decorate


def registered_checks() -> dict[str, CheckDef]:
    """Every registered check and group check, by name."""
    return dict(_REGISTRY)


def validate_check_spec(name: str, params: Mapping[str, Any], *, group: bool = False) -> None:
    """Check that `name` is a registered check and `params` suit it.

    Args:
        name: the check name from the suite file.
        params: the other keys of the check's table (already rendered if templated).
        group: True when the spec sits in ``group_checks``.

    Raises:
        CheckSpecError: (a ValueError) with the reason, and `param` when one key is at fault.
    """
    defn = _REGISTRY.get(name)
    if defn is None:
        known = ", ".join(sorted(n for n, d in _REGISTRY.items() if d.group == group))
        raise CheckSpecError(f"unknown check {name!r} (known: {known})", "name")
    if defn.group != group:
        where = "group_checks" if defn.group else "checks"
        raise CheckSpecError(f"{name!r} belongs in {where}", "name")
    if defn.validate is None:
        if params:
            raise CheckSpecError(f"takes no parameters, got {sorted(params)}", sorted(params)[0])
        return
    defn.validate(dict(params))


def _guarded(name: str, call: Callable[[], Any]) -> Any:
    """Run one check; a scorer bug on odd model output must not lose the run."""
    try:
        return call()
    except Exception as exc:
        log.exception("check %s raised", name)
        return result(
            CheckValue.unscored,
            explanation=f"check raised {type(exc).__name__}: {exc}",
            error=type(exc).__name__,
        )


def run_checks(
    instance: ProbeInstance,
    obs: Observation,
    ctx: CheckContext,
    default_checks: Sequence[CheckSpec] = (),
) -> list[CheckResult]:
    """Run the probe's checks, then the suite's default checks, on one observation.

    Check parameters are rendered with the instance's vars first. A default check whose
    name the probe also lists is skipped (the probe's own parameters win); a check whose
    `applies` predicate rejects the request is skipped. A check that raises yields
    ``unscored`` with the exception in its explanation.

    Returns:
        One result per check run, probe checks first.
    """
    own = {spec.name for spec in instance.probe.checks}
    specs = [*instance.probe.checks, *(s for s in default_checks if s.name not in own)]
    out: list[CheckResult] = []
    for spec in specs:
        defn = _REGISTRY[spec.name]
        if defn.applies is not None and not defn.applies(ctx.request):
            continue
        params = instance.render(dict(spec.params))
        res = _guarded(spec.name, lambda d=defn, p=params: d.fn(obs, p, ctx))
        out.append(replace(res, name=spec.name, params=params))
    return out


def run_group_checks(
    instances: Sequence[ProbeInstance],
    observations: Sequence[Observation],
    ctx: CheckContext,
) -> list[CheckResult]:
    """Run the probe's group checks over all its samples.

    Args:
        instances: the probe's instances, in sample order.
        observations: the final observation of each instance, in the same order.
        ctx: context of the first instance (its request and the price).

    Returns:
        The results of every group check of the probe.
    """
    if not instances:
        return []
    if len(instances) != len(observations):
        raise ValueError(f"{len(instances)} instances but {len(observations)} observations")
    first = instances[0]
    out: list[CheckResult] = []
    for spec in first.probe.group_checks:
        defn = _REGISTRY[spec.name]
        params = first.render(dict(spec.params))
        got = _guarded(spec.name, lambda d=defn, p=params: d.fn(list(observations), p, ctx))
        out.extend(replace(r, name=spec.name, params=params) for r in _as_list(got))
    return out


def _as_list(got: CheckResult | list[CheckResult]) -> list[CheckResult]:
    return [got] if isinstance(got, CheckResult) else got
