"""Model naming: the response's ``model`` must be the standard id that was requested.

AIone documents standard model ids in ``GET /v1/models`` (case-sensitive) and accepts
compatibility aliases only for old clients. The check passes when the request used a
listed standard id and the response echoes it unchanged; it fails on an alias, another
id, a dated snapshot or a change of case, and is ``missing`` when the response carries
no ``model``. The listed ids come from the ``listed`` parameter, else from the gateway's
``/v1/models`` answer the runner passes in the context; without either the check is
``unscored``.
"""

from __future__ import annotations

from typing import Any

from aione_probe.checks._registry import CheckContext, check, result
from aione_probe.checks._util import keys, str_list
from aione_probe.types import CheckResult, CheckValue, Observation


def _case_variant(name: str, listed: list[str]) -> str | None:
    """The listed id that equals `name` ignoring case, if `name` itself is not listed."""
    if name in listed:
        return None
    folded = name.casefold()
    return next((i for i in listed if i.casefold() == folded), None)


def _relation(requested: str, echoed: str, listed: list[str]) -> tuple[str, str]:
    """How `echoed` differs from `requested`: a short label and a sentence."""
    if echoed.casefold() == requested.casefold():
        return "case", f"the response echoes {echoed!r}, a different case of {requested!r}"
    if echoed in listed:
        return "other_listed", f"the response echoes another standard id, {echoed!r}"
    if echoed.startswith(requested) or requested.startswith(echoed):
        return "snapshot", f"the response echoes {echoed!r}, a variant of {requested!r}"
    return "alias", f"the response echoes {echoed!r}, an alias or an id /v1/models does not list"


def model_name_findings(requested: str, echoed: str | None, listed: list[str]) -> CheckResult:
    """Judge the model name of one exchange against the ``/v1/models`` list.

    Args:
        requested: the model id sent in the request.
        echoed: the ``model`` field of the response (None or "" when absent).
        listed: the ids ``GET /v1/models`` returned.

    Returns:
        ``pass`` when `requested` is listed (case-sensitively) and echoed unchanged;
        ``fail`` naming every problem otherwise; ``missing`` when nothing was echoed.
        Metadata: ``requested``, ``echoed``, ``requested_listed``, ``relation``
        (``exact``, ``case``, ``other_listed``, ``snapshot``, ``alias``), ``listed_as``.
    """
    findings: list[str] = []
    requested_listed = requested in listed
    listed_as = _case_variant(requested, listed)
    if not requested_listed:
        hint = f" (listed as {listed_as!r})" if listed_as else ""
        findings.append(f"the requested {requested!r} is not a standard id from /v1/models{hint}")
    meta: dict[str, Any] = {
        "requested": requested,
        "echoed": echoed or None,
        "requested_listed": requested_listed,
        "listed_as": listed_as,
    }
    if not echoed:
        findings.insert(0, "the response has no model field")
        return result(
            CheckValue.missing,
            expected=requested,
            explanation="; ".join(findings),
            relation="absent",
            **meta,
        )
    relation = "exact"
    if echoed != requested:
        relation, sentence = _relation(requested, echoed, listed)
        findings.append(sentence)
    ok = not findings
    return result(
        CheckValue.passed if ok else CheckValue.failed,
        answer=echoed,
        expected=requested,
        explanation=f"the response echoes the standard id {requested!r}"
        if ok
        else "; ".join(findings),
        relation=relation,
        **meta,
    )


def _validate(params: dict[str, Any]) -> None:
    keys(params, optional=["listed"])
    str_list(params, "listed")


@check("model_name", validate=_validate)
def model_name(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """`model_name_findings` for the request's model, the echoed model and ``listed``."""
    listed = params.get("listed", ctx.listed_models)
    if listed is None:
        return result(
            CheckValue.unscored, explanation="no /v1/models list was given (parameter 'listed')"
        )
    return model_name_findings(ctx.request.model, obs.response_model, list(listed))
