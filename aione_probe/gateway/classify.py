"""Error mapping, in one place: httpx exceptions, HTTP statuses and error bodies to `FailureKind`.

Like httpx's ``map_httpcore_exceptions``, every foreign error is translated here and
nowhere else; ``tests/test_gateway.py`` fails if an httpx exception class or a status
class is left unmapped. Error text from a gateway is untrusted and may echo the key:
`scrub` removes it and caps the length before anything is stored.
"""

from __future__ import annotations

import json
import re
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from aione_probe import redact
from aione_probe.errors import FailureKind, StatusError

ERROR_MESSAGE_LIMIT = 300
_CONTEXT_CODES = frozenset({"context_length_exceeded", "context_window_exceeded"})
_CONTEXT_TEXT = re.compile(
    r"context[ _-]?(?:length|window)|maximum context|prompt is too long|input is too long",
    re.IGNORECASE,
)

# (exception class, kind before response headers, kind after); the first match wins, so
# subclasses come before their bases. Every class httpx exports is listed.
_EXCEPTIONS: tuple[tuple[type[BaseException], FailureKind, FailureKind], ...] = (
    (httpx.ConnectTimeout, FailureKind.timeout_connect, FailureKind.timeout_connect),
    (httpx.PoolTimeout, FailureKind.timeout_connect, FailureKind.timeout_connect),
    (httpx.ReadTimeout, FailureKind.timeout_idle, FailureKind.timeout_idle),
    (httpx.WriteTimeout, FailureKind.timeout_idle, FailureKind.timeout_idle),
    (httpx.TimeoutException, FailureKind.timeout_idle, FailureKind.timeout_idle),
    (httpx.ConnectError, FailureKind.connect, FailureKind.connect),
    (httpx.ProxyError, FailureKind.connect, FailureKind.connect),
    (httpx.UnsupportedProtocol, FailureKind.connect, FailureKind.connect),
    (httpx.RemoteProtocolError, FailureKind.connect, FailureKind.stream_parse),
    (httpx.LocalProtocolError, FailureKind.bad_response, FailureKind.stream_parse),
    (httpx.ProtocolError, FailureKind.bad_response, FailureKind.stream_parse),
    (httpx.ReadError, FailureKind.connect, FailureKind.stream_parse),
    (httpx.WriteError, FailureKind.connect, FailureKind.stream_parse),
    (httpx.CloseError, FailureKind.connect, FailureKind.stream_parse),
    (httpx.NetworkError, FailureKind.connect, FailureKind.stream_parse),
    (httpx.DecodingError, FailureKind.bad_response, FailureKind.bad_response),
    (httpx.TooManyRedirects, FailureKind.bad_response, FailureKind.bad_response),
    (httpx.TransportError, FailureKind.connect, FailureKind.stream_parse),
    (httpx.RequestError, FailureKind.connect, FailureKind.stream_parse),
    (httpx.StreamError, FailureKind.bad_response, FailureKind.bad_response),
    (httpx.InvalidURL, FailureKind.connect, FailureKind.connect),
    (httpx.CookieConflict, FailureKind.bad_response, FailureKind.bad_response),
    (ssl.SSLError, FailureKind.tls, FailureKind.tls),
    (ssl.CertificateError, FailureKind.tls, FailureKind.tls),
    (OSError, FailureKind.connect, FailureKind.stream_parse),
    (httpx.HTTPError, FailureKind.bad_response, FailureKind.bad_response),
)


@dataclass(frozen=True)
class ErrorInfo:
    """What an error body said: OpenAI ``{"error": {...}}`` or Anthropic ``{"type": "error"}``."""

    type: str | None = None
    code: str | None = None
    message: str | None = None


def classify_exception(exc: BaseException, *, after_headers: bool) -> FailureKind:
    """Map a transport exception to a failure kind.

    Args:
        exc: an httpx exception (or an `OSError` leaked by a transport).
        after_headers: True once the response headers arrived, so a broken connection
            is a broken stream rather than a failed connect.
    """
    if isinstance(exc, httpx.HTTPStatusError):
        return classify_status(exc.response.status_code, ErrorInfo())
    if isinstance(exc, httpx.ConnectError) and _caused_by_tls(exc):
        return FailureKind.tls
    for cls, before, after in _EXCEPTIONS:
        if isinstance(exc, cls):
            return after if after_headers else before
    return FailureKind.bad_response


def classify_status(status: int, info: ErrorInfo) -> FailureKind:
    """Map an HTTP status that is not a success, plus its parsed error body, to a kind."""
    if status == 401:
        return FailureKind.auth
    if status == 403:
        return FailureKind.forbidden
    kind = _kind_from_info(info)
    if status == 404 or kind is FailureKind.model_not_found:
        return FailureKind.model_not_found
    if status == 429:
        return FailureKind.rate_limited
    if 400 <= status < 500:
        return kind if kind is FailureKind.context_length else FailureKind.http_4xx
    if status >= 500:
        return FailureKind.http_5xx
    return FailureKind.bad_response


#: Error types that only an in-band error (a 200 body or a stream event) needs to name,
#: since no HTTP status tells the class there (Anthropic's mid-stream ``error`` events).
_EVENT_TYPE_KINDS = {
    "invalid_request_error": FailureKind.http_4xx,
    "not_found_error": FailureKind.model_not_found,
    "request_too_large": FailureKind.too_large,
    "billing_error": FailureKind.forbidden,
    "timeout_error": FailureKind.http_5xx,
}


def classify_error_event(info: ErrorInfo) -> FailureKind:
    """Kind of an error reported inside a 200 response (a JSON body or a stream event)."""
    kind = _kind_from_info(info) or _EVENT_TYPE_KINDS.get((info.type or "").lower())
    return kind or FailureKind.bad_response


HTML_ERROR_PAGE = "html_error_page"
_HTML = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.I | re.S)


def parse_error_body(body: bytes | Any) -> ErrorInfo:
    """Read type, code and message from an error body (raw bytes or decoded JSON).

    A proxy's HTML error page (nginx, Cloudflare) is not kept: the info says
    ``html_error_page`` with the page's title at most.
    """
    if isinstance(body, bytes | bytearray):
        if _HTML.match(body[:2048]):
            title = _TITLE.search(body[:8192])
            name = (
                b" ".join(title.group(1).split())[:80].decode("utf-8", "replace") if title else ""
            )
            detail = f" (title: {name})" if name else ""
            return ErrorInfo(type=HTML_ERROR_PAGE, message=f"an HTML error page{detail}")
        try:
            body = json.loads(body)
        except ValueError:
            text = bytes(body[: ERROR_MESSAGE_LIMIT * 4]).decode("utf-8", "replace").strip()
            return ErrorInfo(message=text or None)
    if not isinstance(body, dict):
        return ErrorInfo(message=_text(body))
    err = body.get("error")
    if isinstance(err, dict):
        return ErrorInfo(_text(err.get("type")), _text(err.get("code")), _text(err.get("message")))
    if isinstance(err, str):
        return ErrorInfo(_text(body.get("type")), _text(body.get("code")), err)
    message = body.get("message", body.get("detail"))
    return ErrorInfo(_text(body.get("type")), _text(body.get("code")), _text(message))


def error_from_payload(payload: Any, status: int) -> StatusError:
    """The exception for an error the gateway reported in a 200 body or stream event."""
    info = parse_error_body(payload)
    kind = classify_error_event(info)
    return StatusError(
        info.message or "the gateway reported an error",
        kind,
        status=status,
        error_type=info.type,
        error_code=info.code,
    )


def scrub(text: str | None, key: str | None) -> str | None:
    """Remove the API key, its masked forms and ``sk-`` tokens; cap at 300 characters."""
    if text is None:
        return None
    text = redact.scrub(text, [key])
    if len(text) > ERROR_MESSAGE_LIMIT:
        text = text[: ERROR_MESSAGE_LIMIT - 1] + "…"
    return text


def _kind_from_info(info: ErrorInfo) -> FailureKind | None:
    code = (info.code or "").lower()
    etype = (info.type or "").lower()
    if "model_not_found" in (code, etype):
        return FailureKind.model_not_found
    if code in _CONTEXT_CODES or (info.message and _CONTEXT_TEXT.search(info.message)):
        return FailureKind.context_length
    words = f"{code} {etype}"
    if "rate_limit" in words:
        return FailureKind.rate_limited
    if "authentication" in words or "invalid_api_key" in words:
        return FailureKind.auth
    if "permission" in words:
        return FailureKind.forbidden
    if any(w in words for w in ("overloaded", "server_error", "api_error", "internal")):
        return FailureKind.http_5xx
    return None


def _caused_by_tls(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLError | ssl.CertificateError):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    text = str(exc)
    return "SSL" in text or "CERTIFICATE" in text.upper()


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)
