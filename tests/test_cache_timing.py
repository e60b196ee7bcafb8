"""Cache claims judged by timing: a relay claiming cached tokens without a speed-up fails."""

from __future__ import annotations

from pathlib import Path

import faultserver
import pytest

from aione_probe.checks import CheckContext, run_group_checks
from aione_probe.checks.cache import timing_test
from aione_probe.config import GatewayConfig
from aione_probe.cost import Price
from aione_probe.gateway import GatewayClient
from aione_probe.suites import load_suite
from aione_probe.types import CheckValue

ROOT = Path(__file__).resolve().parent.parent
PRICE = Price(input=1.0, output=2.0, cached_input=0.5, currency="USD")


async def _cache_run(script: str) -> tuple[CheckValue, dict]:
    suite = load_suite(ROOT / "probes" / "cache.toml")
    instances = suite.expand(seed=3)
    gw = GatewayConfig(name="relay", base_url="http://x", auth="none", requests_per_minute=None)
    with faultserver.running() as server:
        gw = gw.model_copy(update={"base_url": server.base_url})
        async with GatewayClient(gw) as client:
            finals = [(await client.chat(i.request(script)))[-1] for i in instances]
    assert all(o.ok for o in finals)
    ctx = CheckContext(instance=instances[0], request=instances[0].request(script), price=PRICE)
    (res,) = run_group_checks(instances, finals, ctx)
    return res.value, res.metadata


async def test_fake_cache_hits_without_speed_up_are_discount_unverified() -> None:
    value, meta = await _cache_run("cache:fake")
    assert meta["hit_ratio"] == 1.0  # the relay claims 90 % cached on every repeat
    assert value is CheckValue.failed and meta["outcome"] == "discount_unverified"
    assert meta["timing_p"] > 0.5 and not meta["verified"]


async def test_real_cache_is_verified_by_timing() -> None:
    value, meta = await _cache_run("cache:real")
    assert value is CheckValue.passed and meta["outcome"] == "hit"
    assert meta["timing_p"] == pytest.approx(1 / 252)  # 5 v 5, every repeat faster
    assert meta["verified"] and meta["saved"] > 0 and meta["speedup"] > 0.5


async def test_timing_only_finds_a_cache_that_reports_no_field() -> None:
    value, meta = await _cache_run("cache:nofield")
    assert value is CheckValue.missing and meta["outcome"] == "timing_hit"
    assert meta["timing_faster"]


def test_timing_test_needs_three_per_side_and_is_one_sided() -> None:
    assert timing_test([1.0, 1.1], [0.1, 0.2], 0.05)["timing_p"] is None
    slower = timing_test([1.0, 1.1, 1.2], [2.0, 2.1, 2.2], 0.05)
    assert slower["timing_faster"] is False and slower["speedup"] < 0
    faster = timing_test([1.0, 1.1, 1.2, 1.3], [0.1, 0.2, 0.3, 0.4], 0.05)
    assert faster["timing_faster"] and faster["timing_p"] == pytest.approx(1 / 70)


async def test_unverified_discount_is_exported_and_reported_as_claimed_not_saved(
    tmp_path: Path,
) -> None:
    """A full run of the cache suite against the fake-cache relay: the finding is counted
    in /metrics and the report shows the claimed saving as unverified, saving nothing."""
    import json

    from prometheus_client import CollectorRegistry

    from aione_probe.config import load_config
    from aione_probe.metrics import ProbeMetrics
    from aione_probe.service import run_service

    with faultserver.running() as server:
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'probes_dir = "{ROOT / "probes"}"\n'
            f'[[gateways]]\nname = "relay"\nbase_url = "{server.base_url}"\nauth = "none"\n'
            'models = ["cache:fake"]\nrequests_per_minute = 6000\n'
            '[[suites]]\nfile = "cache.toml"\ninterval = "1h"\n'
            '[pricing."*"]\ninput = 1.0\noutput = 2.0\ncached_input = 0.1\n'
            f'[storage]\nurl = "sqlite:///{tmp_path / "p.db"}"\n'
            f'[reports]\ndir = "{tmp_path / "reports"}"\n'
        )
        metrics = ProbeMetrics(CollectorRegistry())
        await run_service(load_config(cfg), metrics=metrics, report=True)
    labels = {"gateway": "relay", "model": "cache:fake", "suite": "cache", "check": "cache"}
    found = metrics.registry.get_sample_value(
        "aione_probe_check_findings_total", {**labels, "finding": "discount_unverified"}
    )
    assert found == 1.0
    (target,) = json.loads((tmp_path / "reports" / "report.json").read_text())["targets"]
    assert target["cache"]["saved"] == 0.0 and target["cache"]["unverified"] > 0
    assert target["cache"]["unverified_runs"] == 1
    (page,) = [p for p in (tmp_path / "reports").glob("*.html") if p.name != "index.html"]
    assert "Claimed saving, unverified (1 runs)" in page.read_text()


# -- cached tokens claimed outside the cache probe -------------------------------------------


def _claims_suite(folder: Path, probes: int = 4, samples: int = 6) -> Path:
    """Ordinary probes (no cache group check) with long prompts, each sampled `samples`
    times: the scripted relays cache by prompt, so every sample after the first claims."""
    lines = ['[suite]\nid = "claims"\nversion = 1\n']
    for p in range(probes):
        words = " ".join(f"w{p}x{i}" for i in range(1500))  # ~2,000 prompt tokens
        lines.append(
            f'[[probe]]\nid = "long-{p}"\nprompt = "Say OK. {words}"\nmax_tokens = 4\n'
            f"samples = {samples}\nstream = true\n"
        )
    path = folder / "claims.toml"
    path.write_text("\n".join(lines))
    return path


async def _claims_run(script: str, tmp_path: Path) -> dict:
    """One run of the claims suite through the runner: the stored `cache_claims` result."""
    from aione_probe.asyncstore import AsyncStore
    from aione_probe.runner import Target, run_suite
    from aione_probe.store import Store

    suite = load_suite(_claims_suite(tmp_path))
    store = Store(f"sqlite:///{tmp_path / 'p.db'}")
    store.migrate()
    astore = AsyncStore(store)
    gw = GatewayConfig(name="relay", base_url="http://x", auth="none", requests_per_minute=None)
    try:
        with faultserver.running() as server:
            gw = gw.model_copy(update={"base_url": server.base_url})
            async with GatewayClient(gw) as client:
                await run_suite(Target("relay", script), suite, client=client, astore=astore,
                                price=PRICE, seed=1)  # fmt: skip
        results = [c for c in store.check_results() if c.name == "cache_claims"]
    finally:
        astore.close()
        store.close()
    assert len(results) == 1, results
    return {"value": results[0].value, **(results[0].meta or {})}


async def test_claims_outside_the_cache_probe_without_speed_up_are_unverified(
    tmp_path: Path,
) -> None:
    meta = await _claims_run("cache:fake", tmp_path)
    assert meta["n_claimed"] == 20 and meta["probes_compared"] == 4  # 5 repeats of 4 probes
    assert meta["value"] == CheckValue.failed.value and meta["outcome"] == "discount_unverified"
    assert meta["timing_p"] > 0.5 and not meta["verified"] and meta["saved"] > 0


async def test_claims_outside_the_cache_probe_with_a_real_speed_up_are_verified(
    tmp_path: Path,
) -> None:
    meta = await _claims_run("cache:real", tmp_path)
    assert meta["value"] == CheckValue.passed.value and meta["outcome"] == "hit"
    assert meta["verified"]
    assert meta["timing_p"] < 0.01 and meta["ttft_ratio_median"] < 0.5


def test_claims_with_nothing_to_compare_are_untested_and_no_claim_is_no_result() -> None:
    from aione_probe.checks.cache import judge_claims
    from aione_probe.types import Observation, Usage

    def answer(ttft: float, cached: int | None) -> Observation:
        usage = Usage(prompt_tokens=2000, completion_tokens=1, total_tokens=2001,
                      cached_tokens=cached, raw={})  # fmt: skip
        return Observation(gateway="g", model="m", usage=usage, first_token_s=ttft, end_s=ttft,
                           stream=True)  # fmt: skip

    assert judge_claims([[answer(0.2, 0), answer(0.2, None)]], PRICE) is None
    only_claims = judge_claims([[answer(0.1, 1800)], [answer(0.1, 1800), answer(0.1, 1800)]], PRICE)
    assert only_claims is not None and only_claims.value is CheckValue.unscored
    assert only_claims.metadata["outcome"] == "untested" and not only_claims.metadata["verified"]
