"""The simulator's HTTP surface (Starlette): OpenAI endpoints, control and dashboard.

Routes:
    GET  /v1/models                  OpenAI model list
    POST /v1/chat/completions        plain JSON or SSE stream (image models: `sim.images`)
    POST /v1/messages                Anthropic Messages, plain or event stream (`sim.anthropic`)
    GET  /api/v1/obs/dashboard       AIone-style usage dashboard (``range_days``)
    GET  /sim/control                current model settings and globals
    POST /sim/control                merge settings: ``{"model": id, ...}`` and/or globals,
                                     ``"clear_cache": true``, ``"clear_log": true``
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import random
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from aione_probe.sim import images
from aione_probe.sim.answers import load_answer_key
from aione_probe.sim.config import (
    GLOBAL_CONTROL_KEYS,
    SimConfig,
    merge_settings,
    settings_from_dict,
    validate_settings,
)
from aione_probe.sim.dashboard import RequestLog, log_completion
from aione_probe.sim.engine import ChatBody, Completion, Engine, parse_body
from aione_probe.sim.protocol import DONE, KEEPALIVE, SimError, completion_id, sse
from aione_probe.sim.tokenizer import Piece, get_tokenizer

_MODEL_CREATED = 1_700_000_000
_KEEPALIVE_EVERY_S = 0.5


class _Cut:
    """Marker yielded by a stream that must drop the connection."""


CUT = _Cut()


@dataclasses.dataclass
class SimState:
    """Everything a running simulator holds (``app.state.sim``)."""

    config: SimConfig
    engine: Engine
    log: RequestLog


def create_app(config: SimConfig) -> Starlette:
    """Build the simulator ASGI app for `config`."""
    # Imported here: these modules use this one's SSEResponse and _Cut.
    from aione_probe.sim import anthropic

    config.validate()
    state = SimState(
        config, Engine(config, load_answer_key(config.resolved_answer_key_dirs())), RequestLog()
    )
    routes = [
        Route("/v1/models", _guard(state, _models), methods=["GET"]),
        Route("/v1/chat/completions", _guard(state, _chat), methods=["POST"]),
        Route("/v1/messages", functools.partial(anthropic.messages, state), methods=["POST"]),
        Route("/api/v1/obs/dashboard", _guard(state, _dashboard), methods=["GET"]),
        Route("/sim/control", _guard(state, _control), methods=["GET", "POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.sim = state
    return app


Handler = Callable[[SimState, Request], Any]


def _guard(state: SimState, handler: Handler) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        key = state.config.api_key
        if key is not None:
            given = request.headers.get("authorization", "")
            # Anthropic-protocol clients list models with x-api-key.
            if "x-api-key" in request.headers:
                given = f"Bearer {request.headers['x-api-key']}"
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                return _error(
                    SimError(
                        401,
                        "Incorrect API key provided.",
                        "invalid_request_error",
                        "invalid_api_key",
                    )
                )
        return await handler(state, request)

    return endpoint


def _error(err: SimError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _models(state: SimState, request: Request) -> Response:
    data = [
        {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": "aione-probe-sim"}
        for model in state.config.models
    ]
    return JSONResponse({"object": "list", "data": data})


async def _chat(state: SimState, request: Request) -> Response:
    started = time.perf_counter()
    model = ""
    try:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise SimError(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                "invalid_json",
            ) from None
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            model = body["model"]
            settings = state.config.models.get(model)
            if settings is not None and settings.image:
                return await images.generate(state, body, started)
        req = parse_body(body)
        completion = state.engine.complete(req)
    except SimError as err:
        log_completion(state, model, err.status, started)
        return _error(err)
    created = int(time.time())
    rid = completion_id(completion.persona.id_style, completion.rng)
    headers = {"x-request-id": "req_" + uuid.UUID(int=completion.rng.getrandbits(128)).hex}
    if req.stream:
        events = _stream(state, req, completion, rid, created, started)
        return SSEResponse(events, headers)
    await asyncio.sleep(completion.ttft_s + completion.visible_tokens * completion.token_s)
    log_completion(state, model, 200, started, completion)
    headers["openai-processing-ms"] = str(int((time.perf_counter() - started) * 1000))
    return JSONResponse(_plain_body(completion, rid, created), headers=headers)


def _envelope(c: Completion, rid: str, created: int, obj: str) -> dict[str, Any]:
    body: dict[str, Any] = {"id": rid, "object": obj, "created": created, "model": c.response_model}
    fingerprint = c.persona.system_fingerprint
    if fingerprint is not None:
        body["system_fingerprint"] = fingerprint
    return body


def _plain_body(c: Completion, rid: str, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": c.content if c.content or not c.tool_calls else None,
        "refusal": None,
    }
    if c.tool_calls:
        message["tool_calls"] = c.tool_calls
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": c.finish_reason}
    return {
        **_envelope(c, rid, created, "chat.completion"),
        "choices": [choice],
        "usage": c.usage,
    }


def _groups(pieces: list[Piece], rng: random.Random) -> list[list[Piece]]:
    groups: list[list[Piece]] = []
    i = 0
    while i < len(pieces):
        n = rng.randint(1, 3)
        groups.append(pieces[i : i + n])
        i += n
    return groups


def _deltas(c: Completion) -> list[tuple[dict[str, Any], int]]:
    """Stream deltas with the tokens each carries (1-3 tokens per chunk)."""
    out: list[tuple[dict[str, Any], int]] = []
    for group in _groups(c.pieces, c.rng):
        out.append(({"content": "".join(t for t, _ in group)}, sum(w for _, w in group)))
    tok = get_tokenizer(c.persona.tokenizer)
    for index, call in enumerate(c.tool_calls):
        function = call["function"]
        head = {"index": index, "id": call["id"], "type": "function"}
        first = {"tool_calls": [{**head, "function": {"name": function["name"], "arguments": ""}}]}
        out.append((first, tok.count(function["name"])))
        for group in _groups(tok.encode(function["arguments"]), c.rng):
            frag = "".join(t for t, _ in group)
            delta = {"tool_calls": [{"index": index, "function": {"arguments": frag}}]}
            out.append((delta, sum(w for _, w in group)))
    return out


async def _stream(
    state: SimState, req: ChatBody, c: Completion, rid: str, created: int, started: float
) -> AsyncGenerator[bytes | _Cut, None]:
    settings = state.config.models[req.model]
    send_usage = req.include_usage and not settings.omit_stream_usage
    envelope = _envelope(c, rid, created, "chat.completion.chunk")
    if send_usage:
        envelope["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**envelope, "choices": [choice]})

    deltas = _deltas(c)
    cut_at = len(deltas) // 2 if c.rng.random() < settings.cutoff_stream_rate else None
    bad_at = c.rng.randrange(len(deltas)) if deltas else None
    if c.rng.random() >= settings.malformed_stream_rate:
        bad_at = None
    try:
        yield chunk({"role": "assistant", "content": ""})
        waited = 0.0
        while c.ttft_s - waited > _KEEPALIVE_EVERY_S:
            await asyncio.sleep(_KEEPALIVE_EVERY_S)
            waited += _KEEPALIVE_EVERY_S
            yield KEEPALIVE
        await asyncio.sleep(c.ttft_s - waited)
        for i, (delta, tokens) in enumerate(deltas):
            if i == cut_at:
                yield CUT
                return
            if i:
                await asyncio.sleep(tokens * c.token_s)
            if c.rng.random() < state.config.keepalive_rate:
                yield KEEPALIVE
            line = chunk(delta)
            # A broken upstream: the JSON of one data line is cut in half.
            yield line[: len(line) // 2] + b"\n\n" if i == bad_at else line
        yield chunk({}, c.finish_reason)
        if send_usage:
            yield sse({**envelope, "choices": [], "usage": c.usage})
        yield DONE
    finally:
        log_completion(state, req.model, 200, started, c)


class SSEResponse:
    """A streaming response that can also drop the connection (on a `CUT` event).

    The stream stops early when the client disconnects.
    """

    def __init__(self, events: AsyncGenerator[bytes | _Cut, None], headers: dict[str, str]) -> None:
        self.events = events
        self.headers = {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            **headers,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = [(k.encode(), v.encode()) for k, v in self.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        pump = asyncio.ensure_future(self._pump(send))
        listen = asyncio.ensure_future(_wait_disconnect(receive))
        await asyncio.wait({pump, listen}, return_when=asyncio.FIRST_COMPLETED)
        for task in (pump, listen):
            task.cancel()
        await asyncio.gather(pump, listen, return_exceptions=True)
        if not pump.cancelled() and pump.exception() is None and pump.result():
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _pump(self, send: Send) -> bool:
        """Send events; False means the connection must be dropped without finishing."""
        try:
            async for event in self.events:
                if isinstance(event, _Cut):
                    return False
                await send({"type": "http.response.body", "body": event, "more_body": True})
            return True
        finally:
            await self.events.aclose()


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _dashboard(state: SimState, request: Request) -> Response:
    raw = request.query_params.get("range_days", "1")
    try:
        range_days = int(raw)
        if range_days < 1:
            raise ValueError
    except ValueError:
        detail = {
            "loc": ["query", "range_days"],
            "msg": "Input should be a positive integer",
            "type": "int_parsing",
            "input": raw,
        }
        return JSONResponse({"detail": [detail]}, status_code=422)
    cfg = state.config
    body = state.log.dashboard(range_days, cfg.rpm_limit, cfg.dashboard_report_factor)
    return JSONResponse(body)


async def _control(state: SimState, request: Request) -> Response:
    if request.method == "POST":
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("body must be a JSON object")
            _apply_control(state, dict(changes))
        except (ValueError, TypeError) as exc:
            return _error(SimError(400, str(exc), "invalid_request_error", "invalid_control"))
    cfg = state.config
    return JSONResponse(
        {
            "models": {m: dataclasses.asdict(s) for m, s in cfg.models.items()},
            "globals": {k: getattr(cfg, k) for k in GLOBAL_CONTROL_KEYS},
            "personas": sorted(cfg.personas),
        }
    )


def _apply_control(state: SimState, changes: dict[str, Any]) -> None:
    cfg = state.config
    if changes.pop("clear_cache", False):
        state.engine.cache.clear()
    if changes.pop("clear_log", False):
        state.log.entries.clear()
    globals_ = {k: changes.pop(k) for k in GLOBAL_CONTROL_KEYS if k in changes}
    model = changes.pop("model", None)
    if model is not None:
        if not isinstance(model, str):
            raise ValueError("model must be a string")
        current = cfg.models.get(model)
        settings = (
            merge_settings(model, current, changes)
            if current is not None
            else settings_from_dict(model, changes)
        )
        validate_settings(model, settings, cfg.personas)
        cfg.models[model] = settings
    elif changes:
        raise ValueError(f"unknown keys {sorted(changes)} (model settings need a 'model' key)")
    for key, value in globals_.items():
        if not isinstance(value, int | float) or value < 0:
            raise ValueError(f"{key} must be a non-negative number")
        setattr(cfg, key, type(getattr(cfg, key))(value))
