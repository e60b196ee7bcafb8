"""Suite loading and validation, probe identity, seeded templating."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aione_probe.errors import ConfigError
from aione_probe.suites import find_suite, load_suite, load_suites
from aione_probe.templating import GENERATORS, draw_vars, instance_rng, placeholders, render
from aione_probe.wordlists import CJK_COMMON, EMOJI, FIRST_NAMES, NOUNS, SURNAMES

ROOT = Path(__file__).resolve().parent.parent
PROBES = ROOT / "probes"
BAD = Path(__file__).resolve().parent / "testdata" / "suites"

HEAD = '[suite]\nid = "t"\nversion = 1\n\n'


def write(tmp_path: Path, body: str, name: str = "t.toml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


def one_probe(tmp_path: Path, probe: str, head: str = HEAD):
    return load_suite(write(tmp_path, head + "[[probe]]\n" + probe)).probes[0]


# --- the shipped smoke suite ---------------------------------------------------------------


def test_smoke_suite_loads_and_is_cheap() -> None:
    suite = load_suite(PROBES / "smoke.toml")
    assert suite.id == "smoke" and suite.version >= 1
    assert 5 <= len(suite.probes) <= 8
    assert [c.name for c in suite.default_checks] == [
        "finish_reason",
        "usage_total",
        "usage_max_tokens",
        "usage_in_stream",
        "model_name",
    ]
    assert all(p.cheap and p.max_tokens is not None and p.max_tokens <= 32 for p in suite.probes)
    streams = {i.stream for i in suite.expand(1)}
    assert streams == {True, False}
    assert any(p.max_tokens == 5 for p in suite.probes)
    assert any(p.tools for p in suite.probes) and any(p.response_format for p in suite.probes)


def test_load_suites_and_find_suite(tmp_path: Path) -> None:
    smoke = PROBES / "smoke.toml"
    write(tmp_path, smoke.read_text(encoding="utf-8"), "smoke.toml")
    assert "smoke" in load_suites(tmp_path)
    assert find_suite("smoke", PROBES).id == "smoke"
    assert find_suite(str(PROBES / "smoke.toml"), tmp_path).id == "smoke"
    write(
        tmp_path,
        HEAD.replace('"t"', '"other-id"') + '[[probe]]\nid = "p"\nprompt = "x"\n',
        "f.toml",
    )
    assert find_suite("other-id", tmp_path).path.name == "f.toml"
    assert find_suite("f", tmp_path).id == "other-id"
    with pytest.raises(ConfigError, match=r"no such suite \(available: other-id, smoke\)"):
        find_suite("nope", tmp_path)


def test_duplicate_suite_ids_across_files(tmp_path: Path) -> None:
    body = HEAD + '[[probe]]\nid = "p"\nprompt = "x"\n'
    write(tmp_path, body, "a.toml")
    write(tmp_path, body, "b.toml")
    with pytest.raises(ConfigError) as info:
        load_suites(tmp_path)
    assert info.value.key == "suite.id" and "duplicate suite id" in info.value.reason


# --- validation: one bad file per rule ------------------------------------------------------

BAD_SUITES: dict[str, tuple[str, str]] = {
    "invalid_toml": ("toml", "not valid TOML"),
    "missing_suite_table": ("suite", "required table [suite] is missing"),
    "unknown_top_level_key": ("settings", "unknown key"),
    "no_probes": ("probe", "at least one [[probe]]"),
    "bad_suite_id": ("suite.id", "kebab-case"),
    "bad_suite_version": ("suite.version", "greater than or equal to 1"),
    "unknown_suite_key": ("suite.owner", "unknown key"),
    "bad_defaults": ("suite.defaults.max_tokens", "greater than or equal to 1, got 0"),
    "unknown_default_key": ("suite.defaults.model", "unknown key"),
    "bad_default_check": ("suite.default_checks[0].name", "unknown check 'usage_totals'"),
    "bad_probe_id": ("probe[Arith_Mul].id", "kebab-case"),
    "duplicate_probe_id": ("probe[p].id", "duplicate probe id"),
    "unknown_probe_key": ("probe[p].promt", "unknown key"),
    "bad_difficulty": ("probe[p].difficulty", "'easy', 'medium' or 'hard', got 'trivial'"),
    "bad_kind": ("probe[p].kind", "'chat', 'image' or 'cache'"),
    "wrong_type": ("probe[p].max_tokens", "valid integer, got '8'"),
    "bad_temperature": ("probe[p].temperature", "less than or equal to 2"),
    "prompt_and_messages": ("probe[p].prompt", "exactly one of prompt or messages"),
    "no_prompt": ("probe[p].prompt", "exactly one of prompt or messages"),
    "bad_message_role": ("probe[p].messages[0].role", "got 'robot'"),
    "unknown_template_var": ("probe[p].prompt", "unknown template variable 'y' (defined vars: x)"),
    "unknown_template_var_in_check": (
        "probe[p].checks[0].expected",
        "unknown template variable 'word'",
    ),
    "unknown_generator": ("probe[p].vars.n.gen", "unknown generator 'float'"),
    "unknown_generator_key": ("probe[p].vars.n.step", "unknown key for gen 'int'"),
    "bad_generator_range": ("probe[p].vars.n.min", "min 9 exceeds max 1"),
    "unknown_word_list": ("probe[p].vars.w.list", "unknown word list 'verbs'"),
    "bad_var_name": ("probe[p].vars.N", "lower-case"),
    "paraphrase_forward_reference": ("probe[p].vars.q.values", "not defined before"),
    "bad_expr": ("probe[p].vars.c.expr", "expr allows"),
    "unknown_check": ("probe[p].checks[0].name", "unknown check 'numerical'"),
    "check_without_name": ("probe[p].checks[0].name", "required key is missing"),
    "bad_expected": (
        "probe[arith-mul-01].checks[0].expected",
        "expected must be a number, got 'three hundred ninety-one'",
    ),
    "templated_expected_wrong_type": ("probe[p].checks[0].expected", "must be a number"),
    "unknown_check_param": ("probe[p].checks[0].tolerence", "unknown parameter 'tolerence'"),
    "bad_regex": ("probe[p].checks[0].pattern", "invalid regular expression"),
    "bad_check_schema": ("probe[p].checks[0].schema", "invalid JSON schema"),
    "group_check_in_checks": ("probe[p].checks[0].name", "belongs in group_checks"),
    "tool_call_unknown_function": (
        "probe[p].checks[0].function",
        "'get_time' is not in the probe's tools",
    ),
    "bad_tool_choice": ("probe[p].tool_choice", "'get_time', which is not in tools"),
    "bad_tool_schema": ("probe[p].tools[0].function.parameters", "invalid JSON schema"),
    "bad_response_format": ("probe[p].response_format.type", "must be one of"),
    "cache_without_group_check": ("probe[p].group_checks", 'group_checks = [{ name = "cache" }]'),
    "cache_one_sample": ("probe[p].samples", "samples >= 2"),
    "alternate_stream_one_sample": ("probe[p].samples", "alternate_stream needs samples >= 2"),
}


def test_every_bad_suite_file_has_an_expectation() -> None:
    assert {p.stem for p in BAD.glob("*.toml")} == set(BAD_SUITES)


@pytest.mark.parametrize("name", sorted(BAD_SUITES))
def test_bad_suite_is_rejected_with_file_key_reason(name: str) -> None:
    key, reason = BAD_SUITES[name]
    path = BAD / f"{name}.toml"
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    err = info.value
    assert err.file == str(path)
    assert err.key == key
    assert reason in err.reason
    assert str(err) == f"{path}: {key}: {err.reason}"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_suite(tmp_path / "missing.toml")
    assert info.value.key == "file" and "cannot read" in info.value.reason


def test_several_pydantic_problems_are_counted(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        one_probe(tmp_path, 'id = "p"\nprompt = "x"\nmax_tokens = "8"\nstream = "yes"\n')
    assert info.value.reason.endswith("(and 1 more problem)")


# --- defaults and identity -----------------------------------------------------------------

GOLDEN = """[suite]
id = "golden"
version = 1

[[probe]]
id = "arith-mul-01"
prompt = "What is 17 * 23? Answer with the number only."
max_tokens = 8
temperature = 0.0
checks = [{ name = "numeric", expected = 391 }]
"""


def test_hash_is_stable(tmp_path: Path) -> None:
    first = load_suite(write(tmp_path, GOLDEN)).probes[0].hash
    again = load_suite(write(tmp_path, GOLDEN, "again.toml")).probes[0].hash
    assert first == again
    assert len(first) == 16 and int(first, 16) >= 0
    # Pinned: a change here means every stored baseline stops matching its probes.
    assert first == "10f830fd9d86bfc0"


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("What is 17 * 23?", "What is 17 * 24?"),
        ("expected = 391", "expected = 392"),
        ("max_tokens = 8", "max_tokens = 9"),
        ("temperature = 0.0", "temperature = 0.5"),
        ('name = "numeric", expected = 391', 'name = "numeric", expected = 391, tolerance = 1'),
    ],
)
def test_hash_changes_with_meaning(tmp_path: Path, old: str, new: str) -> None:
    assert old in GOLDEN
    base = load_suite(write(tmp_path, GOLDEN)).probes[0].hash
    changed = load_suite(write(tmp_path, GOLDEN.replace(old, new), "c.toml")).probes[0].hash
    assert base != changed


@pytest.mark.parametrize(
    "extra",
    ['category = "math"', 'difficulty = "hard"', "cheap = true", "samples = 3"],
)
def test_hash_ignores_labels_and_sample_count(tmp_path: Path, extra: str) -> None:
    base = load_suite(write(tmp_path, GOLDEN)).probes[0].hash
    labelled = load_suite(write(tmp_path, GOLDEN + extra + "\n", "l.toml")).probes[0].hash
    assert base == labelled


def test_hash_normalises_prompt_and_defaults(tmp_path: Path) -> None:
    base = load_suite(write(tmp_path, GOLDEN)).probes[0].hash
    as_messages = GOLDEN.replace(
        'prompt = "What is 17 * 23? Answer with the number only."',
        'messages = [{ role = "user", content = "What is 17 * 23? Answer with the number only." }]',
    )
    assert load_suite(write(tmp_path, as_messages, "m.toml")).probes[0].hash == base
    via_defaults = GOLDEN.replace("max_tokens = 8\n", "").replace(
        "version = 1\n", "version = 1\n\n[suite.defaults]\nmax_tokens = 8\n"
    )
    probe = load_suite(write(tmp_path, via_defaults, "d.toml")).probes[0]
    assert probe.max_tokens == 8 and probe.hash == base


def test_templated_hash_covers_vars_not_values(tmp_path: Path) -> None:
    body = 'id = "p"\nprompt = "{{n}}"\n[probe.vars]\nn = { gen = "int", min = 1, max = 9 }\n'
    probe = one_probe(tmp_path, body)
    wider = one_probe(tmp_path, body.replace("max = 9", "max = 99"))
    assert probe.hash != wider.hash
    assert probe.definition()["generator_version"] >= 1


def test_defaults_apply_unless_probe_sets_them(tmp_path: Path) -> None:
    head = HEAD + "[suite.defaults]\nmax_tokens = 16\nstream = true\ncheap = true\n\n"
    body = (
        head
        + '[[probe]]\nid = "a"\nprompt = "x"\n\n[[probe]]\nid = "b"\nprompt = "y"\nstream = false\n'
    )
    a, b = load_suite(write(tmp_path, body)).probes
    assert (a.max_tokens, a.stream, a.cheap) == (16, True, True)
    assert (b.max_tokens, b.stream) == (16, False)


# --- expansion and templating ----------------------------------------------------------------

TEMPLATED = """
id = "canary"
system = "You are {{who}}."
prompt = "Repeat {{code}} and add {{a}} to {{b}}."
samples = 3
extra = { tag = "{{code}}", top_k = 1 }
checks = [{ name = "numeric", expected = "{{total}}" }, { name = "contains", all = ["{{code}}"] }]
[probe.vars]
who = { gen = "name", full = true }
code = { gen = "hex", length = 12 }
a = { gen = "int", min = 100, max = 999 }
b = { gen = "int", min = 100, max = 999 }
total = { gen = "expr", expr = "a + b" }
"""


def templated_suite(tmp_path: Path, extra: str = ""):
    return load_suite(
        write(
            tmp_path, HEAD + "[[probe]]" + TEMPLATED.replace("samples = 3", "samples = 3\n" + extra)
        )
    )


def test_same_seed_same_vars_other_seed_other_vars(tmp_path: Path) -> None:
    suite = templated_suite(tmp_path)
    run1 = [i.vars for i in suite.expand(42)]
    assert run1 == [i.vars for i in suite.expand(42)]
    assert run1 != [i.vars for i in suite.expand(43)]
    assert len({v["code"] for v in run1}) == 3  # each sample draws anew
    for v in run1:
        assert v["total"] == v["a"] + v["b"]


def test_vars_follow_the_documented_seed_formula(tmp_path: Path) -> None:
    suite = templated_suite(tmp_path)
    probe = suite.probes[0]
    for inst in suite.expand(7):
        assert inst.vars == draw_vars(probe.vars, instance_rng(7, "canary", inst.sample))


def test_vars_are_the_same_in_another_process(tmp_path: Path) -> None:
    suite = templated_suite(tmp_path)
    code = (
        "import sys; from aione_probe.suites import load_suite; "
        "print([i.vars['code'] for i in load_suite(sys.argv[1]).expand(99)])"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(suite.path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    assert out.stdout.strip() == str([i.vars["code"] for i in suite.expand(99)])


def test_vary_per_sample_false_shares_one_draw(tmp_path: Path) -> None:
    suite = templated_suite(tmp_path, "vary_per_sample = false")
    assert len({str(i.vars) for i in suite.expand(5)}) == 1


def test_request_renders_everything(tmp_path: Path) -> None:
    inst = templated_suite(tmp_path).expand(3)[0]
    v = inst.vars
    req = inst.request("gpt-x")
    assert req.model == "gpt-x"
    assert req.messages[0] == {"role": "system", "content": f"You are {v['who']}."}
    assert req.messages[1]["content"] == f"Repeat {v['code']} and add {v['a']} to {v['b']}."
    assert req.extra == {"tag": v["code"], "top_k": 1}
    params = [inst.render(c.params) for c in inst.probe.checks]
    assert params == [{"expected": v["total"]}, {"all": [v["code"]]}]
    assert isinstance(params[0]["expected"], int)
    assert "{{" not in str(req)


def test_request_carries_probe_settings(tmp_path: Path) -> None:
    probe = 'id = "t"\nprompt = "x"\nmax_tokens = 7\ntemperature = 0.2\ntop_p = 0.9\nseed = 4\n'
    probe += (
        'tools = [{ type = "function", function = { name = "f" } }]\ntool_choice = "required"\n'
    )
    probe += 'response_format = { type = "json_object" }\n'
    (inst,) = load_suite(write(tmp_path, HEAD + "[[probe]]\n" + probe)).expand(0)
    req = inst.request("m")
    assert (req.max_tokens, req.temperature, req.top_p, req.seed) == (7, 0.2, 0.9, 4)
    assert req.tools == ({"type": "function", "function": {"name": "f"}},)
    assert req.tool_choice == "required" and req.response_format == {"type": "json_object"}
    assert req.stream is False and req.messages == ({"role": "user", "content": "x"},)


def test_alternate_stream_and_cache_probes(tmp_path: Path) -> None:
    body = HEAD + '[[probe]]\nid = "alt"\nprompt = "x"\nsamples = 4\nalternate_stream = true\n'
    body += '\n[[probe]]\nid = "c"\nkind = "cache"\nprompt = "{{prefix}} Summarise."\nsamples = 3\n'
    body += 'group_checks = [{ name = "cache" }]\n[probe.vars]\n'
    body += 'prefix = { gen = "words", count = 1500 }\n'
    suite = load_suite(write(tmp_path, body))
    alt = [i for i in suite.expand(1) if i.probe.id == "alt"]
    assert [i.stream for i in alt] == [False, True, False, True]
    cache = [i for i in suite.expand(1) if i.probe.id == "c"]
    assert all(i.probe.sequential for i in [*alt, *cache])
    prompts = {i.request("m").messages[0]["content"] for i in cache}
    assert len(prompts) == 1  # cache samples share the prefix by default
    assert len(next(iter(prompts)).split()) == 1501
    # a new run seed gives a new prefix, so the first request of each run misses
    assert suite.expand(2)[-1].vars != cache[0].vars


def test_expand_filters(tmp_path: Path) -> None:
    body = HEAD + '[[probe]]\nid = "a"\nprompt = "x"\ncheap = true\nsamples = 2\n'
    body += '\n[[probe]]\nid = "b"\nprompt = "y"\n'
    suite = load_suite(write(tmp_path, body))
    assert [(i.probe.id, i.sample) for i in suite.expand(0)] == [("a", 0), ("a", 1), ("b", 0)]
    assert {i.probe.id for i in suite.expand(0, cheap_only=True)} == {"a"}
    assert [i.probe.id for i in suite.expand(0, probe_ids={"b"})] == ["b"]
    with pytest.raises(ValueError, match="no probe"):
        suite.expand(0, probe_ids={"zzz"})


# --- generators and rendering -------------------------------------------------------------


def draw(spec: dict, seed: int = 0):
    return draw_vars({"v": spec}, instance_rng(seed, "p", 0))["v"]


def test_generators_produce_the_documented_shapes() -> None:
    assert 5 <= draw({"gen": "int", "min": 5, "max": 6}) <= 6
    assert draw({"gen": "choice", "values": ["x", "y"]}) in ("x", "y")
    words = draw({"gen": "words", "count": 5}).split()
    assert len(words) == 5 == len(set(words)) and set(words) <= set(NOUNS)
    assert draw({"gen": "words", "list": "colors", "count": 3, "sep": ","}).count(",") == 2
    assert draw({"gen": "name"}) in FIRST_NAMES
    first, last = draw({"gen": "name", "full": True}).split()
    assert first in FIRST_NAMES and last in SURNAMES
    h = draw({"gen": "hex", "length": 32})
    assert len(h) == 32 and int(h, 16) >= 0
    assert len(draw({"gen": "hex", "count": 4})) == 4
    cjk = draw({"gen": "cjk", "count": 20})
    assert len(cjk) == 20 and set(cjk) <= set(CJK_COMMON)
    emoji = draw({"gen": "emoji", "count": 4})
    assert len(emoji) == 4 and set(emoji) <= set(EMOJI)
    digits = draw({"gen": "digits", "count": 9})
    assert len(digits) == 9 and digits.isdigit() and isinstance(digits, str)
    assert set(GENERATORS) == {
        "int",
        "choice",
        "words",
        "name",
        "paraphrase",
        "hex",
        "cjk",
        "emoji",
        "digits",
        "expr",
    }


def test_paraphrase_and_expr_use_earlier_vars() -> None:
    specs = {
        "n": {"gen": "int", "min": 2, "max": 9},
        "sq": {"gen": "expr", "expr": "n * n - (1 + n)"},
        "q": {"gen": "paraphrase", "values": ["What is {{n}}?", "Say {{n}}."]},
    }
    seen = set()
    for seed in range(20):
        v = draw_vars(specs, instance_rng(seed, "p", 0))
        assert v["sq"] == v["n"] * v["n"] - (1 + v["n"])
        assert v["q"] in (f"What is {v['n']}?", f"Say {v['n']}.")
        seen.add(v["q"].split()[0])
    assert seen == {"What", "Say"}


def test_render_and_placeholders() -> None:
    values = {"n": 5, "w": "moon"}
    assert render("{{n}}", values) == 5
    assert render("{{ n }}", values) == 5
    assert render("n={{n}}, w={{w}}", values) == "n=5, w=moon"
    assert render({"a": ["{{w}}", 1], "{{n}}": "k"}, values) == {"a": ["moon", 1], "{{n}}": "k"}
    assert placeholders({"a": ["{{x}} {{ y }}"], "b": 3}) == {"x", "y"}
    with pytest.raises(KeyError):
        render("{{zzz}}", values)
