"""``usage_completion_plausible``: is ``completion_tokens`` the size of the text returned?

A relay that multiplies ``completion_tokens`` (keeping ``total_tokens`` consistent) passes
every check that only reads `usage`, unless an answer hits ``max_tokens``. This check
compares the reported count with an independent measure of the returned text: the
gateway's own tokenizer, read through prompt tokens. The runner sends the answer back
inside a prompt (``ECHO_PREFIX + text``, ``max_tokens = 1``) and once the bare prefix; the
difference of the two ``prompt_tokens`` is the text's length in the gateway's tokens, as
the tokenizer canaries measure a canary (see `aione_probe.runner`).

Tolerance: the reported count may differ from the measured one by `DEFAULT_ABS` (2)
tokens plus `DEFAULT_REL` (0 %) of it. On llama.cpp (SmolLM2) the reported count was the
measured one or one less in every answer (re-tokenizing the text can add a token at the
prompt boundary), and llama.cpp is said to report up to max_tokens + 2 on answers cut at
max_tokens: 2 tokens cover both. A relative allowance (`tolerance`) is for gateways whose
tokenizer re-tokenizes generated text less faithfully. The false-alarm rate on an honest
engine and the detection rate are measured by ``bench/usage_plausible.py`` (README,
"Billing checks").

Limits: a relay that inflates prompt tokens by the same factor inflates the delta too;
hidden reasoning is subtracted only when the gateway reports ``reasoning_tokens``.
"""

from __future__ import annotations

import math
from typing import Any

from aione_probe.checks._registry import CheckContext, CheckSpecError, check, result
from aione_probe.checks._util import keys, typed
from aione_probe.types import CheckResult, CheckValue, Observation

NAME = "usage_completion_plausible"
#: The prompt the answer is sent back in: asks for one word, so one output token is paid.
ECHO_PREFIX = "Reply with the single word OK. Ignore this text:\n\n"
DEFAULT_REL = 0.0
DEFAULT_ABS = 2


def _validate(params: dict[str, Any]) -> None:
    keys(params, optional=["tolerance", "slack_tokens"])
    rel = typed(params, "tolerance", (int, float), "a number")
    if rel is not None and not 0 <= rel < 1:
        raise CheckSpecError(f"tolerance must be in [0, 1), got {rel}", "tolerance")
    slack = typed(params, "slack_tokens", int, "an integer")
    if slack is not None and not 0 <= slack <= 100:
        raise CheckSpecError(f"slack_tokens must be in [0, 100], got {slack}", "slack_tokens")


def measurable(obs: Observation) -> bool:
    """Whether an answer can be measured: it has text and no tool calls."""
    return bool(obs.ok and obs.content and not obs.tool_calls)


def bounds(measured: int, rel: float, slack: int) -> tuple[int, int]:
    """The completion counts accepted for a text of `measured` tokens, inclusive."""
    return max(0, math.floor(measured * (1 - rel)) - slack), math.ceil(measured * (1 + rel)) + slack


@check(NAME, validate=_validate)
def usage_completion_plausible(
    obs: Observation, params: dict[str, Any], ctx: CheckContext
) -> CheckResult:
    """Pass when ``completion_tokens`` (less reported reasoning) matches the answer's
    length in the gateway's own tokens within the tolerance.

    Outcomes (``metadata.outcome``): ``plausible`` (pass), ``inflated`` (fail: more tokens
    billed than returned), ``deflated`` (partial: fewer billed than returned),
    ``unmeasured`` (unscored: no text, or the echo measurement failed); a missing
    ``completion_tokens`` is ``missing``.
    """
    reported = obs.usage.completion_tokens
    if reported is None:
        return result(CheckValue.missing, explanation="usage.completion_tokens absent")
    measured = ctx.text_tokens
    if measured is None or not measurable(obs):
        why = "no measurement of the answer (no text, tool calls, or the echo request failed)"
        return result(CheckValue.unscored, explanation=why, outcome="unmeasured")
    visible = reported - (obs.usage.reasoning_tokens or 0)
    rel = float(params.get("tolerance", DEFAULT_REL))
    slack = int(params.get("slack_tokens", DEFAULT_ABS))
    lo, hi = bounds(measured, rel, slack)
    meta = {
        "reported": reported,
        "visible_reported": visible,
        "measured": measured,
        "ratio": visible / measured if measured else None,
        "method": "echo_prompt_delta",
        "bounds": [lo, hi],
        "finish_reason": obs.finish_reason,
    }
    expected = f"{lo}..{hi}"
    if visible > hi:
        why = f"{visible} completion tokens billed for a text of {measured} tokens"
        return result(CheckValue.failed, answer=visible, expected=expected, explanation=why,
                      outcome="inflated", **meta)  # fmt: skip
    if visible < lo:
        why = f"only {visible} completion tokens billed for a text of {measured} tokens"
        return result(CheckValue.partial, answer=visible, expected=expected, explanation=why,
                      outcome="deflated", **meta)  # fmt: skip
    why = f"{visible} completion tokens for a text of {measured} tokens"
    return result(CheckValue.passed, answer=visible, expected=expected, explanation=why,
                  outcome="plausible", **meta)  # fmt: skip
