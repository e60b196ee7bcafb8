"""Templated probe values: ``{{name}}`` placeholders and the seeded var generators.

A probe's ``[probe.vars]`` table names generators (``n = { gen = "int", min = 1, max = 9 }``);
`draw_vars` draws them in declaration order from one `random.Random`, so later vars may use
earlier ones (``paraphrase`` templates, ``expr``). `render` fills placeholders; a string that
is exactly one placeholder takes the value with its type.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aione_probe.wordlists import CJK_COMMON, EMOJI, FIRST_NAMES, SURNAMES, WORDLISTS

GENERATOR_VERSION = 1
"""Bump when a generator or word list changes what a seed renders (it is in every
templated probe's hash, so baselines never mix old and new renderings)."""

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_MAX_COUNT = 10_000


def render(obj: Any, values: dict[str, Any]) -> Any:
    """Replace ``{{name}}`` placeholders in every string inside `obj` (dict keys excepted).

    A string that is exactly one placeholder becomes the value itself, type kept.

    Raises:
        KeyError: a placeholder names no value.
    """
    if isinstance(obj, str):
        whole = _PLACEHOLDER.fullmatch(obj)
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), obj)
    if isinstance(obj, list | tuple):
        return [render(x, values) for x in obj]
    if isinstance(obj, dict):
        return {k: render(v, values) for k, v in obj.items()}
    return obj


def placeholders(obj: Any) -> set[str]:
    """Names of every ``{{name}}`` placeholder inside `obj`."""
    if isinstance(obj, str):
        return set(_PLACEHOLDER.findall(obj))
    if isinstance(obj, list | tuple):
        return set().union(*(placeholders(x) for x in obj))
    if isinstance(obj, dict):
        return set().union(*(placeholders(v) for v in obj.values()))
    return set()


class SpecError(ValueError):
    """A generator spec is invalid; `param` names the offending key."""

    def __init__(self, reason: str, param: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.param = param


def _int_param(spec: dict[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    value = spec.get(key, default)
    if value is None:
        raise SpecError(f"missing required parameter {key!r}", key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SpecError(f"{key} must be an integer in [{lo}, {hi}], got {value!r}", key)
    return value


def _values(spec: dict[str, Any], *, strings: bool = False) -> list[Any]:
    values = spec.get("values")
    if not isinstance(values, list) or not values:
        raise SpecError("values must be a non-empty list", "values")
    if strings and not all(isinstance(v, str) for v in values):
        raise SpecError("values must be strings (templates)", "values")
    return values


def _gen_int(rng: random.Random, spec: dict[str, Any], done: dict[str, Any]) -> int:
    return rng.randint(spec["min"], spec["max"])


def _check_int(spec: dict[str, Any], earlier: set[str]) -> None:
    lo = _int_param(spec, "min", -(10**15), 10**15)
    hi = _int_param(spec, "max", -(10**15), 10**15)
    if lo > hi:
        raise SpecError(f"min {lo} exceeds max {hi}", "min")


def _check_choice(spec: dict[str, Any], earlier: set[str]) -> None:
    _values(spec)


def _gen_choice(rng: random.Random, spec: dict[str, Any], done: dict[str, Any]) -> Any:
    return rng.choice(spec["values"])


def _gen_words(rng: random.Random, spec: dict[str, Any], done: dict[str, Any]) -> str:
    pool = WORDLISTS[spec.get("list", "nouns")]
    count = spec.get("count", 1)
    # Distinct words while the list allows it; with replacement beyond (long cache prefixes).
    picked = rng.sample(pool, count) if count <= len(pool) else rng.choices(pool, k=count)
    return spec.get("sep", " ").join(picked)


def _check_words(spec: dict[str, Any], earlier: set[str]) -> None:
    name = spec.get("list", "nouns")
    if name not in WORDLISTS:
        raise SpecError(f"unknown word list {name!r} (known: {sorted(WORDLISTS)})", "list")
    _int_param(spec, "count", 1, _MAX_COUNT, 1)
    if not isinstance(spec.get("sep", " "), str):
        raise SpecError("sep must be a string", "sep")


def _gen_name(rng: random.Random, spec: dict[str, Any], done: dict[str, Any]) -> str:
    first = rng.choice(FIRST_NAMES)
    return f"{first} {rng.choice(SURNAMES)}" if spec.get("full", False) else first


def _check_name(spec: dict[str, Any], earlier: set[str]) -> None:
    if not isinstance(spec.get("full", False), bool):
        raise SpecError("full must be true or false", "full")


def _gen_paraphrase(rng: random.Random, spec: dict[str, Any], done: dict[str, Any]) -> str:
    return render(rng.choice(spec["values"]), done)


def _check_paraphrase(spec: dict[str, Any], earlier: set[str]) -> None:
    unknown = placeholders(_values(spec, strings=True)) - earlier
    if unknown:
        raise SpecError(
            f"templates use {sorted(unknown)}, which are not defined before this variable",
            "values",
        )


def _check_hex(spec: dict[str, Any], earlier: set[str]) -> None:
    # `count` is accepted like for the other character generators; `length` is canonical.
    if "length" in spec and "count" in spec:
        raise SpecError("give length or count, not both", "count")
    key = "count" if "count" in spec else "length"
    _int_param(spec, key, 1, 1024)


def _gen_hex(rng: random.Random, spec: dict[str, Any], done: dict[str, Any]) -> str:
    n = spec.get("length", spec.get("count"))
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _gen_chars(alphabet: str | tuple[str, ...]) -> Callable[..., str]:
    def gen(rng: random.Random, spec: dict[str, Any], done: dict[str, Any]) -> str:
        return "".join(rng.choice(alphabet) for _ in range(spec.get("count", 1)))

    return gen


_EXPR_OPS: dict[type, Callable[[int, int], int]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
}


def _eval_expr(node: ast.AST, env: dict[str, Any]) -> int:
    if isinstance(node, ast.Expression):
        return _eval_expr(node.body, env)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        value = env[node.id]
        if type(value) is not int:
            raise SpecError(f"variable {node.id!r} is not an integer", "expr")
        return value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval_expr(node.operand, env)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _EXPR_OPS:
        return _EXPR_OPS[type(node.op)](_eval_expr(node.left, env), _eval_expr(node.right, env))
    raise SpecError("expr allows integers, earlier int variables, + - * and parentheses", "expr")


def _gen_expr(rng: random.Random, spec: dict[str, Any], done: dict[str, Any]) -> int:
    return _eval_expr(ast.parse(spec["expr"], mode="eval"), done)


def _check_expr(spec: dict[str, Any], earlier: set[str]) -> None:
    expr = spec.get("expr")
    if not isinstance(expr, str):
        raise SpecError("missing required parameter 'expr' (a string)", "expr")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise SpecError(f"expr is not an expression: {exc.msg}", "expr") from exc
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    if names - earlier:
        raise SpecError(f"expr uses {sorted(names - earlier)}, not defined before it", "expr")


def _count_check(hi: int) -> Callable[[dict[str, Any], set[str]], None]:
    def check(spec: dict[str, Any], earlier: set[str]) -> None:
        _int_param(spec, "count", 1, hi, 1)

    return check


@dataclass(frozen=True)
class _Generator:
    params: frozenset[str]
    check: Callable[[dict[str, Any], set[str]], None]
    draw: Callable[[random.Random, dict[str, Any], dict[str, Any]], Any]


GENERATORS: dict[str, _Generator] = {
    "int": _Generator(frozenset({"min", "max"}), _check_int, _gen_int),
    "choice": _Generator(frozenset({"values"}), _check_choice, _gen_choice),
    "words": _Generator(frozenset({"list", "count", "sep"}), _check_words, _gen_words),
    "name": _Generator(frozenset({"full"}), _check_name, _gen_name),
    "paraphrase": _Generator(frozenset({"values"}), _check_paraphrase, _gen_paraphrase),
    "hex": _Generator(frozenset({"length", "count"}), _check_hex, _gen_hex),
    "cjk": _Generator(frozenset({"count"}), _count_check(_MAX_COUNT), _gen_chars(CJK_COMMON)),
    "emoji": _Generator(frozenset({"count"}), _count_check(1000), _gen_chars(EMOJI)),
    "digits": _Generator(frozenset({"count"}), _count_check(1000), _gen_chars("0123456789")),
    "expr": _Generator(frozenset({"expr"}), _check_expr, _gen_expr),
}
"""Var generators by the name used in ``gen = "..."``:

- ``int(min, max)``: an integer, both ends included.
- ``choice(values)``: one of `values` (any TOML scalars).
- ``words(list="nouns", count=1, sep=" ")``: words from a built-in list
  (`aione_probe.wordlists.WORDLISTS`), distinct when `count` allows.
- ``name(full=false)``: a first name, or "First Last".
- ``paraphrase(values)``: one of several phrasings; each may use earlier vars.
- ``hex(length)`` (or ``count``), ``digits(count)``: random lower-case hex / decimal
  digit strings.
- ``cjk(count)``, ``emoji(count)``: random common CJK characters / single-code-point emoji.
- ``expr(expr)``: integer arithmetic (+ - * and parentheses) over earlier int vars,
  e.g. ``expr = "a * b"`` for the expected answer of a templated multiplication.
"""


def draw_vars(specs: dict[str, dict[str, Any]], rng: random.Random) -> dict[str, Any]:
    """Draw every var in declaration order (later vars may use earlier ones)."""
    done: dict[str, Any] = {}
    for name, spec in specs.items():
        done[name] = GENERATORS[spec["gen"]].draw(rng, spec, done)
    return done


def instance_rng(seed: int, probe_id: str, sample: int) -> random.Random:
    """The generator for one sample of one probe in a run (see `aione_probe.suites`)."""
    return random.Random(f"{seed}:{probe_id}:{sample}")
