"""A scripted OpenAI-compatible fault server on 127.0.0.1 (Starlette + uvicorn in a thread).

The request's ``model`` picks the script: ``"ok"``, ``"status:429"``, ``"timing:300"``...
(see `SCRIPTS`; an unknown script name answers like ``ok``), directly or through
`FaultServer.aliases` (``{"slow": "delay:300"}``). Dishonest relays are scripts
too: ``cache:fake`` (claims cached tokens, no speed-up), ``inflate:1.2`` (completion counts
multiplied), ``echo:header`` / ``echo:body`` / ``echo:masked`` (the API key sent back),
``hostile:...`` (control characters in names and content), ``html:502`` (a proxy's page).
The server records what it saw (client ports, so tests can count
connections; request bodies and headers; how often each body came before, so a retry is
recognisable) and, for ``timing``, its own
`time.perf_counter` stamps of request receipt and of the first content chunk, keyed by
the ``x-request-id`` it returns. Client and server share the process, hence the clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
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
    digest: str = ""  # SHA-256 of the body (model included)
    repeat: int = 0  # earlier requests with the same body (retries)


@dataclass
class FaultServer:
    """The running server; `seen` lists requests in arrival order."""

    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    ids: dict[str, Seen] = field(default_factory=dict)
    #: what ``GET /v1/models`` lists (with the key ``good-key``)
    models: list[str] = field(default_factory=lambda: ["gpt-4o", "gpt-4o-mini", "gpt-4o"])
    #: prompt prefixes already answered (the ``cache`` scripts' memory), oldest first
    prefixes: dict[str, None] = field(default_factory=dict)
    #: keep `seen` bounded (a soak runs for hours); None keeps everything
    keep_seen: int | None = None
    #: model name -> script, for readable model labels
    aliases: dict[str, str] = field(default_factory=dict)
    #: request body digest -> times seen (retries repeat a body)
    bodies: dict[str, int] = field(default_factory=dict)

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


def flaky(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """503 on every attempt of about half the distinct request bodies (retries do not
    help), an honest answer for the others."""
    if int(seen.digest[:2] or "0", 16) % 2:
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


# --------------------------------------------------------------------- dishonest relays
_WORD = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """The fault server's tokenizer: one token per word or punctuation mark."""
    return len(_WORD.findall(text))


def prompt_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens of a request: its messages' tokens plus 3 per message (a template)."""
    return sum(3 + count_tokens(str(m.get("content") or "")) for m in body.get("messages", []))


def _key_of(seen: Seen) -> str:
    auth = seen.headers.get("authorization", "")
    return auth.removeprefix("Bearer ").strip() or seen.headers.get("x-api-key", "")


def _text_answer(seen: Seen, factor: float, stream: bool) -> Response:
    """An answer that stops early; ``completion_tokens`` is the honest count × `factor`
    (``total_tokens`` kept consistent), so only a comparison with the text can tell."""
    n = 30 + int(hashlib.sha256(json.dumps(seen.body).encode()).hexdigest(), 16) % 40
    words = " ".join(f"w{i % 7}" for i in range(n))
    text = f"Here is the answer: {words}."
    honest = count_tokens(text)
    completion = round(honest * factor)
    prompt = prompt_tokens(seen.body)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion}  # fmt: skip
    if not stream:
        body = _completion(text)
        body["usage"] = usage
        return JSONResponse(body)

    async def gen() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        for piece in re.findall(r"\S+\s*", text):
            yield chunk({"content": piece})
        yield chunk({}, "stop")
        yield chunk(None, usage=usage)
        yield DONE

    return _sse(gen())


def inflate(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """``inflate:1.2``: completion counts × 1.2 on every answer (``inflate:1`` is honest)."""
    return _text_answer(seen, float(arg or 1.0), stream)


def echo(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """Sends the caller's API key back: ``echo:header`` in ``x-request-id``, ``echo:masked``
    as ``sk-nex-****<last 10>`` in the header and the body, ``echo:body`` in a 500 error."""
    key = _key_of(seen)
    masked = f"sk-nex-****{key[-10:]}"
    if arg == "body":
        err = {"message": f"upstream rejected key {key} (shown as {masked})", "type": "server"}
        return JSONResponse({"error": err}, status_code=500, headers={"x-request-id": key})
    if arg == "masked":
        body = _completion(f"Your key {masked} is valid.")
        return JSONResponse(body, headers={"x-request-id": f"req-{masked}"})
    return JSONResponse(_completion(), headers={"x-request-id": key, "x-echo-key": key})


HOSTILE_NAMES = [
    "evil\nINFO aione_probe: forged log line",
    "\x1b[2J\x1b[31mred-model",
    "tab\tand\rreturn\x07bell",
]


def hostile(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """Echoes the requested model name (control characters and all) and answers with
    markup, terminal escapes and a newline-forged log line."""
    content = "<script>alert(1)</script>\x1b[31m\nERROR forged line\u202e"
    body = _completion(content)
    body["model"] = seen.model
    body["id"] = "chatcmpl-\x1b[1m\nforged"
    if not stream:
        return JSONResponse(body)

    async def gen() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""}, model=seen.model)
        yield chunk({"content": content}, model=seen.model)
        yield chunk({}, "stop", model=seen.model)
        if usage:
            yield chunk(None, usage=USAGE, model=seen.model)
        yield DONE

    return _sse(gen())


NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n" + "<!-- padding -->\r\n" * 6
)


def html(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """A reverse proxy's HTML error page (``html:502``) instead of a JSON error."""
    return Response(NGINX_502, status_code=int(arg or 502), media_type="text/html")


#: TTFT model of the ``cache`` scripts: fixed overhead plus prefill per uncached token.
CACHE_BASE_S = 0.03
CACHE_PREFILL_S_PER_TOKEN = 0.00006


def cache(arg: str, stream: bool, usage: bool, seen: Seen) -> Response:
    """Placeholder so ``cache`` is a known script; `cache_answer` does the work."""
    raise AssertionError("cache is answered by cache_answer")


async def cache_answer(server: FaultServer, arg: str, stream: bool, seen: Seen) -> Response:
    """Prompt caching keyed by the first message (the long prefix).

    ``cache:real`` answers a repeated prefix faster and reports 90 % cached; ``cache:fake``
    reports 90 % cached on every repeat with no speed-up (10 % slower, as observed);
    ``cache:nofield`` is as fast as ``real`` on repeats but reports no cache field.
    """
    messages = seen.body.get("messages") or [{}]
    prefix = hashlib.sha256(str(messages[0].get("content")).encode()).hexdigest()
    repeat = prefix in server.prefixes
    server.prefixes[prefix] = None
    while len(server.prefixes) > 1000:
        server.prefixes.pop(next(iter(server.prefixes)))
    prompt = prompt_tokens(seen.body)
    cached = int(prompt * 0.9) if repeat and arg != "nofield" else 0
    fast = repeat and arg in ("real", "nofield")
    uncached = prompt - int(prompt * 0.9) if fast else prompt
    delay = CACHE_BASE_S + CACHE_PREFILL_S_PER_TOKEN * uncached
    if arg == "fake" and repeat:
        delay *= 1.1
    await asyncio.sleep(delay)
    body = _completion("4")
    body["usage"] = {"prompt_tokens": prompt, "completion_tokens": 1,
                     "total_tokens": prompt + 1}  # fmt: skip
    if arg != "nofield":
        body["usage"]["prompt_tokens_details"] = {"cached_tokens": cached}
    if not stream:
        return JSONResponse(body)

    async def gen() -> AsyncIterator[bytes]:
        yield chunk({"role": "assistant", "content": ""})
        yield chunk({"content": "4"})
        yield chunk({}, "stop")
        yield chunk(None, usage=body["usage"])
        yield DONE

    return _sse(gen())


SCRIPTS: dict[str, Script] = {
    f.__name__: f
    for f in (ok, status, malformed, cut, silent, stall, slow, huge, timing, tools, empty, inband,
              jsonstream, inflate, echo, hostile, html, cache, delay, flaky, ratelimit, truncate)
}  # fmt: skip


def create_app(server: FaultServer) -> Starlette:
    """The Starlette app behind `server`."""

    async def chat(request: Request) -> Response:
        received = time.perf_counter()
        body = await request.json()
        model = str(body.get("model", "ok"))
        client = request.scope.get("client") or ("", 0)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        repeat = server.bodies.pop(digest, 0)
        server.bodies[digest] = repeat + 1  # most recent last
        while len(server.bodies) > 10_000:
            server.bodies.pop(next(iter(server.bodies)))
        seen = Seen(model, body, dict(request.headers), client[1], received,
                    digest=digest, repeat=repeat)  # fmt: skip
        server.seen.append(seen)
        if server.keep_seen is not None and len(server.seen) > server.keep_seen:
            del server.seen[: -server.keep_seen]
            server.ids.clear()
        name, _, arg = server.aliases.get(model, model).partition(":")
        stream = bool(body.get("stream"))
        usage = bool((body.get("stream_options") or {}).get("include_usage"))
        script = SCRIPTS.get(name, ok)
        if script is cache:
            response = await cache_answer(server, arg, stream, seen)
        else:
            response = script(arg, stream, usage, seen)
        if "x-request-id" not in response.headers:
            rid = uuid.uuid4().hex
            server.ids[rid] = seen
            response.headers["x-request-id"] = rid
        return response

    async def models(request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer good-key":
            err = {"message": f"Incorrect API key provided: {LEAKED_KEY}", "type": "auth"}
            return JSONResponse({"error": err}, status_code=401)
        data = [{"id": m, "object": "model"} for m in server.models]
        return JSONResponse({"object": "list", "data": data})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


@contextmanager
def _serving(app: Starlette) -> Iterator[int]:
    """Serve `app` with uvicorn in a thread on a free loopback port; yields the port."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # is TCP, and without it Nagle + delayed ACK hold small SSE writes for ~40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
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
        yield sock.getsockname()[1]
    finally:
        uv.should_exit = True
        thread.join(5)
        sock.close()


@contextmanager
def running() -> Iterator[FaultServer]:
    """Start the fault server on a free loopback port; stop it on exit."""
    server = FaultServer()
    with _serving(create_app(server)) as port:
        server.port = port
        yield server


# --------------------------------------------------------------------- a relay in front
def create_relay(upstream: str, factor: float) -> Starlette:
    """A dishonest relay in front of `upstream` (an OpenAI-compatible root URL): plain
    chat completions pass through with ``completion_tokens`` multiplied by `factor` and
    ``total_tokens`` kept consistent; ``GET /v1/models`` passes through."""
    import httpx

    client = httpx.AsyncClient(base_url=upstream, timeout=300)

    async def chat(request: Request) -> Response:
        body = await request.json()
        body["stream"] = False
        body.pop("stream_options", None)
        upstream_response = await client.post("/v1/chat/completions", json=body)
        data = upstream_response.json()
        usage = data.get("usage") or {}
        if isinstance(usage.get("completion_tokens"), int):
            usage["completion_tokens"] = round(usage["completion_tokens"] * factor)
            usage["total_tokens"] = usage.get("prompt_tokens", 0) + usage["completion_tokens"]
        return JSONResponse(data, status_code=upstream_response.status_code)

    async def models(request: Request) -> Response:
        r = await client.get("/v1/models")
        return JSONResponse(r.json(), status_code=r.status_code)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


@contextmanager
def relay(upstream: str, factor: float) -> Iterator[str]:
    """Run `create_relay` on a free loopback port; yields its ``/v1`` base URL."""
    with _serving(create_relay(upstream, factor)) as port:
        yield f"http://127.0.0.1:{port}/v1"
