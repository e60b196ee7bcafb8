"""GatewayClient against the scripted fault server over loopback HTTP: every fault class,
plain and streaming, plus timing accuracy and connection reuse."""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from faultserver import LEAKED_KEY, FaultServer, running

from aione_probe.config import GatewayConfig
from aione_probe.errors import FailureKind
from aione_probe.gateway import GatewayClient
from aione_probe.types import ChatRequest, Observation

MSG = ({"role": "user", "content": "hi"},)


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    with running() as s:
        yield s


def gw_for(base_url: str, **kw: Any) -> GatewayConfig:
    opts: dict[str, Any] = {
        "name": "gw",
        "base_url": base_url,
        "requests_per_minute": None,
        "retries": {"max_attempts": 1},
        "timeouts": {"connect": 2, "first_token": 5, "idle": 5, "total": 10},
    }
    opts.update(kw)
    if not (opts.get("api_key_env") or opts.get("api_key_file") or "auth" in kw):
        opts["auth"] = "none"  # a test gateway without a key says so
    return GatewayConfig(**opts)


async def no_sleep(seconds: float) -> None:
    return None


async def run(
    server: FaultServer, model: str, stream: bool, **kw: Any
) -> tuple[list[Observation], float]:
    async with GatewayClient(gw_for(server.base_url, **kw), sleep=no_sleep) as client:
        start = time.perf_counter()
        attempts = await client.chat(ChatRequest(model=model, messages=MSG, stream=stream))
        return attempts, time.perf_counter() - start


async def one(server: FaultServer, model: str, stream: bool, **kw: Any) -> Observation:
    attempts, _ = await run(server, model, stream, **kw)
    assert len(attempts) == 1
    return attempts[0]


STREAM = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])


@STREAM
async def test_ok(server: FaultServer, stream: bool) -> None:
    obs = await one(server, "ok", stream)
    assert obs.ok, obs.error_message
    assert obs.content == "Hello world" and obs.finish_reason == "stop"
    assert obs.usage.completion_tokens == 3 and obs.usage.cached_tokens == 4
    assert obs.usage.reasoning_tokens == 1
    assert obs.request_id and obs.http_version == "HTTP/1.1" and obs.status == 200
    assert obs.response_model == "fault-model" and obs.system_fingerprint == "fp_fault"
    assert 0 < obs.headers_s <= obs.first_token_s <= obs.end_s  # type: ignore[operator]
    seen = server.by_request_id(obs.request_id)
    if stream:
        assert seen.body["stream_options"] == {"include_usage": True}
        assert obs.usage_in_stream is True and obs.chunk_count == 5
    else:
        assert "stream" not in seen.body and obs.first_token_s == obs.end_s


@STREAM
async def test_usage_absent(server: FaultServer, stream: bool) -> None:
    obs = await one(server, "ok:nousage", stream)
    assert obs.ok and obs.content == "Hello world"
    assert not obs.usage.present and obs.usage.completion_tokens is None
    assert obs.usage_in_stream is (False if stream else None)


async def test_keepalive_comments_and_missing_done(server: FaultServer) -> None:
    obs = await one(server, "ok:keepalive", True)
    assert obs.ok and obs.content == "Hello world" and obs.chunk_count == 5
    obs = await one(server, "ok:nodone", True)
    assert obs.ok and obs.content == "Hello world" and obs.usage.total_tokens == 15


async def test_stream_tool_calls(server: FaultServer) -> None:
    obs = await one(server, "tools", True)
    assert obs.ok and obs.finish_reason == "tool_calls"
    assert [c["function"] for c in obs.tool_calls] == [
        {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"name": "get_time", "arguments": '{"tz": "UTC"}'},
    ]


@STREAM
@pytest.mark.parametrize(
    ("script", "kind", "code"),
    [
        ("status:401", FailureKind.auth, "invalid_api_key"),
        ("status:403", FailureKind.forbidden, None),
        ("status:404", FailureKind.model_not_found, "model_not_found"),
        ("status:context", FailureKind.context_length, "context_length_exceeded"),
        ("status:500", FailureKind.http_5xx, None),
        ("status:502", FailureKind.http_5xx, None),
        ("status:503", FailureKind.http_5xx, None),
        ("status:529", FailureKind.http_5xx, None),
    ],
)
async def test_error_statuses(
    server: FaultServer, stream: bool, script: str, kind: FailureKind, code: str | None
) -> None:
    obs = await one(server, script, stream)
    assert obs.failure is kind and obs.error_code == code
    assert obs.error_message and LEAKED_KEY not in obs.error_message
    assert obs.end_s is not None and obs.first_token_s is None


@STREAM
async def test_rate_limited_retried_with_retry_after(server: FaultServer, stream: bool) -> None:
    attempts, _ = await run(server, "status:429", stream, retries={"max_attempts": 3})
    assert [(o.attempt, o.failure) for o in attempts] == [
        (n, FailureKind.rate_limited) for n in (1, 2, 3)
    ]
    assert all(o.retry_after_s == 0 for o in attempts)


@STREAM
@pytest.mark.parametrize(
    ("script", "plain", "streamed"),
    [
        ("malformed", FailureKind.bad_response, FailureKind.stream_parse),
        ("cut", FailureKind.stream_parse, FailureKind.stream_parse),
        ("empty", FailureKind.empty_response, FailureKind.empty_response),
        ("inband", FailureKind.http_5xx, FailureKind.http_5xx),
    ],
)
async def test_broken_bodies(
    server: FaultServer, stream: bool, script: str, plain: FailureKind, streamed: FailureKind
) -> None:
    obs = await one(server, script, stream)
    assert obs.failure is (streamed if stream else plain), obs.error_message


async def test_stream_request_answered_with_json(server: FaultServer) -> None:
    obs = await one(server, "jsonstream", True)
    assert obs.ok and obs.content == "Hello world" and obs.first_token_s == obs.end_s


@STREAM
async def test_connect_refused(stream: bool) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with GatewayClient(gw_for(f"http://127.0.0.1:{port}/v1")) as client:
        [obs] = await client.chat(ChatRequest(model="ok", messages=MSG, stream=stream))
    assert obs.failure is FailureKind.connect and obs.headers_s is None


async def test_connect_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out")

    gw = gw_for("http://127.0.0.1:9/v1")
    async with GatewayClient(gw, transport=httpx.MockTransport(handler)) as client:
        [obs] = await client.chat(ChatRequest(model="ok", messages=MSG, stream=True))
    assert obs.failure is FailureKind.timeout_connect


@STREAM
async def test_first_token_timeout(server: FaultServer, stream: bool) -> None:
    timeouts = {"connect": 1, "first_token": 0.3, "idle": 1, "total": 5}
    [obs], elapsed = await run(server, "silent:1.5", stream, timeouts=timeouts)
    assert obs.failure is FailureKind.timeout_first_token
    assert 0.3 <= elapsed < 1.0
    if stream:
        assert obs.first_chunk_s is not None and obs.first_token_s is None


async def test_idle_timeout_after_first_token(server: FaultServer) -> None:
    timeouts = {"connect": 1, "first_token": 5, "idle": 0.3, "total": 5}
    [obs], elapsed = await run(server, "stall:1.5", True, timeouts=timeouts)
    assert obs.failure is FailureKind.timeout_idle and obs.content == "Hel"
    assert 0.3 <= elapsed < 1.0


async def test_plain_body_stall_counts_against_first_token(server: FaultServer) -> None:
    timeouts = {"connect": 1, "first_token": 0.4, "idle": 0.1, "total": 5}
    [obs], elapsed = await run(server, "stall:1.5", False, timeouts=timeouts)
    assert obs.failure is FailureKind.timeout_first_token
    assert 0.4 <= elapsed < 1.0


async def test_idle_does_not_apply_before_first_token(server: FaultServer) -> None:
    # 300 ms of silence before the first token is fine with idle=0.1 and first_token=2.
    timeouts = {"connect": 1, "first_token": 2, "idle": 0.1, "total": 5}
    obs = await one(server, "timing:300", True, timeouts=timeouts)
    assert obs.ok, obs.error_message


async def test_total_timeout(server: FaultServer) -> None:
    timeouts = {"connect": 1, "first_token": 0.5, "idle": 1, "total": 0.6}
    [obs], elapsed = await run(server, "slow:2", True, timeouts=timeouts)
    assert obs.failure is FailureKind.timeout_total and obs.first_token_s is not None
    assert 0.6 <= elapsed < 1.2 and obs.chunk_count >= 3


@STREAM
async def test_huge_event_fails_fast(server: FaultServer, stream: bool) -> None:
    [obs], elapsed = await run(server, "huge", stream)
    assert obs.failure is FailureKind.too_large
    assert elapsed < 3.0
    limit = 1 << 20 if stream else 8 << 20  # max_event_bytes, max_response_bytes
    assert obs.bytes_received < limit + (1 << 20)  # stopped near the bound, not at 20 MiB


async def test_ttft_matches_server_timestamps(server: FaultServer) -> None:
    errors_ms = []
    async with GatewayClient(gw_for(server.base_url)) as client:
        await client.chat(ChatRequest(model="ok", messages=MSG, stream=True))  # warm connection
        for _ in range(5):
            [obs] = await client.chat(ChatRequest(model="timing:300", messages=MSG, stream=True))
            assert obs.ok and obs.first_token_s is not None and obs.request_id
            seen = server.by_request_id(obs.request_id)
            assert seen.first_content is not None
            server_ttft = seen.first_content - seen.received
            errors_ms.append((obs.first_token_s - server_ttft) * 1000)
            assert obs.first_token_s >= 0.3
            assert statistics.median(obs.gaps_s[1:]) == pytest.approx(0.02, abs=0.01)
    assert abs(statistics.median(errors_ms)) < 10, errors_ms


@pytest.mark.parametrize("concurrency", [1, 20])
async def test_connection_reused_across_requests_and_outcomes(
    server: FaultServer, concurrency: int
) -> None:
    sequence = [
        ("ok", False),
        ("ok", True),
        ("ok:keepalive", True),  # bytes after [DONE] are drained
        ("ok:nodone", True),
        ("status:500", False),
        ("status:429", True),
        ("tools", True),
    ]
    ports = set()
    async with GatewayClient(gw_for(server.base_url, max_concurrency=concurrency)) as client:
        for model, stream in sequence:
            [obs] = await client.chat(ChatRequest(model=model, messages=MSG, stream=stream))
            assert obs.request_id
            ports.add(server.by_request_id(obs.request_id).client_port)
    assert len(ports) == 1, ports


async def test_list_models_over_http(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIONE_FAULT_KEY", "good-key")
    gw = gw_for(server.base_url, api_key_env="AIONE_FAULT_KEY")
    async with GatewayClient(gw) as client:
        assert await client.list_models() == ["gpt-4o", "gpt-4o-mini"]
    monkeypatch.setenv("AIONE_FAULT_KEY", "bad-key")
    async with GatewayClient(gw) as client:
        with pytest.raises(Exception) as err:
            await client.list_models()
    assert getattr(err.value, "kind", None) is FailureKind.auth
    assert LEAKED_KEY not in str(err.value)
