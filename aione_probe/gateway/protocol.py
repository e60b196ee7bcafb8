"""The seam between the HTTP client and a wire protocol (OpenAI chat, Anthropic messages).

The client owns transport, timing, limits, retries and error mapping; a protocol only
turns a `ChatRequest` into a request body and fills an `Observation` from a JSON body
or from stream events. Protocol objects raise `GatewayError` subclasses for bodies they
cannot accept (the client records them) and never do I/O.
"""

from __future__ import annotations

from typing import Any, Protocol

from aione_probe.errors import FailureKind, ProtocolError
from aione_probe.sse import Event
from aione_probe.types import ChatRequest, Observation

_FINISH_REASONS = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "eos": "stop",
    "length": "length",
    "max_tokens": "length",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
}


class StreamParser(Protocol):
    """Per-request stream state; `done` turns True at the protocol's end-of-stream event."""

    done: bool

    def feed(self, event: Event) -> bool:
        """Apply one event to the observation; True if it carried output (text or tool args)."""
        ...

    def finish(self) -> None:
        """Write the assembled content and tool calls into the observation."""
        ...


class ChatProtocol(Protocol):
    """One wire protocol. `models_path` is relative to the gateway's base URL."""

    name: str
    models_path: str

    def build_request(self, req: ChatRequest) -> tuple[str, dict[str, str], dict[str, Any]]:
        """Path (relative to the base URL), protocol headers and JSON body for `req`."""
        ...

    def parse_body(self, body: Any, obs: Observation) -> None:
        """Fill `obs` from a complete JSON response body."""
        ...

    def stream_parser(self, obs: Observation) -> StreamParser:
        """A fresh parser that fills `obs` from stream events."""
        ...

    def parse_models(self, body: Any) -> list[str]:
        """Model ids from the models listing."""
        ...


def normalize_finish_reason(raw: str) -> str:
    """Map provider spellings onto OpenAI's: stop, length, tool_calls, content_filter."""
    return _FINISH_REASONS.get(raw.lower(), raw.lower())


def parse_model_list(body: Any) -> list[str]:
    """Ids from a ``{"data": [{"id": ...}, ...]}`` listing (both protocols), deduplicated,
    in the gateway's order.

    Raises:
        ProtocolError: the listing is not that shape.
    """
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ProtocolError("models listing has no 'data' list", FailureKind.bad_response)
    ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
    return list(dict.fromkeys(ids))


def as_int(value: Any) -> int | None:
    """An integer from a JSON number (``3`` or ``3.0``); None for anything else, booleans too."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
