"""Tests for the gateway simulator (aione_probe.sim)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from aione_probe.sim import (
    BUILTIN_PERSONAS,
    ModelSettings,
    SimConfig,
    create_app,
    default_sim_config,
    load_sim_config,
    run_in_thread,
)
from aione_probe.sim.answers import AnswerKey, arithmetic, load_answer_key, minimal_instance
from aione_probe.sim.cache import PrefixCache
from aione_probe.sim.engine import Engine, parse_body
from aione_probe.sim.sampling import categorical_candidates, generate_text, sample_categorical
from aione_probe.sim.tokenizer import FAMILIES, get_tokenizer

USER = [{"role": "user", "content": "Tell me something about gateways."}]


def fast_config(**overrides: Any) -> SimConfig:
    """The default line-up with no waiting, a fixed seed and no answer key."""
    params: dict[str, Any] = {"time_scale": 0.0, "seed": 11, "answer_key_dirs": []}
    params.update(overrides)
    return default_sim_config(**params)


def client_for(config: SimConfig) -> httpx.AsyncClient:
    app = create_app(config)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim")


async def chat(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    body.setdefault("messages", USER)
    body.setdefault("model", "sim-large")
    return await client.post("/v1/chat/completions", json=body)


def parse_sse(text: str) -> list[Any]:
    """Events of an SSE body: dicts for JSON data, "[DONE]", ":comment" strings."""
    events: list[Any] = []
    assert text.endswith("\n\n")
    for block in text.split("\n\n")[:-1]:
        if block.startswith(":"):
            events.append(block)
            continue
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def stream_content(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e["choices"]
    )


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip_and_determinism() -> None:
    text = "Internationalization 1234567 你好 😀 café, ok!\n\nnext"
    for tok in FAMILIES.values():
        pieces = tok.encode(text)
        assert "".join(p for p, _ in pieces) == text
        assert tok.count(text) == tok.count(text)


@pytest.mark.parametrize(
    ("family", "text", "expected"),
    [
        ("bpe-a", "internationalization", 5),
        ("bpe-b", "internationalization", 7),
        ("bpe-a", "1234567", 3),
        ("bpe-b", "1234567", 7),
        ("bpe-a", "你好", 2),
        ("bpe-b", "你好", 4),
        ("bpe-a", "😀", 2),
        ("bpe-b", "😀", 3),
        ("spm-c", "😀", 4),
    ],
)
def test_tokenizer_family_rules(family: str, text: str, expected: int) -> None:
    assert get_tokenizer(family).count(text) == expected


async def test_prompt_tokens_canary_slope_separates_families() -> None:
    async with client_for(fast_config()) as client:
        slopes = {}
        for model in ("sim-large", "sim-small", "sim-reasoner"):
            counts = []
            for k in (0, 10):
                msgs = [{"role": "user", "content": "Count this: " + "😀" * k}]
                r = await chat(client, model=model, messages=msgs, max_tokens=4)
                counts.append(r.json()["usage"]["prompt_tokens"])
            slopes[model] = (counts[1] - counts[0]) / 10
    assert slopes == {"sim-large": 2, "sim-small": 3, "sim-reasoner": 4}


# ---------------------------------------------------------------- shapes


async def test_models_list() -> None:
    async with client_for(fast_config()) as client:
        r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == list(fast_config().models)
    assert all(m["object"] == "model" for m in body["data"])


async def test_plain_completion_shape() -> None:
    async with client_for(fast_config()) as client:
        r = await chat(client, temperature=0)
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) == len("chatcmpl-") + 29
    assert body["object"] == "chat.completion"
    assert body["model"] == "sim-large"
    assert body["system_fingerprint"] == BUILTIN_PERSONAS["large"].system_fingerprint
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == get_tokenizer("bpe-a").count(choice["message"]["content"])
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert "completion_tokens_details" not in usage


async def test_stream_shape_matches_plain_greedy_answer() -> None:
    async with client_for(fast_config()) as client:
        plain = (await chat(client, temperature=0)).json()
        r = await chat(client, temperature=0, stream=True, stream_options={"include_usage": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    data = [e for e in events if not (isinstance(e, str) and e.startswith(":"))]
    assert data[-1] == "[DONE]"
    first, final, usage_chunk = data[0], data[-3], data[-2]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert final["choices"][0]["finish_reason"] == "stop"
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    middle = data[1:-3]
    assert all(e["object"] == "chat.completion.chunk" for e in middle)
    assert all(e["choices"][0]["finish_reason"] is None for e in middle)
    assert len({e["id"] for e in data[:-1]}) == 1
    assert stream_content(data[:-1]) == plain["choices"][0]["message"]["content"]
    tok = get_tokenizer("bpe-a")
    assert all(1 <= tok.count(e["choices"][0]["delta"]["content"]) <= 3 for e in middle)


async def test_stream_usage_only_when_asked_and_not_omitted() -> None:
    config = fast_config()
    async with client_for(config) as client:
        without = parse_sse((await chat(client, stream=True)).text)
        config.models["sim-large"].omit_stream_usage = True
        omitted = parse_sse(
            (await chat(client, stream=True, stream_options={"include_usage": True})).text
        )
    for events in (without, omitted):
        assert not any(isinstance(e, dict) and e.get("usage") for e in events)
        assert events[-1] == "[DONE]"


async def test_reasoning_persona_reports_reasoning_tokens() -> None:
    async with client_for(fast_config()) as client:
        body = (await chat(client, model="sim-reasoner")).json()
    usage = body["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 64 <= reasoning <= 512
    visible = get_tokenizer("spm-c").count(body["choices"][0]["message"]["content"])
    assert usage["completion_tokens"] == visible + reasoning
    assert "system_fingerprint" not in body


# ---------------------------------------------------------------- sampling signature


def test_categorical_distribution_stable_per_persona_and_differs_between() -> None:
    prompt = "Pick a random number between 1 and 10."
    candidates = categorical_candidates(prompt)
    assert candidates == [str(n) for n in range(1, 11)]

    def dist(name: str, seed: int) -> dict[str, float]:
        rng = random.Random(seed)
        persona = BUILTIN_PERSONAS[name]
        counts = Counter(
            sample_categorical(persona, prompt, candidates, 1.0, rng) for _ in range(1000)
        )
        return {c: counts[c] / 1000 for c in candidates}

    def tv(a: dict[str, float], b: dict[str, float]) -> float:
        return sum(abs(a[k] - b[k]) for k in a) / 2

    large_1, large_2, small = dist("large", 1), dist("large", 2), dist("small", 3)
    assert tv(large_1, large_2) < 0.08
    assert tv(large_1, small) > 0.3


def test_temperature_zero_is_argmax_and_low_temperature_sharpens() -> None:
    prompt = "Name a colour."
    candidates = categorical_candidates(prompt)
    persona = BUILTIN_PERSONAS["large"]
    greedy = {
        sample_categorical(persona, prompt, candidates, 0, random.Random(i)) for i in range(20)
    }
    assert len(greedy) == 1
    top = greedy.pop()
    rng = random.Random(5)
    cold = sum(sample_categorical(persona, prompt, candidates, 0.3, rng) == top for _ in range(400))
    hot = sum(sample_categorical(persona, prompt, candidates, 1.5, rng) == top for _ in range(400))
    assert cold > hot


def shared_prefix(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def test_perturbed_persona_greedy_text_shares_prefix_then_diverges() -> None:
    large, quant, small = (BUILTIN_PERSONAS[n] for n in ("large", "large-q", "small"))
    tok = get_tokenizer("bpe-a")
    shared, diverged = [], 0
    for i in range(30):
        key = f"open prompt {i}"
        a = generate_text(large, key, tok, 1000, 0, random.Random(0))
        assert a == generate_text(large, key, tok, 1000, 0, random.Random(99))
        b = generate_text(quant, key, tok, 1000, 0, random.Random(0))
        c = generate_text(small, key, tok, 1000, 0, random.Random(0))
        shared.append(shared_prefix(a, b))
        diverged += a != b
        assert shared_prefix(a, c) < 20
    assert diverged >= 10
    assert sorted(shared)[len(shared) // 2] >= 40


async def test_open_text_varies_at_temperature_one() -> None:
    async with client_for(fast_config()) as client:
        texts = {
            (await chat(client, temperature=1.0)).json()["choices"][0]["message"]["content"]
            for _ in range(5)
        }
    assert len(texts) == 5


# ---------------------------------------------------------------- finish_reason honesty


async def test_truncation_reports_length_honestly_and_stop_when_dishonest() -> None:
    config = fast_config()
    async with client_for(config) as client:
        honest = (await chat(client, max_tokens=5, temperature=0)).json()
        plain = (await chat(client, temperature=0)).json()
        await client.post(
            "/sim/control", json={"model": "sim-large", "truncation_reported_as_stop": True}
        )
        liar = (await chat(client, max_tokens=5, temperature=0)).json()
        liar_stream = parse_sse((await chat(client, max_tokens=5, stream=True)).text)
    assert honest["choices"][0]["finish_reason"] == "length"
    assert honest["usage"]["completion_tokens"] <= 5
    full = plain["choices"][0]["message"]["content"]
    assert full.startswith(honest["choices"][0]["message"]["content"])
    assert len(honest["choices"][0]["message"]["content"]) < len(full)
    assert liar["choices"][0]["finish_reason"] == "stop"
    assert liar["usage"]["completion_tokens"] <= 5
    finishes = [e["choices"][0]["finish_reason"] for e in liar_stream if isinstance(e, dict)]
    assert finishes[-1] == "stop"


# ---------------------------------------------------------------- prompt cache


def long_messages(tag: str, words: int = 1500) -> list[dict[str, str]]:
    text = " ".join(f"w{tag}{i % 97}" for i in range(words))
    return [{"role": "system", "content": text}, {"role": "user", "content": "Summarise."}]


def test_prefix_cache_blocks() -> None:
    cache = PrefixCache()
    tok = get_tokenizer("bpe-a")
    messages = long_messages("a")
    pieces = tok.prompt_pieces(messages)
    total = tok.count_prompt(messages)
    assert total >= 1024
    assert cache.lookup_and_store("m", pieces, total) == 0
    cached = cache.lookup_and_store("m", pieces, total)
    assert cached >= 1024 and (cached - 1024) % 128 == 0 and total - cached < 128
    assert cache.lookup_and_store("other", pieces, total) == 0
    short = tok.prompt_pieces(USER)
    assert cache.lookup_and_store("m", short, 20) == 0


def test_cache_hit_lowers_first_token_delay() -> None:
    personas = dict(BUILTIN_PERSONAS)
    personas["large"] = dataclasses.replace(personas["large"], ttft_jitter_s=0.0)
    engine = Engine(fast_config(personas=personas, time_scale=1.0), AnswerKey())
    req = parse_body({"model": "sim-large", "messages": long_messages("b"), "max_tokens": 4})
    miss, hit = engine.complete(req), engine.complete(req)
    assert miss.usage["prompt_tokens_details"]["cached_tokens"] == 0
    cached = hit.usage["prompt_tokens_details"]["cached_tokens"]
    assert cached >= 1024
    prefill = BUILTIN_PERSONAS["large"].prefill_tps
    assert miss.ttft_s - hit.ttft_s == pytest.approx(cached / prefill, abs=1e-9)


async def test_cache_switches_over_http() -> None:
    config = fast_config()
    messages = long_messages("c")
    async with client_for(config) as client:
        await chat(client, messages=messages, max_tokens=4)
        hit = (await chat(client, messages=messages, max_tokens=4)).json()["usage"]
        config.models["sim-large"].cache_discount_honoured = False
        undiscounted = (await chat(client, messages=messages, max_tokens=4)).json()["usage"]
        config.models["sim-large"].cache_field = "none"
        hidden = (await chat(client, messages=messages, max_tokens=4)).json()["usage"]
    assert hit["prompt_tokens_details"]["cached_tokens"] >= 1024
    assert undiscounted["prompt_tokens_details"]["cached_tokens"] == 0
    assert "prompt_tokens_details" not in hidden


# ---------------------------------------------------------------- answers, tools, JSON

PROBES = """
[suite]
id = "quiz"
version = 1

[[probe]]
id = "capital"
difficulty = "easy"
prompt = "What is the capital of France? One word."
checks = [{ name = "contains", expected = "Paris" }]

[[probe]]
id = "mul"
difficulty = "hard"
prompt = "Compute {{a}} times {{b}}; answer with the number only."
checks = [{ name = "numeric", expected = "{{product}}" }, { name = "exact", expected = "{{a}}" }]

[[probe]]
id = "echo-var"
messages = [
    { role = "system", content = "Be terse." },
    { role = "user", content = "Repeat {{w}}." },
]
checks = [{ name = "exact", expected = "{{w}}" }]

[[probe]]
id = "weather"
prompt = "What's the weather in Oslo?"
checks = [{ name = "tool_call", function = "get_weather", arguments = { city = "Oslo" } }]

[[probe]]
id = "json"
prompt = "Give me a user record."

[[probe.checks]]
name = "json_schema"

[probe.checks.schema]
type = "object"
required = ["name", "age"]

[probe.checks.schema.properties]
name = { type = "string" }
age = { type = "integer" }
"""


def quiz_config(tmp_path: Path, skill: float) -> SimConfig:
    (tmp_path / "quiz.toml").write_text(PROBES)
    personas = dict(BUILTIN_PERSONAS)
    personas["large"] = dataclasses.replace(
        personas["large"], skill={"easy": skill, "medium": skill, "hard": skill}
    )
    return fast_config(personas=personas, answer_key_dirs=[tmp_path])


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_answer_key_right_with_full_skill(tmp_path: Path) -> None:
    weather_tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    async with client_for(quiz_config(tmp_path, 1.0)) as client:
        capital = await chat(client, messages=ask("What is the capital of France? One word."))
        echo = await chat(
            client, messages=[{"role": "user", "content": "Repeat banana."}], temperature=0
        )
        tool = await chat(client, messages=ask("What's the weather in Oslo?"), tools=[weather_tool])
        record = await chat(client, messages=ask("Give me a user record."))
        arith = await chat(client, messages=ask("What is 17 * 23? Answer with the number."))
    assert capital.json()["choices"][0]["message"]["content"] == "Paris"
    assert echo.json()["choices"][0]["message"]["content"] == "banana"
    choice = tool.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert json.loads(record.json()["choices"][0]["message"]["content"]) == {"name": "x", "age": 0}
    assert arith.json()["choices"][0]["message"]["content"] == "391"


async def test_answer_key_wrong_with_no_skill(tmp_path: Path) -> None:
    async with client_for(quiz_config(tmp_path, 0.0)) as client:
        capital = await chat(client, messages=ask("What is the capital of France? One word."))
        arith = await chat(client, messages=ask("What is 17 * 23?"), temperature=0)
    assert capital.json()["choices"][0]["message"]["content"] != "Paris"
    assert arith.json()["choices"][0]["message"]["content"] != "391"
    assert float(arith.json()["choices"][0]["message"]["content"]) == pytest.approx(391, abs=10)


def test_templated_expected_needs_every_variable(tmp_path: Path) -> None:
    (tmp_path / "quiz.toml").write_text(PROBES)
    key = load_answer_key([tmp_path])
    assert len(key) == 5
    assert key.lookup("anything") is None
    assert key.lookup("Compute 3 times 4; answer with the number only.") is None
    assert key.lookup("Repeat kiwi.").text == "kiwi"


def test_arithmetic_and_minimal_instance() -> None:
    assert arithmetic("What is 17 * 23?") == ("391", "easy")
    assert arithmetic("Compute 12345 + 1") == ("12346", "hard")
    assert arithmetic("Summarise the 2024-2025 report.") is None
    assert arithmetic("7 / 0") is None
    assert arithmetic("no numbers") is None
    schema = {"type": "object", "properties": {"tags": {"type": "array", "minItems": 1}}}
    assert minimal_instance(schema) == {"tags": ["x"]}


async def test_forced_tool_choice_streams_tool_call_deltas() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "required": ["q"],
                "properties": {"q": {"type": "string"}},
            },
        },
    }
    choice = {"type": "function", "function": {"name": "lookup"}}
    async with client_for(fast_config()) as client:
        r = await chat(client, tools=[tool], tool_choice=choice, stream=True)
    events = [e for e in parse_sse(r.text) if isinstance(e, dict)]
    deltas = [e["choices"][0]["delta"] for e in events[1:-1]]
    head = deltas[0]["tool_calls"][0]
    assert head["id"].startswith("call_") and head["function"]["name"] == "lookup"
    args = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas)
    assert json.loads(args) == {"q": "x"}
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_json_mode_returns_object() -> None:
    async with client_for(fast_config()) as client:
        r = await chat(client, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)


# ---------------------------------------------------------------- errors and faults


async def test_error_bodies() -> None:
    async with client_for(fast_config(api_key="sk-sim")) as client:
        no_key = await chat(client)
        client.headers["Authorization"] = "Bearer sk-sim"
        missing = await chat(client, model="nope")
        huge = [{"role": "user", "content": "word " * 17000}]
        too_long = await chat(client, model="sim-small", messages=huge)
        bad = await client.post("/v1/chat/completions", content=b"{not json")
    for response, status, code in (
        (no_key, 401, "invalid_api_key"),
        (missing, 404, "model_not_found"),
        (too_long, 400, "context_length_exceeded"),
        (bad, 400, "invalid_json"),
    ):
        assert response.status_code == status
        error = response.json()["error"]
        assert error["code"] == code and error["message"] and error["type"]


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_error_rate_fault(status: int) -> None:
    config = fast_config()
    async with client_for(config) as client:
        await client.post(
            "/sim/control",
            json={"model": "sim-large", "error_rate": 1.0, "error_statuses": [status]},
        )
        r = await chat(client)
    assert r.status_code == status
    assert r.json()["error"]["code"]
    assert ("retry-after" in r.headers) == (status == 429)


async def test_flaky_model_error_share() -> None:
    async with client_for(fast_config()) as client:
        statuses = [
            (await chat(client, model="sim-flaky", max_tokens=2)).status_code for _ in range(200)
        ]
    errors = sum(s != 200 for s in statuses)
    assert 15 <= errors <= 70
    assert set(statuses) <= {200, 429, 500, 503}


async def test_malformed_stream_fault() -> None:
    config = fast_config()
    config.models["sim-large"].malformed_stream_rate = 1.0
    async with client_for(config) as client:
        text = (await chat(client, stream=True)).text
    broken = 0
    for block in text.split("\n\n")[:-1]:
        if block.startswith("data: {"):
            try:
                json.loads(block[len("data: ") :])
            except json.JSONDecodeError:
                broken += 1
    assert broken == 1
    assert text.endswith("data: [DONE]\n\n")


# ---------------------------------------------------------------- dishonest routing and control


async def test_substitution_share_over_200_requests() -> None:
    small_fp = BUILTIN_PERSONAS["small"].system_fingerprint
    async with client_for(fast_config()) as client:
        bodies = [
            (await chat(client, model="sim-large-relay", max_tokens=2)).json() for _ in range(200)
        ]
    substituted = sum(b["system_fingerprint"] == small_fp for b in bodies)
    assert 35 <= substituted <= 85
    assert {b["model"] for b in bodies} == {"sim-large-relay"}


async def test_control_endpoint_merges_and_validates() -> None:
    async with client_for(fast_config()) as client:
        before = (await chat(client)).json()["model"]
        r = await client.post("/sim/control", json={"model": "sim-large", "echo_model": "alias"})
        assert r.status_code == 200
        assert r.json()["models"]["sim-large"]["echo_model"] == "alias"
        after = (await chat(client)).json()["model"]
        bad_key = await client.post("/sim/control", json={"model": "sim-large", "nope": 1})
        bad_persona = await client.post("/sim/control", json={"model": "x", "persona": "ghost"})
        created = await client.post("/sim/control", json={"model": "sim-new", "persona": "small"})
        models = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        factor = await client.post("/sim/control", json={"dashboard_report_factor": 1.1})
    assert before == "sim-large" and after == BUILTIN_PERSONAS["large"].alias
    assert bad_key.status_code == 400 and bad_persona.status_code == 400
    assert created.status_code == 200 and "sim-new" in models
    assert factor.json()["globals"]["dashboard_report_factor"] == 1.1


async def test_dashboard_counts_requests_and_scales_tokens() -> None:
    config = fast_config()
    async with client_for(config) as client:
        usages = [(await chat(client, max_tokens=8)).json()["usage"] for _ in range(5)]
        usages += [(await chat(client, model="sim-small", max_tokens=8)).json()["usage"]]
        await chat(client, model="missing")
        tech = (await client.get("/api/v1/obs/dashboard", params={"range_days": 7})).json()["tech"]
        await client.post("/sim/control", json={"dashboard_report_factor": 1.1})
        inflated = (await client.get("/api/v1/obs/dashboard?range_days=7")).json()["tech"]
        bad = await client.get("/api/v1/obs/dashboard?range_days=zero")
    assert tech["total_requests"] == 7
    assert tech["prompt_tokens"] == sum(u["prompt_tokens"] for u in usages)
    assert tech["completion_tokens"] == sum(u["completion_tokens"] for u in usages)
    assert tech["error_rate_pct"] == f"{100 / 7:.2f}"
    dist = {d["model"]: d["requests"] for d in tech["model_distribution"]}
    assert dist == {"sim-large": 5, "sim-small": 1, "missing": 1}
    assert float(tech["total_cost_rmb"]) > 0
    assert tech["p99_latency_ms"] >= tech["avg_latency_ms"] >= 0
    assert inflated["total_requests"] == 7
    assert inflated["total_tokens"] == round(tech["prompt_tokens"] * 1.1) + round(
        tech["completion_tokens"] * 1.1
    )
    assert bad.status_code == 422


def test_config_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(
        'api_key = "k"\ntime_scale = 0.5\nanswer_key_dirs = ["probes"]\n'
        '[personas.tiny]\nbase = "small"\nseed = "tiny"\n'
        '[models.m1]\npersona = "tiny"\nsubstitute = "large"\nsubstitute_share = 0.1\n'
    )
    config = load_sim_config(path)
    assert config.api_key == "k" and config.time_scale == 0.5
    assert config.answer_key_dirs == [tmp_path / "probes"]
    assert config.personas["tiny"].tokenizer == "bpe-b"
    assert config.models["m1"] == ModelSettings(
        persona="tiny", substitute="large", substitute_share=0.1
    )
    path.write_text('[models.m1]\npersona = "ghost"\n')
    with pytest.raises(ValueError, match="ghost"):
        load_sim_config(path)
    path.write_text('[models.m1]\npersona = "large"\ncolour = 1\n')
    with pytest.raises(ValueError, match="colour"):
        load_sim_config(path)


# ---------------------------------------------------------------- real loopback


def test_loopback_stream_timing_and_cutoff() -> None:
    config = fast_config(time_scale=0.2)
    with run_in_thread(config) as sim, httpx.Client(base_url=sim.base_url, timeout=10) as client:
        assert sim.base_url.startswith("http://127.0.0.1:") and sim.base_url.endswith("/v1")
        body = {"model": "sim-small", "messages": USER, "stream": True}
        started = time.perf_counter()
        arrivals: list[float] = []
        with client.stream("POST", "/chat/completions", json=body) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and '"content":"' in line and '"role"' not in line:
                    arrivals.append(time.perf_counter() - started)
        assert len(arrivals) > 3 and arrivals[-1] > arrivals[0]
        client.post(f"{sim.url}/sim/control", json={"model": "sim-small", "cutoff_stream_rate": 1})
        lines: list[str] = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream("POST", "/chat/completions", json=body) as r,
        ):
            lines.extend(r.iter_lines())
        assert "data: [DONE]" not in lines


async def test_loopback_200_concurrent_streams() -> None:
    config = fast_config(time_scale=0.3)
    with run_in_thread(config) as sim:
        limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
        async with httpx.AsyncClient(base_url=sim.base_url, timeout=30, limits=limits) as client:

            async def one() -> bool:
                body = {"model": "sim-large", "messages": USER, "stream": True}
                async with client.stream("POST", "/chat/completions", json=body) as r:
                    text = "".join([chunk async for chunk in r.aiter_text()])
                return text.endswith("data: [DONE]\n\n")

            started = time.perf_counter()
            streams = [asyncio.create_task(one()) for _ in range(200)]
            await asyncio.sleep(0.3)
            probe_started = time.perf_counter()
            models = await client.get("/models")
            probe_s = time.perf_counter() - probe_started
            results = await asyncio.gather(*streams)
            elapsed = time.perf_counter() - started
    assert models.status_code == 200 and probe_s < 2.0
    assert all(results)
    assert elapsed < 15
