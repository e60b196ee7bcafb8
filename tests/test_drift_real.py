"""Drift on a real engine: SmolLM2 on llama.cpp stays ``ok``, a requantised swap regresses.

The short version of bench/drift_real.py (figures in the README): 8 baseline runs, 3 more on
the same weights, then the served weights are swapped for a Q2_K copy on the same port.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import require_peer

from aione_probe.peers.llama import quantize, smollm2_gguf

pytestmark = pytest.mark.peer

BENCH = Path(__file__).resolve().parent.parent / "bench" / "drift_real.py"


def _bench():
    spec = importlib.util.spec_from_file_location("drift_real", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_weight_swap_turns_the_drift_verdict_regressed(tmp_path: Path) -> None:
    require_peer()
    bench = _bench()
    q2 = quantize(smollm2_gguf(), tmp_path / "q2k.gguf", "q2_k")
    steps = asyncio.run(bench.campaign(tmp_path, baseline=8, null=3, after=4, swap_to=q2))
    assert [s.verdict for s in steps[:7]] == ["insufficient_data"] * 7
    assert [s.verdict for s in steps if s.phase == "null"] == ["ok"] * 3
    result = bench.summary(steps)
    assert result["runs_to_regressed"] is not None and result["runs_to_regressed"] <= 4
    assert "pass_rate" in result["tripped"]
    assert result["pass_after"] < result["pass_before"]
