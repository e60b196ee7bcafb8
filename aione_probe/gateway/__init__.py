"""Talk to a gateway: chat (plain and streaming), model listing, timings, errors, limits.

`GatewayClient` is the entry point; `classify_*` map every foreign error to a
`FailureKind`; a protocol module (`openai`) translates requests and responses.
"""

from aione_probe.gateway.classify import (
    ErrorInfo,
    classify_error_event,
    classify_exception,
    classify_status,
    parse_error_body,
    scrub,
)
from aione_probe.gateway.client import PROTOCOLS, GatewayClient
from aione_probe.gateway.limits import Limiter, RateLimiter
from aione_probe.gateway.openai import OpenAIProtocol, parse_usage
from aione_probe.gateway.protocol import ChatProtocol, StreamParser, normalize_finish_reason
from aione_probe.gateway.retry import backoff_delay, parse_retry_after

__all__ = [
    "PROTOCOLS",
    "ChatProtocol",
    "ErrorInfo",
    "GatewayClient",
    "Limiter",
    "OpenAIProtocol",
    "RateLimiter",
    "StreamParser",
    "backoff_delay",
    "classify_error_event",
    "classify_exception",
    "classify_status",
    "normalize_finish_reason",
    "parse_error_body",
    "parse_retry_after",
    "parse_usage",
    "scrub",
]
