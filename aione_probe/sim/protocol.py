"""OpenAI wire shapes: ids, error bodies, completion bodies and stream chunks."""

from __future__ import annotations

import json
import random
import string
import uuid
from typing import Any

_ALNUM = string.ascii_letters + string.digits


class SimError(Exception):
    """An OpenAI-style error response the simulator sends on purpose."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def fault_error(status: int, retry_after_s: float) -> SimError:
    """The error a faulty upstream returns with `status`."""
    if status == 429:
        return SimError(
            429,
            "Rate limit reached for requests. Please try again later.",
            "requests",
            "rate_limit_exceeded",
            headers={"Retry-After": f"{retry_after_s:g}"},
        )
    if status == 503:
        return SimError(
            503,
            "The engine is currently overloaded, please try again later.",
            "server_error",
            "service_unavailable",
        )
    return SimError(
        status,
        "The server had an error while processing your request.",
        "server_error",
        "internal_error",
    )


def completion_id(style: str, rng: random.Random) -> str:
    """A response id in the persona's style."""
    if style == "uuid":
        return "chatcmpl-" + uuid.UUID(int=rng.getrandbits(128)).hex
    return "chatcmpl-" + "".join(rng.choices(_ALNUM, k=29))


def tool_call_id(rng: random.Random) -> str:
    """An OpenAI-style tool call id."""
    return "call_" + "".join(rng.choices(_ALNUM, k=24))


def sse(data: dict[str, Any] | str) -> bytes:
    """One SSE data event."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


KEEPALIVE = b": keep-alive\n\n"
DONE = b"data: [DONE]\n\n"
