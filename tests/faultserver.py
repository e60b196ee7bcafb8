"""A scripted OpenAI-compatible fault server on 127.0.0.1 (Starlette + uvicorn in a thread).

The request's ``model`` picks the script: ``"ok"``, ``"status:429"``, ``"timing:300"``...
(see `SCRIPTS`), directly or through `FaultServer.aliases` (``{"slow": "delay:300"}``).
The server records what it saw (client ports, so tests can count connections; request
bodies and headers; how often each body came before, so a retry is recognisable) and, for
``timing``, its own `time.perf_counter` stamps of request receipt and of the first content
chunk, keyed by the ``x-request-id`` it returns. Client and server share the process,
hence the clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

LEAKED_KEY = "sk-live-abcdefghijklmnop1234"


@dataclass
class Seen:
    """One request as the server saw it."""

    model: str
    body: dict[str, Any]
    headers: dict[str, str]
    client_port: int
    received: float
    first_content: float | None = None
    repeat: int = 0  # earlier requests with the same model and body (retries)


@dataclass
class FaultServer:
    """The running server; `seen` lists requests in arrival order."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    ids: dict[str, Seen] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # model name -> script
    bodies: dict[str, int] = field(default_factory=dict)  # body digest -> times seen

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, including ``/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def by_request_id(self, request_id: str) -> Seen:
        """The request the server answered with this ``x-request-id``."""
        return self.ids[request_id]


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    """One ``chat.completion.chunk`` SSE event."""
    obj: dict[str, Any] = {
        "id": "chatcmpl-fault",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fault-model",
        "system_fingerprint": "fp_fault",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    obj.update(extra)
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 3,
    "total_tokens": 15,
    "prompt_tokens_details": {"cached_tokens": 4},
    "completion_tokens_details": {"reasoning_tokens": 1},
}
DONE = b"data: [DONE]\n\n"

Script = Callable[[str, bool, bool, Seen], Response]


def _completion(content: str | None = "Hello world", **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fault-model",
        "system_fingerprint": "fp_fault",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }


def _media(stream: bool) -> str:
    return "text/event-stream" if stream else "application/json"


def _sse(gen: AsyncIterator[bytes], **headers: str) -> StreamingResponse:
    return StreamingResponse(gen, media_type="text/event-stream", headers=headers)


async def _ok_events(
    usage: bool, *, keepalive: bool = False, done: bool = True
) -> AsyncIterator[bytes]:
    yield chunk({"role": "assistant", "content": ""})
    if keepalive:
        yield b": keep-alive\r\n\r\n"
    yield chunk({"content": "Hello"})
    if keepalive:
        yield b": keep-alive\n\n: another\n\n"
    yield chunk({"content": " world"})
    yield chunk({}, "stop")
    if usage:
        yield chunk(None, usage=USAGE)
    if done:
        yield DONE
    if keepalive:
        yield b": trailing bytes after done\n\n"


def ok(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """A normal answer; ``ok:nousage`` ignores include_usage, ``ok:keepalive`` adds comments,
    ``ok:nodone`` ends without [DONE]."""
    if not stream:
        body = _completion()
        if arg == "nousage":
            del body["usage"]
        return JSONResponse(body)
    usage = usage and arg != "nousage"
    return _sse(_ok_events(usage, keepalive=arg == "keepalive", done=arg != "nodone"))


def status(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """An HTTP error with an OpenAI error body (``status:429``, ``status:context``...)."""
    bodies: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {
        "401": (
            401,
            {
                "message": f"Incorrect API key provided: {LEAKED_KEY}.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            },
            {},
        ),
        "403": (403, {"message": "Country not supported", "type": "permission_denied"}, {}),
        "404": (
            404,
            {
                "message": "The model `nope` does not exist",
                "type": "invalid_request_error",
                "code": "model_not_found",
            },
            {},
        ),
        "context": (
            400,
            {
                "message": "This model's maximum context length is 8192 tokens.",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            },
            {},
        ),
        "429": (
            429,
            {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
            {"retry-after": "0"},
        ),
    }
    if arg in bodies:
        code, err, headers = bodies[arg]
    else:
        code, err, headers = int(arg), {"message": f"upstream error {arg}"}, {}
    return JSONResponse({"error": err}, status_code=code, headers=headers)


def malformed(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """A 200 whose body is not JSON (plain) or whose events are not JSON (stream)."""
    if not stream:
        return Response(b'{"choices": [', media_type="application/json")

    async def gen() -> AsyncIterator[bytes]:
        yield chunk({"content": "x"})
        yield b"data: {not json\n\n"

    return _sse(gen())


def cut(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """The server drops the connection mid-body."""

    async def gen() -> AsyncIterator[bytes]:
        if stream:
            yield chunk({"role": "assistant"})
            yield chunk({"content": "partial"})
        else:
            yield b'{"id": "chatcmpl-fault", "choices": [{"index": 0, "mess'
        await asyncio.sleep(0.05)
        raise ConnectionAbortedError("scripted cut")

    return StreamingResponse(gen(), media_type=_media(stream))


def silent(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """Never produces a content token: role chunk then keep-alives (stream), or a late body."""
    seconds = float(arg or 2)

    async def gen() -> AsyncIterator[bytes]:
        if not stream:
            await asyncio.sleep(seconds)
            yield json.dumps(_completion()).encode()
            return
        yield chunk({"role": "assistant", "content": ""})
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.sleep(0.05)
            yield b": keep-alive\n\n"

    return StreamingResponse(
        gen(), media_type="text/event-stream" if stream else "application/json"
    )


def stall(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """Starts answering, then sends nothing for `arg` seconds."""
    seconds = float(arg or 2)

    async def gen() -> AsyncIterator[bytes]:
        if stream:
            yield chunk({"content": "Hel"})
        else:
            yield b'{"id": "chatcmpl-fault", '
        await asyncio.sleep(seconds)
        yield chunk({"content": "lo"}, "stop") if stream else b"}"

    return StreamingResponse(
        gen(), media_type="text/event-stream" if stream else "application/json"
    )


def slow(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """A content chunk every 100 ms for `arg` seconds: never idle, but long."""
    seconds = float(arg or 2)

    async def gen() -> AsyncIterator[bytes]:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            yield chunk({"content": "."})
            await asyncio.sleep(0.1)
        yield chunk({}, "stop")
        yield DONE

    return _sse(gen())


def huge(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """One 20 MiB event (or body), generated lazily in 64 KiB pieces."""
    piece = b"x" * 65536

    async def gen() -> AsyncIterator[bytes]:
        yield b'data: {"choices": [{"index": 0, "delta": {"content": "' if stream else b'{"a": "'
        for _ in range(320):
            yield piece
        yield b'"}}]}\n\n' if stream else b'"}'

    return StreamingResponse(
        gen(), media_type="text/event-stream" if stream else "application/json"
    )


def timing(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """Role chunk at once, first content after `arg` ms (stamped), then one chunk per 20 ms."""
    delay = float(arg or 300) / 1000.0

    async def gen() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        await asyncio.sleep(delay)
        first = chunk({"content": "t0"})
        seen.first_content = time.perf_counter()
        yield first
        for i in range(1, 10):
            await asyncio.sleep(0.02)
            yield chunk({"content": f" t{i}"})
        yield chunk({}, "stop")
        yield chunk(None, usage=USAGE)
        yield DONE

    return _sse(gen())


def tools(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """Two tool calls, streamed interleaved by index."""
    if not stream:
        calls = [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        ]  # fmt: skip
        body = _completion(None, tool_calls=calls)
        body["choices"][0]["finish_reason"] = "tool_calls"
        return JSONResponse(body)

    def tc(index: int, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": index, **fields}]}

    async def gen() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": None})
        yield chunk(tc(0, id="call_a", type="function", function={"name": "get_weather"}))
        yield chunk(tc(1, id="call_b", type="function", function={"name": "get_time"}))
        yield chunk(tc(0, function={"arguments": '{"city": '}))
        yield chunk(tc(1, function={"arguments": '{"tz": "UTC"}'}))
        yield chunk(tc(0, function={"arguments": '"Paris"}'}))
        yield chunk({}, "tool_calls")
        yield chunk(None, usage=USAGE)
        yield DONE

    return _sse(gen())


def empty(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """A well-formed 200 with nothing in it."""
    if not stream:
        body = _completion()
        body["choices"] = []
        return JSONResponse(body)

    async def gen() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        yield chunk({}, "stop")
        yield DONE

    return _sse(gen())


def inband(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """An error object inside a 200 (mid-stream for streams)."""
    err = {"error": {"message": "The server had an error", "type": "server_error"}}
    if not stream:
        return JSONResponse(err)

    async def gen() -> AsyncIterator[bytes]:
        yield chunk({"content": "Hi"})
        yield b"data: " + json.dumps(err).encode() + b"\n\n"

    return _sse(gen())


def jsonstream(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """Ignores ``stream: true`` and answers with one JSON body."""
    return JSONResponse(_completion())


def delay(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """An honest answer whose first byte comes `arg` ms after the request (a model's TTFT)."""
    seconds = float(arg or 200) / 1000.0

    async def gen() -> AsyncIterator[bytes]:
        await asyncio.sleep(seconds)
        if not stream:
            yield json.dumps(_completion()).encode()
            return
        async for event in _ok_events(usage):
            yield event

    return StreamingResponse(gen(), media_type=_media(stream))


def _body_parity(seen: Seen) -> int:
    digest = hashlib.sha256(json.dumps(seen.body, sort_keys=True).encode()).digest()
    return digest[0] % 2


def flaky(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """503 on every attempt of about half the distinct request bodies (retries do not
    help), an honest answer for the others."""
    if _body_parity(seen):
        return status("503", stream, usage, seen)
    return ok("", stream, usage, seen)


def ratelimit(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """429 with ``Retry-After: 0`` for the first attempt of every request, then an honest
    answer to its retry (the same body): half the attempts limited, no request lost."""
    if seen.repeat % 2 == 0:
        return status("429", stream, usage, seen)
    return ok("", stream, usage, seen)


def truncate(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """A relay that silently caps output: usage says ``max_tokens`` completion tokens, and
    finish_reason says "stop"."""
    limit = int(seen.body.get("max_tokens") or 16)
    cut = {**USAGE, "completion_tokens": limit, "total_tokens": USAGE["prompt_tokens"] + limit}
    if not stream:
        body = _completion()
        body["usage"] = cut
        return JSONResponse(body)

    async def gen() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        yield chunk({"content": "Hello"})
        yield chunk({}, "stop")
        if usage:
            yield chunk(None, usage=cut)
        yield DONE

    return _sse(gen())


def down(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """Always a 502 with an HTML page, as a load balancer in front of a dead upstream."""
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    return Response(page, status_code=502, media_type="text/html")


SCRIPTS: dict[str, Script] = {
    f.__name__: f
    for f in (ok, status, malformed, cut, silent, stall, slow, huge, timing, tools, empty, inband,
              jsonstream, delay, flaky, ratelimit, truncate, down)
}  # fmt: skip


def create_app(server: FaultServer) -> Starlette:
    """The Starlette app behind `server`."""

    async def chat(request: Request) -> Response:
        received = time.perf_counter()
        body = await request.json()
        model = str(body.get("model", "ok"))
        client = request.scope.get("client") or ("", 0)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        repeat = server.bodies.get(digest, 0)
        server.bodies[digest] = repeat + 1
        seen = Seen(model, body, dict(request.headers), client[1], received, repeat=repeat)
        server.seen.append(seen)
        name, _, arg = server.aliases.get(model, model).partition(":")
        stream = bool(body.get("stream"))
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        response = SCRIPTS[name](arg, stream, usage, seen)
        rid = uuid.uuid4().hex
        server.ids[rid] = seen
        response.headers["x-request-id"] = rid
        return response

    async def models(request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer good-key":
            err = {"message": f"Incorrect API key provided: {LEAKED_KEY}", "type": "auth"}
            return JSONResponse({"error": err}, status_code=401)
        data = [{"id": m, "object": "model"} for m in ("gpt-4o", "gpt-4o-mini", "gpt-4o")]
        return JSONResponse({"object": "list", "data": data})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


@contextmanager
def running() -> Iterator[FaultServer]:
    """Start the fault server on a free loopback port; stop it on exit."""
    server = FaultServer()
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # is TCP, and without it Nagle + delayed ACK hold small SSE writes for ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server.port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(server),
        log_level="critical",
        access_log=False,
        lifespan="off",
        loop="asyncio",
        timeout_graceful_shutdown=1,
    )
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("fault server did not start")
        time.sleep(0.01)
    try:
        yield server
    finally:
        uv.should_exit = True
        thread.join(5)
        sock.close()
