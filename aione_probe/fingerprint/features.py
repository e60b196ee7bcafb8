"""Per-observation authenticity features.

The audit accepts anything shaped like an observation: an `aione_probe.types.Observation`
(usage under ``.usage``), a store row (flat ``prompt_tokens``, ``usage_raw``) or a test
double. `view()` reads it once into an `ObsView`, the only shape the rest of the package
sees. The other functions turn views into the small values the tests compare: normalised
one-word answers, id/fingerprint shapes, identity labels.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FAMILIES = ("tokenizer", "categorical", "greedy", "metadata", "identity", "speed")

# The shipped fingerprint suite, whose probes' TOML `category` is the default family map.
_SHIPPED_SUITE = Path(__file__).resolve().parents[2] / "probes" / "fingerprint.toml"
_WORD = re.compile(r"\w+", re.UNICODE)
_HEX = re.compile(r"^[0-9a-f]+$")
_ALNUM = re.compile(r"^[A-Za-z0-9]+$")
_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$")
_ID_PREFIX = re.compile(r"^([A-Za-z]{2,12}[-_])(.*)$", re.DOTALL)
_YEAR = re.compile(r"\b(19[89]\d|20[0-4]\d)\b")
_VENDORS = (
    ("openai", ("openai", "gpt", "chatgpt")),
    ("anthropic", ("anthropic", "claude")),
    ("google", ("google", "gemini", "gemma", "bard")),
    ("meta", ("meta", "llama")),
    ("mistral", ("mistral", "mixtral")),
    ("alibaba", ("qwen", "alibaba", "tongyi")),
    ("deepseek", ("deepseek",)),
    ("xai", ("grok", "xai")),
)


@functools.cache
def shipped_categories() -> dict[str, str]:
    """Probe id → family of the shipped ``probes/fingerprint.toml`` (from each probe's
    TOML ``category``; empty when the file is not there, e.g. in an installed wheel)."""
    from aione_probe.suites import load_suite  # suites imports the checks, not us

    if not _SHIPPED_SUITE.is_file():
        return {}
    return {p.id: p.category for p in load_suite(_SHIPPED_SUITE).probes if p.category}


def category_of(probe_id: str, categories: Mapping[str, str] | None = None) -> str | None:
    """Signal family of a probe: its TOML ``category`` as given in `categories` (probe id →
    category; by default the shipped fingerprint suite's). Never guessed from the id.
    Returns None for probes that belong to no family."""
    cat = (shipped_categories() if categories is None else categories).get(probe_id)
    return cat if cat in FAMILIES else None


def is_tokenizer_base(probe_id: str) -> bool:
    """The tokenizer base prompt (subtracted from every canary) is the probe whose id ends
    in ``-base``."""
    return probe_id.endswith("-base")


@dataclass(frozen=True)
class ObsView:
    """What the fingerprint code reads from one observation."""

    probe_id: str
    probe_hash: str
    category: str | None
    vars_key: str
    vars: Mapping[str, Any]
    ok: bool
    failure: str
    content: str
    requested_model: str | None
    response_model: str | None
    response_id: str | None
    system_fingerprint: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    usage_fields: tuple[str, ...] | None
    first_token_s: float | None
    output_tps: float | None
    stream: bool
    chunk_count: int
    tool_calls: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    run_id: int | None = None
    sample: int = 0


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def vars_key(values: Any) -> str:
    """Canonical JSON of a probe instance's rendered variables ("" when it has none)."""
    if not values:
        return ""
    if isinstance(values, str):
        values = json.loads(values)
    return json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _usage_fields(raw: Any) -> tuple[str, ...] | None:
    if isinstance(raw, str):
        raw = json.loads(raw)
    if not isinstance(raw, Mapping):
        return None
    names = []
    for key, value in raw.items():
        names.append(str(key))
        if isinstance(value, Mapping):
            names.extend(f"{key}.{sub}" for sub in value)
    return tuple(sorted(names))


def view(obs: Any, categories: Mapping[str, str] | None = None) -> ObsView:
    """Read an observation-like object (Observation, store row, mapping) into an `ObsView`."""
    usage = _get(obs, "usage")
    prompt_tokens = _get(obs, "prompt_tokens", _get(usage, "prompt_tokens") if usage else None)
    completion_tokens = _get(
        obs, "completion_tokens", _get(usage, "completion_tokens") if usage else None
    )
    raw = _get(obs, "usage_raw", _get(usage, "raw") if usage else None)
    tps = _get(obs, "output_tps", _get(obs, "output_tokens_per_s"))
    failure = str(_get(obs, "failure", "ok") or "ok")
    tool_calls = _get(obs, "tool_calls") or ()
    if isinstance(tool_calls, str):
        tool_calls = json.loads(tool_calls)
    probe_id = str(_get(obs, "probe_id", ""))
    key = vars_key(_get(obs, "vars"))
    return ObsView(
        probe_id=probe_id,
        probe_hash=str(_get(obs, "probe_hash", probe_id)),
        category=category_of(probe_id, categories),
        vars_key=key,
        vars=json.loads(key) if key else {},
        ok=failure == "ok",
        failure=failure,
        content=str(_get(obs, "content", "") or ""),
        requested_model=_get(obs, "model"),
        response_model=_get(obs, "response_model"),
        response_id=_get(obs, "response_id"),
        system_fingerprint=_get(obs, "system_fingerprint"),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        usage_fields=_usage_fields(raw) if raw is not None else None,
        first_token_s=_get(obs, "first_token_s"),
        output_tps=tps,
        stream=bool(_get(obs, "stream", False)),
        chunk_count=int(_get(obs, "chunk_count", 0) or 0),
        tool_calls=tuple(tool_calls),
        run_id=_get(obs, "run_id"),
        sample=int(_get(obs, "sample", 0) or 0),
    )


def normalize_answer(text: str) -> str:
    """A one-word answer's comparable form: NFKC, lower case, first word (or ``<empty>``)."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    return words[0] if words else "<empty>"


def categorical_label(text: str, values: Mapping[str, Any]) -> str:
    """Label of a one-word answer: ``var:<name>`` when it is the rendered value of the
    probe variable `name` (options drawn per run, so the chosen *position* is what stays
    comparable across runs), else `normalize_answer`."""
    answer = normalize_answer(text)
    for name, value in sorted(values.items()):
        if (
            isinstance(value, str)
            and normalize_answer(value) == answer
            and _WORD.fullmatch(value.strip().lower())
        ):
            return f"var:{name}"
    return answer


def identity_label(text: str) -> str:
    """Coarse label of an identity / cutoff / refusal answer: the vendor it names, else the
    year it names, else its first two words. Weak evidence: trivially forged."""
    low = unicodedata.normalize("NFKC", text).lower()
    for vendor, words in _VENDORS:
        if any(re.search(rf"\b{w}", low) for w in words):
            return f"vendor:{vendor}"
    year = _YEAR.search(low)
    if year:
        return f"year:{year.group(1)}"
    return "words:" + " ".join(_WORD.findall(low)[:2])


def id_shape(value: str | None) -> str:
    """Shape of an id-like string: its letter prefix, character class and length, e.g.
    ``chatcmpl-alnum29`` or ``fp_hex10``; ``absent`` when missing."""
    if not value:
        return "absent"
    match = _ID_PREFIX.match(value)
    prefix, rest = (match.group(1), match.group(2)) if match else ("", value)
    if _UUID.match(rest):
        cls = "uuid"
    elif _HEX.match(rest):
        cls = "hex"
    elif _ALNUM.match(rest):
        cls = "alnum"
    else:
        cls = "other"
    return f"{prefix}{cls}{len(rest)}"


def model_echo(requested: str | None, echoed: str | None) -> str:
    """How the response's ``model`` relates to the requested name, case-sensitively:
    ``exact``, ``case`` (differs only in case), ``snapshot`` (one extends the other, e.g. a
    dated version), ``other``, ``absent``, or ``present`` when no requested name is known."""
    if not echoed:
        return "absent"
    if requested is None:
        return "present"
    if echoed == requested:
        return "exact"
    if echoed.lower() == requested.lower():
        return "case"
    if echoed.startswith(requested) or requested.startswith(echoed):
        return "snapshot"
    return "other"


def chunking(v: ObsView) -> str | None:
    """Streaming granularity bucket: completion tokens per SSE event (None if not streamed)."""
    if not v.stream or not v.chunk_count or not v.completion_tokens:
        return None
    ratio = v.completion_tokens / v.chunk_count
    if ratio <= 1.2:
        return "<=1"
    if ratio <= 2.5:
        return "1-2"
    return "2-4" if ratio <= 4.5 else ">4"


def _tool_call_shape(call: Mapping[str, Any]) -> str:
    fn = call.get("function") or {}
    args = fn.get("arguments")
    try:
        parsed = json.loads(args) if isinstance(args, str) else args
        args_shape = "json-object" if isinstance(parsed, dict) else "json-other"
    except ValueError:
        args_shape = "invalid-json"
    return f"{id_shape(call.get('id'))}|{call.get('type', 'absent')}|{args_shape}"


def metadata_features(v: ObsView) -> dict[str, str]:
    """Categorical metadata features of one successful observation."""
    feats = {
        "model_echo": model_echo(v.requested_model, v.response_model),
        "id_shape": id_shape(v.response_id),
        "fingerprint_shape": id_shape(v.system_fingerprint),
        "usage_fields": ",".join(v.usage_fields) if v.usage_fields is not None else "absent",
    }
    chunks = chunking(v)
    if chunks is not None:
        feats["chunking"] = chunks
    if v.tool_calls:
        feats["tool_call"] = _tool_call_shape(v.tool_calls[0])
    return feats
