"""A relay in front of real engines: honest rewriting, hidden system prompts, partial routing.

A small Starlette app (run by uvicorn in a child process on 127.0.0.1, like the simulator)
that forwards OpenAI ``/v1/chat/completions`` requests to an upstream llama.cpp server and
does what relays in the wild do:

- **honest** rewriting: a fresh response id (``relay-<hex>``), the model alias echoed
  instead of the upstream's name, ``system_fingerprint`` dropped, 50–300 ms added;
- a **hidden system prompt** put in front of every conversation, with ``usage`` corrected
  so the extra prompt tokens do not show;
- **partial routing**: a share of requests (drawn per request) goes to a substitute
  upstream, optionally with ``usage`` recounted in the claimed model's tokenizer through
  llama-cpp-python's ``/extras/tokenize/count`` so token counts do not give it away;
- **caching** identical request bodies (a cost-saving relay that would fake independent
  samples of one prompt).

It exists for the real-engine benchmark (`bench/authenticity_real.py`) and the peer
tests; it is not part of the service. Use `RelayProcess` as a context manager.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from aione_probe.peers.llama import PeerUnavailableError, free_port, stop_child

START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RelaySettings:
    """What the relay does to each request (see the module docstring)."""

    upstream: str
    alias: str = "smollm2"
    substitute: str | None = None
    share: float = 0.0
    recount_usage: bool = False
    system_prompt: str | None = None
    delay_ms: tuple[float, float] = (0.0, 0.0)
    rewrite: bool = False
    cache: bool = False
    seed: int | None = None


class _Relay:
    def __init__(self, s: RelaySettings) -> None:
        self.s = s
        self.rng = random.Random(s.seed)
        self.client = httpx.AsyncClient(timeout=300.0)
        self.cache: dict[str, tuple[int, bytes, str]] = {}
        self.hidden_tokens: int | None = None
        self.lock = asyncio.Lock()

    async def count(self, text: str) -> int:
        """Tokens of `text` in the claimed model's tokenizer (the upstream's)."""
        r = await self.client.post(f"{self.s.upstream}/extras/tokenize/count", json={"input": text})
        r.raise_for_status()
        return int(r.json()["count"])

    async def hidden_overhead(self) -> int:
        """Prompt tokens the hidden system prompt adds, measured once on the upstream."""
        if self.hidden_tokens is None:
            probe = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
            with_sys = {**probe, "messages": self._inject(probe["messages"])}
            a = await self.client.post(f"{self.s.upstream}/v1/chat/completions", json=probe)
            b = await self.client.post(f"{self.s.upstream}/v1/chat/completions", json=with_sys)
            self.hidden_tokens = int(b.json()["usage"]["prompt_tokens"]) - int(
                a.json()["usage"]["prompt_tokens"]
            )
        return self.hidden_tokens

    def _inject(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self.s.system_prompt:
            return messages
        return [{"role": "system", "content": self.s.system_prompt}, *messages]

    async def fix_usage(self, usage: dict[str, Any], body: dict[str, Any], text: str, sub: bool):
        if self.s.system_prompt and "prompt_tokens" in usage:
            usage["prompt_tokens"] -= await self.hidden_overhead()
        if sub and self.s.recount_usage:
            # The claimed model's count of what was asked and answered: the template
            # overhead cancels because both sides render the same chat template.
            joined = "".join(str(m.get("content", "")) for m in body.get("messages", []))
            overhead = await self._template_overhead()
            usage["prompt_tokens"] = await self.count(joined) + overhead
            usage["completion_tokens"] = await self.count(text) if text else 0
        if "prompt_tokens" in usage and "completion_tokens" in usage:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]

    async def _template_overhead(self) -> int:
        if not hasattr(self, "_overhead"):
            probe = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
            r = await self.client.post(f"{self.s.upstream}/v1/chat/completions", json=probe)
            self._overhead = int(r.json()["usage"]["prompt_tokens"]) - await self.count("Hi")
        return self._overhead

    def rewrite(self, payload: dict[str, Any], rid: str) -> None:
        if not self.s.rewrite:
            return
        payload["id"] = rid
        payload["model"] = self.s.alias
        payload.pop("system_fingerprint", None)


async def _chat(relay: _Relay, request: Any) -> Any:
    from starlette.responses import Response, StreamingResponse

    raw = await request.body()
    body = json.loads(raw)
    key = raw.decode()
    if relay.s.cache and key in relay.cache:
        status, content, media = relay.cache[key]
        return Response(content, status_code=status, media_type=media)
    lo, hi = relay.s.delay_ms
    if hi > 0:
        await asyncio.sleep(relay.rng.uniform(lo, hi) / 1000.0)
    sub = relay.s.substitute is not None and relay.rng.random() < relay.s.share
    upstream = relay.s.substitute if sub else relay.s.upstream
    body["messages"] = relay._inject(body.get("messages", []))
    rid = f"relay-{secrets.token_hex(12)}"
    url = f"{upstream}/v1/chat/completions"
    if not body.get("stream"):
        async with relay.lock:
            r = await relay.client.post(url, json=body)
        payload = r.json()
        if r.status_code == 200:
            choice = (payload.get("choices") or [{}])[0]
            text = (choice.get("message") or {}).get("content") or ""
            if isinstance(payload.get("usage"), dict):
                await relay.fix_usage(payload["usage"], body, text, sub)
            relay.rewrite(payload, rid)
        content = json.dumps(payload).encode()
        if relay.s.cache:
            relay.cache[key] = (r.status_code, content, "application/json")
        return Response(content, status_code=r.status_code, media_type="application/json")

    async def stream() -> Any:
        text: list[str] = []
        async with relay.lock, relay.client.stream("POST", url, json=body) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    if line:
                        yield (line + "\n\n").encode()
                    continue
                chunk = json.loads(line[6:])
                for c in chunk.get("choices") or []:
                    text.append((c.get("delta") or {}).get("content") or "")
                if isinstance(chunk.get("usage"), dict):
                    await relay.fix_usage(chunk["usage"], body, "".join(text), sub)
                relay.rewrite(chunk, rid)
                yield f"data: {json.dumps(chunk)}\n\n".encode()

    return StreamingResponse(stream(), media_type="text/event-stream")


def create_app(settings: RelaySettings) -> Any:
    """The relay as a Starlette app."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    relay = _Relay(settings)

    async def chat(request: Any) -> Any:
        return await _chat(relay, request)

    async def models(request: Any) -> Any:
        return JSONResponse({"object": "list", "data": [{"id": settings.alias, "object": "model"}]})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


class RelayProcess:
    """The relay in a child process on 127.0.0.1 (``base_url`` like `LlamaServer`'s)."""

    def __init__(self, settings: RelaySettings, port: int | None = None) -> None:
        self.settings = settings
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="relay-", suffix=".log")[1])

    @property
    def base_url(self) -> str:
        """The relay's root URL."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RelayProcess:
        s = self.settings
        args = [sys.executable, "-m", "aione_probe.peers.relay", "--port", str(self.port),
                "--upstream", s.upstream, "--alias", s.alias, "--share", str(s.share),
                "--delay-ms", f"{s.delay_ms[0]},{s.delay_ms[1]}"]  # fmt: skip
        if s.substitute:
            args += ["--substitute", s.substitute]
        if s.system_prompt:
            args += ["--system-prompt", s.system_prompt]
        if s.seed is not None:
            args += ["--seed", str(s.seed)]
        args += [f"--{flag}" for flag in ("recount-usage", "rewrite", "cache")
                 if getattr(s, flag.replace("-", "_"))]  # fmt: skip
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self._proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/v1/models", timeout=2.0).status_code == 200:
                    return self
            time.sleep(0.1)
        tail = self._log.read_text(errors="replace")[-2000:]
        self.__exit__()
        raise PeerUnavailableError(f"relay did not start:\n{tail}")

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_child(proc)
        with contextlib.suppress(OSError):
            self._log.unlink()


def main(argv: list[str] | None = None) -> int:
    """``python -m aione_probe.peers.relay``: serve one relay on loopback."""
    import uvicorn

    p = argparse.ArgumentParser(prog="aione_probe.peers.relay")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--alias", default="smollm2")
    p.add_argument("--substitute")
    p.add_argument("--share", type=float, default=0.0)
    p.add_argument("--recount-usage", action="store_true")
    p.add_argument("--system-prompt")
    p.add_argument("--delay-ms", default="0,0")
    p.add_argument("--rewrite", action="store_true")
    p.add_argument("--cache", action="store_true")
    p.add_argument("--seed", type=int)
    a = p.parse_args(argv)
    lo, hi = (float(x) for x in a.delay_ms.split(","))
    settings = RelaySettings(
        upstream=a.upstream, alias=a.alias, substitute=a.substitute, share=a.share,
        recount_usage=a.recount_usage, system_prompt=a.system_prompt, delay_ms=(lo, hi),
        rewrite=a.rewrite, cache=a.cache, seed=a.seed,
    )  # fmt: skip
    uvicorn.run(create_app(settings), host="127.0.0.1", port=a.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
