"""The real-engine harness itself: SmolLM2 on llama.cpp, requantised and random-weight copies."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import require_peer

from aione_probe.peers.llama import LlamaServer, quantize, random_gguf, smollm2_gguf

pytestmark = pytest.mark.peer


def _greedy(base_url: str, prompt: str, max_tokens: int = 24) -> dict:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    r = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=60)
    r.raise_for_status()
    return r.json()


def test_smollm2_greedy_repeats_agree_on_a_prefix(smollm2_server: LlamaServer) -> None:
    # Temperature 0 is not deterministic on llama.cpp: a prompt evaluated cold and the same
    # prompt served from the KV prefix cache decode differently after a dozen tokens
    # ("...Red (OXENCERON) - A pigment" vs "...Red (OXENCURAMA): a pigment"). Greedy signals
    # must be calibrated against this repeat spread, so the test pins only a prefix.
    a = _greedy(smollm2_server.base_url, "Name three primary colours.")
    b = _greedy(smollm2_server.base_url, "Name three primary colours.")
    text, again = a["choices"][0]["message"]["content"], b["choices"][0]["message"]["content"]
    assert "red" in text.lower()
    assert text[:24] == again[:24]
    assert a["usage"]["prompt_tokens"] > 10
    assert a["model"] == "smollm2"


def test_substitutes_share_the_tokenizer_but_not_the_answers(
    smollm2_server: LlamaServer, tmp_path: Path
) -> None:
    require_peer()
    prompt = "Name three primary colours."
    ref = _greedy(smollm2_server.base_url, prompt)
    random_model = random_gguf(tmp_path / "random.gguf", seed=1)
    q2 = quantize(smollm2_gguf(), tmp_path / "q2k.gguf", "q2_k")
    with LlamaServer(random_model, alias="smollm2") as server:
        rnd = _greedy(server.base_url, prompt)
        # Swapping weights on the same port: the same URL now serves another model.
        server.restart(q2)
        quant = _greedy(server.base_url, prompt)
    assert rnd["usage"]["prompt_tokens"] == ref["usage"]["prompt_tokens"]
    assert quant["usage"]["prompt_tokens"] == ref["usage"]["prompt_tokens"]
    answer = ref["choices"][0]["message"]["content"]
    assert rnd["choices"][0]["message"]["content"] != answer
    assert quant["choices"][0]["message"]["content"] != answer


def test_quantize_rejects_unknown_types(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown file type"):
        quantize(tmp_path / "a.gguf", tmp_path / "b.gguf", "q9_z")
