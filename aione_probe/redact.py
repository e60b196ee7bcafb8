"""Untrusted text, made safe: secrets removed, control characters made visible.

A gateway may send the API key back (in a request-id header, an error body, a masked
form such as ``sk-nex-****7f3a9b2c1d``), and anything it sends may carry terminal escapes
or newlines that forge log lines. Two functions handle every string that is stored,
logged, exported or rendered:

- `scrub` removes every configured key (registered by `register_secret` when the config
  reads it), any token that keeps at least `MIN_KEPT` consecutive characters of one (a
  masked form), and anything shaped like an ``sk-`` key;
- `printable` shows control characters as escapes (``\\n``, ``\\x1b``) so one value stays
  one line.

`RedactingFilter` applies `scrub` to every log record a handler emits, including the
DEBUG lines of httpcore and httpx (which print request and response headers) and uvicorn.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
#: A masked form that keeps this many consecutive characters of a key is a leak.
MIN_KEPT = 6
#: Shorter keys are not registered process-wide (their pieces would match everything);
#: `scrub` still removes them exactly where they are passed in.
MIN_SECRET_LEN = 8
#: ``sk-`` keys (OpenAI, AIone and most relays), masked ones included (``*``, ``•``, ``.``).
_SK_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_\-*•.…]{6,}")
#: What ends the token around a match: spaces, quotes, delimiters.
_TOKEN_END = frozenset(" \t\r\n\"'<>,;()[]{}=&")
#: How far a match is widened to its token's ends (bounded: content can be megabytes).
_TOKEN_REACH = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class _Secrets:
    """The process's known secrets and the pattern that finds them (and their pieces)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def add(self, key: str) -> None:
        key = key.strip()
        if len(key) < MIN_SECRET_LEN or key in self._keys:
            return
        with self._lock:
            keys = self._keys | {key}
            grams: set[str] = set()
            for k in keys:
                grams.update(k[i : i + MIN_KEPT] for i in range(len(k) - MIN_KEPT + 1))
            alts = "|".join(re.escape(g) for g in sorted(grams, key=len, reverse=True))
            self._pattern = re.compile(alts)
            self._keys = keys

    def scrub(self, text: str) -> str:
        pattern = self._pattern
        if pattern is not None and (spans := _token_spans(text, pattern)):
            out, pos = [], 0
            for start, end in spans:
                out += [text[pos:start], REDACTED]
                pos = end
            text = "".join([*out, text[pos:]])
        return _SK_TOKEN.sub(REDACTED, text)


def _token_spans(text: str, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Spans of the tokens that contain a match of `pattern`, merged, in order."""
    spans: list[tuple[int, int]] = []
    for m in pattern.finditer(text):
        start, end = m.start(), m.end()
        floor, ceil = max(0, start - _TOKEN_REACH), min(len(text), end + _TOKEN_REACH)
        while start > floor and text[start - 1] not in _TOKEN_END:
            start -= 1
        while end < ceil and text[end] not in _TOKEN_END:
            end += 1
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
        else:
            spans.append((start, end))
    return spans


_SECRETS = _Secrets()


def register_secret(key: str | None) -> None:
    """Remember a key so that `scrub` removes it, and its masked forms, from now on."""
    if key:
        _SECRETS.add(key)


def scrub(text: str, extra: Iterable[str | None] = ()) -> str:
    """`text` without any registered key (or `extra` key), masked form or ``sk-`` token."""
    for key in extra:
        if key:
            register_secret(key)
            text = text.replace(key.strip(), REDACTED)
    return _SECRETS.scrub(text)


def scrub_value(value: Any) -> Any:
    """`scrub` applied to every string inside a JSON-like value (dicts, lists, strings)."""
    if isinstance(value, str):
        return _SECRETS.scrub(value)
    if isinstance(value, dict):
        return {scrub_value(k): scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_value(v) for v in value]
    return value


def printable(text: Any) -> str:
    """`text` as one safe line: secrets scrubbed, control and bidi characters escaped."""
    return _CONTROL.sub(_escape, _SECRETS.scrub(str(text)))


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    return _ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback) scrubbed and on one line.

    Attach it to handlers, not loggers: a handler's filters see records propagated from
    every logger (httpcore, httpx, uvicorn), a logger's only its own.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = printable(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = _SECRETS.scrub(record.exc_text)
        return True


def install_log_redaction(*handlers: logging.Handler) -> None:
    """Put a `RedactingFilter` on `handlers` (default: every handler of the root logger)."""
    for handler in handlers or tuple(logging.getLogger().handlers):
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
