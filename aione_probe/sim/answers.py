"""Golden answers for quiz-like prompts (a simulation, not a solver).

The simulator reads probe files (``probes/*.toml``, ``[[probe]]`` entries) with tomllib
only and indexes each probe by the exact text of its last user message. Templated
prompts (``{{var}}``) become patterns whose captures fill ``{{var}}`` in the expected
value. A persona answers a keyed prompt correctly with probability ``skill[difficulty]``
and otherwise gives a plausible wrong answer; questions with a simple arithmetic expression
that are not in the key are computed. Everything else gets persona text.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aione_probe.templating import GENERATORS, SpecError

_VAR = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_ARITH = re.compile(r"(-?\d+(?:\.\d+)?)\s*([-+*/×x÷])\s*(-?\d+(?:\.\d+)?)")
# Only prompts that ask for a result count, so "the 2024-2025 report" stays prose.
_ASKS = re.compile(r"\b(what is|what's|compute|calculate|evaluate|how much is|solve)\b|\?", re.I)


@dataclass(frozen=True)
class Answer:
    """What a correct reply to a keyed prompt looks like.

    `kind` is ``"text"`` (`text` holds it), ``"json"`` (`schema` may constrain it) or
    ``"tool"`` (`tool_name`, `arguments`).
    """

    kind: str
    difficulty: str = "medium"
    text: str = ""
    schema: dict[str, Any] | None = None
    tool_name: str | None = None
    arguments: dict[str, Any] | None = None


@dataclass
class _Entry:
    pattern: re.Pattern[str] | None
    names: list[str]
    answer: Answer
    # ``gen = "expr"`` vars of the probe (the expected answer of templated arithmetic),
    # computed from the integers captured from the prompt.
    exprs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class AnswerKey:
    """Index of golden answers by last user message."""

    exact: dict[str, Answer] = field(default_factory=dict)
    templated: list[_Entry] = field(default_factory=list)

    def lookup(self, prompt: str) -> Answer | None:
        """The answer keyed by `prompt`, with template variables filled in."""
        if prompt in self.exact:
            return self.exact[prompt]
        for entry in self.templated:
            match = entry.pattern.fullmatch(prompt) if entry.pattern else None
            if match is None:
                continue
            values = dict(zip(entry.names, match.groups(), strict=True))
            values.update(_computed(entry.exprs, values))
            text = fill_vars(entry.answer.text, values)
            if "{{" in text:
                return None
            return dataclasses.replace(entry.answer, text=text)
        return None

    def __len__(self) -> int:
        return len(self.exact) + len(self.templated)


def fill_vars(text: str, values: dict[str, str]) -> str:
    """Replace ``{{name}}`` by its value; unknown names are left in place."""
    return _VAR.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def load_answer_key(dirs: list[Path]) -> AnswerKey:
    """Load every ``*.toml`` under `dirs`; unreadable files are skipped."""
    key = AnswerKey()
    for directory in dirs:
        for path in sorted(Path(directory).glob("*.toml")):
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
                continue
            for probe in data.get("probe", []):
                _add_probe(key, probe)
    return key


def _add_probe(key: AnswerKey, probe: dict[str, Any]) -> None:
    prompt = _last_user_text(probe)
    answer = _answer_of(probe)
    if prompt is None or answer is None:
        return
    names = _VAR.findall(prompt)
    if not names:
        key.exact[prompt] = answer
        return
    parts = _VAR.split(prompt)
    # re.split with one group alternates literal text and variable names.
    regex = "".join(re.escape(p) if i % 2 == 0 else "(.+?)" for i, p in enumerate(parts))
    specs = probe.get("vars") if isinstance(probe.get("vars"), dict) else {}
    exprs = {k: v for k, v in specs.items() if isinstance(v, dict) and v.get("gen") == "expr"}
    key.templated.append(_Entry(re.compile(regex, re.DOTALL), names, answer, exprs))


def _computed(exprs: dict[str, dict[str, Any]], values: dict[str, str]) -> dict[str, str]:
    """The expr vars of a templated probe from the values captured in its prompt."""
    done: dict[str, Any] = {k: int(v) for k, v in values.items() if re.fullmatch(r"-?\d+", v)}
    out = {}
    for name, spec in exprs.items():
        try:
            done[name] = GENERATORS["expr"].draw(random.Random(0), spec, done)
        except (KeyError, SpecError):
            continue  # an operand the prompt does not show: no answer for this one
        out[name] = str(done[name])
    return out


def _last_user_text(probe: dict[str, Any]) -> str | None:
    if isinstance(probe.get("prompt"), str):
        return probe["prompt"]
    for message in reversed(probe.get("messages") or []):
        if message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return None


def _answer_of(probe: dict[str, Any]) -> Answer | None:
    difficulty = str(probe.get("difficulty", "medium"))
    checks = [c for c in probe.get("checks") or [] if isinstance(c, dict)]
    for check in checks:
        if check.get("name") == "tool_call":
            name = check.get("function") or check.get("tool") or check.get("tool_name")
            return Answer("tool", difficulty, tool_name=name, arguments=check.get("arguments"))
    for check in checks:
        if check.get("name") == "json_schema":
            return Answer("json", difficulty, schema=check.get("schema"))
    for check in checks:
        if "expected" in check:
            return Answer("text", difficulty, text=render_expected(check["expected"]))
    return None


def render_expected(value: Any) -> str:
    """An expected check value as the text a model would answer."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return render_expected(value[0]) if value else ""
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def arithmetic(prompt: str) -> tuple[str, str] | None:
    """``(result, difficulty)`` for the first ``a op b`` in `prompt`, else None."""
    match = _ARITH.search(prompt) if _ASKS.search(prompt) else None
    if match is None:
        return None
    a, op, b = float(match.group(1)), match.group(2), float(match.group(3))
    if op in "/÷":
        if b == 0:
            return None
        result = a / b
    elif op in "*×x":
        result = a * b
    elif op == "+":
        result = a + b
    else:
        result = a - b
    size = max(abs(a), abs(b))
    difficulty = "easy" if size < 100 else "medium" if size < 10_000 else "hard"
    text = str(int(result)) if float(result).is_integer() else f"{result:.6g}"
    return text, difficulty


def wrong_text(correct: str, rng: random.Random) -> str:
    """A plausible wrong answer near `correct`."""
    try:
        number = float(correct)
    except ValueError:
        return rng.choice(("I'm not sure.", "unknown", correct[::-1] or "no", "none"))
    delta = rng.choice((-10, -2, -1, 1, 2, 10))
    wrong = number + delta
    return str(int(wrong)) if wrong.is_integer() else f"{wrong:.6g}"


def minimal_instance(schema: dict[str, Any] | None) -> Any:
    """A small value valid against a simple JSON schema (objects, enums, scalars, arrays)."""
    if not schema:
        return {"answer": "ok"}
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or list(props)
        return {name: minimal_instance(props.get(name) or {"type": "string"}) for name in required}
    if kind == "array":
        item = minimal_instance(schema.get("items") or {"type": "string"})
        return [item] * int(schema.get("minItems", 0))
    if kind == "string":
        return "x" * int(schema.get("minLength", 1))
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return True
    return None
