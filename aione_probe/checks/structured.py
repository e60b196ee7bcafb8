"""Structured output checks: json_schema and tool_call."""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from aione_probe.checks._registry import CheckContext, CheckSpecError, check, result
from aione_probe.checks._util import answer_text, clip, keys, typed
from aione_probe.types import CheckResult, CheckValue, Observation

_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)\n?[ \t]*```", re.DOTALL)
_MAX_ERRORS = 3


class _BadJSON(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _BadJSON(f"{name} is not valid JSON")


def _loads(text: str) -> Any:
    """Strict JSON: NaN and Infinity rejected, trailing text named as such."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            raise _BadJSON(f"trailing text after the JSON value (at char {exc.pos})") from exc
        raise _BadJSON(f"not valid JSON: {exc.msg} at char {exc.pos}") from exc


def extract_json(text: str, *, strict: bool = True) -> Any:
    """The JSON value in an answer.

    Strict (default): the whole answer is one JSON value, optionally inside a single
    Markdown code fence (```json … ```). Lenient: the first JSON object or array found
    anywhere, surrounding prose ignored.

    Raises:
        ValueError: why no JSON value could be read.
    """
    text = text.strip()
    fence = _FENCE.fullmatch(text)
    if fence:
        text = fence.group(1).strip()
    if strict:
        return _loads(text)
    m = _FENCE.search(text)
    if m:
        text = m.group(1)
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return decoder.raw_decode(text, i)[0]
            except json.JSONDecodeError:
                continue
    raise _BadJSON("no JSON object or array in the answer")


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Up to three Draft 2020-12 validation errors, each prefixed by its JSON path."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path])
    return [f"{e.json_path}: {e.message}" for e in errors[:_MAX_ERRORS]]


def check_schema(schema: Any, param: str) -> None:
    """Raise `CheckSpecError` unless `schema` is a valid Draft 2020-12 schema."""
    if not isinstance(schema, dict):
        raise CheckSpecError(f"{param} must be a table (a JSON schema)", param)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise CheckSpecError(f"invalid JSON schema: {exc.message}", param) from exc


def _validate_json_schema(params: dict[str, Any]) -> None:
    keys(params, required=["schema"], optional=["strict"])
    check_schema(params["schema"], "schema")
    typed(params, "strict", bool, "true or false")


@check("json_schema", validate=_validate_json_schema)
def json_schema(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when the answer is JSON that validates against `schema` (Draft 2020-12).

    ``strict = false`` accepts JSON embedded in prose.
    """
    text = answer_text(obs)
    try:
        value = extract_json(text, strict=params.get("strict", True))
    except _BadJSON as exc:
        return result(CheckValue.failed, answer=clip(text), explanation=str(exc))
    errors = schema_errors(value, params["schema"])
    shown = clip(json.dumps(value, ensure_ascii=False))
    if errors:
        return result(
            CheckValue.failed,
            answer=shown,
            explanation="JSON does not match the schema: " + "; ".join(errors),
            errors=errors,
        )
    return result(CheckValue.passed, answer=shown, explanation="valid JSON matching the schema")


def _validate_tool_call(params: dict[str, Any]) -> None:
    keys(params, required=["function"], optional=["arguments"])
    if not typed(params, "function", str, "a function name"):
        raise CheckSpecError("function must not be empty", "function")
    typed(params, "arguments", dict, "a table of argument values")


def tool_parameters(tools: tuple[dict[str, Any], ...] | None, name: str) -> dict[str, Any] | None:
    """The JSON schema of function `name`'s parameters among OpenAI-shaped `tools`."""
    for tool in tools or ():
        fn = tool.get("function") or {}
        if fn.get("name") == name:
            params = fn.get("parameters")
            return params if isinstance(params, dict) else None
    return None


def _same(a: Any, b: Any) -> bool:
    """Equality that tells true from 1 (JSON does)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@check("tool_call", validate=_validate_tool_call)
def tool_call(obs: Observation, params: dict[str, Any], ctx: CheckContext) -> CheckResult:
    """Pass when the model called `function` with valid arguments.

    The parameter is ``function`` (``name`` is the check's own name in a suite file).

    The arguments must parse as a JSON object, validate against the tool's ``parameters``
    schema from the request, and equal every value given in `arguments` (a subset).
    The first call to the function is judged.
    """
    name = params["function"]
    called = [(c.get("function") or {}) for c in obs.tool_calls]
    names = [str(fn.get("name")) for fn in called]
    if not called:
        return result(CheckValue.failed, expected=name, explanation="no tool call in the answer")
    fn = next((f for f in called if f.get("name") == name), None)
    if fn is None:
        return result(
            CheckValue.failed,
            answer=", ".join(names),
            expected=name,
            explanation=f"called {names} instead of {name!r}",
        )
    raw = fn.get("arguments")
    try:
        args = raw if isinstance(raw, dict) else _loads(raw or "{}")
    except _BadJSON as exc:
        return result(CheckValue.failed, answer=clip(str(raw)), expected=name, explanation=str(exc))
    shown = clip(f"{name}({json.dumps(args, ensure_ascii=False)})")
    if not isinstance(args, dict):
        return result(
            CheckValue.failed,
            answer=shown,
            expected=name,
            explanation="arguments are not an object",
        )
    schema = tool_parameters(ctx.request.tools, name)
    errors = schema_errors(args, schema) if schema else []
    if errors:
        return result(
            CheckValue.failed,
            answer=shown,
            expected=name,
            explanation="arguments do not match the tool schema: " + "; ".join(errors),
            errors=errors,
        )
    wanted = params.get("arguments") or {}
    wrong = {k: args.get(k) for k, v in wanted.items() if k not in args or not _same(args[k], v)}
    if wrong:
        return result(
            CheckValue.failed,
            answer=shown,
            expected=f"{name}({json.dumps(wanted, ensure_ascii=False)})",
            explanation=f"argument values differ: got {wrong}, expected "
            f"{ {k: wanted[k] for k in wrong} }",
        )
    return result(
        CheckValue.passed,
        answer=shown,
        expected=name,
        explanation="tool called with valid arguments",
        calls=len(called),
        schema_checked=schema is not None,
    )
