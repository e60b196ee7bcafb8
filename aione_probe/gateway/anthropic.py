"""The Anthropic Messages protocol: request translation, plain responses, stream events.

``POST {base_url}/v1/messages`` with ``anthropic-version`` (the client adds ``x-api-key``
or a Bearer key per ``gw.auth_scheme``); the base URL has no ``/v1``. Requests arrive in
the protocol-neutral OpenAI chat shape and are translated here:

- system messages become the top-level ``system`` (a list of text blocks, in order);
- assistant ``tool_calls`` become ``tool_use`` blocks, ``role = "tool"`` messages become
  ``tool_result`` blocks of one user turn (consecutive results share the turn);
- tools become ``{name, description, input_schema}``; ``tool_choice`` auto/none/required/
  a named function become ``{"type": "auto" | "none" | "any" | "tool"}``;
- ``max_tokens`` is required by the protocol: `DEFAULT_MAX_TOKENS` when unset;
- ``extra["stop"]`` becomes ``stop_sequences``; other ``extra`` keys go verbatim;
- ``seed`` and ``response_format`` have no Messages equivalent and are dropped (the
  probes that use JSON mode also ask for JSON in the prompt).

Prompt caching: Anthropic caches only at explicit ``cache_control`` breakpoints. A
request with ``cache_prefix`` set (the suites set it on ``kind = "cache"`` probes) gets
one ephemeral breakpoint on the last system block, or on the last block of the last
message when there is no system prompt (so a repeated prompt is cached whole).

Usage: ``prompt_tokens = input_tokens + cache_read_input_tokens +
cache_creation_input_tokens``, because Anthropic's ``input_tokens`` counts only the
uncached remainder while OpenAI's ``prompt_tokens`` includes cached tokens; with this
sum both protocols' prompt counts compare directly. ``cached_tokens`` is the cache read,
``cache_creation_tokens`` the cache write, ``total_tokens = prompt + completion``
(Anthropic reports no total).

Stop reasons: end_turn and stop_sequence → stop, max_tokens → length, tool_use →
tool_calls, refusal → content_filter (Claude's safety classifier stopped the answer);
anything else is kept lower-cased. The raw value is kept in ``raw_finish_reason``.
"""

from __future__ import annotations

import json
from typing import Any

from aione_probe.errors import FailureKind, ProtocolError
from aione_probe.gateway.classify import error_from_payload
from aione_probe.gateway.protocol import as_int, normalize_finish_reason, parse_model_list
from aione_probe.sse import Event
from aione_probe.types import ChatRequest, Observation, Usage

DEFAULT_MAX_TOKENS = 1024
DEFAULT_VERSION = "2023-06-01"
EPHEMERAL = {"type": "ephemeral"}

# Anthropic error types the generic classifier does not name (it already maps
# rate_limit_error, authentication_error, permission_error, overloaded_error, api_error).
_TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "any", "any": "any"}


class AnthropicProtocol:
    """``POST {base_url}/v1/messages``; ``GET {base_url}/v1/models``."""

    name = "anthropic"
    models_path = "/v1/models?limit=1000"

    def __init__(self, version: str = DEFAULT_VERSION) -> None:
        self.version = version

    def build_request(self, req: ChatRequest) -> tuple[str, dict[str, str], dict[str, Any]]:
        """Path, ``anthropic-version`` + Accept headers and the Messages body for `req`."""
        accept = "text/event-stream" if req.stream else "application/json"
        headers = {"anthropic-version": self.version, "Accept": accept}
        return "/v1/messages", headers, messages_body(req)

    def parse_body(self, body: Any, obs: Observation) -> None:
        """Fill `obs` from a ``message`` object.

        Raises:
            ProtocolError: not an object (bad_response) or no content list (empty_response).
            StatusError: the body is an error object.
        """
        if not isinstance(body, dict):
            raise ProtocolError("response body is not a JSON object", FailureKind.bad_response)
        if body.get("type") == "error" or body.get("error"):
            raise error_from_payload(body, obs.status or 200)
        _metadata(body, obs)
        usage = body.get("usage")
        if isinstance(usage, dict):
            obs.usage = parse_usage(usage)
        content = body.get("content")
        if not isinstance(content, list):
            raise ProtocolError("response has no content list", FailureKind.empty_response)
        texts: list[str] = []
        for block in content:
            if not isinstance(block, dict):
                continue
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif kind == "tool_use":
                obs.tool_calls.append(_tool_call(block.get("id"), block.get("name"), block))
            elif isinstance(kind, str):
                obs.content_parts.append(block)
        obs.content = "".join(texts)
        _stop(body.get("stop_reason"), obs)

    def stream_parser(self, obs: Observation) -> AnthropicStream:
        """A parser for Messages stream events."""
        return AnthropicStream(obs)

    def parse_models(self, body: Any) -> list[str]:
        """Ids from ``{"data": [{"id": ...}], "has_more": ...}``, in the gateway's order."""
        return parse_model_list(body)


class AnthropicStream:
    """Assembles text and tool calls from Messages events.

    The stream is complete only at ``message_stop``: the stop reason from
    ``message_delta`` is held back until then, so a stream cut after it still fails as
    ``stream_parse`` (the client fails a stream that ends neither done nor finished).
    """

    __slots__ = ("_blocks", "_stop_reason", "_usage", "done", "obs")

    def __init__(self, obs: Observation) -> None:
        self.obs = obs
        self.done = False
        self._blocks: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] = {}
        self._stop_reason: Any = None

    def feed(self, event: Event) -> bool:
        """Apply one event; True if it carried answer text or tool-call input.

        Raises:
            ProtocolError: the event is not a JSON object (stream_parse).
            StatusError: an ``error`` event (kind from its error type).
        """
        try:
            data = json.loads(event.data)
        except ValueError:
            raise ProtocolError("stream event is not JSON", FailureKind.stream_parse) from None
        if not isinstance(data, dict):
            raise ProtocolError("stream event is not a JSON object", FailureKind.stream_parse)
        kind = data.get("type", event.event)
        if kind == "error":
            raise error_from_payload(data, self.obs.status or 200)
        if kind == "message_start":
            message = data.get("message")
            if isinstance(message, dict):
                _metadata(message, self.obs)
                self._add_usage(message.get("usage"))
        elif kind == "content_block_start":
            return self._start(data)
        elif kind == "content_block_delta":
            return self._delta(data)
        elif kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason") is not None:
                self._stop_reason = delta["stop_reason"]
            self._add_usage(data.get("usage"))
        elif kind == "message_stop":
            self.done = True
        return False

    def finish(self) -> None:
        """Write content, tool calls, thinking blocks and (once complete) the stop reason."""
        obs = self.obs
        texts: list[str] = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            kind = block["type"]
            if kind == "text":
                texts.append("".join(block["parts"]))
            elif kind == "tool_use":
                args = "".join(block["parts"])
                obs.tool_calls.append(_tool_call(block["id"], block["name"], block, args))
            elif kind == "thinking":
                obs.content_parts.append({"type": "thinking", "thinking": "".join(block["parts"])})
        obs.content = "".join(texts)
        if self.done:
            _stop(self._stop_reason, obs)

    def _start(self, data: dict[str, Any]) -> bool:
        index, block = data.get("index"), data.get("content_block")
        if not isinstance(index, int) or not isinstance(block, dict):
            return False
        kind = block.get("type")
        first = block.get("text") if kind == "text" else block.get("thinking")
        parts = [first] if isinstance(first, str) and first else []
        self._blocks[index] = {
            "type": kind,
            "id": block.get("id"),
            "name": block.get("name"),
            "input": block.get("input"),
            "parts": parts,
        }
        return kind == "text" and bool(parts)

    def _delta(self, data: dict[str, Any]) -> bool:
        index, delta = data.get("index"), data.get("delta")
        block = self._blocks.get(index) if isinstance(index, int) else None
        if block is None or not isinstance(delta, dict):
            raise ProtocolError(
                "content_block_delta for a block that was not started", FailureKind.stream_parse
            )
        kind = delta.get("type")
        field = {"text_delta": "text", "input_json_delta": "partial_json"}.get(kind)
        if field is None:
            if kind == "thinking_delta" and isinstance(delta.get("thinking"), str):
                block["parts"].append(delta["thinking"])
            return False
        piece = delta.get(field)
        if not isinstance(piece, str) or not piece:
            return False
        block["parts"].append(piece)
        return True

    def _add_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # message_delta carries cumulative counts: later values replace earlier ones.
        self._usage.update({k: v for k, v in usage.items() if v is not None})
        self.obs.usage = parse_usage(dict(self._usage))
        self.obs.usage_in_stream = True


def messages_body(req: ChatRequest) -> dict[str, Any]:
    """The Messages request body for `req` (see the module docstring for the mapping)."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in req.messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(message.get("content")))
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id") or "",
                "content": _tool_result_content(message.get("content")),
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "user" and _all_results(last["content"]):
                last["content"].append(result)
            else:
                messages.append({"role": "user", "content": [result]})
        elif role == "assistant":
            messages.append({"role": "assistant", "content": _assistant_content(message)})
        else:
            messages.append({"role": "user", "content": _user_content(message.get("content"))})
    body: dict[str, Any] = {
        "model": req.model,
        "max_tokens": req.max_tokens if req.max_tokens is not None else DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        body["system"] = system
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
    choice = _tool_choice(req.tool_choice)
    if choice is not None:
        body["tool_choice"] = choice
    if req.stream:
        body["stream"] = True
    extra = dict(req.extra)
    cache = req.cache_prefix
    stop = extra.pop("stop", None)
    if stop is not None:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    body.update(extra)
    if cache:
        _mark_cache_breakpoint(body)
    return body


def parse_usage(raw: dict[str, Any]) -> Usage:
    """A `Usage` from a Messages usage object (prompt = input + cache read + cache write)."""
    inp = as_int(raw.get("input_tokens"))
    out = as_int(raw.get("output_tokens"))
    read = as_int(raw.get("cache_read_input_tokens"))
    write = as_int(raw.get("cache_creation_input_tokens"))
    prompt = None if inp is None else inp + (read or 0) + (write or 0)
    total = None if prompt is None or out is None else prompt + out
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=out,
        total_tokens=total,
        cached_tokens=read,
        cache_creation_tokens=write,
        raw=raw,
    )


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if isinstance(content, list):
        return [_part(p) for p in content if isinstance(p, dict)]
    return []


def _user_content(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, list):
        return [_part(p) for p in content if isinstance(p, dict)]
    return "" if content is None else str(content)


def _part(part: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI content part as a Messages block (unknown types pass through)."""
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        url = url if isinstance(url, str) else ""
        if url.startswith("data:") and ";base64," in url:
            media, data = url[5:].split(";base64,", 1)
            source = {"type": "base64", "media_type": media, "data": data}
            return {"type": "image", "source": source}
        return {"type": "image", "source": {"type": "url", "url": url}}
    return dict(part)


def _assistant_content(message: dict[str, Any]) -> str | list[dict[str, Any]]:
    content = message.get("content")
    calls = message.get("tool_calls") or []
    if not calls and isinstance(content, str):
        return content
    blocks = _text_blocks(content)
    for call in calls:
        if not isinstance(call, dict):
            continue
        fn = call.get("function") if isinstance(call.get("function"), dict) else {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": fn.get("name") or "",
                "input": _arguments(fn.get("arguments")),
            }
        )
    return blocks


def _arguments(raw: Any) -> dict[str, Any]:
    """Tool-call arguments (a JSON string in OpenAI's shape) as the ``input`` object."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {"arguments": raw}
    return value if isinstance(value, dict) else {"arguments": value}


def _tool_result_content(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, list):
        return _text_blocks(content)
    return "" if content is None else str(content)


def _all_results(content: Any) -> bool:
    return isinstance(content, list) and all(b.get("type") == "tool_result" for b in content)


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    out: dict[str, Any] = {"name": fn.get("name", "")}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    return out


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        return {"type": _TOOL_CHOICES.get(choice, choice)}
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
        if isinstance(name, str):
            return {"type": "tool", "name": name}
    return {"type": "auto"}


def _mark_cache_breakpoint(body: dict[str, Any]) -> None:
    system = body.get("system")
    if system:
        system[-1] = {**system[-1], "cache_control": EPHEMERAL}
        return
    if not body["messages"]:
        return
    last = body["messages"][-1]
    content = last["content"]
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if content:
        content = [*content[:-1], {**content[-1], "cache_control": EPHEMERAL}]
    last["content"] = content


def _metadata(message: dict[str, Any], obs: Observation) -> None:
    if obs.response_id is None and isinstance(message.get("id"), str):
        obs.response_id = message["id"]
    if obs.response_model is None and isinstance(message.get("model"), str):
        obs.response_model = message["model"]


def _stop(reason: Any, obs: Observation) -> None:
    if isinstance(reason, str) and reason:
        obs.raw_finish_reason = reason
        obs.finish_reason = normalize_finish_reason(reason)


def _tool_call(
    call_id: Any, name: Any, block: dict[str, Any], args: str | None = None
) -> dict[str, Any]:
    if not args:
        value = block.get("input")
        args = json.dumps(value if isinstance(value, dict) else {}, separators=(",", ":"))
    return {
        "id": call_id if isinstance(call_id, str) else None,
        "type": "function",
        "function": {"name": name if isinstance(name, str) else "", "arguments": args},
    }
