"""Engine benchmark: TTFT measurement error and client CPU cost of the gateway client.

Starts a local streaming server in a separate process (uvicorn + a tiny Starlette app).
Each streamed answer sends a role chunk at once, its first content chunk after
``--first-token-ms`` and then ``--chunks`` more every ``--interval-ms``; the server stamps
(with `time.time`) when it received the request and when it sent the first content
chunk, and reports both in a ``x_server`` field of the final usage object.

For each client (aione-probe's `GatewayClient`, raw httpx streaming, the official
``openai`` SDK's ``AsyncOpenAI``) and each concurrency level, it reports the TTFT error
(client-measured TTFT minus the server's receipt-to-first-content time; p50 and p99 in
ms) and client CPU seconds (`time.process_time`) per 1,000 streamed requests.

Usage::

    .venv/bin/python bench/engine.py                # default: about 1-2 minutes on 2 cores
    .venv/bin/python bench/engine.py --levels 1,50 --requests 100 --clients aione,httpx
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import multiprocessing as mp
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MESSAGES = [{"role": "user", "content": "bench"}]
MODEL = "bench-model"


# --- server (child process) -----------------------------------------------------------------


def _chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    obj: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    obj.update(extra)
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _serve(port_queue: Any, first_token_s: float, chunks: int, interval_s: float) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> StreamingResponse:
        received = time.time()
        await request.body()

        async def gen() -> AsyncIterator[bytes]:
            yield _chunk({"role": "assistant", "content": ""})
            await asyncio.sleep(first_token_s)
            data = _chunk({"content": "tok0"})
            first = time.time()
            yield data
            for i in range(1, chunks):
                await asyncio.sleep(interval_s)
                yield _chunk({"content": f" tok{i}"})
            yield _chunk({}, "stop")
            usage = {
                "prompt_tokens": 5,
                "completion_tokens": chunks,
                "total_tokens": 5 + chunks,
                "x_server": {"received": received, "first_content": first},
            }
            yield _chunk(None, usage=usage)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(gen(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port_queue.put(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    config.backlog = 4096
    uvicorn.Server(config).run(sockets=[sock])


# --- clients ----------------------------------------------------------------------------------


@dataclass
class Sample:
    """One streamed request: client TTFT and the server's own TTFT, in seconds."""

    client_ttft: float
    server_ttft: float


def _server_ttft(usage: dict[str, Any] | None) -> float:
    stamps = (usage or {})["x_server"]
    return float(stamps["first_content"] - stamps["received"])


Runner = Callable[[], Awaitable[Sample]]


class AioneClient:
    """aione-probe's GatewayClient."""

    name = "aione-probe"

    def __init__(self, base_url: str, concurrency: int) -> None:
        from aione_probe.config import GatewayConfig
        from aione_probe.gateway import GatewayClient
        from aione_probe.types import ChatRequest

        gw = GatewayConfig(
            name="bench",
            base_url=base_url,
            auth="none",
            max_concurrency=concurrency,
            requests_per_minute=None,
            retries={"max_attempts": 1},
            timeouts={"connect": 30, "first_token": 120, "idle": 120, "total": 300},
        )
        self._client = GatewayClient(gw)
        self._req = ChatRequest(model=MODEL, messages=tuple(MESSAGES), stream=True)

    async def one(self) -> Sample:
        """Stream one request."""
        [obs] = await self._client.chat(self._req)
        if not obs.ok or obs.first_token_s is None:
            raise RuntimeError(f"aione-probe request failed: {obs.failure} {obs.error_message}")
        return Sample(obs.first_token_s, _server_ttft(obs.usage.raw))

    async def aclose(self) -> None:
        """Close the pool."""
        await self._client.aclose()


class HttpxClient:
    """Raw httpx streaming with ``aiter_lines`` and ``json.loads`` per data line."""

    name = "raw httpx"

    def __init__(self, base_url: str, concurrency: int) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            base_url=base_url,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=httpx.Timeout(120, connect=30),
        )
        self._body = {
            "model": MODEL,
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def one(self) -> Sample:
        """Stream one request."""
        first: float | None = None
        usage: dict[str, Any] | None = None
        t0 = time.perf_counter()
        async with self._client.stream("POST", "/chat/completions", json=self._body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                obj = json.loads(data)
                if obj.get("usage"):
                    usage = obj["usage"]
                for choice in obj.get("choices") or []:
                    if first is None and (choice.get("delta") or {}).get("content"):
                        first = time.perf_counter() - t0
        if first is None:
            raise RuntimeError("raw httpx: no content")
        return Sample(first, _server_ttft(usage))

    async def aclose(self) -> None:
        """Close the pool."""
        await self._client.aclose()


class OpenAIClient:
    """The official SDK: ``AsyncOpenAI(...).chat.completions.create(stream=True)``."""

    name = "openai SDK"

    def __init__(self, base_url: str, concurrency: int) -> None:
        import httpx
        from openai import AsyncOpenAI

        http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            timeout=httpx.Timeout(120, connect=30),
        )
        self._client = AsyncOpenAI(
            base_url=base_url, api_key="bench", max_retries=0, http_client=http
        )

    async def one(self) -> Sample:
        """Stream one request."""
        first: float | None = None
        usage: dict[str, Any] | None = None
        t0 = time.perf_counter()
        stream = await self._client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.usage is not None:
                usage = {"x_server": getattr(chunk.usage, "x_server", None)}
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - t0
        if first is None:
            raise RuntimeError("openai SDK: no content")
        return Sample(first, _server_ttft(usage))

    async def aclose(self) -> None:
        """Close the pool."""
        await self._client.close()


CLIENTS = {"aione": AioneClient, "httpx": HttpxClient, "openai": OpenAIClient}


# --- measurement ----------------------------------------------------------------------------


@dataclass
class Result:
    """One (client, concurrency) cell of the table."""

    client: str
    concurrency: int
    n: int
    p50_ms: float
    p99_ms: float
    cpu_per_1k: float
    wall_s: float


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def _measure(kind: type, base_url: str, concurrency: int, requests: int) -> Result:
    client = kind(base_url, concurrency)
    try:
        # Warm the pool so TTFT excludes connection setup, as on a long-lived probe.
        await asyncio.gather(*(client.one() for _ in range(concurrency)))
        per_worker = max(1, requests // concurrency)
        samples: list[Sample] = []

        async def worker() -> None:
            for _ in range(per_worker):
                samples.append(await client.one())

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await client.aclose()
    errors = [(s.client_ttft - s.server_ttft) * 1000 for s in samples]
    return Result(
        client=kind.name,
        concurrency=concurrency,
        n=len(samples),
        p50_ms=statistics.median(errors),
        p99_ms=_percentile(errors, 0.99),
        cpu_per_1k=cpu / len(samples) * 1000,
        wall_s=wall,
    )


def _table(results: list[Result], args: argparse.Namespace) -> str:
    head = (
        f"TTFT error = client TTFT - server (receipt -> first content chunk); "
        f"server: first token after {args.first_token_ms:g} ms, {args.chunks} content chunks "
        f"every {args.interval_ms:g} ms"
    )
    cols = f"{'client':<12} {'conc':>5} {'n':>6} {'p50 err ms':>11} {'p99 err ms':>11} "
    cols += f"{'CPU s/1k req':>13} {'wall s':>7}"
    lines = [head, cols, "-" * len(cols)]
    for r in results:
        lines.append(
            f"{r.client:<12} {r.concurrency:>5} {r.n:>6} {r.p50_ms:>11.2f} {r.p99_ms:>11.2f} "
            f"{r.cpu_per_1k:>13.2f} {r.wall_s:>7.1f}"
        )
    return "\n".join(lines)


async def _run(base_url: str, args: argparse.Namespace) -> list[Result]:
    results = []
    for level in args.levels:
        for name in args.clients:
            requests = max(args.requests, level) if level > 1 else args.requests_serial
            result = await _measure(CLIENTS[name], base_url, level, requests)
            print(
                f"  {result.client:<12} conc={level:<4} n={result.n:<5} "
                f"p50={result.p50_ms:.2f}ms cpu/1k={result.cpu_per_1k:.2f}s",
                flush=True,
            )
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> None:
    """Parse flags, start the server process, run every (level, client) and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--levels", default="1,50,200", help="concurrency levels (default 1,50,200)")
    p.add_argument("--clients", default="aione,httpx,openai", help="aione,httpx,openai")
    p.add_argument("--requests", type=int, default=400, help="requests per concurrent level")
    p.add_argument("--requests-serial", type=int, default=40, help="requests at concurrency 1")
    p.add_argument("--first-token-ms", type=float, default=100.0)
    p.add_argument("--chunks", type=int, default=8, help="content chunks per answer")
    p.add_argument("--interval-ms", type=float, default=20.0)
    args = p.parse_args(argv)
    args.levels = [int(x) for x in args.levels.split(",")]
    args.clients = [c.strip() for c in args.clients.split(",")]
    unknown = set(args.clients) - set(CLIENTS)
    if unknown:
        p.error(f"unknown client(s): {', '.join(sorted(unknown))}")
    if "openai" in args.clients and importlib.util.find_spec("openai") is None:
        p.error(
            "the openai client needs the bench extra: `make bench`, or "
            "pip install -e '.[bench]', or --clients aione,httpx"
        )

    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(
        target=_serve,
        args=(ports, args.first_token_ms / 1000, args.chunks, args.interval_ms / 1000),
        daemon=True,
    )
    server.start()
    try:
        port = ports.get(timeout=30)
        base_url = f"http://127.0.0.1:{port}/v1"
        _wait_listening(port)
        started = time.perf_counter()
        results = asyncio.run(_run(base_url, args))
        print()
        print(_table(results, args))
        print(f"\ntotal {time.perf_counter() - started:.0f}s")
    finally:
        server.terminate()
        server.join(10)


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("bench server did not start")


if __name__ == "__main__":
    main()
