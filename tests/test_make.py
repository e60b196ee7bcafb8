"""The Makefile: `make bench` installs what the benchmarks import."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_bench_installs_the_bench_extra() -> None:
    # -n: print what would run; -B: as if nothing were installed yet.
    out = subprocess.run(
        ["make", "-n", "-B", "bench"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    lines = out.splitlines()
    install = next(i for i, line in enumerate(lines) if "pip install" in line and "[bench]" in line)
    run = next(i for i, line in enumerate(lines) if "bench/engine.py" in line)
    assert install < run, out
    text = (ROOT / "pyproject.toml").read_text()
    assert 'bench = ["openai' in text  # the SDK bench/engine.py compares with
