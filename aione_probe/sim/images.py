"""Simulated Gemini image generation on ``POST /v1/chat/completions`` (AIone's shape).

An image model answers with ``message.content`` as an array: a text part and an
``image_url`` part holding ``data:image/...;base64,...``; ``finish_reason`` is ``stop``
and usage is reported. ``stream: true`` is refused with a 400, as Gemini's image
pipeline does. Request fields: ``aspect_ratio`` (default ``1:1``), ``image_size``
(``1K`` | ``2K`` | ``4K``; the ``-2k`` / ``-4k`` model suffix sets the default).

Images are real and decodable at the requested pixel size, but cheap: one solid colour
(chosen from the prompt) compresses to a few KB even at 4K. ``gemini-2.5-flash-image``
answers JPEG, the others PNG. Faults (``ModelSettings.image_fault``): truncated base64,
PNG bytes declared as JPEG, or a text-only answer.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from PIL import Image
from starlette.responses import JSONResponse, Response

from aione_probe.sim.protocol import SimError, completion_id, fault_error
from aione_probe.sim.tokenizer import get_tokenizer

if TYPE_CHECKING:
    from aione_probe.sim.app import SimState

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
SIZES = {"1K": 1024, "2K": 2048, "4K": 4096}
# Gemini bills a generated image as a fixed number of output tokens.
IMAGE_TOKENS = {"1K": 1290, "2K": 1290, "4K": 2000}
_TEXT = "Here is the image you asked for."


def dimensions(aspect_ratio: str, size: str) -> tuple[int, int]:
    """Pixel size for a ratio and tier: about ``side²`` pixels, both sides multiples of 16."""
    w, h = (int(x) for x in aspect_ratio.split(":"))
    side = SIZES[size]
    scale = math.sqrt(w / h)
    return _round16(side * scale), _round16(side / scale)


def _round16(x: float) -> int:
    return max(16, round(x / 16) * 16)


@functools.lru_cache(maxsize=32)
def render(width: int, height: int, colour: tuple[int, int, int], fmt: str) -> bytes:
    """A solid-colour image encoded as ``"PNG"`` or ``"JPEG"`` (cached: 4K costs ~0.5 s)."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format=fmt, optimize=fmt == "PNG")
    return buf.getvalue()


def _bad(message: str, param: str) -> SimError:
    return SimError(400, message, "invalid_request_error", "invalid_request", param=param)


def _prompt(messages: Any) -> str:
    for message in reversed(messages if isinstance(messages, list) else []):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def _size(model: str, body: dict[str, Any]) -> str:
    size = body.get("image_size")
    if size is None:
        return "4K" if model.endswith("-4k") else "2K" if model.endswith("-2k") else "1K"
    if size not in SIZES:
        raise _bad(f"image_size must be one of {list(SIZES)}", "image_size")
    return str(size)


async def generate(state: SimState, body: dict[str, Any], started: float) -> Response:
    """Answer one image-generation request (the model is known to be an image model)."""
    model = str(body["model"])
    settings = state.config.models[model]
    try:
        if body.get("stream"):
            raise _bad("Streaming is not supported for image generation models.", "stream")
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            raise _bad("'messages' must be a non-empty array of objects", "messages")
        ratio = body.get("aspect_ratio", "1:1")
        if ratio not in ASPECT_RATIOS:
            raise _bad(f"aspect_ratio must be one of {list(ASPECT_RATIOS)}", "aspect_ratio")
        size = _size(model, body)
        rng = state.engine.rng
        if settings.error_rate and rng.random() < settings.error_rate:
            raise fault_error(rng.choice(settings.error_statuses), settings.retry_after_s)
    except SimError as err:
        state.log.record(model, err.status, started)
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)
    prompt = _prompt(body["messages"])
    tok = get_tokenizer(state.config.personas[settings.persona].tokenizer)
    prompt_tokens = tok.count_prompt(body["messages"])
    completion_tokens = tok.count(_TEXT)
    content: list[dict[str, Any]] = [{"type": "text", "text": _TEXT}]
    if settings.image_fault != "no_image":
        completion_tokens += IMAGE_TOKENS[size]
        url = _data_url(model, prompt, ratio, size, settings.image_fault)
        content.append({"type": "image_url", "image_url": {"url": url}})
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    message = {"role": "assistant", "content": content}
    result = {
        "id": completion_id("openai", rng),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": usage,
    }
    cost = (prompt_tokens * settings.price_input + completion_tokens * settings.price_output) / 1e6
    state.log.record(model, 200, started, prompt_tokens, completion_tokens, cost)
    headers = {"x-request-id": "req_" + uuid.UUID(int=rng.getrandbits(128)).hex}
    return JSONResponse(result, headers=headers)


def _data_url(model: str, prompt: str, ratio: str, size: str, fault: str) -> str:
    digest = hashlib.sha256(prompt.encode()).digest()
    colour = (digest[0], digest[1], digest[2])
    fmt, mime = ("JPEG", "image/jpeg") if "flash" in model else ("PNG", "image/png")
    data = base64.b64encode(render(*dimensions(ratio, size), colour, fmt)).decode()
    if fault == "wrong_mime":
        mime = "image/jpeg" if fmt == "PNG" else "image/png"
    elif fault == "truncated_base64":
        data = data[: len(data) // 2 - 1]
    return f"data:{mime};base64,{data}"
