"""SLIs per request, per-target objectives from the config, and check-config's flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from aione_probe.cli import main
from aione_probe.config import load_config
from aione_probe.errors import FailureKind
from aione_probe.slo import LOOPBACK_FLOOR_S, Objectives, sli_events
from aione_probe.types import Observation

OBJ = Objectives(ttft_s=1.0, e2e_s=5.0)


def final(**kw: object) -> Observation:
    return Observation(gateway="g", model="m", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("obs", "events"),
    [
        (final(stream=True, first_token_s=0.5, end_s=2.0),
         [("availability", True), ("ttft", True), ("e2e", True)]),
        (final(stream=True, first_token_s=1.5, end_s=6.0),
         [("availability", True), ("ttft", False), ("e2e", False)]),
        # a plain request's TTFT is its whole body: only e2e judges it
        (final(stream=False, end_s=1.5), [("availability", True), ("e2e", True)]),
        # HTTP errors and broken bodies: availability only, never a latency event
        (final(stream=True, failure=FailureKind.http_5xx), [("availability", False)]),
        (final(stream=True, failure=FailureKind.rate_limited), [("availability", False)]),
        (final(stream=True, failure=FailureKind.stream_parse), [("availability", False)]),
        # a timeout is unavailable and a latency miss
        (final(stream=True, failure=FailureKind.timeout_first_token),
         [("availability", False), ("ttft", False), ("e2e", False)]),
        (final(stream=False, failure=FailureKind.timeout_total),
         [("availability", False), ("e2e", False)]),
        # a run cancelled by shutdown is no event at all
        (final(stream=True, failure=FailureKind.cancelled), []),
    ],
)  # fmt: skip
def test_sli_events_of_one_request(obs: Observation, events: list[tuple[str, bool]]) -> None:
    assert sli_events(obs, OBJ) == events


CONFIG = """
[[gateways]]
name = "a"
base_url = "https://a.example/v1"
auth = "none"
models = ["fast-1", "slow-1"]

[[slos]]
models = ["fast-*"]
availability = 0.995
ttft = {{ threshold = "{ttft}", target = 0.95 }}

[[slos]]
e2e = {{ threshold = "60s" }}
"""


def test_first_covering_slo_entry_applies_and_unset_keys_default(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(ttft="800ms"))
    cfg = load_config(path)
    fast = cfg.objectives_for("a", "fast-1")
    assert (fast.availability_target, fast.ttft_s, fast.ttft_target) == (0.995, 0.8, 0.95)
    assert fast.e2e_s == Objectives().e2e_s  # not inherited from the later entry
    slow = cfg.objectives_for("a", "slow-1")
    assert slow.e2e_s == 60 and slow.ttft_s == Objectives().ttft_s


def test_check_config_accepts_but_flags_an_objective_that_cannot_be_met(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(ttft="0.2ms") + "availability = 1.0\n")
    assert main(["check-config", str(path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: slos[0]: ttft threshold 0.2 ms is below the loopback floor" in out
    assert f"({LOOPBACK_FLOOR_S * 1000:g} ms)" in out
    assert "warning: slos[1]: availability target 1.0 leaves no error budget" in out
    path.write_text(CONFIG.format(ttft="800ms"))
    assert main(["check-config", str(path)]) == 0
    assert "warning" not in capsys.readouterr().out
