"""The OpenAI chat-completions protocol: request body, plain responses, stream chunks.

Gateway JSON is untrusted: every field is type-checked before use, and anything that
is not the documented shape is ignored or reported as a `ProtocolError`.
"""

from __future__ import annotations

import json
from typing import Any

from aione_probe.errors import FailureKind, ProtocolError
from aione_probe.gateway.classify import error_from_payload
from aione_probe.gateway.protocol import as_int, normalize_finish_reason, parse_model_list
from aione_probe.sse import Event
from aione_probe.types import ChatRequest, Observation, Usage

_OPTIONAL = ("max_tokens", "temperature", "top_p", "tool_choice", "response_format", "seed")


class OpenAIProtocol:
    """``POST {base_url}/chat/completions``; ``GET {base_url}/models``."""

    name = "openai"
    models_path = "/models"

    def build_request(self, req: ChatRequest) -> tuple[str, dict[str, str], dict[str, Any]]:
        """Body fields from `req` (None omitted), stream options, then `req.extra` verbatim."""
        body: dict[str, Any] = {"model": req.model, "messages": list(req.messages)}
        for name in _OPTIONAL:
            value = getattr(req, name)
            if value is not None:
                body[name] = value
        if req.tools is not None:
            body["tools"] = list(req.tools)
        if req.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(req.extra)
        accept = "text/event-stream" if req.stream else "application/json"
        return "/chat/completions", {"Accept": accept}, body

    def parse_body(self, body: Any, obs: Observation) -> None:
        """Fill `obs` from a ``chat.completion`` object.

        Raises:
            ProtocolError: not an object (bad_response) or no choices (empty_response).
            StatusError: the body is an error object.
        """
        if not isinstance(body, dict):
            raise ProtocolError("response body is not a JSON object", FailureKind.bad_response)
        if body.get("error"):
            raise error_from_payload(body, obs.status or 200)
        _metadata(body, obs)
        usage = body.get("usage")
        if isinstance(usage, dict):
            obs.usage = parse_usage(usage)
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ProtocolError("response has no choices", FailureKind.empty_response)
        choice = choices[0]
        message = choice.get("message")
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                obs.content = content
            elif isinstance(content, list):
                parts = [p for p in content if isinstance(p, dict)]
                obs.content_parts.extend(parts)
                texts = [p.get("text") for p in parts if p.get("type") == "text"]
                obs.content = "".join(t for t in texts if isinstance(t, str))
            images = message.get("images")
            if isinstance(images, list):
                obs.content_parts.extend(p for p in images if isinstance(p, dict))
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                obs.tool_calls = [_tool_call(c) for c in calls if isinstance(c, dict)]
        _finish(choice, obs)

    def stream_parser(self, obs: Observation) -> OpenAIStream:
        """A parser for ``chat.completion.chunk`` events."""
        return OpenAIStream(obs)

    def parse_models(self, body: Any) -> list[str]:
        """Ids from ``{"object": "list", "data": [{"id": ...}]}``, in the gateway's order."""
        return parse_model_list(body)


class OpenAIStream:
    """Assembles content and tool calls from ``chat.completion.chunk`` events (choice 0)."""

    __slots__ = ("_parts", "_tools", "done", "obs")

    def __init__(self, obs: Observation) -> None:
        self.obs = obs
        self.done = False
        self._parts: list[str] = []
        self._tools: dict[int, dict[str, Any]] = {}

    def feed(self, event: Event) -> bool:
        """Apply one chunk; True if it carried content or tool-call arguments.

        Raises:
            ProtocolError: the event is not a JSON object (stream_parse).
            StatusError: the event is an in-band error.
        """
        if event.is_done:
            self.done = True
            return False
        try:
            chunk = json.loads(event.data)
        except ValueError:
            raise ProtocolError("stream event is not JSON", FailureKind.stream_parse) from None
        if not isinstance(chunk, dict):
            raise ProtocolError("stream event is not a JSON object", FailureKind.stream_parse)
        obs = self.obs
        if chunk.get("error"):
            raise error_from_payload(chunk, obs.status or 200)
        _metadata(chunk, obs)
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            obs.usage = parse_usage(usage)
            obs.usage_in_stream = True
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return False
        output = False
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self._parts.append(content)
                    output = True
                calls = delta.get("tool_calls")
                if isinstance(calls, list) and self._tool_deltas(calls):
                    output = True
            _finish(choice, obs)
        return output

    def finish(self) -> None:
        """Join content deltas and order tool calls by index."""
        self.obs.content = "".join(self._parts)
        self.obs.tool_calls = [self._tools[i] for i in sorted(self._tools)]

    def _tool_deltas(self, calls: list[Any]) -> bool:
        output = False
        for pos, delta in enumerate(calls):
            if not isinstance(delta, dict):
                continue
            index = delta.get("index", pos)
            if not isinstance(index, int):
                index = pos
            call = self._tools.get(index)
            if call is None:
                call = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                self._tools[index] = call
            if isinstance(delta.get("id"), str) and not call["id"]:
                call["id"] = delta["id"]
            if isinstance(delta.get("type"), str):
                call["type"] = delta["type"]
            fn = delta.get("function")
            if isinstance(fn, dict):
                name = fn.get("name")
                if isinstance(name, str) and name and not call["function"]["name"]:
                    call["function"]["name"] = name
                args = fn.get("arguments")
                if isinstance(args, str) and args:
                    call["function"]["arguments"] += args
                    output = True
        return output


def parse_usage(raw: dict[str, Any]) -> Usage:
    """A `Usage` from an OpenAI usage object; `raw` keeps the object as sent.

    Cached tokens come from ``prompt_tokens_details.cached_tokens`` (or DeepSeek's
    ``prompt_cache_hit_tokens``); cache writes from ``cache_creation_input_tokens`` when
    a gateway passes Anthropic's field through.
    """
    prompt = raw.get("prompt_tokens_details")
    prompt = prompt if isinstance(prompt, dict) else {}
    completion = raw.get("completion_tokens_details")
    completion = completion if isinstance(completion, dict) else {}
    cached = as_int(prompt.get("cached_tokens"))
    if cached is None:
        cached = as_int(raw.get("prompt_cache_hit_tokens"))
    return Usage(
        prompt_tokens=as_int(raw.get("prompt_tokens")),
        completion_tokens=as_int(raw.get("completion_tokens")),
        total_tokens=as_int(raw.get("total_tokens")),
        cached_tokens=cached,
        reasoning_tokens=as_int(completion.get("reasoning_tokens")),
        cache_creation_tokens=as_int(raw.get("cache_creation_input_tokens")),
        raw=raw,
    )


def _metadata(obj: dict[str, Any], obs: Observation) -> None:
    if obs.response_id is None and isinstance(obj.get("id"), str):
        obs.response_id = obj["id"]
    if obs.response_model is None and isinstance(obj.get("model"), str):
        obs.response_model = obj["model"]
    if obs.system_fingerprint is None and isinstance(obj.get("system_fingerprint"), str):
        obs.system_fingerprint = obj["system_fingerprint"]
    if obs.created is None:
        obs.created = as_int(obj.get("created"))


def _finish(choice: dict[str, Any], obs: Observation) -> None:
    reason = choice.get("finish_reason")
    if isinstance(reason, str) and reason:
        obs.raw_finish_reason = reason
        obs.finish_reason = normalize_finish_reason(reason)


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function")
    fn = fn if isinstance(fn, dict) else {}
    args = fn.get("arguments")
    if not isinstance(args, str):
        args = "" if args is None else json.dumps(args)
    name = fn.get("name")
    return {
        "id": call.get("id") if isinstance(call.get("id"), str) else None,
        "type": call.get("type") if isinstance(call.get("type"), str) else "function",
        "function": {"name": name if isinstance(name, str) else "", "arguments": args},
    }
