"""The golden, behaviour and cache probe suites: coverage, verified answers and token cost.

Every expected answer is checked here rather than trusted: arithmetic is recomputed from
an independent Python expression, every program of an output-prediction probe is run,
each probe's own checks must pass on a reference answer and fail on an evasive one, and
the token estimate in each file's header comment must match the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from aione_probe.checks import CheckContext, registered_checks
from aione_probe.suites import Probe, ProbeInstance, Suite, load_suite
from aione_probe.templating import draw_vars, instance_rng
from aione_probe.types import CheckValue, Observation

PROBES_DIR = Path(__file__).resolve().parent.parent / "probes"
GOLDEN_FILES = [
    PROBES_DIR / f"golden-{part}.toml"
    for part in ("reasoning", "knowledge", "code", "instructions", "structured", "zh", "longctx")
]
BEHAVIOUR_FILE = PROBES_DIR / "behaviour.toml"
CACHE_FILE = PROBES_DIR / "cache.toml"
OWN_FILES = [*GOLDEN_FILES, BEHAVIOUR_FILE, CACHE_FILE]

REQUIRED_CATEGORIES = {
    "arithmetic",
    "reasoning",
    "factual",
    "code-output",
    "instruction-following",
    "json-mode",
    "tool-calling",
    "chinese",
    "long-context",
}
SCORING_CHECKS = {
    "exact",
    "regex",
    "numeric",
    "choice",
    "contains",
    "json_schema",
    "tool_call",
    "length",
    "language",
}
MIN_GOLDEN = 80
MIN_CHINESE = 10
CHEAP_RANGE = range(25, 31)
CHEAP_MAX_TOKENS = 64
# Upper bound on one run of the golden cheap subset (prompt chars / 4 + max_tokens).
CHEAP_TOKEN_BOUND = 2_000
EVASIVE = "I am sorry, but I cannot help with that request today."

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_PROGRAM = re.compile(r"```python\n(.*?)\n```", re.DOTALL)
_ESTIMATE = re.compile(r"^# (cheap subset|full suite): (\d+) probes, ~(\d+) tokens per run$", re.M)
_LOG_LINE = re.compile(r"(\d+)\. (.+)")

# Independent derivations of every arithmetic and reasoning answer (brute force where the
# prompt is a word problem), evaluated with `math` and `date` in scope.
EXPRESSIONS: dict[str, str] = {
    "arith-sub-01": "1000 - 387",
    "arith-mul-01": "17 * 23",
    "arith-mul-04": "9876 * 5432",
    "arith-div-01": "1764 / 42",
    "arith-mod-01": "98765 % 123",
    "arith-pow-01": "3 ** 11",
    "arith-order-01": "12 + 6 * 4 - 18 / 3",
    "arith-frac-01": "round(3 / 8 + 5 / 12, 4)",
    "arith-pct-01": "240 * 15 / 100",
    "arith-sqrt-01": "math.isqrt(7569) if math.isqrt(7569) ** 2 == 7569 else None",
    "arith-neg-01": "(-7) * (-8) - 9 * (6 - 13)",
    "arith-sumsq-01": "sum(i * i for i in range(1, 21))",
    "arith-digitsum-01": "sum(int(d) for d in str(2 ** 30))",
    "arith-gcd-01": "math.gcd(1071, 462)",
    "arith-lcm-01": "math.lcm(12, 18, 30)",
    "reason-age-01": "next(3 * b for b in range(1, 100) if 3 * b + 10 == 2 * (b + 10))",
    "reason-walls-01": "12 / (12 * (6 / (6 * 6)))",
    "reason-handshake-01": "len([(a, b) for a in range(10) for b in range(10) if a < b])",
    "reason-discount-01": "80 * (1 - 0.25) * (1 + 0.10)",
    "reason-clock-01": "min(a := abs(30 * 3 + 0.5 * 40 - 6 * 40), 360 - a)",
    "reason-sequence-01": "[n * (n + 1) for n in range(1, 7)][5]",
    "reason-coins-01": "next(b for b in range(24) if 5 * (23 - b) + 10 * b == 180)",
    "reason-days-01": "(date(2024, 6, 1) - date(2024, 3, 1)).days",
    "reason-bat-ball-01": "next(c for c in range(111) if c + (c + 100) == 110)",
    "reason-pages-01": "sum(len(str(p)) for p in range(1, 251))",
    "reason-tank-01": "1 / (1 / 6 + 1 / 3 - 1 / 4)",
    "reason-primes-01": "sum(all(n % d for d in range(2, n)) for n in range(101, 150))",
    "reason-divisible-01": "sum(1 for n in range(1, 1001) if n % 7 == 0 and n % 11 != 0)",
    "reason-average-01": "5 * 18 - (12 + 15 + 20 + 25)",
    "reason-snail-01": "next(d for d in range(1, 100) if 3 * d - 2 * (d - 1) >= 20)",
    "zh-arith-02": "360 * 0.8 - 20",
    "zh-reason-chicken-rabbit": "next(r for r in range(36) if 2 * (35 - r) + 4 * r == 94)",
    "zh-reason-commute": "60 * 25 / 250",
    "zh-reason-remainder": "next(n for n in range(1, 100) if n % 7 == 3 and n % 5 == 2)",
    "zh-fact-solar-terms": "len('立春雨水惊蛰春分清明谷雨立夏小满芒种夏至小暑大暑"
    "立秋处暑白露秋分寒露霜降立冬小雪大雪冬至小寒大寒') // 2",
    "finish-stop-01": "2 + 2",
    "cache-style-guide-01": "4",
}


def _numbers(text: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", text)]


def _minutes(text: str) -> int:
    dep, arr = (datetime.strptime(t, "%H:%M") for t in re.findall(r"\d\d:\d\d", text))
    return int((arr - dep).total_seconds() // 60)


# Templated probes: a new variant every run. The correct answer is derived here from the
# *rendered prompt text* (not from the generator's vars), independently of the probe's
# own expr, and must equal the rendered expectation for every variant drawn.
TEMPLATED: dict[str, Any] = {
    "arith-add-01": lambda text: sum(_numbers(text)),
    "arith-mul-02": lambda text: math.prod(_numbers(text)),
    "arith-mul-03": lambda text: math.prod(_numbers(text)),
    "reason-muffins-01": lambda text: (
        lambda start, boxes, per_box, baked: start - boxes * per_box + baked
    )(*_numbers(text)),
    "reason-trip-01": _minutes,
    "zh-arith-01": lambda text: math.prod(_numbers(text)),
    "json-sum-product-01": lambda text: (lambda a, b: {"sum": a + b, "product": a * b})(
        *_numbers(text)
    ),
    "tool-weather-01": lambda text: (
        "get_weather",
        {
            "city": re.search(r"in (\w+)", text).group(1),
            "unit": re.search(r"(celsius|fahrenheit)", text).group(1),
        },
    ),
}
VARIANTS = 25

# Reference answers for probes whose expected answer is not a single value.
REFERENCE_TEXT: dict[str, str] = {
    "fact-author-1984": "George Orwell",
    "fact-fermat-proof": "Andrew Wiles",
    "fact-garden-delights": "Hieronymus Bosch",
    "instr-one-word-01": "Red",
    "instr-lowercase-01": "hello",
    "instr-upper-reverse-01": "gateway"[::-1].upper(),
    "instr-even-lines-01": "\n".join(str(n) for n in range(2, 11, 2)),
    "instr-repeat-01": " ".join(["probe"] * 6),
    "instr-key-value-01": "READY:42",
    "instr-number-words-01": "forty-seven",
    "instr-translate-fr-01": "Merci beaucoup",
    "instr-reply-english-01": "Paris",
    "instr-bullets-01": "- Python\n- Rust\n- Go",
    "instr-weekdays-t-01": "1. Tuesday\n2. Thursday",
    "instr-max-chars-01": "Vast, deep and restless blue water.",
    "instr-seven-words-01": "The sea whispers softly against the shore.",
    "instr-no-letter-e-01": "Banana, Kiwi, Fig",
    "instr-acrostic-01": "Cloud\nApple\nTiger",
    "zh-fact-author": "曹雪芹",
    "zh-fact-water": "H₂O",
    "zh-idiom-01": "足",
    "zh-instr-autumn": "秋风送爽，落叶满地。",
    "zh-instr-inventions": "造纸术、指南针、火药、印刷术",
    "zh-translate-01": "早起的鸟儿有虫吃。",
    "usage-stream-01": "1 2 3 4 5",
}
REFERENCE_JSON: dict[str, Any] = {
    "json-person-01": {"name": "Ada Lovelace", "born": 1815},
    "json-primes-01": {"primes": [n for n in range(2, 14) if all(n % d for d in range(2, n))]},
    "json-prime-test-01": {
        "is_prime": all(91 % d for d in range(2, 91)),
        "smallest_factor": next(d for d in range(2, 92) if 91 % d == 0),
    },
    "json-sentiment-01": {"sentiment": "negative", "confidence": 0.95},
    "json-book-01": {
        "title": "Dune",
        "author": {"first": "Frank", "last": "Herbert"},
        "year": 1965,
        "tags": ["scifi", "desert"],
    },
    "json-extract-order-01": {
        "order_id": "A-1042",
        "date": date(2024, 3, 5).isoformat(),
        "city": "Lyon",
        "items": 3,
        "total": 57.90,
        "currency": "EUR",
    },
    "zh-json-01": {"answer": 17 * 24},
}
REFERENCE_CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "tool-select-01": (
        "convert_currency",
        {"amount": 250, "from_currency": "EUR", "to_currency": "JPY"},
    ),
    "tool-forced-01": ("record_score", {"team": "red", "points": 3}),
    "tool-event-01": (
        "create_event",
        {"title": "Budget review", "date": "2025-07-14", "duration_minutes": 60 + 30},
    ),
    "tool-area-01": ("convert_area", {"value": 12 * 7.5, "from_unit": "m2", "to_unit": "ft2"}),
    "tool-order-01": (
        "create_order",
        {
            "items": [{"sku": "SKU-17", "quantity": 2}, {"sku": "SKU-42", "quantity": 5}],
            "shipping": "express",
        },
    ),
    "zh-tool-weather": ("get_weather", {"city": "Tokyo", "unit": "celsius"}),
    "finish-tool-calls-01": ("get_weather", {"city": "Berlin", "unit": "celsius"}),
    "forced-tool-01": ("record_score", {"team": "blue", "points": 2}),
}


# --- helpers ------------------------------------------------------------------------------


def _suite(path: Path) -> Suite:
    return load_suite(path)


def _golden() -> list[Probe]:
    return [p for path in GOLDEN_FILES for p in _suite(path).probes]


def _text(probe: Probe) -> str:
    return "".join(
        m["content"] for m in probe.message_templates() if isinstance(m.get("content"), str)
    )


def estimated_tokens(probe: Probe) -> int:
    """Tokens of one run: (prompt + tools + format chars) / 4 + max_tokens, per sample."""
    chars = len(_text(probe))
    if probe.tools:
        chars += len(json.dumps(probe.tools, ensure_ascii=False))
    if probe.response_format:
        chars += len(json.dumps(probe.response_format, ensure_ascii=False))
    return (math.ceil(chars / 4) + (probe.max_tokens or 0)) * probe.samples


def _checks(probe: Probe, name: str) -> list[dict[str, Any]]:
    return [c.params for c in probe.checks if c.name == name]


def _cjk_share(text: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(1 for c in letters if _CJK.match(c)) / len(letters) if letters else 0.0


def _user_text(probe: Probe) -> str:
    return "".join(str(m.get("content")) for m in probe.message_templates() if m["role"] == "user")


def _call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": "call_1", "type": "function", "function": {"name": name,
            "arguments": json.dumps(args)}}  # fmt: skip


def _reference(instance: ProbeInstance) -> tuple[str, list[dict[str, Any]]]:
    """A correct answer to one rendered instance: content and tool calls."""
    probe = instance.probe
    if probe.id in TEMPLATED:
        answer = TEMPLATED[probe.id](_rendered_text(instance))
        if isinstance(answer, tuple):
            return "", [_call(*answer)]
        return (json.dumps(answer) if isinstance(answer, dict) else str(answer)), []
    if probe.id in REFERENCE_CALLS:
        return "", [_call(*REFERENCE_CALLS[probe.id])]
    if probe.id in REFERENCE_JSON:
        return json.dumps(REFERENCE_JSON[probe.id], ensure_ascii=False), []
    if probe.id in REFERENCE_TEXT:
        return REFERENCE_TEXT[probe.id], []
    for spec in probe.checks:
        if spec.name in ("exact", "numeric", "choice"):
            expected = spec.params["expected"]
            return str(expected[0] if isinstance(expected, list) else expected), []
    raise AssertionError(f"{probe.id}: no reference answer")


def _rendered_text(instance: ProbeInstance) -> str:
    return "".join(
        m["content"]
        for m in instance.request("m").messages
        if m["role"] == "user" and isinstance(m.get("content"), str)
    )


def _instances(probe: Probe) -> list[ProbeInstance]:
    """One instance of a fixed probe; `VARIANTS` renderings (run seeds) of a templated one."""
    if not probe.vars:
        return [ProbeInstance(probe, 0, {})]
    return [
        ProbeInstance(probe, 0, draw_vars(probe.vars, instance_rng(seed, probe.id, 0)))
        for seed in range(VARIANTS)
    ]


def _judge(
    instance: ProbeInstance, content: str, tool_calls: list[dict[str, Any]]
) -> dict[str, CheckValue]:
    """Run the probe's own checks on a synthetic, successful observation."""
    obs = Observation(gateway="test", model="m", content=content, tool_calls=tool_calls)
    obs.finish_reason = "tool_calls" if tool_calls else "stop"
    ctx = CheckContext(instance=instance, request=instance.request("m"))
    registry = registered_checks()
    return {
        spec.name: registry[spec.name].fn(obs, instance.render(dict(spec.params)), ctx).value
        for spec in instance.probe.checks
        if spec.name in SCORING_CHECKS
    }


# --- every file ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", OWN_FILES, ids=lambda p: p.name)
def test_suite_loads_with_its_file_name_as_id(path: Path) -> None:
    suite = _suite(path)
    assert suite.id == path.stem
    assert suite.version >= 1
    assert {c.name for c in suite.default_checks} >= {"usage_total", "usage_max_tokens"}
    for probe in suite.probes:
        assert probe.temperature == 0, probe.id


def test_probe_ids_are_unique_across_all_files() -> None:
    ids = [p.id for path in OWN_FILES for p in _suite(path).probes]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("path", OWN_FILES, ids=lambda p: p.name)
def test_header_token_estimate_matches_the_file(path: Path) -> None:
    probes = _suite(path).probes
    stated = {kind: (int(n), int(t)) for kind, n, t in _ESTIMATE.findall(path.read_text())}
    subsets = {"cheap subset": [p for p in probes if p.cheap], "full suite": probes}
    assert set(stated) == set(subsets), f"{path.name}: header must state both estimates"
    for kind, subset in subsets.items():
        n, tokens = stated[kind]
        actual = sum(estimated_tokens(p) for p in subset)
        assert n == len(subset), f"{path.name}: {kind} has {len(subset)} probes, header says {n}"
        assert abs(tokens - actual) <= 0.05 * actual, f"{path.name}: {kind} costs ~{actual}"


# --- golden coverage ----------------------------------------------------------------------


def test_golden_suites_have_enough_probes_in_every_category() -> None:
    probes = _golden()
    assert len(probes) >= MIN_GOLDEN
    categories = {p.category for p in probes}
    assert categories >= REQUIRED_CATEGORIES, REQUIRED_CATEGORIES - categories
    assert {p.difficulty for p in probes} == {"easy", "medium", "hard"}
    for category in REQUIRED_CATEGORIES:
        levels = {p.difficulty for p in probes if p.category == category}
        assert len(levels) >= 2, f"{category} has only {levels}"


def test_at_least_ten_chinese_prompts() -> None:
    chinese = [p for p in _golden() if _cjk_share(_user_text(p)) >= 0.3]
    assert len(chinese) >= MIN_CHINESE
    assert sum(p.category == "chinese" for p in chinese) >= MIN_CHINESE


def test_json_mode_and_tool_probes_are_wired() -> None:
    probes = _golden()
    for p in probes:
        if _checks(p, "json_schema"):
            assert p.response_format == {"type": "json_object"}, p.id
            assert "JSON" in _user_text(p), f"{p.id}: JSON mode needs the word JSON"
        if _checks(p, "tool_call"):
            assert p.tools, p.id
    forced = [p for p in probes if isinstance(p.tool_choice, dict) and _checks(p, "tool_call")]
    assert forced, "no forced tool call"
    assert all(
        p.tool_choice["function"]["name"] == _checks(p, "tool_call")[0]["function"] for p in forced
    )


def test_every_golden_probe_has_a_scoring_check_with_an_expectation() -> None:
    for p in _golden():
        scoring = [c for c in p.checks if c.name in SCORING_CHECKS and c.params]
        assert scoring, f"{p.id}: no scoring check with an expected answer"


def test_cheap_subset_is_small_broad_and_bounded() -> None:
    cheap = [p for p in _golden() if p.cheap]
    assert len(cheap) in CHEAP_RANGE
    assert all(p.max_tokens is not None and p.max_tokens <= CHEAP_MAX_TOKENS for p in cheap)
    assert {p.category for p in cheap} >= REQUIRED_CATEGORIES - {"long-context"}
    assert {p.difficulty for p in cheap} == {"easy", "medium", "hard"}
    assert sum(estimated_tokens(p) for p in cheap) <= CHEAP_TOKEN_BOUND


# --- verified answers ---------------------------------------------------------------------


def test_arithmetic_answers_are_recomputed() -> None:
    probes = {p.id: p for path in OWN_FILES for p in _suite(path).probes}
    numeric_categories = {"arithmetic", "reasoning"}
    must_cover = {i for i, p in probes.items() if p.category in numeric_categories}
    assert must_cover <= set(EXPRESSIONS) | set(TEMPLATED), must_cover - set(EXPRESSIONS)
    for probe_id, expr in EXPRESSIONS.items():
        (spec,) = _checks(probes[probe_id], "numeric")
        value = eval(expr, {"math": math, "date": date})
        assert value is not None, probe_id
        tolerance = max(spec.get("tolerance", 0), 1e-9)
        assert abs(value - spec["expected"]) <= tolerance, f"{probe_id}: {expr} = {value}"


def test_templated_answers_are_recomputed_from_every_rendered_prompt() -> None:
    probes = {p.id: p for path in GOLDEN_FILES for p in _suite(path).probes}
    assert {i for i, p in probes.items() if p.vars} == set(TEMPLATED)
    for probe_id in TEMPLATED:
        probe = probes[probe_id]
        prompts = set()
        for instance in _instances(probe):
            text = _rendered_text(instance)
            assert "{{" not in text, probe_id
            prompts.add(text)
            expected = TEMPLATED[probe_id](text)
            (spec,) = [c for c in probe.checks if c.name in SCORING_CHECKS]
            params = instance.render(dict(spec.params))
            if spec.name == "numeric":
                assert params["expected"] == expected, (probe_id, text)
            elif spec.name == "json_schema":
                props = params["schema"]["properties"]
                assert {k: v["const"] for k, v in props.items()} == expected, (probe_id, text)
            else:
                name, args = expected
                assert params["function"] == name and params["arguments"]["unit"] == args["unit"]
        # A new variant most runs: the detectors see new information each time.
        assert len(prompts) >= VARIANTS // 2, (probe_id, len(prompts))


def test_cheap_subset_mixes_templated_and_fixed_prompts() -> None:
    cheap = [p for p in _golden() if p.cheap]
    templated = [p for p in cheap if p.vars]
    assert len(templated) >= 8
    # Fixed where the prompt itself is the point: programs, facts, instructions.
    assert not any(p.vars for p in cheap if p.category in ("code-output", "factual"))


def test_python_programs_print_the_expected_output() -> None:
    ran = 0
    for p in _golden():
        match = _PROGRAM.search(_user_text(p))
        if match is None:
            assert p.category != "code-output", f"{p.id}: no program in the prompt"
            continue
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(match.group(1), {})
        (spec,) = _checks(p, "exact")
        assert out.getvalue().strip() == spec["expected"], p.id
        ran += 1
    assert ran >= 12


def test_tool_call_arguments_match_the_tool_schema() -> None:
    for p in [*_golden(), *_suite(BEHAVIOUR_FILE).probes]:
        for instance in _instances(p):
            for spec in _checks(p, "tool_call"):
                spec = instance.render(spec)
                (tool,) = [t for t in p.tools if t["function"]["name"] == spec["function"]]
                props = tool["function"]["parameters"]["properties"]
                for arg, value in spec.get("arguments", {}).items():
                    jsonschema.validate(value, props[arg])


@pytest.mark.parametrize("path", [*GOLDEN_FILES, BEHAVIOUR_FILE, CACHE_FILE], ids=lambda p: p.name)
def test_checks_pass_the_reference_answer_and_fail_an_evasive_one(path: Path) -> None:
    for p in _suite(path).probes:
        if not any(c.name in SCORING_CHECKS for c in p.checks):
            continue
        for instance in _instances(p):  # every variant of a templated probe
            content, calls = _reference(instance)
            verdicts = _judge(instance, content, calls)
            assert all(v is CheckValue.passed for v in verdicts.values()), (p.id, verdicts)
            evasive = _judge(instance, EVASIVE, [])
            assert any(v is CheckValue.failed for v in evasive.values()), (p.id, evasive)


def test_long_context_probes_plant_one_code_deep_in_distinct_filler() -> None:
    probes = [p for p in _golden() if p.category == "long-context"]
    assert len(probes) >= 1
    for p in probes:
        text = _user_text(p)
        assert not p.cheap and len(text) >= 12_000, p.id
        code = _checks(p, "exact")[0]["expected"]
        assert text.count(code) == 1, p.id
        lines = [
            _LOG_LINE.fullmatch(line)
            for line in text.split("<log>\n")[1].split("\n</log>")[0].splitlines()
        ]
        assert all(lines), f"{p.id}: a log line is not numbered"
        numbers = [int(m.group(1)) for m in lines if m]
        sentences = [m.group(2) for m in lines if m]
        assert numbers == list(range(1, len(numbers) + 1)), p.id
        assert len(set(sentences)) == len(sentences), f"{p.id}: repeated filler sentence"
        (planted,) = [i for i, s in enumerate(sentences) if code in s]
        assert planted >= len(sentences) // 2, f"{p.id}: the code is not deep in the context"
        question = text.rsplit("Question:", 1)[1]
        warehouse = re.search(r"Warehouse (\w+)\?", question).group(1)
        assert f"night-shift access code for Warehouse {warehouse} is" in sentences[planted]
        same = [s for s in sentences if f"night-shift access code for Warehouse {warehouse} " in s]
        assert len(same) == 1, f"{p.id}: the question is ambiguous"


# --- behaviour and cache ------------------------------------------------------------------


def test_behaviour_probes_cover_finish_reasons_and_usage() -> None:
    suite = _suite(BEHAVIOUR_FILE)
    probes = suite.probes
    assert all(p.cheap for p in probes)
    # finish_reason judges every answer on consistency; the finish-* probes make each
    # branch likely: an essay cut at max_tokens, a short answer, an optional tool call.
    assert "finish_reason" in {c.name for c in suite.default_checks}
    by_id = {p.id: p for p in probes}
    length = by_id["finish-length-01"]
    assert length.max_tokens <= 5 and "essay" in _user_text(length)
    assert by_id["finish-stop-01"].max_tokens is None or by_id["finish-stop-01"].max_tokens >= 8
    tool = by_id["finish-tool-calls-01"]
    assert tool.tools and tool.tool_choice == "auto" and _checks(tool, "tool_call")
    assert any(isinstance(p.tool_choice, dict) for p in probes), "no forced tool call"
    (pair,) = [p for p in probes if p.alternate_stream]
    assert pair.samples == 2 and pair.sequential
    assert [c.name for c in pair.group_checks] == ["prompt_tokens_consistent"]
    streamed = [p for p in probes if p.stream]
    assert streamed and "usage_in_stream" in {c.name for c in suite.default_checks}


def test_cache_probe_sends_a_long_shared_prefix_sequentially() -> None:
    (p,) = _suite(CACHE_FILE).probes
    assert p.kind == "cache" and p.sequential and not p.varies_per_sample and p.cache_pairs
    assert p.samples == 10 and p.stream and p.max_tokens <= 8
    assert [c.name for c in p.group_checks] == ["cache"]
    assert p.system is not None and len(p.system) >= 4_800
    assert p.system.startswith("Support desk session {{nonce}}.")
    (rule,) = [line for line in p.system.splitlines() if line.startswith("Rule 17.")]
    assert f"within {_checks(p, 'numeric')[0]['expected']} working hours" in rule
    # (first send, repeat) pairs: each pair shares its prefix, no two pairs do.
    insts = _suite(CACHE_FILE).expand(seed=11)
    pairs = [insts[i : i + 2] for i in range(0, len(insts), 2)]
    assert all(a.request("m").messages == b.request("m").messages for a, b in pairs)
    assert len({str(a.request("m").messages) for a, _ in pairs}) == len(pairs)
    assert [p.cache_role(i.sample) for i in insts] == ["miss", "hit"] * 5
    assert _suite(CACHE_FILE).expand(seed=12)[0].vars != insts[0].vars
