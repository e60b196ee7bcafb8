"""Cross-sample consistency: the same prompt must be counted the same way every time."""

from __future__ import annotations

from typing import Any

from aione_probe.checks._registry import CheckContext, group_check, result
from aione_probe.types import CheckResult, CheckValue, Observation


@group_check("prompt_tokens_consistent")
def prompt_tokens_consistent(
    observations: list[Observation], params: dict[str, Any], ctx: CheckContext
) -> list[CheckResult]:
    """Pass when every successful sample reports the same ``prompt_tokens``.

    Meant for probes with ``alternate_stream = true``: plain and streamed requests of one
    prompt must be billed for the same input. Unscored with fewer than two successful
    samples; missing when any of them lacks ``prompt_tokens``.
    """
    ok = [o for o in observations if o.ok]
    if len(ok) < 2:
        return [result(CheckValue.unscored, explanation="needs two successful samples")]
    counts = [o.usage.prompt_tokens for o in ok]
    meta = {"prompt_tokens": counts, "stream": [o.stream for o in ok]}
    if any(c is None for c in counts):
        return [result(CheckValue.missing, explanation="a sample lacks prompt_tokens", **meta)]
    plain = sorted({c for c, o in zip(counts, ok, strict=True) if not o.stream})
    streamed = sorted({c for c, o in zip(counts, ok, strict=True) if o.stream})
    if len(set(counts)) == 1:
        return [
            result(
                CheckValue.passed,
                answer=counts[0],
                explanation=f"prompt_tokens {counts[0]} in all {len(ok)} samples",
                **meta,
            )
        ]
    return [
        result(
            CheckValue.failed,
            answer=", ".join(map(str, counts)),
            explanation=f"prompt_tokens differ: plain {plain}, stream {streamed}",
            **meta,
        )
    ]
