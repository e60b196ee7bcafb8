"""Scorers, protocol checks, group checks and the registry."""

from __future__ import annotations

from typing import Any

import pytest

from aione_probe.checks import (
    CheckContext,
    CheckSpecError,
    _registry,
    check,
    registered_checks,
    run_checks,
    run_group_checks,
    validate_check_spec,
)
from aione_probe.cost import Price
from aione_probe.errors import FailureKind
from aione_probe.suites import CheckSpec, Probe, ProbeInstance
from aione_probe.types import CheckResult, CheckValue, Observation, Usage

P, F, M, U, PART = (
    CheckValue.passed,
    CheckValue.failed,
    CheckValue.missing,
    CheckValue.unscored,
    CheckValue.partial,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "required": ["city"],
            "additionalProperties": False,
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
            },
        },
    },
}


def make_instance(**probe: Any) -> ProbeInstance:
    fields = {"id": "p", "prompt": "question", **probe}
    return ProbeInstance(Probe.model_validate(fields), 0, {})


def make_ctx(price: Price | None = None, **probe: Any) -> CheckContext:
    inst = make_instance(**probe)
    return CheckContext(instance=inst, request=inst.request("m"), price=price)


def obs(content: str = "", **kw: Any) -> Observation:
    return Observation(gateway="g", model="m", content=content, **kw)


def usage(p=None, c=None, t=None, cached=None, reasoning=None) -> Usage:
    return Usage(
        prompt_tokens=p,
        completion_tokens=c,
        total_tokens=t,
        cached_tokens=cached,
        reasoning_tokens=reasoning,
        raw={},
    )


def run(name: str, o: Observation, ctx: CheckContext | None = None, **params: Any) -> CheckResult:
    validate_check_spec(name, params)
    return registered_checks()[name].fn(o, params, ctx or make_ctx())


# --- numeric ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("391", P),
        ("17 * 23 = 391.", P),
        ("**391**", P),
        ("The answer is 391", P),
        ("３９１", P),
        ("答案是３９１。", P),
        ("<think>maybe 400? no</think>391", P),
        ("so the result is \\boxed{391}, not 17 or 23", P),
        ("3910", F),
        ("39.1", F),
        ("391.5", F),
        ("3,910", F),
        ("The answer is 391 not 392", F),
        ("I think 391 or maybe 392 is right", F),
        ("no idea", F),
        ("", F),
    ],
)
def test_numeric_391(answer: str, value: CheckValue) -> None:
    assert run("numeric", obs(answer), expected=391).value is value


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("1,234", 1234),
        ("−5", -5),
        ("It is -5.", -5),
        ("3.50", 3.5),
        ("$12", 12),
        ("It costs $12 USD", 12),
        ("12%", 12),
        ("\\boxed{1{,}234}", 1234),
        ("17-5=12", 12),
        ("0.30000000000000004", "0.30000000000000004"),
    ],
)
def test_numeric_formats(answer: str, expected: Any) -> None:
    r = run("numeric", obs(answer), expected=expected)
    assert r.value is P, r.explanation


def test_numeric_ambiguous_explains() -> None:
    r = run("numeric", obs("Either 391 or 392, I would say"), expected=391)
    assert r.value is F
    assert "several different numbers" in r.explanation
    assert r.metadata["numbers"] == ["391", "392"]


def test_numeric_final_number_recorded() -> None:
    r = run("numeric", obs("The answer is 391 not 392"), expected=391)
    assert r.answer == "392" and r.expected == "391"
    assert "differs by 1" in r.explanation


def test_numeric_tolerances() -> None:
    assert run("numeric", obs("3.14"), expected=3.1416, tolerance=0.01).value is P
    assert run("numeric", obs("3.14"), expected=3.1416, tolerance=0.001).value is F
    assert run("numeric", obs("1020"), expected=1000, rel_tolerance=0.05).value is P
    assert run("numeric", obs("1060"), expected=1000, rel_tolerance=0.05).value is F


# --- exact, regex, choice, contains -------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("Paris", P),
        ("Paris.", P),
        ("  paris \n", P),
        ('"Paris"', P),
        ("`Paris`", P),
        ("**Paris.**", P),
        ("Paris, France", F),
        ("Paris France", F),
        ("The capital is Paris.", F),
        ("Pariss", F),
    ],
)
def test_exact(answer: str, value: CheckValue) -> None:
    assert run("exact", obs(answer), expected="Paris").value is value


def test_exact_collapses_whitespace_and_accepts_list() -> None:
    assert run("exact", obs("New   York\ncity"), expected="new york city").value is P
    assert run("exact", obs("NYC"), expected=["New York", "NYC"]).value is P
    r = run("exact", obs("LA"), expected=["New York", "NYC"])
    assert r.value is F and r.expected == "New York | NYC"


def test_exact_without_normalize_is_literal() -> None:
    assert run("exact", obs("paris"), expected="Paris", normalize=False).value is F
    assert run("exact", obs("Paris"), expected="Paris", normalize=False).value is P


def test_regex() -> None:
    assert run("regex", obs("code: 4821"), pattern=r"\d{4}").value is P
    assert run("regex", obs("code: 4821"), pattern=r"\d{4}", fullmatch=True).value is F
    assert run("regex", obs("4821"), pattern=r"\d{4}", fullmatch=True).value is P
    assert run("regex", obs("HELLO"), pattern="hello").value is F
    assert run("regex", obs("HELLO"), pattern="hello", flags="i").value is P
    assert (
        run("regex", obs("As an AI model"), pattern="as an ai", flags="i", must_match=False).value
        is F
    )
    r = run("regex", obs("fine"), pattern="sorry", must_match=False)
    assert r.value is P and r.explanation == "pattern absent"


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("B", P),
        ("(B)", P),
        ("b", P),
        ("B.", P),
        ("**B**", P),
        ("Answer: B", P),
        ("The answer is (B) because A is wrong", P),
        ("答案是 B", P),
        ("AB", F),
        ("Answer: AB", F),
        ("A or B", F),
        ("C", F),
        ("The answer is a bit unclear", F),
        ("", F),
    ],
)
def test_choice(answer: str, value: CheckValue) -> None:
    assert run("choice", obs(answer), expected="B").value is value


def test_choice_records_extraction() -> None:
    r = run("choice", obs("A or B"), expected="B")
    assert "several choice letters" in r.explanation
    r = run("choice", obs("E"), expected="E", choices=["A", "B", "C", "D", "E"])
    assert r.value is P and r.answer == "E"


def test_contains() -> None:
    assert run("contains", obs("Beijing is the capital"), all=["beijing"]).value is P
    r = run("contains", obs("Beijing, I'm sorry"), all=["Beijing"], none=["sorry"])
    assert r.value is F and r.metadata["forbidden_found"] == ["sorry"]
    r = run("contains", obs("beijing"), all=["Beijing"], case_sensitive=True)
    assert r.value is F and r.metadata["missing"] == ["Beijing"]
    assert run("contains", obs("北京"), all=["北京"], none=["上海"]).value is P


# --- structured -------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "required": ["name", "age"],
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
}


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ('{"name": "Ada", "age": 36}', P),
        ('```json\n{"name": "Ada", "age": 36}\n```', P),
        ('```\n{"name": "Ada", "age": 36}\n```', P),
        ('{"name": "Ada", "age": 36} Hope this helps!', F),
        ('{"name": "Ada", "age": 36}\n{"name": "Bob", "age": 1}', F),
        ('{"name": "Ada", "age": "36"}', F),
        ('{"name": "Ada"}', F),
        ('{"name": "Ada", "age": NaN}', F),
        ("{'name': 'Ada', 'age': 36}", F),
        ("Sure! Here it is.", F),
    ],
)
def test_json_schema(answer: str, value: CheckValue) -> None:
    assert run("json_schema", obs(answer), schema=PERSON).value is value


def test_json_schema_explanations() -> None:
    r = run("json_schema", obs('{"name": "Ada", "age": 36} trailing'), schema=PERSON)
    assert "trailing text" in r.explanation
    r = run("json_schema", obs('{"name": "Ada", "age": "36"}'), schema=PERSON)
    assert "$.age" in r.explanation and "integer" in r.explanation


def test_json_schema_lenient_accepts_prose() -> None:
    text = 'Sure: {"name": "Ada", "age": 36} - done'
    assert run("json_schema", obs(text), schema=PERSON, strict=False).value is P


def call(name: str, arguments: Any) -> dict[str, Any]:
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


TOOL_CTX = make_ctx(tools=[WEATHER_TOOL])


@pytest.mark.parametrize(
    ("calls", "params", "value", "why"),
    [
        ([call("get_weather", '{"city": "Paris"}')], {}, P, "valid"),
        ([call("get_weather", {"city": "Paris"})], {}, P, "valid"),
        ([call("get_weather", '{"city": 7}')], {}, F, "$.city"),
        ([call("get_weather", '{"city": "Paris", "days": "3"}')], {}, F, "$.days"),
        ([call("get_weather", '{"town": "Paris"}')], {}, F, "tool schema"),
        ([call("get_weather", '{"city": "Paris"')], {}, F, "not valid JSON"),
        ([call("get_weather", '["Paris"]')], {}, F, "not an object"),
        ([call("get_time", '{"city": "Paris"}')], {}, F, "instead of"),
        ([], {}, F, "no tool call"),
        ([call("get_weather", '{"city": "Paris"}')], {"arguments": {"city": "Paris"}}, P, "valid"),
        ([call("get_weather", '{"city": "Lyon"}')], {"arguments": {"city": "Paris"}}, F, "differ"),
        (
            [call("get_weather", '{"city": "Paris", "days": 1}')],
            {"arguments": {"days": True}},
            F,
            "differ",
        ),
    ],
)
def test_tool_call(calls: list, params: dict, value: CheckValue, why: str) -> None:
    r = run("tool_call", obs("", tool_calls=calls), TOOL_CTX, function="get_weather", **params)
    assert r.value is value
    assert why in r.explanation


# --- instructions -----------------------------------------------------------------------


def test_length() -> None:
    assert run("length", obs("one two three"), min_words=3, max_words=3).value is P
    r = run("length", obs("one two three four"), max_words=3)
    assert r.value is F and r.metadata["words"] == 4
    assert run("length", obs("a\n\nb\nc\n"), lines=3).value is P
    assert run("length", obs("a\nb"), lines=3).value is F
    assert run("length", obs("a\nb\nc"), max_lines=2).value is F
    assert run("length", obs("  hello  "), max_chars=5, min_chars=5).value is P
    assert run("length", obs("北京是首都"), min_words=5, max_words=5).value is P


def test_language() -> None:
    assert run("language", obs("北京是中国的首都。"), expected="zh").value is P
    assert run("language", obs("北京 (Beijing)"), expected="zh").value is F
    assert run("language", obs("The capital is Beijing."), expected="en").value is P
    r = run("language", obs("The capital 是 北京"), expected="en")
    assert r.value is F and r.answer == "mixed"
    assert run("language", obs("123 !!"), expected="en").value is F


# --- protocol ---------------------------------------------------------------------------


FORCED = {"type": "function", "function": {"name": "get_weather"}}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}


@pytest.mark.parametrize(
    ("finish", "completion", "calls", "probe", "value"),
    [
        # below max_tokens (16): anything but "length" that matches the content
        ("stop", 3, False, {}, P),
        ("content_filter", 3, False, {}, P),
        ("length", 3, False, {}, F),
        ("tool_calls", 3, False, {}, F),
        # at (or past) max_tokens: must say "length" (a silently truncating relay says stop)
        ("length", 16, False, {}, P),
        ("stop", 16, False, {}, F),
        ("stop", 20, False, {}, F),
        # tool calls: "tool_calls"; a call cut at the limit may say "length"
        ("tool_calls", 12, True, {"tools": [WEATHER_TOOL], "tool_choice": "auto"}, P),
        ("stop", 12, True, {"tools": [WEATHER_TOOL], "tool_choice": "auto"}, F),
        ("length", 16, True, {"tools": [WEATHER_TOOL]}, P),
        ("length", 12, True, {"tools": [WEATHER_TOOL]}, F),
        # a call forced by name: OpenAI and vLLM end it with "stop"
        ("stop", 12, True, {"tools": [WEATHER_TOOL], "tool_choice": FORCED}, P),
        # a model that answers a tool probe in text made a choice: not a protocol failure
        ("stop", 9, False, {"tools": [WEATHER_TOOL], "tool_choice": "auto"}, P),
        ("length", 16, False, {"tools": [WEATHER_TOOL], "tool_choice": "auto"}, P),
        # no max_tokens sent: "length" (the context window) cannot be judged wrong
        ("length", 900, False, {"max_tokens": None}, P),
        ("stop", 900, False, {"max_tokens": None}, P),
    ],
)
def test_finish_reason_is_judged_on_consistency(
    finish: str, completion: int, calls: bool, probe: dict[str, Any], value: CheckValue
) -> None:
    ctx = make_ctx(**{"max_tokens": 16, **probe})
    o = obs(
        "" if calls else "text",
        finish_reason=finish,
        tool_calls=[CALL] if calls else [],
        usage=usage(10, completion, 10 + completion),
    )
    r = run("finish_reason", o, ctx)
    assert r.value is value, r.explanation
    assert r.answer == finish and r.metadata["observed"] == finish


def test_finish_reason_counts_separately_billed_reasoning_towards_the_limit() -> None:
    ctx = make_ctx(max_tokens=16)
    u = usage(10, 6, 26, reasoning=10)  # total = prompt + completion + reasoning
    r = run("finish_reason", obs("x", finish_reason="length", usage=u), ctx)
    assert r.value is P, r.explanation


def test_finish_reason_missing() -> None:
    r = run("finish_reason", obs("x"), make_ctx(max_tokens=16))
    assert r.value is M and "no finish_reason" in r.explanation
    r = run("finish_reason", obs("x", finish_reason="stop"), make_ctx(max_tokens=16))
    assert r.value is M and "cannot tell" in r.explanation
    # tool calls decide without usage
    o = obs("", finish_reason="stop", tool_calls=[CALL])
    assert run("finish_reason", o, make_ctx(max_tokens=16, tools=[WEATHER_TOOL])).value is F


def test_usage_total() -> None:
    assert run("usage_total", obs(usage=usage(10, 5, 15))).value is P
    assert run("usage_total", obs(usage=usage(10, 5, 16))).value is F
    r = run("usage_total", obs(usage=usage(10, 5, None)))
    assert r.value is M and "total_tokens" in r.explanation
    r = run("usage_total", obs(usage=usage(10, 5, 23, reasoning=8)))
    assert r.value is P and r.metadata["reasoning_separate"] is True


def test_usage_max_tokens() -> None:
    ctx = make_ctx(max_tokens=5)
    assert run("usage_max_tokens", obs(usage=usage(10, 5, 15)), ctx).value is P
    r = run("usage_max_tokens", obs(usage=usage(10, 6, 16)), ctx)
    assert r.value is F and "6 completion tokens > max_tokens 5" in r.explanation
    # reasoning inside completion_tokens (OpenAI): only completion counts
    assert run("usage_max_tokens", obs(usage=usage(10, 5, 15, reasoning=3)), ctx).value is P
    # reasoning beside completion: the bill exceeds max_tokens
    r = run("usage_max_tokens", obs(usage=usage(10, 5, 25, reasoning=10)), ctx)
    assert r.value is PART and r.answer == "15"
    assert run("usage_max_tokens", obs(usage=usage(10, None, None)), ctx).value is M


def test_usage_in_stream() -> None:
    ctx = make_ctx(stream=True)
    assert run("usage_in_stream", obs(stream=True, usage_in_stream=True), ctx).value is P
    assert run("usage_in_stream", obs(stream=True, usage_in_stream=False), ctx).value is F
    assert run("usage_in_stream", obs(stream=True), ctx).value is M


def test_usage_reasoning() -> None:
    assert run("usage_reasoning", obs(usage=usage(reasoning=40))).value is P
    assert run("usage_reasoning", obs(usage=usage(reasoning=0))).value is F
    assert run("usage_reasoning", obs(usage=usage())).value is M
    assert run("usage_reasoning", obs(usage=usage()), expect=False).value is P
    assert run("usage_reasoning", obs(usage=usage(reasoning=12)), expect=False).value is F


# --- unscored on failure -----------------------------------------------------------------

VALID_PARAMS: dict[str, dict[str, Any]] = {
    "exact": {"expected": "x"},
    "regex": {"pattern": "x"},
    "numeric": {"expected": 1},
    "choice": {"expected": "A"},
    "contains": {"all": ["x"]},
    "json_schema": {"schema": PERSON},
    "tool_call": {"function": "get_weather"},
    "length": {"max_words": 3},
    "language": {"expected": "en"},
    "finish_reason": {},
    "usage_total": {},
    "usage_max_tokens": {},
    "usage_in_stream": {},
    "usage_reasoning": {},
    "usage_completion_plausible": {"tolerance": 0.1},
    "model_name": {"listed": ["m"]},
    "image": {"aspect_ratio": "1:1"},
}


def test_every_check_has_valid_params_listed() -> None:
    observation_checks = {n for n, d in registered_checks().items() if not d.group}
    assert observation_checks == set(VALID_PARAMS)


@pytest.mark.parametrize("name", sorted(VALID_PARAMS))
def test_failed_observation_is_unscored(name: str) -> None:
    failed = obs("391", failure=FailureKind.http_5xx, finish_reason="stop", usage=usage(1, 1, 2))
    r = run(name, failed, make_ctx(max_tokens=8, stream=True), **VALID_PARAMS[name])
    assert r.value is U
    assert r.name == name and r.params == VALID_PARAMS[name]
    assert "http_5xx" in r.explanation


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "param", "reason"),
    [
        ("nope", {}, "name", "unknown check 'nope'"),
        ("cache", {}, "name", "belongs in group_checks"),
        ("numeric", {}, "expected", "missing required parameter 'expected'"),
        ("numeric", {"expected": "abc"}, "expected", "must be a number"),
        ("numeric", {"expected": True}, "expected", "must be a number"),
        ("numeric", {"expected": 1, "tolerence": 1}, "tolerence", "unknown parameter"),
        ("numeric", {"expected": 1, "tolerance": -1}, "tolerance", "≥ 0"),
        ("regex", {"pattern": "("}, "pattern", "invalid regular expression"),
        ("regex", {"pattern": "x", "flags": "g"}, "flags", "i, m, s"),
        ("choice", {"expected": "E"}, "expected", "not one of"),
        ("choice", {"expected": "A", "choices": ["A", "BB"]}, "choices", "distinct letters"),
        ("contains", {}, "all", "at least one"),
        ("json_schema", {"schema": {"type": "objekt"}}, "schema", "invalid JSON schema"),
        ("json_schema", {"schema": "x"}, "schema", "must be a table"),
        ("tool_call", {"function": ""}, "function", "must not be empty"),
        ("length", {}, None, "at least one"),
        ("length", {"min_words": 5, "max_words": 2}, "min_words", "exceeds"),
        ("language", {"expected": "fr"}, "expected", '"zh" or "en"'),
        ("finish_reason", {"expected": "stop"}, "expected", "takes no parameters"),
        ("usage_total", {"x": 1}, "x", "takes no parameters"),
        ("usage_reasoning", {"expect": "yes"}, "expect", "true or false"),
    ],
)
def test_validate_check_spec_rejects(
    name: str, params: dict, param: str | None, reason: str
) -> None:
    with pytest.raises(CheckSpecError) as info:
        validate_check_spec(name, params)
    assert reason in str(info.value)
    assert info.value.param == param
    assert isinstance(info.value, ValueError)


def test_group_check_outside_group_checks_rejected_and_vice_versa() -> None:
    validate_check_spec("cache", {}, group=True)
    with pytest.raises(CheckSpecError, match="belongs in checks"):
        validate_check_spec("numeric", {"expected": 1}, group=True)


# --- run_checks ---------------------------------------------------------------------------


def test_run_checks_renders_params_and_applies_defaults() -> None:
    probe = Probe.model_validate(
        {
            "id": "p",
            "prompt": "{{a}}",
            "max_tokens": 8,
            "vars": {"a": {"gen": "int", "min": 1, "max": 9}},
            "checks": [{"name": "numeric", "expected": "{{a}}"}],
        }
    )
    inst = ProbeInstance(probe, 0, {"a": 7})
    req = inst.request("m")
    ctx = CheckContext(inst, req, None)
    defaults = [CheckSpec(name="usage_total"), CheckSpec(name="usage_in_stream")]
    out = run_checks(inst, obs("7", usage=usage(3, 1, 4)), ctx, defaults)
    # usage_in_stream does not apply to a plain request
    assert [r.name for r in out] == ["numeric", "usage_total"]
    assert out[0].params == {"expected": 7} and out[0].value is P
    assert out[1].value is P


def test_run_checks_probe_check_overrides_default_of_same_name() -> None:
    inst = make_instance(checks=[{"name": "language", "expected": "en"}])
    ctx = CheckContext(inst, inst.request("m"), None)
    defaults = [CheckSpec(name="language", params={"expected": "zh"})]
    out = run_checks(inst, obs("plain English"), ctx, defaults)
    assert [(r.name, r.value) for r in out] == [("language", P)]


def test_run_checks_skips_usage_max_tokens_without_limit() -> None:
    inst = make_instance()
    ctx = CheckContext(inst, inst.request("m"), None)
    assert run_checks(inst, obs("x"), ctx, [CheckSpec(name="usage_max_tokens")]) == []


def test_run_checks_turns_a_crashing_check_into_unscored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))

    @check("test_crashes")
    def crashes(o: Observation, params: dict, ctx: CheckContext) -> CheckResult:
        raise RuntimeError("boom")

    inst = make_instance()
    ctx = CheckContext(inst, inst.request("m"), None)
    out = run_checks(inst, obs("x"), ctx, [CheckSpec(name="test_crashes")])
    assert out[0].value is U and "RuntimeError: boom" in out[0].explanation
    assert out[0].name == "test_crashes"


# --- group checks -------------------------------------------------------------------------

PRICE = Price(input=2.0, output=8.0, cached_input=0.5)


def cache_obs(cached: int | None, ttft: float, prompt: int = 2000, **kw: Any) -> Observation:
    return obs(
        "ok",
        stream=True,
        first_token_s=ttft,
        end_s=ttft + 0.1,
        usage=usage(prompt, 10, prompt + 10, cached=cached),
        **kw,
    )


def cache_run(observations: list[Observation], price: Price | None = PRICE, **params: Any):
    probe = Probe.model_validate(
        {
            "id": "c",
            "kind": "cache",
            "prompt": "long prefix",
            "samples": len(observations),
            "group_checks": [{"name": "cache", **params}],
        }
    )
    insts = [ProbeInstance(probe, i, {}) for i in range(len(observations))]
    ctx = CheckContext(insts[0], insts[0].request("m"), price)
    (res,) = run_group_checks(insts, observations, ctx)
    return res


def test_cache_hit() -> None:
    r = cache_run([cache_obs(0, 1.0), cache_obs(1920, 0.4), cache_obs(1920, 0.2)])
    assert r.value is P and r.name == "cache"
    m = r.metadata
    assert m["outcome"] == "hit"
    assert m["cached_tokens"] == [0, 1920, 1920]
    assert m["hit_ratio"] == 1.0
    assert m["ttft_first_s"] == 1.0
    assert m["ttft_cached_median_s"] == pytest.approx(0.3)
    assert m["ttft_ratio"] == pytest.approx(0.3)
    # 2 requests x 1920 cached tokens x (2.0 - 0.5) per million
    assert m["saved"] == pytest.approx(2 * 1920 * 1.5 / 1e6)
    assert m["currency"] == "USD" and m["discount"] is True


def test_cache_miss_vs_no_field() -> None:
    r = cache_run([cache_obs(0, 1.0), cache_obs(0, 1.0), cache_obs(0, 1.0)])
    assert r.value is F and r.metadata["outcome"] == "miss"
    r = cache_run([cache_obs(None, 1.0), cache_obs(None, 1.0)])
    assert r.value is M and r.metadata["outcome"] == "no_cache_field"


def test_cache_partial_and_no_discount() -> None:
    r = cache_run([cache_obs(0, 1.0), cache_obs(0, 1.0), cache_obs(0, 1.0), cache_obs(1920, 0.3)])
    assert r.value is PART and r.metadata["outcome"] == "partial_hit"
    assert r.metadata["hit_ratio"] == pytest.approx(1 / 3)
    r = cache_run([cache_obs(0, 1.0), cache_obs(1920, 0.3)], price=Price(input=2.0, output=8.0))
    assert r.value is PART and r.metadata["outcome"] == "no_discount"
    assert r.metadata["saved"] == 0


def test_cache_without_price_passes_on_hits() -> None:
    r = cache_run([cache_obs(0, 1.0), cache_obs(1920, 0.3)], price=None)
    assert r.value is P and r.metadata["saved"] is None


def test_cache_unscored_when_first_fails() -> None:
    failed = obs(failure=FailureKind.timeout_total)
    r = cache_run([failed, cache_obs(1920, 0.3), cache_obs(1920, 0.3)])
    assert r.value is U


def consistency_run(observations: list[Observation]) -> CheckResult:
    probe = Probe.model_validate(
        {
            "id": "c",
            "prompt": "x",
            "samples": len(observations),
            "alternate_stream": True,
            "group_checks": [{"name": "prompt_tokens_consistent"}],
        }
    )
    insts = [ProbeInstance(probe, i, {}) for i in range(len(observations))]
    ctx = CheckContext(insts[0], insts[0].request("m"), None)
    (res,) = run_group_checks(insts, observations, ctx)
    return res


def test_prompt_tokens_consistent() -> None:
    same = [obs(stream=s, usage=usage(12, 1, 13)) for s in (False, True)]
    assert consistency_run(same).value is P
    differ = [obs(stream=False, usage=usage(12, 1, 13)), obs(stream=True, usage=usage(15, 1, 16))]
    r = consistency_run(differ)
    assert r.value is F and "plain [12], stream [15]" in r.explanation
    lacking = [obs(usage=usage(12, 1, 13)), obs(stream=True, usage=usage(None, 1, None))]
    assert consistency_run(lacking).value is M
    one_ok = [obs(usage=usage(12, 1, 13)), obs(failure=FailureKind.http_5xx)]
    assert consistency_run(one_ok).value is U
