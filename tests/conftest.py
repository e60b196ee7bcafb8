"""Shared fixtures: a real llama.cpp engine (SmolLM2) for the `peer` tests.

A peer test skips with the reason when llama-cpp-python or the SmolLM2 wheel is missing,
unless ``AIONE_REQUIRE_PEER=1`` (set by ``.ci/run``), where a missing engine is a failure:
CI must never pass a real-engine test by skipping it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from aione_probe.peers.llama import LlamaServer, smollm2_gguf, unavailable_reason


def require_peer() -> None:
    """Skip (or fail under AIONE_REQUIRE_PEER=1) when no real engine can run here."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("AIONE_REQUIRE_PEER") == "1":
        pytest.fail(f"real engine required but unavailable: {reason}")
    pytest.skip(f"real engine unavailable: {reason}")


@pytest.fixture(scope="session")
def smollm2_server() -> Iterator[LlamaServer]:
    """llama.cpp serving SmolLM2-135M-Instruct as model ``smollm2`` on loopback (shared)."""
    require_peer()
    with LlamaServer(smollm2_gguf(), alias="smollm2") as server:
        yield server
