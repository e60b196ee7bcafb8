"""Shared fixtures: a real llama.cpp engine (SmolLM2) for the `peer` tests, and LiteLLM's
proxy in front of it as a real gateway.

A peer test skips with the reason when llama-cpp-python, the SmolLM2 wheel or the LiteLLM
venv (``make litellm``) is missing, unless ``AIONE_REQUIRE_PEER=1`` (set by ``.ci/run``),
where a missing engine is a failure: CI must never pass a real-engine test by skipping it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aione_probe.peers import litellm
from aione_probe.peers.llama import LlamaServer, smollm2_gguf, unavailable_reason

ROOT = Path(__file__).resolve().parent.parent
LITELLM_KEY = "sk-9f3a7c1e5b2d8046a1"
"""The proxy's master key: the only key it accepts (it must never reach the store). It shares
no six characters with any other string of the tests, which the scrubber would redact."""


def _unavailable(what: str, reason: str | None) -> None:
    if reason is None:
        return
    if os.environ.get("AIONE_REQUIRE_PEER") == "1":
        pytest.fail(f"{what} required but unavailable: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


def require_peer() -> None:
    """Skip (or fail under AIONE_REQUIRE_PEER=1) when no real engine can run here."""
    _unavailable("real engine", unavailable_reason())


@pytest.fixture(scope="session")
def smollm2_server() -> Iterator[LlamaServer]:
    """llama.cpp serving SmolLM2-135M-Instruct as model ``smollm2`` on loopback (shared)."""
    require_peer()
    with LlamaServer(smollm2_gguf(), alias="smollm2") as server:
        yield server


@pytest.fixture(scope="session")
def litellm_proxy(request: pytest.FixtureRequest) -> Iterator[litellm.LiteLLMProxy]:
    """LiteLLM's proxy serving ``smollm2`` from the shared llama.cpp server (both protocols)."""
    venv = litellm.litellm_venv(
        None if os.environ.get(litellm.VENV_ENV) else ROOT / ".venv-litellm"
    )
    _unavailable("LiteLLM proxy", litellm.unavailable_reason(venv))
    # Asked for only now: without LiteLLM there is no reason to start llama.cpp.
    upstream: LlamaServer = request.getfixturevalue("smollm2_server")
    with litellm.LiteLLMProxy(
        f"{upstream.base_url}/v1", model="smollm2", master_key=LITELLM_KEY, venv=venv
    ) as proxy:
        yield proxy
