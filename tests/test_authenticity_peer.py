"""Authenticity end to end on a real engine: SmolLM2 on llama.cpp, an honest relay, a swap.

The service (`Service.run_once`, the code path of ``aione-probe run``) probes the trusted
reference, an honest relay in front of the same model (ids rewritten, alias echoed,
``system_fingerprint`` dropped, 50–300 ms added) and a relay that sends every request to a
random-weight model with SmolLM2's vocabulary and recounts ``usage`` in SmolLM2's
tokenizer; the analysis pass must call the relay authentic and the swap substituted. The
thresholds are lowered (one run) and the reference's history is five runs (a block's floor
is 3/21, so one swapped run clears the lowest threshold the budget allows, 20); the benchmark
`bench/authenticity_real.py` measures the shipped settings.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import require_peer

from aione_probe.analysis.run import analyse
from aione_probe.config import (
    AuthenticityConfig,
    Config,
    GatewayConfig,
    ReferencePair,
    Storage,
    SuiteConfig,
)
from aione_probe.fingerprint.verdict import AuthenticityVerdict
from aione_probe.peers.llama import LlamaServer, random_gguf
from aione_probe.peers.relay import RelayProcess, RelaySettings
from aione_probe.runner import Target
from aione_probe.service import Job, Service

pytestmark = pytest.mark.peer
ROOT = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path, urls: dict[str, str]) -> Config:
    return Config(
        path=tmp_path / "aione.toml",
        probes_dir=str(ROOT / "probes"),
        gateways=[
            GatewayConfig(
                name=n,
                base_url=f"{u}/v1",
                auth="none",
                models=["smollm2"],
                max_concurrency=1,
                requests_per_minute=None,
            )
            for n, u in urls.items()
        ],
        suites=[SuiteConfig(file="fingerprint.toml", interval=7200, cheap_only=True)],
        storage=Storage(url=f"sqlite:///{tmp_path / 'store.db'}"),
        authenticity=AuthenticityConfig(
            references=[
                ReferencePair(gateway=g, model="smollm2", reference_gateway="ref")
                for g in ("relay", "swap")
            ],
            false_alarms_per_year=1000.0,
            suspect_alarms_per_year=1000.0,
            runs_per_year=100.0,
            min_null_pairs=8,
        ),
    )


async def _probe(cfg: Config, plan: list[tuple[int, tuple[str, ...]]]) -> Service:
    service = Service(cfg)
    service.store.migrate()
    for sc in cfg.suites:
        for g in cfg.gateways:
            await service.astore.call(
                type(service.store).ensure_target, g.name, g.base_url, g.protocol, "smollm2"
            )
        for seed, gateways in plan:
            for g in gateways:  # one at a time: each server sees one job's requests in order
                await service.run_once([Job(sc, Target(g, "smollm2"))], seed=seed)
    for client in service.clients.values():
        await client.aclose()
    service.astore.close()
    return service


def test_honest_relay_is_authentic_and_a_swap_is_substituted(
    smollm2_server: LlamaServer, tmp_path: Path
) -> None:
    require_peer()
    rnd = random_gguf(tmp_path / "random.gguf", seed=1)
    up = smollm2_server.base_url
    honest = RelaySettings(upstream=up, rewrite=True, delay_ms=(50, 300), seed=1)
    with (
        LlamaServer(rnd, alias="smollm2") as sub,
        RelayProcess(honest) as relay,
        RelayProcess(
            RelaySettings(upstream=up, substitute=sub.base_url, share=1.0, recount_usage=True)
        ) as swap,
    ):
        cfg = _config(tmp_path, {"ref": up, "relay": relay.base_url, "swap": swap.base_url})
        plan = [(s, ("ref",)) for s in range(100, 104)]  # the reference's stored history
        plan += [(0, ("ref", "relay", "swap"))]
        service = asyncio.run(_probe(cfg, plan))
    store = service.store
    analyse(store, cfg)
    verdicts = {
        (v.gateway, v.comparison): AuthenticityVerdict.from_row(v)
        for v in store.latest_verdicts("authenticity")
    }
    relay_v = verdicts[("relay", "reference:ref/smollm2")]
    swap_v = verdicts[("swap", "reference:ref/smollm2")]
    assert relay_v.kind == "authentic", relay_v.reason
    assert swap_v.kind == "substituted", swap_v.reason
    assert all(b["implausible"] for run in swap_v.runs for b in run["blocks"])
    assert all(run["signals"]["greedy"]["status"] == "ok" for run in swap_v.runs)
    assert verdicts[("swap", "overall")].kind == "substituted"
