"""GatewayClient over httpx.MockTransport: request shape, timing math, parsing, errors, retries."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from fakes import Body, FakeClock

from aione_probe.config import GatewayConfig
from aione_probe.errors import FailureKind, ProtocolError, StatusError, TransportError
from aione_probe.gateway import (
    PROTOCOLS,
    ErrorInfo,
    GatewayClient,
    Limiter,
    RateLimiter,
    backoff_delay,
    classify_exception,
    classify_status,
    parse_error_body,
    parse_retry_after,
    scrub,
)
from aione_probe.gateway.pool import ShardedPool
from aione_probe.types import ChatRequest

KEY = "test-key-0123456789"
MSG = ({"role": "user", "content": "hi"},)


def make_gw(monkeypatch: pytest.MonkeyPatch | None = None, **kw: Any) -> GatewayConfig:
    opts: dict[str, Any] = {
        "name": "gw",
        "base_url": "http://gateway.test/v1",
        "requests_per_minute": None,
        "retries": {"max_attempts": 3, "base_delay": 1, "max_delay": 30},
    }
    if monkeypatch is not None:
        monkeypatch.setenv("AIONE_TEST_KEY", KEY)
        opts["api_key_env"] = "AIONE_TEST_KEY"
    opts.update(kw)
    if not (opts.get("api_key_env") or opts.get("api_key_file") or "auth" in kw):
        opts["auth"] = "none"  # a test gateway without a key says so
    return GatewayConfig(**opts)


def sse(*events: Any) -> bytes:
    out = b""
    for e in events:
        out += e if isinstance(e, bytes) else b"data: " + json.dumps(e).encode() + b"\n\n"
    return out


def delta(content: str | None = None, finish: str | None = None, **d: Any) -> dict[str, Any]:
    if content is not None:
        d["content"] = content
    return {
        "id": "chatcmpl-1",
        "model": "m-2024",
        "created": 1700000000,
        "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "delta": d, "finish_reason": finish}],
    }


USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 5,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 2},
}
DONE = b"data: [DONE]\n\n"


def client_for(
    handler: Callable[[httpx.Request], Any], gw: GatewayConfig | None = None, **kw: Any
) -> GatewayClient:
    return GatewayClient(gw or make_gw(), transport=httpx.MockTransport(handler), **kw)


def request(stream: bool = True, **kw: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=MSG, stream=stream, **kw)


# --- request shape -------------------------------------------------------------------------


async def test_stream_request_body_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(200, json={"choices": [{"message": {"content": "x"}}]})

    gw = make_gw(monkeypatch, headers={"X-Team": "probe"})
    req = request(max_tokens=8, temperature=0.0, seed=7, extra={"top_k": 5, "stream_options": {}})
    async with client_for(handler, gw) as client:
        await client.chat(req)
    sent = seen[0]
    body = json.loads(sent.content)
    assert str(sent.url) == "http://gateway.test/v1/chat/completions"
    assert body == {
        "model": "m",
        "messages": list(MSG),
        "max_tokens": 8,
        "temperature": 0.0,
        "seed": 7,
        "stream": True,
        "stream_options": {},  # extra wins, verbatim
        "top_k": 5,
    }
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["user-agent"].startswith("aione-probe/")
    assert sent.headers["x-team"] == "probe"
    assert sent.headers["accept"] == "text/event-stream"


async def test_plain_request_omits_none_and_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    bodies: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(req.content))
        assert req.headers["x-api-key"] == KEY and "authorization" not in req.headers
        return httpx.Response(200, json={"choices": [{"message": {"content": "x"}}]})

    tools = ({"type": "function", "function": {"name": "f", "parameters": {}}},)
    async with client_for(handler, make_gw(monkeypatch, auth="x-api-key")) as client:
        await client.chat(request(stream=False, tools=tools, tool_choice="auto"))
    assert bodies == [
        {"model": "m", "messages": list(MSG), "tools": list(tools), "tool_choice": "auto"}
    ]


async def test_default_stream_options_include_usage() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(req.content))
        return httpx.Response(200, json={"choices": [{"message": {"content": "x"}}]})

    async with client_for(handler) as client:
        await client.chat(request())
    assert bodies[0]["stream"] is True
    assert bodies[0]["stream_options"] == {"include_usage": True}


# --- streaming: timings and assembly -------------------------------------------------------


def stream_handler(clock: FakeClock, chunks: list[tuple[float, bytes]], headers_at: float = 0.05):
    def handler(req: httpx.Request) -> httpx.Response:
        clock.t = headers_at
        headers = {"content-type": "text/event-stream", "x-oneapi-request-id": "req-9"}
        return httpx.Response(200, headers=headers, stream=Body(chunks, clock))

    return handler


async def test_stream_timings_on_fake_clock() -> None:
    clock = FakeClock()
    chunks = [
        (0.10, sse(delta(role="assistant", content=""))),  # role only: a chunk, not a token
        (0.15, b": keep-alive\n\n"),
        (0.30, sse(delta("Hel"))),
        (0.32, b'data: {"choices": [{"index": 0, "delta": {"content": "lo"}}]}\n'),
        (0.33, b"\n" + sse(delta(None, "stop"))),
        (0.40, sse({"choices": [], "usage": USAGE}, DONE)),
        (0.45, b": bytes after done are drained\n\n"),
    ]
    async with client_for(stream_handler(clock, chunks), clock=clock) as client:
        [obs] = await client.chat(request())
    assert obs.ok, obs.error_message
    assert obs.headers_s == 0.05
    assert obs.first_chunk_s == 0.10
    assert obs.first_token_s == 0.30
    assert obs.end_s == 0.40  # the [DONE] event, not the drained tail
    assert obs.chunk_count == 5  # data events other than [DONE]
    assert obs.gaps_s == pytest.approx([0.20, 0.03, 0.0, 0.07])
    assert obs.ttft_s == 0.30
    assert obs.content == "Hello"
    assert obs.finish_reason == "stop"
    assert obs.request_id == "req-9"
    assert obs.status == 200 and obs.http_version == "HTTP/1.1"
    assert (obs.response_id, obs.response_model, obs.created) == (
        "chatcmpl-1",
        "m-2024",
        1700000000,
    )
    assert obs.system_fingerprint == "fp_1"
    u = obs.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (10, 5, 15)
    assert (u.cached_tokens, u.reasoning_tokens) == (8, 2)
    assert u.raw == USAGE and obs.usage_in_stream is True
    assert obs.tpot_s == pytest.approx((0.40 - 0.30) / 4)
    assert obs.bytes_received == sum(len(c) for _, c in chunks)


async def test_stream_tool_calls_assembled_by_index() -> None:
    def tc(index: int, **f: Any) -> dict[str, Any]:
        return delta(tool_calls=[{"index": index, **f}])

    clock = FakeClock()
    events = [
        tc(0, id="call_a", type="function", function={"name": "get_weather", "arguments": ""}),
        tc(1, id="call_b", type="function", function={"name": "get_time"}),
        tc(0, function={"arguments": '{"city": '}),
        tc(1, function={"arguments": "{}"}),
        tc(0, function={"arguments": '"Paris"}'}),
        delta(None, "tool_calls"),
    ]
    chunks = [(0.1 * (i + 1), sse(e)) for i, e in enumerate(events)] + [(1.0, DONE)]
    async with client_for(stream_handler(clock, chunks), clock=clock) as client:
        [obs] = await client.chat(request())
    assert obs.ok
    assert obs.first_token_s == pytest.approx(0.3)  # names alone are not output tokens
    assert obs.content == ""
    assert obs.tool_calls == [
        {"id": "call_a", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]  # fmt: skip
    assert obs.finish_reason == "tool_calls"


async def test_stream_without_usage_or_done_is_ok() -> None:
    clock = FakeClock()
    chunks = [(0.1, sse(delta("a"))), (0.2, sse(delta("b", "end_turn")))]
    async with client_for(stream_handler(clock, chunks), clock=clock) as client:
        [obs] = await client.chat(request())
    assert obs.ok
    assert obs.usage_in_stream is False and not obs.usage.present
    assert obs.usage.completion_tokens is None and obs.output_tokens is None
    assert (obs.finish_reason, obs.raw_finish_reason) == ("stop", "end_turn")
    assert obs.end_s == 0.2


async def test_stream_cut_before_finish_is_stream_parse() -> None:
    clock = FakeClock()
    chunks = [(0.1, sse(delta("partial")))]
    async with client_for(stream_handler(clock, chunks), clock=clock) as client:
        [obs] = await client.chat(request())
    assert obs.failure is FailureKind.stream_parse
    assert obs.content == "partial"  # kept for diagnosis


async def test_stream_with_no_content_is_empty_response() -> None:
    clock = FakeClock()
    chunks = [(0.1, sse(delta(role="assistant", content=""), delta(None, "stop"), DONE))]
    async with client_for(stream_handler(clock, chunks), clock=clock) as client:
        [obs] = await client.chat(request())
    assert obs.failure is FailureKind.empty_response
    assert obs.first_token_s is None


async def test_stream_bad_json_event_is_stream_parse() -> None:
    clock = FakeClock()
    chunks = [(0.1, sse(delta("a"))), (0.2, b"data: {oops\n\n")]
    async with client_for(stream_handler(clock, chunks), clock=clock) as client:
        [obs] = await client.chat(request())
    assert obs.failure is FailureKind.stream_parse


async def test_stream_inband_error_event() -> None:
    clock = FakeClock()
    err = {"error": {"message": "overloaded", "type": "overloaded_error", "code": None}}
    chunks = [(0.1, sse(delta("a"))), (0.2, sse(err))]
    async with client_for(stream_handler(clock, chunks), clock=clock) as client:
        attempts = await client.chat(request())
    obs = attempts[0]
    assert obs.failure is FailureKind.http_5xx and obs.status == 200
    assert (obs.error_type, obs.error_message) == ("overloaded_error", "overloaded")


async def test_stream_request_answered_with_json() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": {"content": "whole"}}]})

    async with client_for(handler) as client:
        [obs] = await client.chat(request())
    assert obs.ok and obs.content == "whole"
    assert obs.first_token_s == obs.end_s and obs.first_chunk_s is None


# --- plain -----------------------------------------------------------------------------------


async def test_plain_response_parsed() -> None:
    clock = FakeClock()
    body = {
        "id": "chatcmpl-2",
        "model": "m-2024",
        "created": 1700000001,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function",
                         "function": {"name": "f", "arguments": {"x": 1}}},
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE,
    }  # fmt: skip
    payload = json.dumps(body).encode()

    def handler(req: httpx.Request) -> httpx.Response:
        clock.t = 0.2
        hdrs = {"content-type": "application/json", "x-request-id": "r1"}
        return httpx.Response(200, headers=hdrs, stream=Body([(0.5, payload)], clock))

    async with client_for(handler, clock=clock) as client:
        [obs] = await client.chat(request(stream=False))
    assert obs.ok
    assert (obs.headers_s, obs.first_token_s, obs.end_s, obs.ttft_s) == (0.2, 0.5, 0.5, 0.5)
    assert obs.usage_in_stream is None and obs.usage.cached_tokens == 8
    assert obs.tool_calls == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    ]
    assert obs.request_id == "r1" and obs.chunk_count == 0


async def test_plain_content_parts() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:"}}]

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": {"content": parts}}]})

    async with client_for(handler) as client:
        [obs] = await client.chat(request(stream=False))
    assert obs.ok and obs.content == "a" and obs.content_parts == parts


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b'{"choices": [', FailureKind.bad_response),
        (b"<html>Bad gateway</html>", FailureKind.bad_response),
        (b"[1, 2]", FailureKind.bad_response),
        (b"[" * 100_000, FailureKind.bad_response),
        (b'{"choices": []}', FailureKind.empty_response),
        (b'{"object": "chat.completion"}', FailureKind.empty_response),
        (b'{"choices": [{"message": {"content": ""}}]}', FailureKind.empty_response),
        # Cut at max_tokens and decoded to nothing: an answer (its usage is the signal).
        (
            b'{"choices": [{"message": {"content": ""}, "finish_reason": "length"}],'
            b' "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}}',
            FailureKind.ok,
        ),
        # ... but not when the gateway reports no output token at all.
        (
            b'{"choices": [{"message": {"content": ""}, "finish_reason": "length"}],'
            b' "usage": {"prompt_tokens": 9, "completion_tokens": 0, "total_tokens": 9}}',
            FailureKind.empty_response,
        ),
        (
            b'{"error": {"message": "quota", "type": "insufficient_quota"}}',
            FailureKind.bad_response,
        ),
    ],
)
async def test_plain_bad_bodies(body: bytes, kind: FailureKind) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    async with client_for(handler) as client:
        [obs] = await client.chat(request(stream=False))
    assert obs.failure is kind


async def test_plain_too_large() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 5000)

    gw = make_gw(limits={"max_response_bytes": 4096})
    async with client_for(handler, gw) as client:
        [obs] = await client.chat(request(stream=False))
    assert obs.failure is FailureKind.too_large


# --- errors, keys ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (401, {"message": "bad key", "type": "invalid_request_error"}, FailureKind.auth),
        (403, {"message": "region", "type": "permission_error"}, FailureKind.forbidden),
        (404, {"message": "no such model"}, FailureKind.model_not_found),
        (400, {"message": "x", "code": "model_not_found"}, FailureKind.model_not_found),
        (400, {"message": "y", "code": "context_length_exceeded"}, FailureKind.context_length),
        (400, {"message": "maximum context length is 8192 tokens"}, FailureKind.context_length),
        (400, {"message": "bad temperature"}, FailureKind.http_4xx),
        (422, {"message": "unprocessable"}, FailureKind.http_4xx),
        (429, {"message": "slow down"}, FailureKind.rate_limited),
        (500, {"message": "boom"}, FailureKind.http_5xx),
        (529, {"type": "overloaded_error", "message": "Overloaded"}, FailureKind.http_5xx),
    ],
)
async def test_status_errors(status: int, error: dict[str, Any], kind: FailureKind) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": error})

    gw = make_gw(retries={"max_attempts": 1})
    async with client_for(handler, gw) as client:
        [obs] = await client.chat(request())
    assert obs.failure is kind and obs.status == status
    assert obs.error_message == error["message"]
    assert obs.error_type == error.get("type") and obs.error_code == error.get("code")


async def test_key_scrubbed_from_observation(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        msg = f"Incorrect API key provided: {KEY}; also sk-proj-ABCDEFGH12345678 " + "z" * 500
        return httpx.Response(401, json={"error": {"message": msg, "code": KEY}})

    async with client_for(handler, make_gw(monkeypatch)) as client:
        [obs] = await client.chat(request())
    assert obs.failure is FailureKind.auth
    assert KEY not in repr(obs) and "sk-proj" not in repr(obs)
    assert obs.error_message is not None and len(obs.error_message) <= 300
    assert obs.error_message.startswith("Incorrect API key provided: [redacted]; also [redacted]")
    assert obs.error_code == "[redacted]"


def test_scrub() -> None:
    assert scrub(None, "k") is None
    assert scrub("key=abc123 x", "abc123") == "key=[redacted] x"
    assert scrub("Bearer sk-ant-api03-abcdEFGH_1234-xyz end", None) == "Bearer [redacted] end"
    assert scrub("sk-short", None) == "sk-short"
    long = scrub("a" * 290 + "SECRETKEY" * 3, "SECRETKEY")
    assert long is not None and len(long) <= 300 and "SECRET" not in long


def test_parse_error_body_shapes() -> None:
    openai = b'{"error": {"message": "m", "type": "t", "code": 42}}'
    assert parse_error_body(openai) == ErrorInfo("t", "42", "m")
    anthropic = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert parse_error_body(anthropic) == ErrorInfo("overloaded_error", None, "Overloaded")
    assert parse_error_body({"error": "plain string"}).message == "plain string"
    assert parse_error_body({"detail": "Not Found"}).message == "Not Found"
    assert parse_error_body(b"<html>502</html>").message == "an HTML error page"
    assert parse_error_body(b"") == ErrorInfo()
    assert parse_error_body(b"[1]") == ErrorInfo()


# --- classification table ------------------------------------------------------------------

_REQ = httpx.Request("GET", "http://x/")

EXPECTED_EXC: dict[type[Exception], tuple[FailureKind, FailureKind]] = {
    httpx.ConnectTimeout: (FailureKind.timeout_connect, FailureKind.timeout_connect),
    httpx.PoolTimeout: (FailureKind.timeout_connect, FailureKind.timeout_connect),
    httpx.ReadTimeout: (FailureKind.timeout_idle, FailureKind.timeout_idle),
    httpx.WriteTimeout: (FailureKind.timeout_idle, FailureKind.timeout_idle),
    httpx.TimeoutException: (FailureKind.timeout_idle, FailureKind.timeout_idle),
    httpx.ConnectError: (FailureKind.connect, FailureKind.connect),
    httpx.ProxyError: (FailureKind.connect, FailureKind.connect),
    httpx.UnsupportedProtocol: (FailureKind.connect, FailureKind.connect),
    httpx.RemoteProtocolError: (FailureKind.connect, FailureKind.stream_parse),
    httpx.LocalProtocolError: (FailureKind.bad_response, FailureKind.stream_parse),
    httpx.ProtocolError: (FailureKind.bad_response, FailureKind.stream_parse),
    httpx.ReadError: (FailureKind.connect, FailureKind.stream_parse),
    httpx.WriteError: (FailureKind.connect, FailureKind.stream_parse),
    httpx.CloseError: (FailureKind.connect, FailureKind.stream_parse),
    httpx.NetworkError: (FailureKind.connect, FailureKind.stream_parse),
    httpx.DecodingError: (FailureKind.bad_response, FailureKind.bad_response),
    httpx.TooManyRedirects: (FailureKind.bad_response, FailureKind.bad_response),
    httpx.TransportError: (FailureKind.connect, FailureKind.stream_parse),
    httpx.RequestError: (FailureKind.connect, FailureKind.stream_parse),
    httpx.HTTPError: (FailureKind.bad_response, FailureKind.bad_response),
    httpx.HTTPStatusError: (FailureKind.http_5xx, FailureKind.http_5xx),
    httpx.InvalidURL: (FailureKind.connect, FailureKind.connect),
    httpx.CookieConflict: (FailureKind.bad_response, FailureKind.bad_response),
    httpx.StreamError: (FailureKind.bad_response, FailureKind.bad_response),
    httpx.StreamConsumed: (FailureKind.bad_response, FailureKind.bad_response),
    httpx.StreamClosed: (FailureKind.bad_response, FailureKind.bad_response),
    httpx.ResponseNotRead: (FailureKind.bad_response, FailureKind.bad_response),
    httpx.RequestNotRead: (FailureKind.bad_response, FailureKind.bad_response),
}


def _instance(cls: type[Exception]) -> Exception:
    if cls is httpx.HTTPStatusError:
        return cls("x", request=_REQ, response=httpx.Response(503, request=_REQ))
    for args in ((), ("boom",)):
        try:
            return cls(*args)
        except TypeError:
            continue
    raise AssertionError(f"cannot build {cls}")


def test_every_httpx_exception_is_mapped() -> None:
    exported = {c for c in vars(httpx).values() if isinstance(c, type) and issubclass(c, Exception)}
    assert exported == set(EXPECTED_EXC), "httpx changed its exceptions: extend classify"
    for cls, (before, after) in EXPECTED_EXC.items():
        exc = _instance(cls)
        assert classify_exception(exc, after_headers=False) is before, cls
        assert classify_exception(exc, after_headers=True) is after, cls


def test_tls_errors() -> None:
    try:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate verify failed")
        except ssl.SSLError as inner:
            raise httpx.ConnectError("connect failed") from inner
    except httpx.ConnectError as exc:
        assert classify_exception(exc, after_headers=False) is FailureKind.tls
    err = httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number")
    assert classify_exception(err, after_headers=False) is FailureKind.tls
    assert classify_exception(ssl.SSLError(), after_headers=True) is FailureKind.tls
    refused = ConnectionRefusedError(111, "refused")
    assert classify_exception(refused, after_headers=False) is FailureKind.connect
    assert classify_exception(ValueError("?"), after_headers=True) is FailureKind.bad_response


def test_every_status_class_is_mapped() -> None:
    expected = {
        100: FailureKind.bad_response,
        204: FailureKind.bad_response,
        301: FailureKind.bad_response,
        400: FailureKind.http_4xx,
        401: FailureKind.auth,
        402: FailureKind.http_4xx,
        403: FailureKind.forbidden,
        404: FailureKind.model_not_found,
        408: FailureKind.http_4xx,
        413: FailureKind.http_4xx,
        429: FailureKind.rate_limited,
        500: FailureKind.http_5xx,
        502: FailureKind.http_5xx,
        503: FailureKind.http_5xx,
        529: FailureKind.http_5xx,
        599: FailureKind.http_5xx,
    }
    for status, kind in expected.items():
        assert classify_status(status, ErrorInfo()) is kind, status
    for status in range(100, 600):
        assert classify_status(status, ErrorInfo()) is not FailureKind.ok
    ctx = ErrorInfo(message="prompt is too long: 300000 tokens > 200000 maximum")
    assert classify_status(400, ctx) is FailureKind.context_length
    assert classify_status(413, ctx) is FailureKind.context_length
    assert classify_status(500, ctx) is FailureKind.http_5xx
    assert classify_status(503, ErrorInfo(code="model_not_found")) is FailureKind.model_not_found
    assert classify_status(429, ErrorInfo(message="context window")) is FailureKind.rate_limited


# --- transport failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectTimeout("slow"), FailureKind.timeout_connect),
        (httpx.ConnectError("refused"), FailureKind.connect),
        (httpx.RemoteProtocolError("Server disconnected"), FailureKind.connect),
    ],
)
async def test_transport_errors_before_headers(exc: Exception, kind: FailureKind) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise exc

    async with client_for(handler, make_gw(retries={"max_attempts": 1})) as client:
        [obs] = await client.chat(request())
    assert obs.failure is kind and obs.headers_s is None and obs.end_s is not None
    assert obs.error_message


async def test_read_timeout_mid_stream_is_idle() -> None:
    class Stalls(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield sse(delta("a"))
            raise httpx.ReadTimeout("stalled")

    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Stalls())

    async with client_for(handler) as client:
        [obs] = await client.chat(request())
    assert obs.failure is FailureKind.timeout_idle and obs.content == "a"


# --- retries -------------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def scripted(*responses: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    it = iter(responses)
    return lambda req: next(it)


async def test_retry_after_seconds_then_success() -> None:
    sleep = Recorder()
    handler = scripted(
        httpx.Response(429, headers={"retry-after": "2"}, json={"error": {"message": "slow"}}),
        httpx.Response(200, json={"choices": [{"message": {"content": "ok"}}]}),
    )
    async with client_for(handler, sleep=sleep) as client:
        attempts = await client.chat(request(stream=False))
    assert [(o.attempt, o.failure) for o in attempts] == [
        (1, FailureKind.rate_limited),
        (2, FailureKind.ok),
    ]
    assert attempts[0].retry_after_s == 2.0
    assert sleep.sleeps == [2.0]


async def test_retry_after_http_date_and_cap() -> None:
    sleep = Recorder()
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=3600), usegmt=True)
    handler = scripted(
        httpx.Response(503, headers={"retry-after": when}),
        httpx.Response(503, headers={"retry-after-ms": "1500"}),
        httpx.Response(503),
    )
    gw = make_gw(retries={"max_attempts": 3, "base_delay": 1, "max_delay": 30})
    async with client_for(handler, gw, sleep=sleep) as client:
        attempts = await client.chat(request())
    assert [o.failure for o in attempts] == [FailureKind.http_5xx] * 3
    assert [o.attempt for o in attempts] == [1, 2, 3]
    assert sleep.sleeps == [30.0, 1.5]  # capped at max_delay; no sleep after the last


async def test_backoff_full_jitter_and_final_errors_not_retried() -> None:
    sleep = Recorder()
    handler = scripted(*(httpx.Response(500) for _ in range(4)))
    gw = make_gw(retries={"max_attempts": 4, "base_delay": 1, "max_delay": 3})
    async with client_for(handler, gw, sleep=sleep, rand=lambda: 0.5) as client:
        attempts = await client.chat(request())
    assert len(attempts) == 4 and sleep.sleeps == [0.5, 1.0, 1.5]

    sleep = Recorder()
    async with client_for(scripted(httpx.Response(400)), sleep=sleep) as client:
        attempts = await client.chat(request())
    assert len(attempts) == 1 and attempts[0].failure is FailureKind.http_4xx
    assert sleep.sleeps == []


def test_backoff_and_retry_after_helpers() -> None:
    assert backoff_delay(1, base=2, cap=10, retry_after=None, rand=lambda: 1.0) == 2
    assert backoff_delay(5, base=2, cap=10, retry_after=None, rand=lambda: 1.0) == 10
    assert backoff_delay(5, base=2, cap=10, retry_after=4, rand=lambda: 0.0) == 4
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "Thu, 01 Jan 2026 00:00:07 GMT"}, now) == 7
    assert parse_retry_after({"retry-after": "Wed, 31 Dec 2025 00:00:00 GMT"}, now) == 0
    assert parse_retry_after({"retry-after": "soon"}, now) is None
    assert parse_retry_after({}, now) is None


# --- limits --------------------------------------------------------------------------------


async def test_concurrency_is_bounded() -> None:
    in_flight = peak = 0

    async def handler(req: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json={"choices": [{"message": {"content": "x"}}]})

    async with client_for(handler, make_gw(max_concurrency=2)) as client:
        results = await asyncio.gather(*(client.chat(request(stream=False)) for _ in range(7)))
    assert all(r[-1].ok for r in results) and peak == 2


async def test_rate_limiter_sliding_window() -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        clock.t += s

    rl = RateLimiter(2, clock=clock, sleep=sleep)
    await rl.acquire()
    clock.t = 10.0
    await rl.acquire()
    clock.t = 20.0
    await rl.acquire()  # waits until the first start leaves the window, at t=60
    assert slept == [40.0] and clock.t == 60.0
    await rl.acquire()  # the one from t=10 leaves at t=70
    assert slept == [40.0, 10.0]


async def test_rate_limit_applies_to_every_attempt() -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)
        clock.t += s

    limiter = Limiter(4, RateLimiter(1, clock=clock, sleep=sleep))
    handler = scripted(httpx.Response(500), httpx.Response(500))
    gw = make_gw(retries={"max_attempts": 2, "base_delay": 0, "max_delay": 0})
    async with client_for(handler, gw, limiter=limiter, sleep=Recorder()) as client:
        attempts = await client.chat(request())
    assert len(attempts) == 2 and slept == [60.0]


def test_sharded_pool_fills_lowest_shard_first() -> None:
    made: list[int] = []

    def make(connections: int) -> httpx.AsyncClient:
        made.append(connections)
        return httpx.AsyncClient()

    pool = ShardedPool(make, 20, shard_size=8)
    assert made == [8, 8, 4]
    first = pool.acquire()
    pool.release(first)
    assert pool.acquire() is first  # sequential traffic reuses one shard
    taken = [pool.acquire() for _ in range(19)]
    assert [pool.clients.index(c) for c in taken] == [0] * 7 + [1] * 8 + [2] * 4
    pool.release(taken[3])
    assert pool.acquire() is pool.clients[0]


# --- list_models ---------------------------------------------------------------------------


async def test_list_models(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        assert req.url.path == "/v1/models" and req.headers["authorization"] == f"Bearer {KEY}"
        data = [{"id": "b"}, {"id": "a"}, {"id": "b"}, {"object": "model"}]
        return httpx.Response(200, json={"object": "list", "data": data})

    async with client_for(handler, make_gw(monkeypatch)) as client:
        assert await client.list_models() == ["b", "a"]


async def test_list_models_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": f"bad key {KEY}"}})

    async with client_for(denied, make_gw(monkeypatch)) as client:
        with pytest.raises(StatusError) as err:
            await client.list_models()
    assert err.value.kind is FailureKind.auth and err.value.status == 401
    assert KEY not in str(err.value) and "gw: GET /models: HTTP 401 (auth)" in str(err.value)

    async with client_for(lambda r: httpx.Response(200, text="nope")) as client:
        with pytest.raises(ProtocolError) as perr:
            await client.list_models()
    assert perr.value.kind is FailureKind.bad_response

    async with client_for(lambda r: httpx.Response(200, json={"models": []})) as client:
        with pytest.raises(ProtocolError):
            await client.list_models()

    def refused(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async with client_for(refused) as client:
        with pytest.raises(TransportError) as terr:
            await client.list_models()
    assert terr.value.kind is FailureKind.connect


def test_unknown_protocol_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(PROTOCOLS, "openai")
    with pytest.raises(ValueError, match="protocol 'openai' is not available"):
        GatewayClient(make_gw())
