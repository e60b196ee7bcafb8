"""GatewayClient: one connection pool per gateway; every attempt becomes an Observation.

The pool is ``gw.max_concurrency`` keep-alive connections (HTTP/1.1 unless ``gw.http2``),
split into small httpx clients to keep httpcore's bookkeeping cheap (see `pool`).

Timing: ``t0`` is taken with `time.perf_counter` immediately before the request is
handed to httpx; every ``*_s`` field is seconds since ``t0``. A network chunk is
timestamped once when it arrives, so events that share a chunk share a time.

Deadlines: connect is httpx's connect timeout. First token, idle and total share one
asyncio timer. Until the first output token it is set to the first-token deadline, so
a model may think (or send only keep-alives) for that long without tripping ``idle``.
From the first token on, every network chunk re-arms it to ``idle`` seconds later,
capped by the total deadline. For a plain request the whole body counts as the first
token, so ``idle`` never applies to it.

Connection reuse: every response is read to EOF (bounded by ``max_response_bytes``),
also after ``[DONE]``, so the connection goes back to the pool. Draining after the end
marker gets `DRAIN_GRACE_S` at most and never changes the verdict.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import httpx

from aione_probe import __version__
from aione_probe.config import GatewayConfig
from aione_probe.errors import (
    FailureKind,
    GatewayError,
    ProtocolError,
    StatusError,
    TransportError,
)
from aione_probe.gateway.anthropic import AnthropicProtocol
from aione_probe.gateway.classify import (
    classify_exception,
    classify_status,
    parse_error_body,
    scrub,
)
from aione_probe.gateway.limits import Limiter, RateLimiter
from aione_probe.gateway.openai import OpenAIProtocol
from aione_probe.gateway.pool import SHARD_SIZE, ShardedPool
from aione_probe.gateway.protocol import ChatProtocol
from aione_probe.gateway.retry import backoff_delay, parse_retry_after
from aione_probe.sse import Event, SSEDecoder
from aione_probe.types import ChatRequest, Observation, utcnow

log = logging.getLogger(__name__)

DRAIN_GRACE_S = 2.0
USER_AGENT = f"aione-probe/{__version__}"
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-oneapi-request-id")

PROTOCOLS: dict[str, Callable[[GatewayConfig], ChatProtocol]] = {
    "openai": lambda gw: OpenAIProtocol(),
    "anthropic": lambda gw: AnthropicProtocol(gw.anthropic_version),
}


@dataclass
class _Attempt:
    """One attempt in flight: its clock origin and which deadline the timer holds."""

    t0: float
    timer: asyncio.Timeout
    total_at: float
    deadline: FailureKind = FailureKind.timeout_first_token
    first_token: bool = False
    complete: bool = False

    def rearm(self, now: float, idle: float) -> None:
        """After output started: expire `idle` seconds from `now` (loop time), or at total."""
        idle_at = now + idle
        if idle_at < self.total_at:
            self.timer.reschedule(idle_at)
            self.deadline = FailureKind.timeout_idle
        else:
            self.timer.reschedule(self.total_at)
            self.deadline = FailureKind.timeout_total


class GatewayClient:
    """Talk to one gateway: chat (plain or streaming) with timings, retries and limits.

    Example:
        >>> async with GatewayClient(gw) as client:
        ...     attempts = await client.chat(ChatRequest(model="m", messages=(msg,)))
        ...     final = attempts[-1]
    """

    def __init__(
        self,
        gw: GatewayConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: Limiter | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """Build the pooled client.

        Args:
            gw: the gateway's config.
            transport: an httpx transport to use instead of the network (tests).
            limiter: admission control; by default ``gw.max_concurrency`` and
                ``gw.requests_per_minute``.
            sleep: the sleep used between retries (tests pass a recorder).
            rand: uniform [0, 1) source for backoff jitter.
            clock: monotonic clock for the ``*_s`` timings.

        Raises:
            ValueError: ``gw.protocol`` has no implementation.
        """
        factory = PROTOCOLS.get(gw.protocol)
        if factory is None:
            raise ValueError(f"gateway {gw.name!r}: protocol {gw.protocol!r} is not available")
        self.gw = gw
        self._protocol = factory(gw)
        self._sleep = sleep
        self._rand = rand
        self._clock = clock
        if limiter is None:
            rpm = gw.requests_per_minute
            limiter = Limiter(gw.max_concurrency, RateLimiter(rpm) if rpm else None)
        self._limiter = limiter
        t = gw.timeouts
        # read=total is only a backstop: first-token, idle and total are enforced by _Attempt.
        timeout = httpx.Timeout(connect=t.connect, read=t.total, write=t.idle, pool=t.total)
        headers = {"User-Agent": USER_AGENT, **gw.headers}

        def make_client(connections: int) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                base_url=gw.base_url,
                transport=transport,
                http2=gw.http2,
                limits=httpx.Limits(
                    max_connections=connections, max_keepalive_connections=connections
                ),
                timeout=timeout,
                headers=headers,
                follow_redirects=False,
            )

        # An injected transport is one pool already: do not shard it.
        shard = gw.max_concurrency if transport is not None else SHARD_SIZE
        self._pool = ShardedPool(make_client, gw.max_concurrency, shard)
        self._http = self._pool.clients[0]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close pooled connections."""
        await self._pool.aclose()

    async def chat(self, req: ChatRequest) -> list[Observation]:
        """Send `req`, retrying 429 and 5xx per ``gw.retries``.

        Returns:
            One observation per attempt, numbered from 1; the last is final. Gateway
            behaviour never raises: failures are observations with a `FailureKind`.
        """
        policy = self.gw.retries
        attempts: list[Observation] = []
        for n in range(1, policy.max_attempts + 1):
            obs = await self.chat_once(req, attempt=n)
            attempts.append(obs)
            if n == policy.max_attempts or not obs.failure.retryable:
                break
            delay = backoff_delay(
                n,
                base=policy.base_delay,
                cap=policy.max_delay,
                retry_after=obs.retry_after_s,
                rand=self._rand,
            )
            log.info(
                "%s %s: attempt %d failed (%s), retrying in %.2fs",
                self.gw.name, req.model, n, obs.failure.value, delay,
            )  # fmt: skip
            await self._sleep(delay)
        return attempts

    async def chat_once(self, req: ChatRequest, attempt: int = 1) -> Observation:
        """Send `req` once (after waiting for a concurrency slot and the rate limit)."""
        obs = Observation(
            gateway=self.gw.name,
            model=req.model,
            protocol=self._protocol.name,
            stream=req.stream,
            attempt=attempt,
        )
        if req.stream:
            obs.usage_in_stream = False
        problem = self.gw.key_problem()
        if problem is not None:
            # Never send without the key the config names: a keyless request is billed to
            # nobody or, worse, answered by a relay that accepts anything.
            obs.started_at = utcnow()
            self._fail(obs, FailureKind.auth, f"not sent: {problem[0]}: {problem[1]}", None)
            return obs
        key = self.gw.api_key()
        path, headers, body = self._protocol.build_request(req)
        request = self._http.build_request(
            "POST", path, json=body, headers={**headers, **self._auth(key)}
        )
        async with self._limiter.slot():
            await self._exchange(request, obs, key)
        return obs

    async def list_models(self) -> list[str]:
        """Model ids from ``GET {base_url}/models``, in the gateway's order.

        Raises:
            TransportError: connect, TLS or timeout.
            StatusError: an HTTP error status (kind from the status and error body).
            ProtocolError: the body is not a model listing or is too large.
        """
        where = f"{self.gw.name}: GET {self._protocol.models_path}"
        problem = self.gw.key_problem()
        if problem is not None:
            message = f"{where}: not sent: {problem[0]}: {problem[1]}"
            raise GatewayError(message, FailureKind.auth)
        key = self.gw.api_key()
        request = self._http.build_request(
            "GET", self._protocol.models_path, headers=self._auth(key)
        )
        total = self.gw.timeouts.total
        try:
            async with self._limiter.slot(), asyncio.timeout(total):
                http = self._pool.acquire()
                try:
                    response = await http.send(request, stream=True)
                    try:
                        body = await _read_bounded(response, self.gw.limits.max_response_bytes)
                    finally:
                        await response.aclose()
                finally:
                    self._pool.release(http)
        except TimeoutError:
            message = f"{where}: no answer within {total:g}s"
            raise TransportError(message, FailureKind.timeout_total) from None
        except (httpx.HTTPError, OSError) as exc:
            kind = classify_exception(exc, after_headers=False)
            message = scrub(f"{where}: {self._describe(exc, kind)}", key)
            raise TransportError(message or where, kind) from None
        except ProtocolError as exc:
            raise ProtocolError(f"{where}: {exc}", exc.kind) from None
        status = response.status_code
        if not 200 <= status < 300:
            info = parse_error_body(body)
            kind = classify_status(status, info)
            detail = info.message or response.reason_phrase
            raise StatusError(
                scrub(f"{where}: HTTP {status} ({kind.value}): {detail}", key) or where,
                kind,
                status=status,
                error_type=scrub(info.type, key),
                error_code=scrub(info.code, key),
                retry_after_s=parse_retry_after(response.headers),
            )
        try:
            return self._protocol.parse_models(json.loads(body))
        except (ValueError, RecursionError):
            raise ProtocolError(f"{where}: body is not JSON", FailureKind.bad_response) from None
        except ProtocolError as exc:
            raise ProtocolError(f"{where}: {exc}", exc.kind) from None

    async def _exchange(self, request: httpx.Request, obs: Observation, key: str | None) -> None:
        t = self.gw.timeouts
        loop = asyncio.get_running_loop()
        http = self._pool.acquire()
        obs.started_at = utcnow()
        t0 = self._clock()
        start = loop.time()
        timer = asyncio.timeout_at(start + t.first_token)
        state = _Attempt(t0=t0, timer=timer, total_at=start + t.total)
        try:
            async with timer:
                response = await http.send(request, stream=True)
                try:
                    await self._receive(response, obs, state)
                finally:
                    obs.bytes_received = response.num_bytes_downloaded
                    await response.aclose()
        except TimeoutError as exc:
            if not timer.expired():
                self._fail(obs, FailureKind.connect, self._describe(exc, FailureKind.connect), key)
            elif not state.complete:  # else: it hit while draining; the answer stands
                messages = {
                    FailureKind.timeout_first_token: f"no output token within {t.first_token:g}s",
                    FailureKind.timeout_idle: f"no data for {t.idle:g}s after output started",
                    FailureKind.timeout_total: f"not finished within {t.total:g}s",
                }
                self._fail(obs, state.deadline, messages[state.deadline], key)
        except GatewayError as exc:
            self._fail(
                obs,
                exc.kind,
                str(exc),
                key,
                error_type=getattr(exc, "error_type", None),
                error_code=getattr(exc, "error_code", None),
            )
        except (httpx.HTTPError, OSError) as exc:
            kind = classify_exception(exc, after_headers=obs.headers_s is not None)
            self._fail(obs, kind, self._describe(exc, kind), key)
        finally:
            self._pool.release(http)
        if obs.end_s is None:
            obs.end_s = self._clock() - state.t0
        # An answer cut at max_tokens may decode to nothing (one token of a multi-byte
        # character): the gateway did answer, and its usage is still the measurement.
        cut_short = obs.finish_reason == "length" and (obs.usage.completion_tokens or 0) > 0
        if obs.ok and not (obs.content or obs.tool_calls or obs.content_parts or cut_short):
            message = "the response has no content and no tool calls"
            self._fail(obs, FailureKind.empty_response, message, key)

    async def _receive(
        self,
        response: httpx.Response,
        obs: Observation,
        state: _Attempt,
    ) -> None:
        obs.headers_s = self._clock() - state.t0
        obs.status = response.status_code
        obs.http_version = response.http_version
        obs.request_id = _request_id(response.headers)
        limit = self.gw.limits.max_response_bytes
        if not 200 <= response.status_code < 300:
            await self._raise_status(response, obs)
        ctype = response.headers.get("content-type", "").lower()
        if obs.stream and "json" not in ctype:
            await self._read_stream(response, obs, state)
            return
        body = await _read_bounded(response, limit)
        obs.end_s = obs.first_token_s = self._clock() - state.t0
        state.complete = True
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            snippet = body[:120].decode("utf-8", "replace")
            raise ProtocolError(
                f"response body is not JSON: {snippet!r}", FailureKind.bad_response
            ) from None
        self._protocol.parse_body(data, obs)

    async def _raise_status(self, response: httpx.Response, obs: Observation) -> None:
        try:
            body = await _read_bounded(response, self.gw.limits.max_response_bytes)
        except ProtocolError:
            body = b""  # an oversized error page: the status alone decides
        info = parse_error_body(body)
        kind = classify_status(response.status_code, info)
        obs.retry_after_s = parse_retry_after(response.headers)
        raise StatusError(
            info.message or f"HTTP {response.status_code} {response.reason_phrase}".strip(),
            kind,
            status=response.status_code,
            error_type=info.type,
            error_code=info.code,
            retry_after_s=obs.retry_after_s,
        )

    async def _read_stream(
        self,
        response: httpx.Response,
        obs: Observation,
        state: _Attempt,
    ) -> None:
        lim = self.gw.limits
        decoder = SSEDecoder(
            max_event_bytes=lim.max_event_bytes,
            max_response_bytes=lim.max_response_bytes,
            max_events=lim.max_events,
        )
        parser = self._protocol.stream_parser(obs)
        clock, t0 = self._clock, state.t0
        loop, idle = asyncio.get_running_loop(), self.gw.timeouts.idle
        last: float | None = None

        def apply(events: list[Event], now: float) -> None:
            nonlocal last
            for event in events:
                if parser.done:
                    return
                output = parser.feed(event)
                if event.is_done:
                    continue
                obs.chunk_count += 1
                if last is None:
                    obs.first_chunk_s = now
                else:
                    obs.gaps_s.append(now - last)
                last = now
                if output and not state.first_token:
                    state.first_token = True
                    obs.first_token_s = now

        chunks = response.aiter_bytes()
        now = 0.0
        try:
            async for chunk in chunks:
                now = clock() - t0
                apply(decoder.feed(chunk), now)
                if parser.done:
                    break
                if state.first_token:
                    state.rearm(loop.time(), idle)
            else:
                now = clock() - t0
                apply(decoder.close(), now)
        finally:
            parser.finish()
        if not parser.done and obs.finish_reason is None:
            raise ProtocolError("stream ended before a finish reason", FailureKind.stream_parse)
        obs.end_s = now
        state.complete = True
        if parser.done:
            await _drain(chunks, lim.max_response_bytes - decoder.bytes_received)

    def _auth(self, key: str | None) -> dict[str, str]:
        if not key or self.gw.auth_scheme == "none":
            return {}
        if self.gw.auth_scheme == "x-api-key":
            return {"x-api-key": key}
        return {"Authorization": f"Bearer {key}"}

    def _describe(self, exc: BaseException, kind: FailureKind) -> str:
        t = self.gw.timeouts
        if kind is FailureKind.timeout_connect:
            return f"no connection within {t.connect:g}s ({type(exc).__name__})"
        if kind is FailureKind.timeout_idle:
            return f"the connection stalled ({type(exc).__name__})"
        detail = str(exc)
        return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__

    @staticmethod
    def _fail(
        obs: Observation,
        kind: FailureKind,
        message: str,
        key: str | None,
        *,
        error_type: str | None = None,
        error_code: str | None = None,
    ) -> None:
        obs.failure = kind
        obs.error_message = scrub(message, key)
        obs.error_type = scrub(error_type, key)
        obs.error_code = scrub(error_code, key)


async def _read_bounded(response: httpx.Response, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"response exceeded {limit} bytes", FailureKind.too_large)
        parts.append(chunk)
    return b"".join(parts)


async def _drain(chunks: AsyncIterator[bytes], budget: int) -> None:
    try:
        async with asyncio.timeout(DRAIN_GRACE_S):
            async for chunk in chunks:
                budget -= len(chunk)
                if budget < 0:
                    return
    except (TimeoutError, httpx.HTTPError, OSError):
        pass  # the connection is closed instead of reused; the answer is unaffected


def _request_id(headers: httpx.Headers) -> str | None:
    for name in REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return value[:200]
    return None
