"""The simulator's Anthropic Messages surface: ``POST /v1/messages``, plain and event stream.

A Messages body is translated to the chat shape and answered by the same `Engine` as
``/v1/chat/completions``, so one persona answers both protocols with the same text and
the same tokenizer counts (the translation inverts the probe client's, so the same
prompt costs the same prompt tokens on both surfaces).

Auth: ``x-api-key`` (or a Bearer key) when the sim has a key; ``anthropic-version`` is
required. Errors use Anthropic's body ``{"type": "error", "error": {"type", "message"}}``;
a 503 or 529 fault is ``overloaded_error`` with status 529 (on a stream: an ``error``
event after the 200, as Anthropic sends it).

Prompt caching follows Anthropic's explicit breakpoints: without a ``cache_control``
block nothing is cached. With one, the prefix up to the breakpoint (at least
`MIN_CACHEABLE` tokens) is written on a miss (``cache_creation_input_tokens``) and read
on a hit (``cache_read_input_tokens``); hit or miss comes from the engine's prefix cache.
``input_tokens`` is the rest. ``cache_field = "none"`` omits the cache fields and
``cache_discount_honoured = false`` never reports a read.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import string
import time
import uuid
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aione_probe.sim.cache import MIN_CACHEABLE
from aione_probe.sim.dashboard import log_completion
from aione_probe.sim.engine import ChatBody, Completion
from aione_probe.sim.protocol import SimError
from aione_probe.sim.tokenizer import get_tokenizer

if TYPE_CHECKING:
    from aione_probe.sim.app import SimState

_ALNUM = string.ascii_letters + string.digits
_KEEPALIVE_EVERY_S = 0.5
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_response(err: SimError) -> JSONResponse:
    """`err` as an Anthropic error response (503 is sent as Anthropic's 529)."""
    status = 529 if err.status == 503 else err.status
    return JSONResponse(error_body(status, err.message), status_code=status, headers=err.headers)


def error_body(status: int, message: str) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` for an HTTP status."""
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _bad(message: str) -> SimError:
    return SimError(400, message, "invalid_request_error", None)


async def messages(state: SimState, request: Request) -> Response:
    """``POST /v1/messages``."""
    started = time.perf_counter()
    key = state.config.api_key
    if key is not None and not _authorised(request, key):
        return error_response(SimError(401, "invalid x-api-key", "authentication_error", None))
    model = ""
    body: Any = None
    try:
        if not request.headers.get("anthropic-version"):
            raise _bad("anthropic-version: header is required")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            raise _bad("The request body is not valid JSON.") from None
        req, breakpoint_at = chat_body(body)
        model = req.model
        if state.engine.settings(model).image:
            raise _bad(f"{model} is served on /v1/chat/completions only")
        completion = state.engine.complete(req)
    except SimError as err:
        log_completion(state, model, err.status, started)
        if isinstance(body, dict) and body.get("stream") is True and err.status in (503, 529):
            return _stream_error(err)
        return error_response(err)
    usage = anthropic_usage(state, req, completion, breakpoint_at)
    rid = "msg_" + "".join(completion.rng.choices(_ALNUM, k=24))
    headers = {"request-id": "req_" + uuid.UUID(int=completion.rng.getrandbits(128)).hex}
    if req.stream:
        events = _stream(state, req, completion, rid, usage, started)
        from aione_probe.sim.app import SSEResponse  # app imports this module

        return SSEResponse(events, headers)
    await asyncio.sleep(completion.ttft_s + completion.visible_tokens * completion.token_s)
    log_completion(state, model, 200, started, completion)
    return JSONResponse(_message(completion, rid, usage, _blocks(completion)), headers=headers)


def _authorised(request: Request, key: str) -> bool:
    given = request.headers.get("x-api-key")
    if given is None:
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
    return hmac.compare_digest(given.encode(), key.encode())


def chat_body(body: Any) -> tuple[ChatBody, int | None]:
    """Translate a Messages body to the engine's chat body.

    Returns:
        The chat body and the index (in its messages) of the last message holding a
        ``cache_control`` block, or None when the request sets no breakpoint.

    Raises:
        SimError: 400 for a malformed body.
    """
    if not isinstance(body, dict):
        raise _bad("Request body must be a JSON object.")
    model, raw_messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise _bad("model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _bad("max_tokens: Field required (a positive integer)")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise _bad("messages: at least one message is required")
    temperature = body.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
        raise _bad("temperature: must be between 0 and 1")
    messages: list[dict[str, Any]] = []
    breakpoint_at: int | None = None
    system = body.get("system")
    for block in [{"type": "text", "text": system}] if isinstance(system, str) else system or []:
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _bad("system: only text blocks are supported")
        messages.append({"role": "system", "content": str(block.get("text", ""))})
        if block.get("cache_control"):
            breakpoint_at = len(messages) - 1
    for message in raw_messages:
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _bad("messages: each message needs role 'user' or 'assistant'")
        converted, marked = _chat_messages(message)
        messages.extend(converted)
        if marked:
            breakpoint_at = len(messages) - 1
    tools = body.get("tools")
    return (
        ChatBody(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=float(temperature),
            stream=body.get("stream") is True,
            include_usage=True,
            tools=[_chat_tool(t) for t in tools] if isinstance(tools, list) and tools else None,
            tool_choice=_chat_tool_choice(body.get("tool_choice")),
        ),
        breakpoint_at,
    )


def _chat_messages(message: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    role, content = message["role"], message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}], False
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise _bad("messages: content must be a string or a list of blocks")
    marked = any(b.get("cache_control") for b in content)
    if role == "assistant":
        text = "".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
        calls = [
            {
                "id": b.get("id", ""),
                "type": "function",
                "function": {"name": b.get("name", ""), "arguments": json.dumps(b.get("input"))},
            }
            for b in content
            if b.get("type") == "tool_use"
        ]
        out: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            out["tool_calls"] = calls
        return [out], marked
    results = [
        {"role": "tool", "tool_call_id": b.get("tool_use_id", ""), "content": _result_text(b)}
        for b in content
        if b.get("type") == "tool_result"
    ]
    parts = [_chat_part(b) for b in content if b.get("type") != "tool_result"]
    return results + ([{"role": "user", "content": parts}] if parts else []), marked


def _result_text(block: dict[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return "" if content is None else str(content)


def _chat_part(block: dict[str, Any]) -> dict[str, Any]:
    if block.get("type") == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    if block.get("type") == "image":
        source = block.get("source") if isinstance(block.get("source"), dict) else {}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        else:
            url = str(source.get("url", ""))
        return {"type": "image_url", "image_url": {"url": url}}
    raise _bad(f"messages: unsupported content block type {block.get('type')!r}")


def _chat_tool(tool: Any) -> dict[str, Any]:
    if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
        raise _bad("tools: each tool needs a name")
    fn: dict[str, Any] = {"name": tool["name"]}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool.get("input_schema") or {"type": "object", "properties": {}}
    return {"type": "function", "function": fn}


def _chat_tool_choice(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return {"auto": "auto", "any": "required", "none": "none"}.get(kind)


def anthropic_usage(
    state: SimState, req: ChatBody, c: Completion, breakpoint_at: int | None
) -> dict[str, Any]:
    """The Messages usage object for a completion (see the module docstring)."""
    settings = state.config.models[req.model]
    prompt = int(c.usage["prompt_tokens"])
    usage: dict[str, Any] = {"input_tokens": prompt}
    if settings.cache_field == "none":
        usage["output_tokens"] = int(c.usage["completion_tokens"])
        return usage
    read = write = 0
    if breakpoint_at is not None:
        tok = get_tokenizer(c.persona.tokenizer)
        prefix = sum(w for _, w in tok.prompt_pieces(req.messages[: breakpoint_at + 1], req.tools))
        if prefix >= MIN_CACHEABLE:
            cached = (c.usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            read, write = (prefix, 0) if cached else (0, prefix)
    usage["input_tokens"] = prompt - read - write
    usage["cache_creation_input_tokens"] = write
    usage["cache_read_input_tokens"] = read
    usage["output_tokens"] = int(c.usage["completion_tokens"])
    return usage


def _blocks(c: Completion) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if c.content or not c.tool_calls:
        blocks.append({"type": "text", "text": c.content})
    for call in c.tool_calls:
        try:
            arguments = json.loads(call["function"]["arguments"])
        except ValueError:
            arguments = {}  # arguments cut at max_tokens: Anthropic sends what parsed
        blocks.append(
            {
                "type": "tool_use",
                "id": _tool_id(call["id"]),
                "name": call["function"]["name"],
                "input": arguments if isinstance(arguments, dict) else {},
            }
        )
    return blocks


def _tool_id(openai_id: str) -> str:
    return "toolu_" + openai_id.removeprefix("call_")


def _message(
    c: Completion, rid: str, usage: dict[str, Any], content: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": c.response_model,
        "content": content,
        "stop_reason": _STOP_REASONS.get(c.finish_reason, c.finish_reason),
        "stop_sequence": None,
        "usage": usage,
    }


def event(kind: str, data: dict[str, Any]) -> bytes:
    """One named Messages stream event."""
    payload = json.dumps({"type": kind, **data}, separators=(",", ":"))
    return f"event: {kind}\ndata: {payload}\n\n".encode()


def _stream_error(err: SimError) -> Response:
    from aione_probe.sim.app import SSEResponse  # app imports this module

    async def events() -> AsyncGenerator[bytes, None]:
        yield event("error", {"error": error_body(529, err.message)["error"]})

    return SSEResponse(events(), {})


def _groups(pieces: list[tuple[str, int]], rng: random.Random) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    i = 0
    while i < len(pieces):
        n = rng.randint(1, 3)
        group = pieces[i : i + n]
        out.append(("".join(t for t, _ in group), sum(w for _, w in group)))
        i += n
    return out


async def _stream(
    state: SimState,
    req: ChatBody,
    c: Completion,
    rid: str,
    usage: dict[str, Any],
    started: float,
) -> AsyncGenerator[bytes | object, None]:
    from aione_probe.sim.app import CUT  # app imports this module

    settings = state.config.models[req.model]
    tok = get_tokenizer(c.persona.tokenizer)
    head = _message(c, rid, {**usage, "output_tokens": 1}, [])
    head["stop_reason"] = None
    # (event bytes, tokens it carries): the delays between deltas follow the token counts
    script: list[tuple[bytes, int]] = []
    index = 0
    if c.content or not c.tool_calls:
        script.append((event("content_block_start", _start(index, "text", text="")), 0))
        for text, tokens in _groups(c.pieces, c.rng):
            delta = {"type": "text_delta", "text": text}
            script.append((event("content_block_delta", {"index": index, "delta": delta}), tokens))
        script.append((event("content_block_stop", {"index": index}), 0))
        index += 1
    for call, block in zip(c.tool_calls, _blocks(c)[index:], strict=True):
        start = _start(index, "tool_use", id=block["id"], name=block["name"], input={})
        script.append((event("content_block_start", start), tok.count(block["name"])))
        for text, tokens in _groups(tok.encode(call["function"]["arguments"]), c.rng):
            delta = {"type": "input_json_delta", "partial_json": text}
            script.append((event("content_block_delta", {"index": index, "delta": delta}), tokens))
        script.append((event("content_block_stop", {"index": index}), 0))
        index += 1
    cut_at = len(script) // 2 if c.rng.random() < settings.cutoff_stream_rate else None
    bad_at = c.rng.randrange(len(script)) if script else None
    if c.rng.random() >= settings.malformed_stream_rate:
        bad_at = None
    try:
        yield event("message_start", {"message": head})
        waited = 0.0
        while c.ttft_s - waited > _KEEPALIVE_EVERY_S:
            await asyncio.sleep(_KEEPALIVE_EVERY_S)
            waited += _KEEPALIVE_EVERY_S
            yield event("ping", {})
        await asyncio.sleep(c.ttft_s - waited)
        for i, (line, tokens) in enumerate(script):
            if i == cut_at:
                yield CUT
                return
            if tokens and i:
                await asyncio.sleep(tokens * c.token_s)
            if c.rng.random() < state.config.keepalive_rate:
                yield event("ping", {})
            # A broken upstream: the JSON of one event is cut in half.
            yield line[: len(line) // 2] + b"\n\n" if i == bad_at else line
        stop = {"stop_reason": _STOP_REASONS.get(c.finish_reason, c.finish_reason)}
        out = {"output_tokens": usage["output_tokens"]}
        yield event("message_delta", {"delta": {**stop, "stop_sequence": None}, "usage": out})
        yield event("message_stop", {})
    finally:
        log_completion(state, req.model, 200, started, c)


def _start(index: int, kind: str, **block: Any) -> dict[str, Any]:
    return {"index": index, "content_block": {"type": kind, **block}}
