"""usage_completion_plausible: completion counts checked against the returned text."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import faultserver
import pytest

from aione_probe.checks import CheckContext, run_checks
from aione_probe.checks.plausible import bounds
from aione_probe.config import load_config
from aione_probe.service import run_service
from aione_probe.suites import load_suite
from aione_probe.types import CheckValue, Observation, Usage

ROOT = Path(__file__).resolve().parent.parent


def _judge(reported: int, measured: int | None, **usage: int) -> tuple[CheckValue, dict]:
    suite = load_suite(ROOT / "probes" / "usage.toml")
    (inst,) = suite.expand(1, probe_ids={"story-start-01"})
    obs = Observation(gateway="g", model="m", protocol="openai", stream=False, attempt=1)
    obs.content, obs.finish_reason = "Once upon a time.", "stop"
    obs.usage = Usage(completion_tokens=reported, **usage)
    ctx = CheckContext(instance=inst, request=inst.request("m"), text_tokens=measured)
    (res,) = [
        r
        for r in run_checks(inst, obs, ctx, suite.default_checks)
        if r.name == "usage_completion_plausible"
    ]
    return res.value, res.metadata


def test_tolerance_is_two_tokens_by_default() -> None:
    assert bounds(40, 0.1, 2) == (34, 46)
    assert bounds(40, 0.0, 2) == (38, 42)
    assert _judge(42, 40)[0] is CheckValue.passed  # e.g. llama.cpp's max_tokens + 2
    value, meta = _judge(43, 40)
    assert value is CheckValue.failed and meta["outcome"] == "inflated"
    assert _judge(48, 40)[1]["outcome"] == "inflated"  # 1.2 x 40
    assert _judge(37, 40)[1]["outcome"] == "deflated"
    assert _judge(60, 40, reasoning_tokens=20)[0] is CheckValue.passed  # hidden reasoning
    assert _judge(40, None)[1]["outcome"] == "unmeasured"


@pytest.mark.parametrize(
    ("script", "outcome"), [("inflate:1.2", "inflated"), ("inflate:1", "plausible")]
)
def test_relay_inflating_counts_fails_on_answers_that_stop_early(
    tmp_path: Path, script: str, outcome: str
) -> None:
    import asyncio

    with faultserver.running() as server:
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f'probes_dir = "{ROOT / "probes"}"\n'
            f'[[gateways]]\nname = "relay"\nbase_url = "{server.base_url}"\nauth = "none"\n'
            f'models = ["{script}"]\nrequests_per_minute = 6000\n'
            '[[suites]]\nfile = "usage.toml"\ninterval = "1h"\n'
            f'[storage]\nurl = "sqlite:///{tmp_path / "p.db"}"\n'
            f'[reports]\ndir = "{tmp_path / "reports"}"\n'
        )
        asyncio.run(run_service(load_config(cfg)))
        echoes = [s for s in server.seen if "Ignore this text" in str(s.body["messages"])]
    assert len(echoes) == 5  # the bare prefix once, then each of the 4 answers
    with sqlite3.connect(tmp_path / "p.db") as db:
        rows = db.execute(
            "select c.value, json_extract(c.metadata, '$.outcome'), o.finish_reason "
            "from checkresult c join observation o on o.id = c.observation_id "
            "where c.name = 'usage_completion_plausible'"
        ).fetchall()
        probes = {r[0] for r in db.execute("select probe_id from observation")}
    assert len(rows) == 4 and all(r[2] == "stop" for r in rows)  # every answer stopped early
    assert {r[1] for r in rows} == {outcome}
    assert {"usage-echo", "usage-echo-base"} <= probes  # stored, so they are paid for


def _outcomes(tmp_path: Path, base_url: str, runs: int) -> list[tuple[str, int, str]]:
    """(finish_reason, measured tokens, outcome) of every usage_completion_plausible
    result of `runs` runs of the usage suite against `base_url`."""
    import asyncio

    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'probes_dir = "{ROOT / "probes"}"\n'
        f'[[gateways]]\nname = "g"\nbase_url = "{base_url}"\nauth = "none"\n'
        'models = ["smollm2"]\nmax_concurrency = 1\n'
        'timeouts = { first_token = "120s", total = "300s" }\n'
        '[[suites]]\nfile = "usage.toml"\ninterval = "1h"\n'
        f'[storage]\nurl = "sqlite:///{tmp_path / "p.db"}"\n'
        f'[reports]\ndir = "{tmp_path / "reports"}"\n'
    )

    asyncio.run(run_service(load_config(cfg), runs))
    with sqlite3.connect(tmp_path / "p.db") as db:
        return db.execute(
            "select o.finish_reason, coalesce(json_extract(c.metadata, '$.measured'), 0), "
            "json_extract(c.metadata, '$.outcome') "
            "from checkresult c join observation o on o.id = c.observation_id "
            "where c.name = 'usage_completion_plausible'"
        ).fetchall()


@pytest.mark.peer
def test_real_llama_is_plausible_and_a_relay_inflating_it_is_not(
    smollm2_server, tmp_path: Path
) -> None:
    """llama.cpp (SmolLM2) answering the usage suite directly passes; the same engine
    behind a relay multiplying completion_tokens by 1.2 fails on answers that stop early."""
    honest = _outcomes(tmp_path / "honest", f"{smollm2_server.base_url}/v1", runs=1)
    assert len(honest) == 4 and {o for _, _, o in honest} == {"plausible"}, honest
    with faultserver.relay(smollm2_server.base_url, 1.2) as url:
        relayed = _outcomes(tmp_path / "relay", url, runs=1)
    # x1.2 adds more than the 2-token tolerance from 15 tokens on; the usage suite's answers
    # are mostly longer (median 32 on SmolLM2), and its cut-short probe returns 24.
    judged = [(f, o) for f, measured, o in relayed if measured >= 20]
    assert any(f == "stop" for f, _ in judged), relayed
    assert {o for _, o in judged} == {"inflated"}, relayed
