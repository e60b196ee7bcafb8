"""What the runner hands the store, and the conversions between values and rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aione_probe.errors import FailureKind
from aione_probe.redact import scrub_value
from aione_probe.store.tables import CheckResultRow, ObservationRow
from aione_probe.types import CheckResult, CheckValue, Observation, Usage


@dataclass(frozen=True)
class ObservationRecord:
    """One attempt to store, with the probe instance it measured.

    `cost` is None when no price was known; `final` marks the last attempt of a request.
    The gateway and model are the observation's own.
    """

    observation: Observation
    suite: str
    probe_id: str
    probe_hash: str
    sample: int = 0
    vars: dict[str, Any] = field(default_factory=dict)
    cost: float | None = None
    final: bool = True


@dataclass(frozen=True)
class CheckRecord:
    """One check result to store.

    `observation_index` is the position, in the list passed along with it, of the
    observation it judged; None for a group check.
    """

    result: CheckResult
    observation_index: int | None
    probe_id: str
    probe_hash: str


def observation_values(record: ObservationRecord, run_id: int) -> dict[str, Any]:
    """Column values of the ``observation`` row for `record` (for core inserts); every
    gateway-supplied string is scrubbed of secrets (a gateway may echo the key)."""
    obs = record.observation
    usage = obs.usage
    return scrub_value(
        {
            "run_id": run_id,
            "gateway": obs.gateway,
            "model": obs.model,
            "suite": record.suite,
            "probe_id": record.probe_id,
            "probe_hash": record.probe_hash,
            "sample": record.sample,
            "attempt": obs.attempt,
            "started_at": obs.started_at,
            "protocol": obs.protocol,
            "stream": obs.stream,
            "failure": FailureKind(obs.failure).value,
            "status": obs.status,
            "error_type": obs.error_type,
            "error_code": obs.error_code,
            "error_message": obs.error_message,
            "http_version": obs.http_version,
            "request_id": obs.request_id,
            "retry_after_s": obs.retry_after_s,
            "response_id": obs.response_id,
            "response_model": obs.response_model,
            "system_fingerprint": obs.system_fingerprint,
            "created": obs.created,
            "content": obs.content,
            "tool_calls": obs.tool_calls,
            "content_parts": obs.content_parts,
            "finish_reason": obs.finish_reason,
            "raw_finish_reason": obs.raw_finish_reason,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cached_tokens": usage.cached_tokens,
            "reasoning_tokens": usage.reasoning_tokens,
            "cache_creation_tokens": usage.cache_creation_tokens,
            "usage_raw": usage.raw,
            "usage_in_stream": obs.usage_in_stream,
            "headers_s": obs.headers_s,
            "first_chunk_s": obs.first_chunk_s,
            "first_token_s": obs.first_token_s,
            "end_s": obs.end_s,
            "tpot_s": obs.tpot_s,
            "output_tps": obs.output_tokens_per_s,
            "gaps_s": obs.gaps_s,
            "chunk_count": obs.chunk_count,
            "bytes_received": obs.bytes_received,
            "cost": record.cost,
            "vars": record.vars,
            "final": record.final,
        }
    )


def check_values(
    record: CheckRecord,
    *,
    run_id: int,
    observation_id: int | None,
    gateway: str,
    model: str,
    suite: str,
    created_at: datetime,
) -> dict[str, Any]:
    """Column values of the ``checkresult`` row for `record` (for core inserts), scrubbed."""
    result = record.result
    return scrub_value(
        {
            "observation_id": observation_id,
            "run_id": run_id,
            "gateway": gateway,
            "model": model,
            "suite": suite,
            "probe_id": record.probe_id,
            "probe_hash": record.probe_hash,
            "name": result.name,
            "params": result.params,
            "value": CheckValue(result.value).value,
            "answer": result.answer,
            "expected": result.expected,
            "explanation": result.explanation,
            "metadata": result.metadata,
            "created_at": created_at,
        }
    )


def to_observation(row: ObservationRow) -> Observation:
    """Rebuild the `Observation` a row was stored from (derived columns are dropped)."""
    return Observation(
        gateway=row.gateway,
        model=row.model,
        protocol=row.protocol,
        stream=row.stream,
        attempt=row.attempt,
        started_at=row.started_at,
        failure=FailureKind(row.failure),
        error_message=row.error_message,
        error_type=row.error_type,
        error_code=row.error_code,
        status=row.status,
        http_version=row.http_version,
        request_id=row.request_id,
        retry_after_s=row.retry_after_s,
        response_id=row.response_id,
        response_model=row.response_model,
        system_fingerprint=row.system_fingerprint,
        created=row.created,
        content=row.content,
        tool_calls=list(row.tool_calls or []),
        content_parts=list(row.content_parts or []),
        finish_reason=row.finish_reason,
        raw_finish_reason=row.raw_finish_reason,
        usage=Usage(
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            total_tokens=row.total_tokens,
            cached_tokens=row.cached_tokens,
            reasoning_tokens=row.reasoning_tokens,
            cache_creation_tokens=row.cache_creation_tokens,
            raw=row.usage_raw,
        ),
        usage_in_stream=row.usage_in_stream,
        headers_s=row.headers_s,
        first_chunk_s=row.first_chunk_s,
        first_token_s=row.first_token_s,
        end_s=row.end_s,
        gaps_s=list(row.gaps_s or []),
        chunk_count=row.chunk_count,
        bytes_received=row.bytes_received,
    )


def to_check_result(row: CheckResultRow) -> CheckResult:
    """Rebuild the `CheckResult` a row was stored from."""
    return CheckResult(
        name=row.name,
        value=CheckValue(row.value),
        params=dict(row.params or {}),
        answer=row.answer,
        expected=row.expected,
        explanation=row.explanation,
        metadata=dict(row.meta or {}),
    )
