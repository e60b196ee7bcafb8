"""LiteLLM's proxy on loopback: a real gateway, in front of a llama.cpp server, both protocols.

`LiteLLMProxy` runs the ``litellm`` console script of a separate virtual environment
(``make litellm`` builds ``.venv-litellm`` from hashed pins; LiteLLM is never a dependency
of aione-probe) bound to 127.0.0.1 on a free port, with one model whose ``hosted_vllm/``
provider forwards to an OpenAI-compatible upstream. The proxy then serves that model as
OpenAI ``/v1/chat/completions`` and Anthropic ``/v1/messages``, both mapped onto the
upstream's chat endpoint.

The child gets a local cost map (``LITELLM_LOCAL_MODEL_COST_MAP``) and, as a guard, an HTTP
proxy on a closed loopback port for everything but 127.0.0.1, so nothing it might try to
fetch leaves the machine. Callers ask `unavailable_reason()` first and skip with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

from aione_probe.peers.llama import free_port, stop_child, wait_until_ready

VENV_ENV = "AIONE_LITELLM_VENV"
DEFAULT_VENV = Path(".venv-litellm")
START_TIMEOUT_S = 120.0
# Where any non-loopback request of the child goes: port 9 (discard) on loopback, closed.
DEAD_PROXY = "http://127.0.0.1:9"


def litellm_venv(venv: Path | None = None) -> Path:
    """The LiteLLM virtual environment: `venv`, ``$AIONE_LITELLM_VENV`` or ``.venv-litellm``."""
    return venv or Path(os.environ.get(VENV_ENV) or DEFAULT_VENV)


def unavailable_reason(venv: Path | None = None) -> str | None:
    """Why LiteLLM's proxy cannot run here, or None when it can."""
    root = litellm_venv(venv)
    if not (root / "bin" / "litellm").is_file():
        return f"no LiteLLM proxy in {root} (make litellm)"
    if not (root / ".installed").is_file():
        return f"{root} is incomplete: its hashed install did not finish (make litellm)"
    return None


class LiteLLMProxy:
    """LiteLLM's proxy serving `model` from `upstream` (an OpenAI base URL), as a context
    manager. ``base_url`` is the proxy root: OpenAI clients use ``base_url + "/v1"``,
    Anthropic clients ``base_url``. Only `master_key` is accepted as a key."""

    def __init__(
        self,
        upstream: str,
        *,
        model: str,
        master_key: str,
        venv: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.model = model
        self.master_key = master_key
        self.venv = litellm_venv(venv)
        self.port = port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="litellm-"))
        self._log = self._dir / "litellm.log"

    @property
    def base_url(self) -> str:
        """The proxy's root URL."""
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        # JSON is YAML: no YAML writer needed. The upstream needs no key (llama.cpp).
        config = {
            "model_list": [
                {
                    "model_name": self.model,
                    "litellm_params": {
                        "model": f"hosted_vllm/{self.model}",
                        "api_base": self.upstream,
                        "api_key": "none",
                    },
                }
            ],
            "general_settings": {"master_key": self.master_key},
        }
        path = self._dir / "config.yaml"
        path.write_text(json.dumps(config, indent=2))
        return path

    def start(self) -> LiteLLMProxy:
        """Start the proxy and wait until it is live; raise with its log if it is not."""
        if self._proc is not None:
            return self
        env = {
            **os.environ,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "HTTP_PROXY": DEAD_PROXY,
            "HTTPS_PROXY": DEAD_PROXY,
            "NO_PROXY": "127.0.0.1,localhost",
        }
        command = [
            str(self.venv / "bin" / "litellm"),
            "--config", str(self._write_config()),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--num_workers", "1",
        ]  # fmt: skip
        with self._log.open("ab") as log:
            self._proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"{self.base_url}/health/liveliness"
        if wait_until_ready(self._proc, url, timeout_s=START_TIMEOUT_S):
            return self
        tail = self._log.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"LiteLLM proxy did not start:\n{tail}")

    def stop(self) -> None:
        """Stop the proxy (SIGTERM, then SIGKILL after 10 s)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_child(proc)

    def __enter__(self) -> LiteLLMProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for path in self._dir.iterdir():
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self._dir.rmdir()
