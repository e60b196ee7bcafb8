"""The values that flow through the pipeline: a request, its observation, a check result.

Requests are protocol-neutral (OpenAI chat shape); the gateway client translates them
for other protocols. An `Observation` is one attempt of one request, failed or not.
Times: ``*_at`` are UTC wall-clock datetimes; ``*_s`` are seconds measured on a
monotonic clock from the moment the request was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aione_probe.errors import FailureKind


def utcnow() -> datetime:
    """Timezone-aware UTC now (the only wall clock the project uses)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class ChatRequest:
    """One chat request, in the OpenAI chat-completions shape.

    `messages` use OpenAI roles (system, user, assistant, tool); `tools` use OpenAI's
    ``{"type": "function", "function": {...}}`` shape; `extra` carries
    provider-specific body fields passed through verbatim (e.g. ``aspect_ratio``).
    `cache_prefix` asks the protocol to mark the prompt prefix cacheable where caching
    is explicit (Anthropic's ``cache_control``); OpenAI-style gateways cache on their own.
    """

    model: str
    messages: tuple[dict[str, Any], ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    cache_prefix: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Usage:
    """Token accounting exactly as the gateway reported it (None = field absent)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None
    cache_creation_tokens: int | None = None
    raw: dict[str, Any] | None = None

    @property
    def present(self) -> bool:
        """Whether the gateway sent a usage object at all."""
        return self.raw is not None


@dataclass
class Observation:
    """Everything measured about one attempt of one request.

    Output token counts come only from `usage`; `chunk_count` counts SSE data events
    and is never used as a token count.
    """

    gateway: str
    model: str
    protocol: str = "openai"
    stream: bool = False
    attempt: int = 1
    started_at: datetime = field(default_factory=utcnow)
    failure: FailureKind = FailureKind.ok
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    status: int | None = None
    http_version: str | None = None
    request_id: str | None = None
    retry_after_s: float | None = None
    # response metadata
    response_id: str | None = None
    response_model: str | None = None
    system_fingerprint: str | None = None
    created: int | None = None
    # answer
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    content_parts: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    raw_finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    usage_in_stream: bool | None = None
    # timings, seconds since the request was sent (monotonic)
    headers_s: float | None = None
    first_chunk_s: float | None = None
    first_token_s: float | None = None
    end_s: float | None = None
    gaps_s: list[float] = field(default_factory=list)
    chunk_count: int = 0
    bytes_received: int = 0

    @property
    def ok(self) -> bool:
        """True when the attempt produced a usable response."""
        return self.failure is FailureKind.ok

    @property
    def ttft_s(self) -> float | None:
        """Time to first content token (streaming) or to the full body (plain)."""
        return self.first_token_s if self.stream else self.end_s

    @property
    def e2e_s(self) -> float | None:
        """End-to-end latency."""
        return self.end_s

    @property
    def output_tokens(self) -> int | None:
        """Completion tokens as reported by the gateway's usage."""
        return self.usage.completion_tokens

    @property
    def tpot_s(self) -> float | None:
        """Time per output token after the first: (e2e − TTFT) / (output_tokens − 1)."""
        n = self.output_tokens
        if not self.stream or n is None or n < 2 or self.end_s is None:
            return None
        if self.first_token_s is None:
            return None
        return (self.end_s - self.first_token_s) / (n - 1)

    @property
    def output_tokens_per_s(self) -> float | None:
        """Output tokens per second of generation, excluding the time to first token."""
        n = self.output_tokens
        if not self.stream or n is None or n < 2 or self.end_s is None:
            return None
        if self.first_token_s is None or self.end_s <= self.first_token_s:
            return None
        return (n - 1) / (self.end_s - self.first_token_s)


class CheckValue(StrEnum):
    """Outcome of one check. `unscored`: the request failed, so nothing could be judged.
    `missing`: the field the check reads was absent from the response."""

    passed = "pass"
    failed = "fail"
    partial = "partial"
    unscored = "unscored"
    missing = "missing"


@dataclass(frozen=True)
class CheckResult:
    """One check's judgement of one observation (shaped like inspect_ai's Score)."""

    name: str
    value: CheckValue
    params: dict[str, Any] = field(default_factory=dict)
    answer: str | None = None
    expected: str | None = None
    explanation: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
