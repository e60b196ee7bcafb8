"""A fingerprint profile: per-probe feature summaries of one (gateway, model) with provenance.

A profile is what the audit compares against: built from a reference endpoint's
observations, pinned as a trust-on-first-use baseline, or exported to JSON and imported
elsewhere. Summaries are keyed by probe hash, so only identical probe definitions are
ever compared. Raw observations stay in the store; a profile keeps just what the tests
need (answer counts overall and per rendered prompt, capped raw texts, greedy texts and
token deltas per rendered variables, speed samples, metadata shape counts).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from aione_probe.fingerprint.features import (
    ObsView,
    categorical_label,
    identity_label,
    is_tokenizer_base,
    metadata_features,
    view,
)
from aione_probe.types import utcnow

FORMAT_VERSION = 1
MAX_TEXTS = 400
MAX_TEXT_CHARS = 128
MAX_SPEED = 1000


@dataclass(frozen=True)
class Provenance:
    """Where a profile came from: which endpoint, when, how many samples, over what window.

    `source` is ``reference`` (a trusted endpoint), ``baseline`` (pinned from the target
    itself, trust on first use), ``target`` (the observations under audit) or ``import``.
    """

    gateway: str
    model: str
    source: str
    created_at: str
    n_samples: int
    n_failed: int
    window_start: str | None = None
    window_end: str | None = None
    suite: str | None = None
    note: str = ""


@dataclass
class ProbeSummary:
    """Features of one probe (one probe hash) over all its observations in the profile.

    Attributes:
        probe_id: Probe id (for people; the key is the hash).
        category: Signal family.
        n_ok: Successful observations.
        failures: Failed observations by failure kind.
        answers: Normalised answer counts (categorical: first word; identity: label).
        answers_by_vars: Categorical answer counts by rendered-variables key, for the
            paired test on prompts rendered identically on both sides (empty in profiles
            exported before it existed).
        texts: Raw completions (capped in number and length) for the MMD test.
        greedy: Temperature-0 completions by rendered-variables key.
        deltas: Tokenizer canaries: prompt_tokens − base prompt_tokens, by variables key.
        prompt_tokens: Reported prompt tokens (the base probe's are the subtraction anchor).
        missing_usage: Successful observations without ``usage.prompt_tokens``.
        tps: Output tokens per second (speed probes).
        ttft: Seconds to first token (speed probes).
        metadata: Counts of each metadata feature's values.
    """

    probe_id: str
    category: str
    n_ok: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)
    answers_by_vars: dict[str, dict[str, int]] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    greedy: dict[str, list[str]] = field(default_factory=dict)
    deltas: dict[str, list[int]] = field(default_factory=dict)
    prompt_tokens: list[int] = field(default_factory=list)
    missing_usage: int = 0
    tps: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    metadata: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        """Failed observations of this probe."""
        return sum(self.failures.values())


@dataclass
class Profile:
    """A fingerprint: provenance plus `ProbeSummary` per probe hash.

    `id` is a content hash (16 hex), stable across export and import, and is what verdicts
    record as their ``baseline_id``.
    """

    provenance: Provenance
    probes: dict[str, ProbeSummary]

    @property
    def id(self) -> str:
        """Content hash of the profile (probes and provenance)."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def by_category(self, category: str) -> dict[str, ProbeSummary]:
        """Summaries of one signal family, by probe hash."""
        return {h: s for h, s in self.probes.items() if s.category == category}

    def base_tokens(self) -> int | None:
        """The tokenizer base prompt's most common reported prompt_tokens (None if unseen)."""
        counts: Counter[int] = Counter()
        for s in self.by_category("tokenizer").values():
            if is_tokenizer_base(s.probe_id):
                counts.update(s.prompt_tokens)
        return counts.most_common(1)[0][0] if counts else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the export format)."""
        return {
            "format": FORMAT_VERSION,
            "provenance": asdict(self.provenance),
            "probes": {h: asdict(s) for h, s in sorted(self.probes.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Profile:
        """Load an exported profile.

        Raises:
            ValueError: unknown format version or malformed content.
        """
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(f"unsupported profile format {data.get('format')!r}")
        try:
            prov = Provenance(**data["provenance"])
            probes = {h: ProbeSummary(**s) for h, s in data["probes"].items()}
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed profile: {exc}") from exc
        return cls(prov, probes)

    @classmethod
    def from_observations(
        cls,
        observations: Iterable[Any],
        *,
        gateway: str,
        model: str,
        source: str,
        categories: Mapping[str, str] | None = None,
        suite: str | None = None,
        note: str = "",
    ) -> Profile:
        """Summarise observation-like objects (see `features.view`) into a profile.

        Only probes that belong to a signal family are kept. Tokenizer deltas subtract the
        base probe's prompt_tokens of the same run (the most common one when observations
        carry no run id), so chat-template overhead cancels.
        """
        observations = list(observations)
        views = [v for v in (view(o, categories) for o in observations) if v.category]
        probes: dict[str, ProbeSummary] = {}
        for v in views:
            s = probes.setdefault(v.probe_hash, ProbeSummary(v.probe_id, v.category or ""))
            if not v.ok:
                s.failures[v.failure] = s.failures.get(v.failure, 0) + 1
                continue
            s.n_ok += 1
            _add(s, v)
        profile = cls(_provenance(observations, gateway, model, source, suite, note, views), probes)
        # Each run's canaries subtract that run's own base count (a substitute answering
        # only some runs' base prompt must not shift every other run's deltas); views
        # without a run id fall back to the profile's modal base count.
        run_base: dict[Any, int] = {}
        for v in views:
            if (
                v.ok
                and v.prompt_tokens is not None
                and is_tokenizer_base(v.probe_id)
                and probes[v.probe_hash].category == "tokenizer"
            ):
                run_base.setdefault(v.run_id, v.prompt_tokens)
        modal = profile.base_tokens()
        for v in views:
            s = probes[v.probe_hash]
            base = run_base.get(v.run_id, modal) if v.run_id is not None else modal
            if (
                v.ok
                and base is not None
                and s.category == "tokenizer"
                and not is_tokenizer_base(v.probe_id)
                and v.prompt_tokens is not None
            ):
                s.deltas.setdefault(v.vars_key, []).append(v.prompt_tokens - base)
        return profile


def _provenance(
    observations: Iterable[Any],
    gateway: str,
    model: str,
    source: str,
    suite: str | None,
    note: str,
    views: list[ObsView],
) -> Provenance:
    times = [
        t for t in (getattr(o, "started_at", None) for o in observations) if isinstance(t, datetime)
    ]
    return Provenance(
        gateway=gateway,
        model=model,
        source=source,
        created_at=utcnow().isoformat(),
        n_samples=sum(v.ok for v in views),
        n_failed=sum(not v.ok for v in views),
        window_start=min(times).isoformat() if times else None,
        window_end=max(times).isoformat() if times else None,
        suite=suite,
        note=note,
    )


def _add(s: ProbeSummary, v: ObsView) -> None:
    for feat, value in metadata_features(v).items():
        counts = s.metadata.setdefault(feat, {})
        counts[value] = counts.get(value, 0) + 1
    if s.category == "tokenizer":
        if v.prompt_tokens is None:
            s.missing_usage += 1
        else:
            s.prompt_tokens.append(v.prompt_tokens)
    elif s.category in ("categorical", "identity"):
        label = (
            categorical_label(v.content, v.vars)
            if s.category == "categorical"
            else identity_label(v.content)
        )
        s.answers[label] = s.answers.get(label, 0) + 1
        if s.category == "categorical":
            by_vars = s.answers_by_vars.setdefault(v.vars_key, {})
            by_vars[label] = by_vars.get(label, 0) + 1
        if len(s.texts) < MAX_TEXTS:
            s.texts.append(v.content[:MAX_TEXT_CHARS])
    elif s.category == "greedy":
        s.greedy.setdefault(v.vars_key, []).append(v.content[: MAX_TEXT_CHARS * 4])
    elif s.category == "speed":
        if v.output_tps is not None and len(s.tps) < MAX_SPEED:
            s.tps.append(float(v.output_tps))
        if v.first_token_s is not None and len(s.ttft) < MAX_SPEED:
            s.ttft.append(float(v.first_token_s))
