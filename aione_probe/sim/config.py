"""Simulator configuration: served models, their personas, faults and dishonest modes.

TOML shape (every key optional except a model's ``persona``)::

    api_key = "sk-sim"                  # require this Bearer key; omit for no auth
    seed = 7                            # per-request randomness; omit for fresh entropy
    time_scale = 1.0                    # multiplies every simulated delay (0 = no waiting)
    rpm_limit = 600                     # denominator of the dashboard's rpm_usage_pct
    dashboard_report_factor = 1.0       # >1 over-reports tokens and cost on the dashboard
    keepalive_rate = 0.03               # chance of a ": keep-alive" comment between chunks
    answer_key_dirs = ["probes"]        # relative to this file; default: the project's probes/

    [personas.tiny]                     # optional extra personas (see personas.Persona)
    base = "small"
    seed = "tiny"

    [models.sim-large-relay]            # one table per served model id
    persona = "large"
    substitute = "small"
    substitute_share = 0.3
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aione_probe.sim.personas import BUILTIN_PERSONAS, Persona, persona_from_dict

_PROJECT_PROBES = Path(__file__).resolve().parents[2] / "probes"


@dataclass
class ModelSettings:
    """Behaviour of one served model id; every field can be changed at runtime.

    Attributes:
        persona: Persona answering requests.
        substitute: Persona answering a share of requests instead (dishonest routing).
        substitute_share: Share of requests answered by `substitute`, 0..1.
        echo_model: Response ``model`` field: ``"requested"`` (the id asked for),
            ``"alias"`` (the answering persona's alias) or any literal string.
        truncation_reported_as_stop: Report ``stop`` when output was cut at max_tokens.
        cache_field: ``"openai"`` reports ``prompt_tokens_details``; ``"none"`` omits it.
        cache_discount_honoured: When False, cache hits stay fast but report (and bill)
            ``cached_tokens = 0``.
        error_rate: Share of requests answered with an error status, 0..1.
        error_statuses: Statuses drawn uniformly for those errors (429, 500, 503).
        retry_after_s: Retry-After value sent with 429.
        malformed_stream_rate: Share of streams with one data line of invalid JSON.
        cutoff_stream_rate: Share of streams whose connection closes mid-answer.
        omit_stream_usage: Ignore ``stream_options.include_usage``.
        latency_multiplier: Multiplies this model's delays.
        price_input: RMB per 1M uncached prompt tokens (dashboard cost).
        price_cached_input: RMB per 1M cached prompt tokens.
        price_output: RMB per 1M completion tokens.
        image: An image-generation model (answered by `sim.images`, chat completions only).
        image_fault: Broken image answers: ``"none"``, ``"truncated_base64"``,
            ``"wrong_mime"`` (PNG bytes declared as JPEG) or ``"no_image"`` (text only).
    """

    persona: str
    substitute: str | None = None
    substitute_share: float = 0.0
    echo_model: str = "requested"
    truncation_reported_as_stop: bool = False
    cache_field: str = "openai"
    cache_discount_honoured: bool = True
    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [429, 500, 503])
    retry_after_s: float = 1.0
    malformed_stream_rate: float = 0.0
    cutoff_stream_rate: float = 0.0
    omit_stream_usage: bool = False
    latency_multiplier: float = 1.0
    price_input: float = 10.0
    price_cached_input: float = 2.5
    price_output: float = 30.0
    image: bool = False
    image_fault: str = "none"


IMAGE_FAULTS = ("none", "truncated_base64", "wrong_mime", "no_image")


@dataclass
class SimConfig:
    """Whole simulator configuration (see the module docstring for the TOML form)."""

    models: dict[str, ModelSettings]
    personas: dict[str, Persona] = field(default_factory=lambda: dict(BUILTIN_PERSONAS))
    api_key: str | None = None
    seed: int | None = None
    time_scale: float = 1.0
    rpm_limit: int = 600
    dashboard_report_factor: float = 1.0
    keepalive_rate: float = 0.03
    answer_key_dirs: list[Path] | None = None

    def resolved_answer_key_dirs(self) -> list[Path]:
        """Configured answer-key directories, or the project's probes/ if it exists."""
        if self.answer_key_dirs is not None:
            return list(self.answer_key_dirs)
        return [_PROJECT_PROBES] if _PROJECT_PROBES.is_dir() else []

    def validate(self) -> None:
        """Check cross references and ranges.

        Raises:
            ValueError: naming the model and field at fault.
        """
        for model_id, settings in self.models.items():
            validate_settings(model_id, settings, self.personas)


GLOBAL_CONTROL_KEYS = ("time_scale", "rpm_limit", "dashboard_report_factor", "keepalive_rate")


def validate_settings(model_id: str, s: ModelSettings, personas: dict[str, Persona]) -> None:
    """Raise ValueError if `s` names unknown personas or has out-of-range values."""
    for name in (s.persona, s.substitute):
        if name is not None and name not in personas:
            raise ValueError(f"model {model_id!r}: unknown persona {name!r}")
    for key in ("substitute_share", "error_rate", "malformed_stream_rate", "cutoff_stream_rate"):
        if not 0.0 <= float(getattr(s, key)) <= 1.0:
            raise ValueError(f"model {model_id!r}: {key} must be within 0..1")
    if s.cache_field not in ("openai", "none"):
        raise ValueError(f"model {model_id!r}: cache_field must be 'openai' or 'none'")
    if s.error_rate and not s.error_statuses:
        raise ValueError(f"model {model_id!r}: error_rate needs error_statuses")
    if s.latency_multiplier < 0:
        raise ValueError(f"model {model_id!r}: latency_multiplier must be >= 0")
    if s.image_fault not in IMAGE_FAULTS:
        raise ValueError(f"model {model_id!r}: image_fault must be one of {list(IMAGE_FAULTS)}")


def settings_from_dict(model_id: str, data: dict[str, Any]) -> ModelSettings:
    """Build model settings from a TOML/JSON table, refusing unknown keys."""
    allowed = {f.name for f in dataclasses.fields(ModelSettings)}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"model {model_id!r}: unknown keys {sorted(unknown)}")
    if "persona" not in data:
        raise ValueError(f"model {model_id!r}: persona is required")
    return ModelSettings(**data)


def merge_settings(model_id: str, current: ModelSettings, changes: dict[str, Any]) -> ModelSettings:
    """A copy of `current` with `changes` applied (unknown keys refused)."""
    return settings_from_dict(model_id, {**dataclasses.asdict(current), **changes})


def load_sim_config(path: str | Path) -> SimConfig:
    """Read a simulator config from TOML.

    Raises:
        ValueError: with the file name and the problem.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        return _from_dict(data, path.parent)
    except (tomllib.TOMLDecodeError, ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _from_dict(data: dict[str, Any], base_dir: Path) -> SimConfig:
    data = dict(data)
    personas = dict(BUILTIN_PERSONAS)
    for name, table in (data.pop("personas", None) or {}).items():
        personas[name] = persona_from_dict(name, table, personas)
    models = {
        model_id: settings_from_dict(model_id, table)
        for model_id, table in (data.pop("models", None) or {}).items()
    }
    if not models:
        raise ValueError("no [models.<id>] tables")
    dirs = data.pop("answer_key_dirs", None)
    allowed = {f.name for f in dataclasses.fields(SimConfig)} - {"models", "personas"}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    config = SimConfig(
        models=models,
        personas=personas,
        answer_key_dirs=None if dirs is None else [base_dir / d for d in dirs],
        **data,
    )
    config.validate()
    return config


def default_sim_config(**overrides: Any) -> SimConfig:
    """The demo line-up of models; keyword arguments override SimConfig fields.

    Models: ``sim-large`` (honest "large"), ``sim-small`` (honest "small"),
    ``sim-large-relay`` (claims large, 30% of requests answered by "small"),
    ``sim-large-quant`` (quantisation-like "large-q" under a large name),
    ``sim-reasoner`` (honest "reasoner" with reasoning tokens) and ``sim-flaky``
    (large, 20% of requests fail with 429/500/503), plus the Gemini image models
    ``gemini-3-pro-image-preview`` (and its ``-2k`` / ``-4k`` variants) and
    ``gemini-2.5-flash-image`` (see `sim.images`).
    """
    large = {"price_input": 20.0, "price_cached_input": 5.0, "price_output": 80.0}
    small = {"price_input": 1.0, "price_cached_input": 0.25, "price_output": 4.0}
    models = {
        "sim-large": ModelSettings(persona="large", **large),
        "sim-small": ModelSettings(persona="small", **small),
        "sim-large-relay": ModelSettings(
            persona="large", substitute="small", substitute_share=0.3, **large
        ),
        "sim-large-quant": ModelSettings(persona="large-q", **large),
        "sim-reasoner": ModelSettings(persona="reasoner", price_output=60.0),
        "sim-flaky": ModelSettings(persona="large", error_rate=0.2, **large),
        **{
            model: ModelSettings(persona="large", image=True, price_output=120.0)
            for model in (
                "gemini-3-pro-image-preview",
                "gemini-3-pro-image-preview-2k",
                "gemini-3-pro-image-preview-4k",
                "gemini-2.5-flash-image",
            )
        },
    }
    config = SimConfig(models=models, **overrides)
    config.validate()
    return config
