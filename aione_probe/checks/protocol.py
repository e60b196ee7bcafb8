"""Protocol checks: finish reason and the gateway's usage accounting."""

from __future__ import annotations

from typing import Any

from aione_probe.checks._registry import CheckContext, check, result
from aione_probe.checks._util import keys, typed
from aione_probe.cost import reasoning_counted_separately
from aione_probe.types import ChatRequest, CheckResult, CheckValue, Observation, Usage


def _forces_named_tool(req: ChatRequest) -> bool:
    """A ``tool_choice`` naming one function (OpenAI and vLLM then end with "stop")."""
    return isinstance(req.tool_choice, dict)


def _allowed_finish_reasons(
    obs: Observation, req: ChatRequest
) -> tuple[frozenset[str], str] | None:
    """The finish reasons consistent with what the response shows, and why.

    None when the response does not show enough to judge (usage lacks the output count of
    a request that set `max_tokens`, so "did it stop at the limit" is unknown).
    """
    calls = bool(obs.tool_calls)
    billed = _billed_output(obs.usage)
    limit = req.max_tokens
    at_limit = limit is not None and billed is not None and billed >= limit
    if calls:
        allowed = {"tool_calls"} | ({"stop"} if _forces_named_tool(req) else set())
        if at_limit:
            allowed.add("length")  # a call cut at the limit
        why = "the response carries tool calls"
        if _forces_named_tool(req):
            why += " forced by name (OpenAI ends those with 'stop')"
        return frozenset(allowed), why
    if limit is None:
        # No cap was sent: "length" can only mean the context window, which is not visible.
        return frozenset({"stop", "length", "content_filter"}), "no max_tokens was sent"
    if billed is None:
        return None
    if at_limit:
        return frozenset({"length"}), f"{billed} output tokens reached max_tokens {limit}"
    return (
        frozenset({"stop", "content_filter"}),
        f"{billed} output tokens stayed below max_tokens {limit}",
    )


@check("finish_reason")
def finish_reason(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when the (normalised) finish reason is consistent with the response itself.

    Judged on consistency, never on the model's choice: a response with tool calls must
    say ``tool_calls`` (or ``stop`` when ``tool_choice`` forced a named function, as
    OpenAI does); one whose billed output reached ``max_tokens`` must say ``length``; one
    below it must not (``stop`` or ``content_filter``). Whether the model *should* have
    called a tool or written more is a quality question for other checks (``tool_call``).
    Missing when there is no finish_reason, or when usage lacks the output count needed to
    tell whether the limit was reached.
    """
    got = obs.finish_reason
    if got is None:
        return result(CheckValue.missing, explanation="the response has no finish_reason")
    judged = _allowed_finish_reasons(obs, ctx.request)
    raw = f" (raw {obs.raw_finish_reason!r})" if obs.raw_finish_reason not in (None, got) else ""
    if judged is None:
        return result(
            CheckValue.missing,
            answer=got,
            explanation=f"finish_reason {got!r}{raw}, but usage lacks completion_tokens: "
            "cannot tell whether max_tokens was reached",
            observed=got,
        )
    allowed, why = judged
    ok = got in allowed
    expected = " or ".join(sorted(allowed))
    return result(
        CheckValue.passed if ok else CheckValue.failed,
        answer=got,
        expected=expected,
        explanation=f"finish_reason {got!r}{raw}; {why}"
        + ("" if ok else f", so it must be {expected}"),
        observed=got,
        raw_finish_reason=obs.raw_finish_reason,
        tool_calls=len(obs.tool_calls),
        max_tokens=ctx.request.max_tokens,
    )


def _billed_output(u: Usage) -> int | None:
    """Output tokens the request's ``max_tokens`` bounds: completion, plus reasoning when
    the gateway counts it separately (see `usage_max_tokens`)."""
    if u.completion_tokens is None:
        return None
    separate = reasoning_counted_separately(u)
    return u.completion_tokens + ((u.reasoning_tokens or 0) if separate else 0)


def _absent(fields: list[str]) -> CheckResult:
    return result(CheckValue.missing, explanation=f"usage lacks {', '.join(fields)}", absent=fields)


@check("usage_total")
def usage_total(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when ``total_tokens == prompt_tokens + completion_tokens``.

    A gateway that reports reasoning beside the completion (``total = prompt + completion
    + reasoning``) passes too, and the result records it.
    """
    u = obs.usage
    p, c, t = u.prompt_tokens, u.completion_tokens, u.total_tokens
    if p is None or c is None or t is None:
        names = ("prompt_tokens", "completion_tokens", "total_tokens")
        return _absent([f for f, v in zip(names, (p, c, t), strict=True) if v is None])
    want = p + c
    separate = reasoning_counted_separately(u)
    if separate:
        want += u.reasoning_tokens or 0
    ok = u.total_tokens == want
    return result(
        CheckValue.passed if ok else CheckValue.failed,
        answer=u.total_tokens,
        expected=want,
        explanation=f"total {u.total_tokens}, prompt {u.prompt_tokens} + completion "
        f"{u.completion_tokens}" + (f" + reasoning {u.reasoning_tokens}" if separate else ""),
        reasoning_separate=separate,
    )


def _has_max_tokens(req: ChatRequest) -> bool:
    return req.max_tokens is not None


@check("usage_max_tokens", applies=_has_max_tokens)
def usage_max_tokens(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when the output billed stays within the request's `max_tokens`.

    Billed output is ``completion_tokens`` (which includes reasoning, OpenAI-style) or,
    when the gateway counts reasoning separately, ``completion + reasoning``. If only the
    reasoning pushes it over the cap the result is ``partial``: the visible answer obeyed
    `max_tokens` but the bill exceeds it. Skipped when the request set no `max_tokens`.
    """
    limit = ctx.request.max_tokens
    if limit is None:
        return result(CheckValue.unscored, explanation="the request set no max_tokens")
    u = obs.usage
    billed = _billed_output(u)
    if billed is None or u.completion_tokens is None:
        return _absent(["completion_tokens"])
    separate = reasoning_counted_separately(u)
    meta = {
        "max_tokens": limit,
        "completion_tokens": u.completion_tokens,
        "reasoning_separate": separate,
    }
    if billed <= limit:
        value, why = CheckValue.passed, f"{billed} output tokens ≤ max_tokens {limit}"
    elif u.completion_tokens <= limit:
        value = CheckValue.partial
        why = (
            f"completion {u.completion_tokens} ≤ {limit}, but with separately counted "
            f"reasoning {u.reasoning_tokens} the billed output is {billed}"
        )
    else:
        value, why = (
            CheckValue.failed,
            f"{u.completion_tokens} completion tokens > max_tokens {limit}",
        )
    return result(value, answer=billed, expected=f"<= {limit}", explanation=why, **meta)


def _streamed(req: ChatRequest) -> bool:
    return req.stream


@check("usage_in_stream", applies=_streamed)
def usage_in_stream(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when a streamed response carried usage in its final chunk.

    Skipped for plain requests; missing when the client could not tell.
    """
    if obs.usage_in_stream is None:
        return result(CheckValue.missing, explanation="no record of usage in the stream")
    if obs.usage_in_stream:
        return result(CheckValue.passed, answer=True, expected=True, explanation="usage in stream")
    return result(
        CheckValue.failed,
        answer=False,
        expected=True,
        explanation="the stream ended without a usage chunk",
    )


def _validate_usage_reasoning(params: dict[str, Any]) -> None:
    keys(params, optional=["expect"])
    typed(params, "expect", bool, "true or false")


@check("usage_reasoning", validate=_validate_usage_reasoning)
def usage_reasoning(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Reasoning tokens as the model class implies.

    ``expect = true`` (default): pass when ``reasoning_tokens > 0``, fail when reported as
    0, missing when the field is absent. ``expect = false`` (a non-reasoning model): pass
    when absent or 0, fail when positive — a hint that another model answered.
    """
    expect = params.get("expect", True)
    n = obs.usage.reasoning_tokens
    if expect:
        if n is None:
            return result(
                CheckValue.missing, expected="> 0", explanation="usage has no reasoning_tokens"
            )
        ok = n > 0
        why = f"{n} reasoning tokens" + ("" if ok else " reported for a reasoning model")
        return result(
            CheckValue.passed if ok else CheckValue.failed,
            answer=n,
            expected="> 0",
            explanation=why,
        )
    ok = not n
    return result(
        CheckValue.passed if ok else CheckValue.failed,
        answer=n,
        expected="0 or absent",
        explanation="no reasoning tokens"
        if ok
        else f"{n} reasoning tokens from a non-reasoning model",
    )
