"""Failure taxonomy.

Exception tree (what the code raises)::

    ProbeError
    ├── ConfigError        bad config or suite file: names file, key and reason
    │   └── ConfigErrors       several at once (all of a file's mistakes), one per line
    └── GatewayError       one request went wrong; carries a FailureKind
        ├── TransportError     connect, TLS, timeouts by phase
        ├── StatusError        HTTP status >= 400 (auth, rate limit, 4xx, 5xx)
        └── ProtocolError      malformed body, broken stream, empty or oversized answer

`FailureKind` is what gets stored: every observation carries exactly one, `ok`
included, so metrics, reports and drift can count causes instead of log lines.
"""

from __future__ import annotations

from enum import StrEnum


class FailureKind(StrEnum):
    """Why one request attempt failed (or `ok`). A small, fixed enum: safe as a metric label."""

    ok = "ok"
    timeout_connect = "timeout_connect"
    timeout_first_token = "timeout_first_token"
    timeout_idle = "timeout_idle"
    timeout_total = "timeout_total"
    connect = "connect"
    tls = "tls"
    auth = "auth"
    forbidden = "forbidden"
    rate_limited = "rate_limited"
    http_4xx = "http_4xx"
    http_5xx = "http_5xx"
    model_not_found = "model_not_found"
    context_length = "context_length"
    bad_response = "bad_response"
    stream_parse = "stream_parse"
    empty_response = "empty_response"
    too_large = "too_large"
    cancelled = "cancelled"

    @property
    def is_timeout(self) -> bool:
        """True for the four timeout phases."""
        return self.value.startswith("timeout_")

    @property
    def retryable(self) -> bool:
        """429 and 5xx are retried (with backoff); everything else is final."""
        return self in (FailureKind.rate_limited, FailureKind.http_5xx)


class ProbeError(Exception):
    """Base of every error aione-probe raises on purpose."""


class ConfigError(ProbeError):
    """A config or suite file is invalid.

    The message reads ``file: key: reason`` so an operator can fix it at a glance.
    """

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        super().__init__(f"{file}: {key}: {reason}")


class ConfigErrors(ConfigError):
    """Every mistake found at once; the message has one ``file: key: reason`` per line.

    The first error's `file`, `key` and `reason` are this exception's own, so code that
    handles a single `ConfigError` keeps working.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        if not errors:
            raise ValueError("ConfigErrors needs at least one error")
        first = errors[0]
        super().__init__(first.file, first.key, first.reason)
        self.errors = list(errors)

    def __str__(self) -> str:
        return "\n".join(f"{e.file}: {e.key}: {e.reason}" for e in self.errors)


def config_errors(errors: list[ConfigError]) -> ConfigError:
    """One exception for `errors`: the error itself when there is one, else `ConfigErrors`."""
    flat = [e for err in errors for e in getattr(err, "errors", [err])]
    return flat[0] if len(flat) == 1 else ConfigErrors(flat)


class GatewayError(ProbeError):
    """One request to a gateway failed; `kind` is the stored failure class."""

    kind: FailureKind = FailureKind.bad_response

    def __init__(self, message: str, kind: FailureKind | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class TransportError(GatewayError):
    """Connect, TLS or a timeout in one of the request phases."""

    kind = FailureKind.connect


class StatusError(GatewayError):
    """The gateway answered with an HTTP error status."""

    kind = FailureKind.http_4xx

    def __init__(
        self,
        message: str,
        kind: FailureKind | None = None,
        *,
        status: int,
        error_type: str | None = None,
        error_code: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, kind)
        self.status = status
        self.error_type = error_type
        self.error_code = error_code
        self.retry_after_s = retry_after_s


class ProtocolError(GatewayError):
    """The body or the event stream broke the protocol (or a size cap)."""

    kind = FailureKind.stream_parse
