"""A real gateway: LiteLLM's proxy in front of llama.cpp (SmolLM2), over both protocols.

The shipped smoke and behaviour suites run through aione-probe's real runner against
LiteLLM's OpenAI ``/v1/chat/completions`` and Anthropic ``/v1/messages`` endpoints, and the
behaviour suite also against llama.cpp directly (the control). What the probe must find:

* no failed request on either protocol, the echoed model is the requested one, and every
  plain answer's ``finish_reason`` agrees with its usage (Anthropic's ``max_tokens`` is
  ``length``);
* a real gateway defect: LiteLLM's streamed usage reports far fewer prompt tokens than its
  plain answer (14-20 against 38-43 here), identically over both protocols, while the
  plain count is llama.cpp's own: ``prompt_tokens_consistent`` fails on both endpoints;
* the same defect on the completion side: a stream llama.cpp cut at ``max_tokens`` (5
  tokens: "12345") is billed as 2 completion tokens, so ``finish_reason`` "length" no
  longer agrees with the usage and the ``finish_reason`` check flags it;
* LiteLLM adds the usage chunk llama.cpp leaves out of streams (``usage_in_stream`` passes
  through the gateway and fails directly): its own estimate, hence the defects above;
* the proxy's key never reaches the store.

LiteLLM starts once per session (about 7 s); the run sends 42 requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import LITELLM_KEY

from aione_probe.cli import main
from aione_probe.peers.litellm import LiteLLMProxy
from aione_probe.peers.llama import LlamaServer
from aione_probe.store import Store

pytestmark = [pytest.mark.peer, pytest.mark.litellm]

ROOT = Path(__file__).resolve().parent.parent
VIA = {"litellm-openai": "openai", "litellm-anthropic": "anthropic"}
PLAIN_VS_STREAM = {"smoke": "plain-vs-stream", "behaviour": "usage-plain-vs-stream-01"}


def _gateway(name: str, base_url: str, protocol: str, key: bool) -> str:
    return f"""
[[gateways]]
name = "{name}"
base_url = "{base_url}"
protocol = "{protocol}"
models = ["smollm2"]
{'api_key_env = "AIONE_TEST_LITELLM_KEY"' if key else 'auth = "none"'}
max_concurrency = 1
requests_per_minute = 6000
timeouts = {{ connect = "5s", first_token = "120s", idle = "60s", total = "300s" }}
"""


@pytest.fixture(scope="module")
def probed(
    litellm_proxy: LiteLLMProxy,
    smollm2_server: LlamaServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Store]:
    """One `aione-probe run` of smoke and behaviour through LiteLLM (and behaviour direct)."""
    tmp = tmp_path_factory.mktemp("litellm")
    cfg = tmp / "litellm.toml"
    cfg.write_text(
        f"""
probes_dir = "{ROOT / "probes"}"
{_gateway("litellm-openai", f"{litellm_proxy.base_url}/v1", "openai", key=True)}
{_gateway("litellm-anthropic", litellm_proxy.base_url, "anthropic", key=True)}
{_gateway("llama-direct", f"{smollm2_server.base_url}/v1", "openai", key=False)}
[[suites]]
file = "smoke.toml"
interval = "1h"
gateways = ["litellm-openai", "litellm-anthropic"]

[[suites]]
file = "behaviour.toml"
interval = "1h"

[storage]
url = "sqlite:///{tmp / "probe.db"}"

[reports]
dir = "{tmp / "reports"}"
"""
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIONE_TEST_LITELLM_KEY", LITELLM_KEY)
        # Exit 1: SmolLM2 gets some answers wrong, which is a quality result, not ours.
        assert main(["run", "--config", str(cfg)]) in (0, 1)
    yield Store(f"sqlite:///{tmp / 'probe.db'}")


def _check(store: Store, gateway: str, suite: str, probe_id: str, name: str) -> list[str]:
    return [
        r.value
        for r in store.check_results(gateway, "smollm2", suite, name)
        if r.probe_id == probe_id
    ]


@pytest.mark.parametrize("gateway", sorted(VIA))
def test_both_protocols_answer_every_probe(probed: Store, gateway: str) -> None:
    rows = probed.observations(gateway, "smollm2")
    assert {r.suite for r in rows} == {"smoke", "behaviour"}
    assert len([r for r in rows if r.final]) == 9 + 8
    failed = [(r.probe_id, r.failure, r.error_message) for r in rows if r.failure != "ok"]
    assert not failed, failed
    assert {r.protocol for r in rows} == {VIA[gateway]}
    assert {r.response_model for r in rows} == {"smollm2"}
    assert {r.stream for r in rows} == {True, False}
    # Plain answers carry llama.cpp's own usage: finish_reason and usage always agree.
    plain = {r.id for r in rows if not r.stream}
    judged = [
        c.value
        for c in probed.check_results(gateway, "smollm2", name="finish_reason")
        if c.observation_id in plain
    ]
    assert len(judged) >= 8 and set(judged) == {"pass"}
    cut = [r for r in rows if r.finish_reason == "length"]
    assert cut and {r.raw_finish_reason for r in cut} == {
        "max_tokens" if VIA[gateway] == "anthropic" else "length"
    }


@pytest.mark.parametrize("gateway", sorted(VIA))
def test_streamed_usage_undercounts_completion_tokens(probed: Store, gateway: str) -> None:
    """A stream cut at max_tokens = 5 is billed as fewer tokens, so "length" looks false."""
    (row,) = [
        r for r in probed.observations(gateway, "smollm2", "smoke") if r.probe_id == "finish-length"
    ]
    assert row.stream and row.finish_reason == "length"
    assert row.completion_tokens is not None and row.completion_tokens < 5, row.content
    (check,) = [
        c for c in probed.check_results(gateway, "smollm2", "smoke", "finish_reason")
        if c.observation_id == row.id
    ]  # fmt: skip
    assert check.value == "fail" and "stayed below max_tokens 5" in check.explanation
    # The same cut through llama.cpp directly, plain: its own count is max_tokens exactly.
    (direct,) = [
        r
        for r in probed.observations("llama-direct", "smollm2", "behaviour")
        if r.probe_id == "finish-length-01"
    ]
    assert direct.finish_reason == "length" and direct.completion_tokens == 5


@pytest.mark.parametrize("gateway", sorted(VIA))
@pytest.mark.parametrize("suite", sorted(PLAIN_VS_STREAM))
def test_streamed_usage_undercounts_prompt_tokens(probed: Store, gateway: str, suite: str) -> None:
    """The gateway defect the issue reports, caught by `prompt_tokens_consistent`."""
    probe = PLAIN_VS_STREAM[suite]
    assert _check(probed, gateway, suite, probe, "prompt_tokens_consistent") == ["fail"]
    rows = [r for r in probed.observations(gateway, "smollm2", suite) if r.probe_id == probe]
    plain = [r.prompt_tokens for r in rows if not r.stream]
    streamed = [r.prompt_tokens for r in rows if r.stream]
    assert len(plain) == len(streamed) == 1
    assert plain[0] is not None and streamed[0] is not None
    assert streamed[0] < 0.6 * plain[0], (plain, streamed)
    # The streamed answer is still billed: LiteLLM puts its own usage into the stream.
    assert all(v == "pass" for v in _check(probed, gateway, suite, probe, "usage_in_stream"))


def test_plain_counts_are_llama_cpp_s_own_and_equal_over_both_protocols(probed: Store) -> None:
    """The plain count is the engine's; the streamed count is the gateway's, on both sides."""
    probe = PLAIN_VS_STREAM["behaviour"]

    def counts(gateway: str) -> dict[bool, int | None]:
        rows = probed.observations(gateway, "smollm2", "behaviour")
        return {r.stream: r.prompt_tokens for r in rows if r.probe_id == probe}

    direct = counts("llama-direct")
    openai, anthropic = counts("litellm-openai"), counts("litellm-anthropic")
    assert openai[False] == anthropic[False] == direct[False]
    assert openai[True] == anthropic[True] != direct[False]
    # llama.cpp itself sends no usage in a stream; the probe says so instead of guessing.
    assert direct[True] is None
    assert _check(probed, "llama-direct", "behaviour", probe, "usage_in_stream") == ["fail"]
    assert _check(probed, "llama-direct", "behaviour", probe, "prompt_tokens_consistent") == [
        "missing"
    ]


def test_cross_protocol_token_accounting_matches_and_the_key_stays_out(probed: Store) -> None:
    verdicts = {(v.gateway, v.suite): v for v in probed.latest_verdicts("cross_protocol")}
    pair = verdicts[("litellm-openai", "vs:litellm-anthropic")]
    signals = {s["signal"]: s for s in pair.details["signals"]}
    assert signals["token_accounting"]["result"] == "pass", signals["token_accounting"]
    path = Path(str(probed.engine.url.database))
    for file in path.parent.glob(path.name + "*"):  # the database and its WAL
        assert LITELLM_KEY.encode() not in file.read_bytes()
