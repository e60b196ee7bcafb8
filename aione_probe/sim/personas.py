"""Simulated model personas: what a "model" looks like from outside.

A persona fixes everything observable about a simulated model: tokenizer family,
speed, skill by difficulty, context window, reasoning tokens, response id and
``system_fingerprint`` shape, identity and refusal texts, and its sampling signature
(`seed`, `logit_scale`, and for a quantisation-like variant `perturb_seed` + `epsilon`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

DIFFICULTIES = ("easy", "medium", "hard")


@dataclass(frozen=True)
class Persona:
    """One simulated model.

    Attributes:
        name: Persona name referenced by the sim config.
        seed: Sampling seed; personas sharing it share greedy text and answer choices.
        tokenizer: Tokenizer family name (see `tokenizer.FAMILIES`).
        ttft_s: Mean fixed part of the first-token delay, seconds.
        ttft_jitter_s: Standard deviation of that delay, seconds.
        prefill_tps: Prompt tokens processed per second (uncached tokens add delay).
        decode_tps: Output tokens per second.
        skill: Probability of answering a golden prompt correctly, by difficulty.
        context_window: Maximum prompt + max_tokens.
        reasoning_tokens: Inclusive range of hidden reasoning tokens per answer; (0, 0) = none.
        alias: Model name this persona reports when the model is set to echo an alias.
        fingerprint_prefix: ``system_fingerprint`` prefix, or None to omit the field.
        fingerprint_len: Hex digits after the prefix.
        id_style: ``"openai"`` (chatcmpl- + 29 alphanumerics) or ``"uuid"`` (chatcmpl- + 32 hex).
        identity: Answer to "which model are you?".
        refusal: Answer to a request it refuses.
        logit_scale: Spread of its hashed logits; larger means more peaked choices.
        perturb_seed: Seed of the logit noise of a perturbed variant ("" = none).
        epsilon: Scale of that noise; small values mimic quantisation.
        length_tokens: Inclusive range of the length of an open-ended answer, tokens.
        answer_suffix: Appended to one-word answers (a stylistic tic).
    """

    name: str
    seed: str
    tokenizer: str = "bpe-a"
    ttft_s: float = 0.3
    ttft_jitter_s: float = 0.05
    prefill_tps: float = 20000.0
    decode_tps: float = 60.0
    skill: dict[str, float] = field(
        default_factory=lambda: {"easy": 0.95, "medium": 0.85, "hard": 0.6}
    )
    context_window: int = 128_000
    reasoning_tokens: tuple[int, int] = (0, 0)
    alias: str = ""
    fingerprint_prefix: str | None = "fp_"
    fingerprint_len: int = 10
    id_style: str = "openai"
    identity: str = "I am a simulated assistant."
    refusal: str = "I can't help with that."
    logit_scale: float = 1.5
    perturb_seed: str = ""
    epsilon: float = 0.0
    length_tokens: tuple[int, int] = (60, 140)
    answer_suffix: str = ""

    @property
    def reasoning(self) -> bool:
        """Whether the persona reports reasoning tokens."""
        return self.reasoning_tokens[1] > 0

    @property
    def system_fingerprint(self) -> str | None:
        """Stable fingerprint of this persona's deployment, or None."""
        if self.fingerprint_prefix is None:
            return None
        digest = hashlib.sha256(f"fingerprint|{self.name}".encode()).hexdigest()
        return self.fingerprint_prefix + digest[: self.fingerprint_len]

    def skill_for(self, difficulty: str) -> float:
        """Probability of a correct answer at `difficulty` (unknown levels count as medium)."""
        return self.skill.get(difficulty, self.skill.get("medium", 0.8))


BUILTIN_PERSONAS: dict[str, Persona] = {
    p.name: p
    for p in (
        Persona(
            name="large",
            seed="large",
            tokenizer="bpe-a",
            ttft_s=0.35,
            ttft_jitter_s=0.08,
            prefill_tps=12_000,
            decode_tps=70,
            skill={"easy": 0.99, "medium": 0.95, "hard": 0.85},
            context_window=128_000,
            alias="sim-large-2025-01-15",
            identity="I am Sim Large, a large language model served by the aione-probe simulator.",
            refusal="I can't help with that.",
            logit_scale=1.6,
            length_tokens=(60, 140),
        ),
        Persona(
            name="small",
            seed="small",
            tokenizer="bpe-b",
            ttft_s=0.12,
            ttft_jitter_s=0.03,
            prefill_tps=40_000,
            decode_tps=160,
            skill={"easy": 0.9, "medium": 0.7, "hard": 0.4},
            context_window=16_384,
            alias="sim-small-mini",
            fingerprint_len=8,
            id_style="uuid",
            identity="I'm Sim Small, a compact assistant model.",
            refusal="Sorry, but I cannot assist with that request.",
            logit_scale=2.2,
            length_tokens=(30, 90),
            answer_suffix=".",
        ),
        Persona(
            name="large-q",
            seed="large",
            tokenizer="bpe-a",
            ttft_s=0.3,
            ttft_jitter_s=0.08,
            prefill_tps=16_000,
            decode_tps=95,
            skill={"easy": 0.98, "medium": 0.92, "hard": 0.78},
            context_window=128_000,
            alias="sim-large-2025-01-15",
            identity="I am Sim Large, a large language model served by the aione-probe simulator.",
            refusal="I can't help with that.",
            logit_scale=1.6,
            perturb_seed="large-q",
            epsilon=0.35,
            length_tokens=(60, 140),
        ),
        Persona(
            name="reasoner",
            seed="reasoner",
            tokenizer="spm-c",
            ttft_s=0.5,
            ttft_jitter_s=0.1,
            prefill_tps=15_000,
            decode_tps=50,
            skill={"easy": 0.99, "medium": 0.98, "hard": 0.95},
            context_window=65_536,
            reasoning_tokens=(64, 512),
            alias="sim-reasoner-r1",
            fingerprint_prefix=None,
            identity="I am Sim Reasoner, a model that thinks before it answers.",
            refusal="I'm not able to help with this request.",
            logit_scale=1.2,
            length_tokens=(40, 120),
        ),
    )
}


def persona_from_dict(name: str, data: dict[str, Any], known: dict[str, Persona]) -> Persona:
    """Build a persona from a TOML table, optionally starting from ``base = "<persona>"``.

    Raises:
        ValueError: on an unknown key or an unknown base persona.
    """
    data = dict(data)
    base_name = data.pop("base", None)
    allowed = {f.name for f in dataclasses.fields(Persona)} - {"name"}
    unknown = set(data) - allowed
    if unknown:
        raise ValueError(f"persona {name!r}: unknown keys {sorted(unknown)}")
    for key in ("reasoning_tokens", "length_tokens"):
        if key in data:
            data[key] = tuple(data[key])
    if base_name is not None:
        if base_name not in known:
            raise ValueError(f"persona {name!r}: unknown base persona {base_name!r}")
        return dataclasses.replace(known[base_name], name=name, **data)
    data.setdefault("seed", name)
    return Persona(name=name, **data)
