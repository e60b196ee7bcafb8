"""Probe suites: load and validate ``probes/*.toml``, identify probes, render templates.

A suite file has one ``[suite]`` table and one or more ``[[probe]]`` tables (format in
docs/architecture.md, "Probe suite files"). Loading is strict: an unknown key, a bad id,
a template variable that is not defined, an invalid check or generator spec each raise
`ConfigError(file, key, reason)` with a key such as ``probe[arith-mul-01].checks[0].expected``.

Templated probes declare ``[probe.vars]``; ``{{name}}`` is replaced in ``system``,
``prompt``, message contents, ``extra`` and check parameters. A string that is exactly
one placeholder takes the variable's value with its type (``expected = "{{n}}"`` gives an
int), so numeric checks can compare against generated numbers.

Seeding: the vars of sample ``s`` of probe ``p`` in a run with seed ``seed`` are drawn from
``random.Random(f"{seed}:{p}:{s}")`` (string seeds hash with SHA-512, so the values are the
same in every process). With ``vary_per_sample = false`` every sample uses the draw of
sample 0 — the default for ``kind = "cache"`` probes, whose samples must share a prefix.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aione_probe.checks import CheckSpecError, validate_check_spec
from aione_probe.checks.structured import check_schema
from aione_probe.errors import ConfigError
from aione_probe.templating import (
    GENERATOR_VERSION,
    GENERATORS,
    SpecError,
    draw_vars,
    instance_rng,
    placeholders,
    render,
)
from aione_probe.types import ChatRequest

__all__ = [
    "GENERATOR_VERSION",
    "CheckSpec",
    "Message",
    "Probe",
    "ProbeInstance",
    "Suite",
    "find_suite",
    "load_suite",
    "load_suites",
]

_KEBAB = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_VAR_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_TOOL_CHOICES = ("auto", "none", "required")
_RESPONSE_FORMATS = ("text", "json_object", "json_schema")


# --- models -----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CheckSpec(_Strict):
    """One check as a suite names it: ``{ name = "numeric", expected = 391 }``.

    Attributes:
        name: the registered check name.
        params: every other key of the table (may hold ``{{var}}`` placeholders).
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, dict) and set(data) - {"name", "params"}:
            out: dict[str, Any] = {"params": {k: v for k, v in data.items() if k != "name"}}
            if "name" in data:
                out["name"] = data["name"]
            return out
        return data

    def as_table(self) -> dict[str, Any]:
        """The spec as written in the suite file."""
        return {"name": self.name, **self.params}


class Message(_Strict):
    """One chat message of a probe (OpenAI roles; content is text or a list of parts)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: Any = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, v: Any) -> Any:
        if v is None or isinstance(v, str):
            return v
        if isinstance(v, list) and all(isinstance(p, dict) for p in v):
            return v
        raise ValueError("content must be a string or a list of content-part tables")


class _Defaults(_Strict):
    """``[suite.defaults]``: probe parameters unless a probe sets them."""

    category: str | None = None
    difficulty: Literal["easy", "medium", "hard"] | None = None
    cheap: bool | None = None
    system: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stream: bool | None = None
    samples: int | None = Field(default=None, ge=1, le=100)
    extra: dict[str, Any] | None = None


class Probe(_Strict):
    """One probe, after the suite's defaults were applied.

    `hash` identifies what the probe asks and how it is judged; see `Probe.definition`.
    """

    id: str
    kind: Literal["chat", "image", "cache"] = "chat"
    category: str = "general"
    difficulty: Literal["easy", "medium", "hard"] = "medium"
    cheap: bool = False
    system: str | None = None
    prompt: str | None = None
    messages: list[Message] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stream: bool = False
    samples: int = Field(default=1, ge=1, le=100)
    alternate_stream: bool = False
    cache_pairs: bool = False
    vary_per_sample: bool | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    checks: list[CheckSpec] = Field(default_factory=list)
    group_checks: list[CheckSpec] = Field(default_factory=list)
    vars: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def varies_per_sample(self) -> bool:
        """Whether each sample draws its own vars (default: yes, except cache probes)."""
        if self.vary_per_sample is not None:
            return self.vary_per_sample
        return self.kind != "cache"

    def cache_role(self, sample: int) -> Literal["miss", "hit"]:
        """What sample `sample` of a cache probe should be: ``miss`` (a prefix not sent
        before) or ``hit`` (a repeat). With `cache_pairs` samples come in (miss, hit)
        pairs, each pair with its own prefix; otherwise sample 0 misses and the rest hit."""
        if self.cache_pairs:
            return "miss" if sample % 2 == 0 else "hit"
        return "miss" if sample == 0 else "hit"

    def draw_index(self, sample: int) -> int:
        """Which draw of the vars sample `sample` uses (samples sharing a draw share a
        prompt): its own, the first, or its cache pair's."""
        if self.varies_per_sample:
            return sample
        return sample // 2 if self.cache_pairs else 0

    @property
    def sequential(self) -> bool:
        """Whether the samples must be sent one after another, in order (the order is the
        experiment: cache probes, plain/stream comparisons, any group check)."""
        return self.kind == "cache" or self.alternate_stream or bool(self.group_checks)

    def message_templates(self) -> list[dict[str, Any]]:
        """The messages to send, placeholders unrendered: ``system`` first, then
        ``prompt`` as one user message or ``messages``."""
        out: list[dict[str, Any]] = []
        if self.system is not None:
            out.append({"role": "system", "content": self.system})
        if self.prompt is not None:
            out.append({"role": "user", "content": self.prompt})
        for m in self.messages or []:
            out.append(m.model_dump(exclude_none=True))
        return out

    def definition(self) -> dict[str, Any]:
        """The normalised definition the hash covers.

        Covered: kind, messages (``system`` and ``prompt`` folded in), sampling settings,
        stream mode, tools, response format, extra body fields, checks, group checks, and
        for templated probes the vars, `varies_per_sample` and `GENERATOR_VERSION`. Not
        covered: the id, labels (category, difficulty, cheap) and `samples`, which say
        how a probe is filed or how often it runs, not what it asks.
        """
        d: dict[str, Any] = {
            "kind": self.kind,
            "messages": self.message_templates(),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stream": self.stream,
            "alternate_stream": self.alternate_stream,
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "response_format": self.response_format,
            "extra": self.extra,
            "checks": [c.as_table() for c in self.checks],
            "group_checks": [c.as_table() for c in self.group_checks],
        }
        if self.cache_pairs:
            d["cache_pairs"] = True
        if self.vars:
            d["vars"] = self.vars
            d["vary_per_sample"] = self.varies_per_sample
            d["generator_version"] = GENERATOR_VERSION
        return d

    @cached_property
    def hash(self) -> str:
        """First 16 hex digits of SHA-256 over the canonical JSON of `definition()`."""
        canonical = json.dumps(
            self.definition(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ProbeInstance:
    """One request-to-be: a probe, a sample index and the vars drawn for it.

    Attributes:
        probe: the probe.
        sample: index of this sample in the run, from 0.
        vars: rendered template values (empty for plain probes).
    """

    probe: Probe
    sample: int
    vars: dict[str, Any] = field(default_factory=dict)

    @property
    def stream(self) -> bool:
        """Stream mode of this sample: alternating plain (even) / stream (odd) when the
        probe sets ``alternate_stream``, else the probe's `stream`. Image probes never
        stream: image models reject ``stream: true``."""
        if self.probe.kind == "image":
            return False
        if self.probe.alternate_stream:
            return self.sample % 2 == 1
        return self.probe.stream

    def render(self, obj: Any) -> Any:
        """`obj` with ``{{var}}`` placeholders replaced by this instance's vars."""
        return render(obj, self.vars) if self.vars else obj

    def request(self, model: str) -> ChatRequest:
        """The chat request for `model`."""
        p = self.probe
        return ChatRequest(
            model=model,
            messages=tuple(self.render(p.message_templates())),
            max_tokens=p.max_tokens,
            temperature=p.temperature,
            top_p=p.top_p,
            stream=self.stream,
            tools=tuple(p.tools) if p.tools else None,
            tool_choice=p.tool_choice,
            response_format=p.response_format,
            seed=p.seed,
            cache_prefix=p.kind == "cache",
            extra=self.render(dict(p.extra)),
        )


@dataclass(frozen=True)
class Suite:
    """A loaded, validated probe suite.

    Attributes:
        id: kebab-case suite id.
        version: bumped by authors when a probe changes meaning.
        description: free text.
        path: the file it was loaded from.
        probes: probes in file order, defaults applied.
        default_checks: checks run on every probe (a probe's own check of the same
            name replaces the default).
    """

    id: str
    version: int
    description: str
    path: Path
    probes: list[Probe]
    default_checks: list[CheckSpec]

    def probe(self, probe_id: str) -> Probe:
        """The probe with id `probe_id` (KeyError if none)."""
        for p in self.probes:
            if p.id == probe_id:
                return p
        raise KeyError(probe_id)

    def check_names(self) -> set[str]:
        """Every check and group check name a run of this suite can report."""
        names = {c.name for c in self.default_checks}
        for p in self.probes:
            names |= {c.name for c in (*p.checks, *p.group_checks)}
        return names

    def expand(
        self, seed: int, *, cheap_only: bool = False, probe_ids: set[str] | None = None
    ) -> list[ProbeInstance]:
        """Every request of one run: samples × probes, in file order then sample order.

        Args:
            seed: the run's seed; the same seed renders the same vars.
            cheap_only: keep only probes marked ``cheap``.
            probe_ids: keep only these probes.

        Raises:
            ValueError: `probe_ids` names a probe the suite does not have.
        """
        if probe_ids is not None:
            unknown = probe_ids - {p.id for p in self.probes}
            if unknown:
                raise ValueError(f"suite {self.id} has no probe {sorted(unknown)}")
        out: list[ProbeInstance] = []
        for p in self.probes:
            if (cheap_only and not p.cheap) or (probe_ids is not None and p.id not in probe_ids):
                continue
            for s in range(p.samples):
                values = {}
                if p.vars:
                    values = draw_vars(p.vars, instance_rng(seed, p.id, p.draw_index(s)))
                out.append(ProbeInstance(p, s, values))
        return out


class _SuiteHeader(_Strict):
    id: str
    version: int = Field(ge=1)
    description: str = ""
    default_checks: list[CheckSpec] = Field(default_factory=list)
    defaults: dict[str, Any] = Field(default_factory=dict)


# --- loading ----------------------------------------------------------------------------


def _key(prefix: str, loc: Iterable[Any]) -> str:
    key = prefix
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def _from_pydantic(file: str, prefix: str, exc: ValidationError) -> ConfigError:
    errors = exc.errors()
    err = errors[0]
    kind = err["type"]
    if kind == "extra_forbidden":
        reason = "unknown key"
    elif kind == "missing":
        reason = "required key is missing"
    else:
        reason = err["msg"].removeprefix("Value error, ")
        if kind != "value_error":
            reason += f", got {err['input']!r}"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return ConfigError(file, _key(prefix, err["loc"]), reason)


def _validate_vars(file: str, key: str, specs: dict[str, dict[str, Any]]) -> None:
    # Each var is also drawn once (seed 0): that catches what only a value shows, such as
    # an expr over a variable that is not an integer.
    rng = instance_rng(0, key, 0)
    done: dict[str, Any] = {}
    for name, spec in specs.items():
        where = f"{key}.vars.{name}"
        if not _VAR_NAME.fullmatch(name):
            raise ConfigError(file, where, "var names are lower-case letters, digits and _")
        gen_name = spec.get("gen")
        gen = GENERATORS.get(gen_name) if isinstance(gen_name, str) else None
        if gen is None:
            raise ConfigError(
                file,
                f"{where}.gen",
                f"unknown generator {gen_name!r} (known: {sorted(GENERATORS)})",
            )
        params = {k: v for k, v in spec.items() if k != "gen"}
        for k in params:
            if k not in gen.params:
                raise ConfigError(
                    file,
                    f"{where}.{k}",
                    f"unknown key for gen {gen_name!r} (allowed: {sorted(gen.params)})",
                )
        try:
            gen.check(params, set(done))
            done[name] = gen.draw(rng, params, done)
        except SpecError as exc:
            raise ConfigError(
                file, f"{where}.{exc.param}" if exc.param else where, exc.reason
            ) from exc


def _validate_templates(file: str, key: str, probe: Probe) -> None:
    defined = set(probe.vars)
    fields: list[tuple[str, Any]] = [
        ("system", probe.system),
        ("prompt", probe.prompt),
        ("extra", probe.extra),
    ]
    fields += [(f"messages[{i}].content", m.content) for i, m in enumerate(probe.messages or [])]
    for group in ("checks", "group_checks"):
        for i, spec in enumerate(getattr(probe, group)):
            fields += [(f"{group}[{i}].{k}", v) for k, v in spec.params.items()]
    for where, value in fields:
        unknown = placeholders(value) - defined
        if unknown:
            have = ", ".join(sorted(defined)) or "none"
            raise ConfigError(
                file,
                f"{key}.{where}",
                f"unknown template variable {sorted(unknown)[0]!r} (defined vars: {have})",
            )


def _function_names(file: str, key: str, tools: list[dict[str, Any]]) -> set[str]:
    names: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"{key}.tools[{i}]"
        fn = tool.get("function")
        if tool.get("type") != "function" or not isinstance(fn, dict):
            raise ConfigError(
                file, where, 'a tool is { type = "function", function = { name = ... } }'
            )
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(file, f"{where}.function.name", "a tool function needs a name")
        if name in names:
            raise ConfigError(file, f"{where}.function.name", f"duplicate tool {name!r}")
        if "parameters" in fn:
            try:
                check_schema(fn["parameters"], "parameters")
            except CheckSpecError as exc:
                raise ConfigError(file, f"{where}.function.parameters", exc.reason) from exc
        names.add(name)
    return names


def _validate_request(file: str, key: str, probe: Probe) -> set[str]:
    if (probe.prompt is None) == (probe.messages is None):
        raise ConfigError(file, f"{key}.prompt", "give exactly one of prompt or messages")
    if probe.messages is not None and not probe.messages:
        raise ConfigError(file, f"{key}.messages", "messages must not be empty")
    tools = _function_names(file, key, probe.tools)
    choice = probe.tool_choice
    if choice is not None:
        if isinstance(choice, str):
            if choice not in _TOOL_CHOICES:
                raise ConfigError(
                    file,
                    f"{key}.tool_choice",
                    f"must be one of {list(_TOOL_CHOICES)} or a function table",
                )
            if choice == "required" and not tools:
                raise ConfigError(file, f"{key}.tool_choice", "required needs tools")
        else:
            fn = choice.get("function") if isinstance(choice, dict) else None
            name = fn.get("name") if isinstance(fn, dict) else None
            if name not in tools:
                raise ConfigError(
                    file, f"{key}.tool_choice", f"names function {name!r}, which is not in tools"
                )
    fmt = probe.response_format
    if fmt is not None:
        if fmt.get("type") not in _RESPONSE_FORMATS:
            raise ConfigError(
                file, f"{key}.response_format.type", f"must be one of {list(_RESPONSE_FORMATS)}"
            )
        if fmt["type"] == "json_schema":
            inner = fmt.get("json_schema")
            schema = inner.get("schema") if isinstance(inner, dict) else None
            try:
                check_schema(schema, "schema")
            except CheckSpecError as exc:
                raise ConfigError(
                    file, f"{key}.response_format.json_schema.schema", exc.reason
                ) from exc
    return tools


def _validate_checks(file: str, key: str, probe: Probe, tools: set[str]) -> None:
    # Check params may hold placeholders: validate a rendering (seed 0, sample 0), which
    # also proves the generators produce values of a type the check accepts.
    values = draw_vars(probe.vars, instance_rng(0, probe.id, 0)) if probe.vars else {}
    for group, specs in (("checks", probe.checks), ("group_checks", probe.group_checks)):
        for i, spec in enumerate(specs):
            where = f"{key}.{group}[{i}]"
            try:
                validate_check_spec(
                    spec.name, render(spec.params, values), group=group == "group_checks"
                )
            except CheckSpecError as exc:
                raise ConfigError(
                    file, f"{where}.{exc.param}" if exc.param else where, exc.reason
                ) from exc
            except ValueError as exc:
                raise ConfigError(file, where, str(exc)) from exc
            if spec.name == "tool_call" and spec.params.get("function") not in tools:
                raise ConfigError(
                    file,
                    f"{where}.function",
                    f"function {spec.params.get('function')!r} is not in the probe's tools",
                )
    names = [s.name for s in probe.group_checks]
    if probe.kind == "cache":
        if probe.samples < 2:
            raise ConfigError(file, f"{key}.samples", "a cache probe needs samples >= 2")
        if "cache" not in names:
            raise ConfigError(
                file,
                f"{key}.group_checks",
                'a cache probe needs group_checks = [{ name = "cache" }]',
            )
    if probe.cache_pairs and (probe.kind != "cache" or probe.samples % 2 or probe.samples < 6):
        raise ConfigError(
            file, f"{key}.cache_pairs", 'cache_pairs needs kind = "cache" and an even samples >= 6'
        )
    if probe.alternate_stream and probe.samples < 2:
        raise ConfigError(file, f"{key}.samples", "alternate_stream needs samples >= 2")


def _load_probe(file: str, index: int, raw: Any, defaults: dict[str, Any]) -> Probe:
    if not isinstance(raw, dict):
        raise ConfigError(file, f"probe[{index}]", "each [[probe]] must be a table")
    pid = raw.get("id")
    key = f"probe[{pid}]" if isinstance(pid, str) and pid else f"probe[{index}]"
    if not isinstance(pid, str) or not _KEBAB.fullmatch(pid):
        raise ConfigError(file, f"{key}.id", f"probe ids are kebab-case (a-z, 0-9, -), got {pid!r}")
    try:
        probe = Probe.model_validate({**defaults, **raw})
    except ValidationError as exc:
        raise _from_pydantic(file, key, exc) from exc
    _validate_vars(file, key, probe.vars)
    _validate_templates(file, key, probe)
    tools = _validate_request(file, key, probe)
    _validate_checks(file, key, probe, tools)
    return probe


def load_suite(path: str | Path) -> Suite:
    """Load and validate one suite file.

    Raises:
        ConfigError: the file cannot be read or parsed, or breaks a rule; the error
            names the file, the key (``probe[<id>].checks[<i>].<param>``) and the reason.
    """
    path = Path(path)
    file = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(file, "file", f"cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "toml", f"not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "file", "not UTF-8 text") from exc
    for top in data:
        if top not in ("suite", "probe"):
            raise ConfigError(file, top, "unknown key (a suite file has [suite] and [[probe]])")
    if not isinstance(data.get("suite"), dict):
        raise ConfigError(file, "suite", "required table [suite] is missing")
    try:
        header = _SuiteHeader.model_validate(data["suite"])
    except ValidationError as exc:
        raise _from_pydantic(file, "suite", exc) from exc
    if not _KEBAB.fullmatch(header.id):
        raise ConfigError(file, "suite.id", f"suite ids are kebab-case, got {header.id!r}")
    try:
        defaults = _Defaults.model_validate(header.defaults).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise _from_pydantic(file, "suite.defaults", exc) from exc
    for i, spec in enumerate(header.default_checks):
        try:
            validate_check_spec(spec.name, spec.params)
        except CheckSpecError as exc:
            where = f"suite.default_checks[{i}]"
            raise ConfigError(
                file, f"{where}.{exc.param}" if exc.param else where, exc.reason
            ) from exc
    raws = data.get("probe")
    if not isinstance(raws, list) or not raws:
        raise ConfigError(file, "probe", "a suite needs at least one [[probe]]")
    probes: list[Probe] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raws):
        probe = _load_probe(file, i, raw, defaults)
        if probe.id in seen:
            raise ConfigError(
                file,
                f"probe[{probe.id}].id",
                f"duplicate probe id (also probe #{seen[probe.id] + 1})",
            )
        seen[probe.id] = i
        probes.append(probe)
    return Suite(
        id=header.id,
        version=header.version,
        description=header.description,
        path=path,
        probes=probes,
        default_checks=list(header.default_checks),
    )


def load_suites(directory: str | Path) -> dict[str, Suite]:
    """Every ``*.toml`` suite in `directory`, by suite id.

    Raises:
        ConfigError: a file is invalid, or two files declare the same suite id.
    """
    suites: dict[str, Suite] = {}
    for path in sorted(Path(directory).glob("*.toml")):
        suite = load_suite(path)
        if suite.id in suites:
            raise ConfigError(
                str(path), "suite.id", f"duplicate suite id, also in {suites[suite.id].path}"
            )
        suites[suite.id] = suite
    return suites


def find_suite(name_or_path: str | Path, probes_dir: str | Path) -> Suite:
    """A suite given as a file path, a file stem in `probes_dir`, or a suite id.

    Raises:
        ConfigError: nothing matches, or the matching file is invalid.
    """
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_file():
        return load_suite(path)
    stem = Path(probes_dir) / f"{name_or_path}.toml"
    if stem.is_file():
        return load_suite(stem)
    suites = load_suites(probes_dir)
    if str(name_or_path) in suites:
        return suites[str(name_or_path)]
    known = ", ".join(sorted(suites)) or "none"
    raise ConfigError(str(probes_dir), str(name_or_path), f"no such suite (available: {known})")
