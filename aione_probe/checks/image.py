"""The image-generation check: is the returned image real, intact and what was asked for?

AIone returns Gemini images on ``/v1/chat/completions`` as a content array holding an
``image_url`` part with a ``data:image/...;base64,...`` URL. The check judges the first
image part, in an order that keeps hostile payloads cheap:

1. the size implied by the base64 length is capped *before* decoding (`DEFAULT_MAX_BYTES`);
2. the base64 must decode strictly (a cut payload fails here);
3. the magic bytes must name PNG, JPEG or WebP and agree with the declared MIME type;
4. Pillow reads the header, refuses more than `MAX_PIXELS`, verifies and fully decodes;
5. the aspect ratio must be within `ratio_tolerance` (default 2 %) of the requested one;
6. the resolution tier must match: ``sqrt(width * height)`` within `size_tolerance`
   (default 15 %) of 1024 / 2048 / 4096 for 1K / 2K / 4K. The geometric mean, not the
   longest side, because Gemini keeps the pixel count of a tier: 16:9 at 1K is
   1376×768, whose longest side is far from 1024 but whose sqrt(area) is 1028;
7. ``finish_reason`` must be ``stop`` and usage must be reported.

The requested ratio and size come from the parameters, else from the request's
``extra`` (``aspect_ratio``, ``image_size``), else from a ``-2k`` / ``-4k`` model suffix;
the size defaults to 1K (Gemini's default). Every problem is listed in
``metadata.reasons``; metadata also records bytes, MIME types, width, height and sha256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import re
import warnings
from typing import Any

from PIL import Image

from aione_probe.checks._registry import CheckContext, CheckSpecError, check, result
from aione_probe.checks._util import keys, typed
from aione_probe.types import CheckResult, CheckValue, Observation

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_RATIO_TOLERANCE = 0.02
DEFAULT_SIZE_TOLERANCE = 0.15
MAX_PIXELS = 40_000_000
TIERS = {"1K": 1024, "2K": 2048, "4K": 4096}
_RATIO = re.compile(r"([1-9]\d{0,2}):([1-9]\d{0,2})")
_DATA_URL = re.compile(r"data:([\w.+-]+/[\w.+-]+)((?:;[^;,]*)*?);base64,", re.ASCII)
_PIL_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def _validate(params: dict[str, Any]) -> None:
    keys(
        params,
        optional=["aspect_ratio", "image_size", "max_bytes", "ratio_tolerance", "size_tolerance"],
    )
    ratio = typed(params, "aspect_ratio", str, 'a ratio such as "16:9"')
    if ratio is not None and not _RATIO.fullmatch(ratio):
        raise CheckSpecError(f'aspect_ratio must look like "16:9", got {ratio!r}', "aspect_ratio")
    size = typed(params, "image_size", str, "a size tier")
    if size is not None and size not in TIERS:
        raise CheckSpecError(f"image_size must be one of {list(TIERS)}, got {size!r}", "image_size")
    cap = typed(params, "max_bytes", int, "an integer")
    if cap is not None and cap < 1:
        raise CheckSpecError(f"max_bytes must be ≥ 1, got {cap}", "max_bytes")
    for key in ("ratio_tolerance", "size_tolerance"):
        tol = typed(params, key, (int, float), "a number")
        if tol is not None and not 0 < tol < 1:
            raise CheckSpecError(f"{key} must be in (0, 1), got {tol}", key)


def sniff_mime(data: bytes) -> str | None:
    """The image MIME type named by the magic bytes (PNG, JPEG, WebP), else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def image_parts(obs: Observation) -> list[str]:
    """The URLs of the observation's ``image_url`` content parts, in order."""
    urls: list[str] = []
    for part in obs.content_parts:
        if part.get("type") != "image_url":
            continue
        inner = part.get("image_url")
        url = inner.get("url") if isinstance(inner, dict) else inner
        if isinstance(url, str):
            urls.append(url)
    return urls


def decoded_size(b64_len: int, tail: str) -> int:
    """Bytes a base64 text of `b64_len` characters decodes to (`tail`: its last 2 chars)."""
    return b64_len * 3 // 4 - tail.count("=")


def requested(ctx: CheckContext, params: dict[str, Any]) -> tuple[str | None, str]:
    """The requested aspect ratio (None: not requested) and size tier."""
    extra = ctx.request.extra
    ratio = params.get("aspect_ratio") or extra.get("aspect_ratio")
    size = params.get("image_size") or extra.get("image_size")
    if size is None:
        model = ctx.request.model.lower()
        size = "4K" if model.endswith("-4k") else "2K" if model.endswith("-2k") else "1K"
    return (str(ratio) if ratio is not None else None), str(size).upper()


def _fail(reasons: list[str], meta: dict[str, Any], answer: str | None = None) -> CheckResult:
    return result(
        CheckValue.failed,
        answer=answer,
        explanation="; ".join(reasons),
        reasons=reasons,
        **meta,
    )


def _decode(url: str, cap: int, meta: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """The image bytes, or None and the reason; fills `meta` with what it learns."""
    header = _DATA_URL.match(url)
    if header is None:
        reason = "image is a link, not inline data" if url.startswith("http") else "not a data URL"
        return None, f"non-image payload: {reason}"
    meta["mime"] = header.group(1).lower()
    payload = url[header.end() :].strip()
    size = decoded_size(len(payload), payload[-2:])
    meta["bytes"] = size
    if size > cap:
        return None, f"too large: {size} bytes > cap {cap}"
    if len(payload) % 4:
        return None, f"truncated base64: length {len(payload)} is not a multiple of 4"
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None, "non-image payload: invalid base64"
    meta["bytes"] = len(data)
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    return data, None


def _open(data: bytes, meta: dict[str, Any]) -> str | None:
    """Read dimensions and fully decode with Pillow; the reason on failure."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                meta["width"], meta["height"] = img.size
                meta["format"] = img.format
                if img.size[0] * img.size[1] > MAX_PIXELS:
                    return f"too large: {img.size[0]}x{img.size[1]} pixels > {MAX_PIXELS}"
                img.verify()
            with Image.open(io.BytesIO(data)) as img:
                img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Warning) as exc:
        return f"image does not decode: {type(exc).__name__}: {exc}"[:200]
    return None


def _geometry(
    meta: dict[str, Any], ratio: str | None, size: str, params: dict[str, Any]
) -> list[str]:
    reasons: list[str] = []
    w, h = meta["width"], meta["height"]
    if ratio is not None:
        match = _RATIO.fullmatch(ratio)
        if match is None:
            reasons.append(f"requested aspect_ratio {ratio!r} is not W:H")
        else:
            want = int(match.group(1)) / int(match.group(2))
            meta["ratio_error"] = round(w / h / want - 1, 4)
            tol = params.get("ratio_tolerance", DEFAULT_RATIO_TOLERANCE)
            if abs(w / h / want - 1) > tol:
                reasons.append(f"aspect ratio {w}x{h} is not {ratio} (±{tol:.0%})")
    side = TIERS.get(size)
    if side is None:
        reasons.append(f"requested image_size {size!r} is not one of {list(TIERS)}")
    else:
        meta["tier_error"] = round(math.sqrt(w * h) / side - 1, 4)
        tol = params.get("size_tolerance", DEFAULT_SIZE_TOLERANCE)
        if abs(math.sqrt(w * h) / side - 1) > tol:
            reasons.append(f"resolution {w}x{h} is not the {size} tier (±{tol:.0%})")
    return reasons


@check("image", validate=_validate)
def image(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when the first image part is a decodable image of the requested shape and size.

    Fails (with ``metadata.reasons``) for: no image part, a non-image or linked payload,
    truncated or invalid base64, a payload over ``max_bytes``, magic bytes that disagree
    with the declared MIME type, an image Pillow cannot decode, the wrong aspect ratio or
    resolution tier, a finish reason other than ``stop``, or absent usage.
    """
    ratio, size = requested(ctx, params)
    urls = image_parts(obs)
    meta: dict[str, Any] = {"images": len(urls), "aspect_ratio": ratio, "image_size": size}
    reasons: list[str] = []
    if obs.finish_reason != "stop":
        reasons.append(f"finish_reason {obs.finish_reason!r}, expected 'stop'")
    if not obs.usage.present or obs.usage.completion_tokens is None:
        reasons.append("usage not reported")
    if not urls:
        return _fail(["content has no image part", *reasons], meta)
    data, why = _decode(urls[0], params.get("max_bytes", DEFAULT_MAX_BYTES), meta)
    if data is None:
        return _fail([str(why), *reasons], meta)
    detected = sniff_mime(data)
    meta["detected_mime"] = detected
    if detected is None:
        return _fail(["non-image payload: no PNG, JPEG or WebP signature", *reasons], meta)
    if detected != meta["mime"]:
        reasons.insert(0, f"wrong mime: declared {meta['mime']}, bytes are {detected}")
    why = _open(data, meta)
    if why is not None:
        return _fail([why, *reasons], meta)
    if _PIL_MIME.get(meta["format"]) != detected:
        reasons.insert(0, f"decoded format {meta['format']} disagrees with {detected}")
    reasons = _geometry(meta, ratio, size, params) + reasons
    answer = f"{detected} {meta['width']}x{meta['height']}"
    if reasons:
        return _fail(reasons, meta, answer)
    return result(
        CheckValue.passed,
        answer=answer,
        expected=f"{ratio or 'any ratio'} at {size}",
        explanation=f"{answer}, {meta['bytes']} bytes",
        reasons=[],
        **meta,
    )


THUMBNAIL_PX = 96


def compact_parts(
    parts: list[dict[str, Any]], cap: int = DEFAULT_MAX_BYTES
) -> list[dict[str, Any]]:
    """Content parts fit for storage: each inline image becomes its size, hash and type,
    plus a small PNG thumbnail when it decodes (the report shows only that, never the URI).

    Real generated images are megabytes of base64; the store keeps what a reader needs.
    """
    out: list[dict[str, Any]] = []
    for part in parts:
        if part.get("type") != "image_url":
            out.append(part)
            continue
        inner = part.get("image_url")
        url = inner.get("url") if isinstance(inner, dict) else inner
        meta: dict[str, Any] = {}
        data, reason = _decode(url, cap, meta) if isinstance(url, str) else (None, "no url")
        summary: dict[str, Any] = {"type": "image_url", "image": meta}
        if data is not None:
            reason = _open(data, meta)
            if reason is None:
                summary["thumbnail"] = _thumbnail(data)
        if reason is not None:
            meta["error"] = reason
        out.append(summary)
    return out


def _thumbnail(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as img:
        img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
