"""Authenticity monitoring of stored runs: per-run evidence, e-detectors, typed verdicts.

For each (gateway, model) every comparison that applies is monitored run by run:

- **reference** (``[[authenticity.references]]``): each target run is paired with the
  reference run of the same seed (the service renders both from one schedule slot) and
  scored per response by `fingerprint.evidence.run_evidence`, whose tolerances come from
  the reference compared with itself (its stored history). Response metadata is never
  compared with a reference (relays rewrite it legitimately) and speed only counts when the
  target is *faster* than the reference allows (window-level, shown, never paging).
- **baseline** (trust on first use, pinned only after ``baseline_min_runs`` runs over
  ``baseline_min_span``): each later run is compared with the pinned fingerprint by the
  window-level tests of `fingerprint.audit` (metadata included: a target's own metadata
  should not change), whose global p-value becomes the run's e-value. A baseline sees
  change only: a target substituted before its baseline window looks authentic to it.
- **profile**: the same against a fingerprint imported for this model.

Each run contributes one e-value per assumed substituted share to the comparison's bank of
Shiryaev–Roberts e-detectors (`analysis.sequential.DetectorBank`). The detectors' state and
the per-run evidence are stored with the verdict; the next evaluation continues from the
stored state with the runs that came after the last counted one, so re-evaluating as often
as the service likes never counts a run twice, and the state can be rebuilt from the stored
per-run log e-values alone. The threshold comes from the budget: ``false_alarms_per_year``
shared by the target's comparisons over ``runs_per_year`` runs (`threshold_for_budget`).
``substituted`` when the statistic crosses it (sticky until a re-pin), ``suspect`` above
the looser ``suspect_alarms_per_year`` threshold, ``reference_error`` when the latest
reference run failed (evidence paused), ``insufficient_data`` with what is missing.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from aione_probe.analysis.sequential import DetectorBank, threshold_for_budget
from aione_probe.config import Config
from aione_probe.fingerprint import Profile, compare_profiles
from aione_probe.fingerprint.evidence import (
    EvidenceSettings,
    RunEvidence,
    calibrated_e,
    greedy_null,
    run_evidence,
    share_estimate,
)
from aione_probe.fingerprint.features import FAMILIES
from aione_probe.fingerprint.verdict import SEVERITY, AuthenticityVerdict, VerdictKind
from aione_probe.store import Store
from aione_probe.suites import load_suite

log = logging.getLogger(__name__)

KIND_BASELINE = "authenticity"
KIND_PROFILE = "profile"
OVERALL = "overall"
#: Runs of the detector history kept in a verdict (the evidence-over-time chart).
HISTORY_KEPT = 2000
#: How long a target run waits for its reference run before it counts as reference_error.
REFERENCE_GRACE = timedelta(hours=1)
#: Runs per year assumed when the fingerprint suite runs on a cron schedule.
DEFAULT_RUNS_PER_YEAR = 4380.0
_YEAR_S = 365.25 * 86400


@dataclass(frozen=True)
class Budget:
    """How a comparison's thresholds were derived."""

    false_alarms_per_year: float
    suspect_alarms_per_year: float
    runs_per_year: float
    comparisons: int

    @property
    def threshold(self) -> float:
        """The e-detector threshold for ``substituted``."""
        return threshold_for_budget(
            self.false_alarms_per_year / self.comparisons, self.runs_per_year
        )

    @property
    def suspect_threshold(self) -> float:
        """The looser threshold for ``suspect``."""
        return threshold_for_budget(
            self.suspect_alarms_per_year / self.comparisons, self.runs_per_year
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored with each verdict)."""
        return {
            "false_alarms_per_year": self.false_alarms_per_year,
            "suspect_alarms_per_year": self.suspect_alarms_per_year,
            "runs_per_year": self.runs_per_year,
            "comparisons": self.comparisons,
            "false_alarms_per_quarter": self.false_alarms_per_year / 4,
        }


def fingerprint_suites(cfg: Config) -> dict[str, dict[str, str]]:
    """Configured suites with authenticity probes: job name → probe id → family (from
    each probe's TOML ``category``, never from its id)."""
    out: dict[str, dict[str, str]] = {}
    for sc in cfg.suites:
        path = cfg.suite_path(sc)
        try:
            suite = load_suite(Path(path))
        except Exception:  # a broken file is reported by config validation, not here
            continue
        cats = {p.id: p.category for p in suite.probes if p.category in FAMILIES}
        if cats:
            out[sc.job_name] = cats
    return out


def runs_per_year(cfg: Config, suites: Sequence[str]) -> float:
    """Runs a year the thresholds assume: configured, or from the suite's interval."""
    if cfg.authenticity.runs_per_year:
        return cfg.authenticity.runs_per_year
    intervals = [s.interval for s in cfg.suites if s.job_name in suites and s.interval]
    return _YEAR_S / min(intervals) if intervals else DEFAULT_RUNS_PER_YEAR


def pin_baseline(store: Store, gateway: str, model: str, since: datetime, until: datetime) -> int:
    """Pin the fingerprint of (gateway, model) over [since, until) as its baseline."""
    obs = store.observations(gateway, model, since=since, until=until, final_only=True)
    profile = Profile.from_observations(obs, gateway=gateway, model=model, source="baseline")
    return store.pin_baseline(
        KIND_BASELINE, gateway, model, None, since, until, "pinned", profile.to_dict()
    )


def audit_target(store: Store, cfg: Config, gateway: str, model: str, now: datetime) -> str:
    """Monitor every comparison of one target; store the verdicts; return the overall."""
    suites = fingerprint_suites(cfg)
    categories = {pid: cat for cats in suites.values() for pid, cat in cats.items()}
    target_runs = _runs(store, gateway, model, suites)
    _maybe_pin(store, cfg, gateway, model, target_runs, categories)
    references = [
        r for r in cfg.authenticity.references if (r.gateway, r.model) == (gateway, model)
    ]
    baseline = store.active_baseline(KIND_BASELINE, gateway, model, None)
    profiles = [b for b in store.baselines(kind=KIND_PROFILE, active_only=True) if b.model == model]
    k = len(references) + len(profiles) + (baseline is not None)
    budget = Budget(
        cfg.authenticity.false_alarms_per_year,
        cfg.authenticity.suspect_alarms_per_year,
        runs_per_year(cfg, list(suites)),
        max(k, 1),
    )
    previous = {
        v.comparison: AuthenticityVerdict.from_row(v)
        for v in store.latest_verdicts("authenticity")
        if (v.gateway, v.model) == (gateway, model)
    }
    verdicts: list[AuthenticityVerdict] = []
    for ref in references:
        ref_model = ref.reference_model or ref.model
        label = f"reference:{ref.reference_gateway}/{ref_model}"
        ref_runs = _runs(store, ref.reference_gateway, ref_model, suites)
        verdicts.append(
            _monitor(
                store, cfg, gateway, model, label, budget, previous.get(label), target_runs,
                _ReferenceScorer(store, cfg, ref_runs, categories), now,
            )
        )  # fmt: skip
    if baseline is not None:
        profile = Profile.from_dict(baseline.data or {})
        after = [r for r in target_runs if r.started_at >= baseline.window_end]
        prev = previous.get("baseline")
        if prev is not None and prev.baseline_id != baseline.id:
            prev = None  # re-pinned: the detector starts again
        v = _monitor(
            store, cfg, gateway, model, "baseline", budget, prev, after,
            _ProfileScorer(store, profile, categories, metadata=True), now,
            baseline_id=baseline.id,
            note="A baseline detects change after its window "
            f"({baseline.window_start:%Y-%m-%d %H:%M} to {baseline.window_end:%Y-%m-%d %H:%M} "
            "UTC); a substitution already in place when it was pinned looks authentic to it.",
        )  # fmt: skip
        verdicts.append(v)
    for prof in profiles:
        label = f"profile:{prof.id}"
        verdicts.append(
            _monitor(
                store, cfg, gateway, model, label, budget, previous.get(label), target_runs,
                _ProfileScorer(store, Profile.from_dict(prof.data or {}), categories,
                               metadata=False), now,
                baseline_id=prof.id,
            )
        )  # fmt: skip
    if not verdicts:
        needed = _baseline_needed(cfg, target_runs)
        overall = AuthenticityVerdict(
            kind=VerdictKind.insufficient_data,
            gateway=gateway,
            model=model,
            comparison=OVERALL,
            reason="no reference configured and no baseline pinned yet",
            log_evidence=-math.inf,
            threshold=budget.threshold,
            suspect_threshold=budget.suspect_threshold,
            budget=budget.to_dict(),
            needed=needed,
        )
        store.save_verdict(**overall.record())
        return str(overall.kind)
    for v in verdicts:
        store.save_verdict(**v.record())
    worst = min(verdicts, key=lambda v: SEVERITY.index(v.kind))
    overall = AuthenticityVerdict(
        kind=worst.kind,
        gateway=gateway,
        model=model,
        comparison=OVERALL,
        reason=f"{worst.comparison}: {worst.reason}",
        log_evidence=worst.log_evidence,
        threshold=worst.threshold,
        suspect_threshold=worst.suspect_threshold,
        budget=budget.to_dict(),
        n=worst.n,
        needed=worst.needed,
        history=worst.history,
        signals=worst.signals,
        share=worst.share,
        baseline_id=worst.baseline_id,
        note=f"worst of {len(verdicts)} comparison(s): "
        + ", ".join(f"{v.comparison}={v.kind}" for v in verdicts),
    )
    store.save_verdict(**overall.record())
    return str(overall.kind)


# --- runs ---------------------------------------------------------------------------------


def _runs(store: Store, gateway: str, model: str, suites: Mapping[str, Any]) -> list[Any]:
    runs = [
        r
        for name in suites
        for r in store.runs(gateway, model, name)
        if r.status in ("ok", "partial", "failed")
    ]
    return sorted(runs, key=lambda r: (r.started_at, r.id))


def _observations(store: Store, run: Any) -> list[Any]:
    return store.observations(run_id=run.id, final_only=True)


def _maybe_pin(
    store: Store,
    cfg: Config,
    gateway: str,
    model: str,
    runs: Sequence[Any],
    categories: Mapping[str, str],
) -> None:
    """Trust on first use, once enough runs over enough time exist (and never again)."""
    if store.active_baseline(KIND_BASELINE, gateway, model, None) is not None:
        return
    ok = [r for r in runs if r.status in ("ok", "partial")]
    if len(ok) < cfg.authenticity.baseline_min_runs:
        return
    first = ok[: cfg.authenticity.baseline_min_runs]
    span = (first[-1].started_at - first[0].started_at).total_seconds()
    if span < cfg.authenticity.baseline_min_span:
        return
    obs = [o for r in first for o in _observations(store, r)]
    profile = Profile.from_observations(
        obs, gateway=gateway, model=model, source="baseline", categories=categories
    )
    if not profile.probes:
        return
    end = first[-1].started_at + timedelta(seconds=1)
    store.pin_baseline(
        KIND_BASELINE, gateway, model, None, first[0].started_at, end,
        f"auto: trust on first use ({len(first)} runs over {span / 3600:.0f} h)",
        profile.to_dict(),
    )  # fmt: skip
    log.info("pinned authenticity baseline for %s/%s (trust on first use)", gateway, model)


def _baseline_needed(cfg: Config, runs: Sequence[Any]) -> str:
    ok = [r for r in runs if r.status in ("ok", "partial")]
    want = cfg.authenticity.baseline_min_runs
    span_h = cfg.authenticity.baseline_min_span / 3600
    if not ok:
        return f"no fingerprint run yet; a baseline needs {want} runs over {span_h:.0f} h"
    have_h = (ok[-1].started_at - ok[0].started_at).total_seconds() / 3600
    return (
        f"{max(0, want - len(ok))} more fingerprint runs and {max(0.0, span_h - have_h):.1f} "
        f"more hours before a baseline is pinned ({want} runs over {span_h:.0f} h), or "
        "configure a trusted reference"
    )


# --- scorers: one run's evidence against one comparison ---------------------------------------


class _ReferenceScorer:
    """Pairs a target run with the reference run of the same seed; per-response evidence."""

    def __init__(
        self, store: Store, cfg: Config, ref_runs: Sequence[Any], categories: Mapping[str, str]
    ) -> None:
        self.store = store
        self.history = timedelta(seconds=cfg.authenticity.history)
        self.ref_runs = ref_runs
        # Fleet mode runs one slot in several locations with one seed: a target run is
        # paired with the reference run of its own location when there is one, else with
        # any location's (locations are pooled: the served model should be the same).
        self.by_seed: dict[tuple[str, int | None, str | None], Any] = {}
        for r in ref_runs:
            self.by_seed.setdefault((r.suite, r.seed, getattr(r, "location", None)), r)
            self.by_seed.setdefault((r.suite, r.seed, "*"), r)
        self.categories = categories
        self.settings = EvidenceSettings(min_null=cfg.authenticity.min_null_pairs)
        self._obs: dict[int, list[Any]] = {}

    def _obs_of(self, run: Any) -> list[Any]:
        if run.id not in self._obs:
            self._obs[run.id] = _observations(self.store, run)
        return self._obs[run.id]

    def _paired(self, run: Any) -> Any:
        own = self.by_seed.get((run.suite, run.seed, getattr(run, "location", None)))
        return own if own is not None else self.by_seed.get((run.suite, run.seed, "*"))

    def ready(self, run: Any, now: datetime) -> bool:
        return self._paired(run) is not None or now - run.started_at > REFERENCE_GRACE

    def score(self, run: Any) -> RunEvidence:
        ref = self._paired(run)
        target_obs = _observations(self.store, run)
        if ref is None:
            return run_evidence(
                target_obs, [], {}, run_id=run.id, reference_run_id=None,
                started_at=run.started_at.isoformat(), categories=self.categories,
            )  # fmt: skip
        # The reference's stored history up to this run (including its own paired run):
        # fixed once the run is scored, so the stored evidence never changes.
        until = max(run.started_at, ref.started_at)
        since = until - self.history
        past = [
            self._obs_of(r)
            for r in self.ref_runs
            if r.suite == ref.suite and since <= r.started_at <= until
        ]
        return run_evidence(
            target_obs, self._obs_of(ref), greedy_null(past, self.categories),
            run_id=run.id, reference_run_id=ref.id, started_at=run.started_at.isoformat(),
            categories=self.categories, settings=self.settings,
        )  # fmt: skip


class _ProfileScorer:
    """One run against a pinned or imported fingerprint: the window tests' global p."""

    def __init__(
        self, store: Store, profile: Profile, categories: Mapping[str, str], *, metadata: bool
    ) -> None:
        self.store = store
        self.profile = profile
        self.categories = categories
        self.metadata = metadata

    def ready(self, run: Any, now: datetime) -> bool:
        return True

    def score(self, run: Any) -> RunEvidence:
        obs = _observations(self.store, run)
        ev = RunEvidence(run.id, None, run.started_at.isoformat(), "ok")
        target = Profile.from_observations(
            obs, gateway=run.gateway, model=run.model, source="target", categories=self.categories
        )
        result = compare_profiles(
            target, self.profile, alpha=0.01, seed=run.id or 0, n_perm=1999,
            metadata=self.metadata,
        )  # fmt: skip
        verdict = result.verdict
        if verdict.verdict == VerdictKind.insufficient_data:
            ev.status = "insufficient"
            ev.needed = verdict.reason
            return ev
        ev.e_value = calibrated_e(verdict.score)
        ev.signals = {
            s.signal: {"status": s.status, "p_value": s.p_value, "note": s.note}
            for s in verdict.signals
        }
        ev.signals["window_tests"] = {"status": "ok", "p_value": verdict.score, "note": ""}
        return ev


# --- the monitor ------------------------------------------------------------------------------


def _monitor(
    store: Store,
    cfg: Config,
    gateway: str,
    model: str,
    comparison: str,
    budget: Budget,
    previous: AuthenticityVerdict | None,
    runs: Sequence[Any],
    scorer: _ReferenceScorer | _ProfileScorer,
    now: datetime,
    *,
    baseline_id: int | None = None,
    note: str = "",
) -> AuthenticityVerdict:
    """Continue one comparison's detector with the runs after the last counted one."""
    threshold, suspect = budget.threshold, budget.suspect_threshold
    state = previous.monitor if previous is not None else {}
    names = tuple(str(share) for share in EvidenceSettings().mixtures)
    det = DetectorBank.from_state(state.get("detectors") or {}, threshold, names)
    history = list(previous.history) if previous is not None else []
    window_start = now - timedelta(seconds=cfg.authenticity.window)
    kept = {
        int(d["run_id"]): RunEvidence.from_dict(d)
        for d in (previous.runs if previous is not None else ())
    }
    last = state.get("last_run")  # [started_at iso, run id] of the last run scored
    for run in runs:
        key = [run.started_at.isoformat(), run.id]
        if last is not None and key <= last:
            continue
        if not scorer.ready(run, now):
            break  # keep run order: wait for this run's reference instead of skipping it
        ev = scorer.score(run)
        kept[run.id] = ev
        last = key
        if ev.status == "ok":
            det.update_log(ev.log_e_by_share or dict.fromkeys(names, ev.log_e))
            history.append((key[0], run.id, ev.log_e, det.log_stat))
    window = [
        e for rid, e in sorted(kept.items()) if datetime.fromisoformat(e.started_at) >= window_start
    ]
    counted = [e for e in window if e.status == "ok"]
    latest = window[-1] if window else None
    n = sum(int(b.get("n", 0)) for e in counted for b in e.blocks)
    share = share_estimate(counted)
    if det.alarm:
        kind = VerdictKind.substituted
        reason = (
            f"accumulated evidence crossed the threshold at run {det.alarmed_at} "
            f"(e = {_fmt(det.log_stat)} ≥ {threshold:.3g})"
        )
    elif det.log_stat >= math.log(suspect):
        kind = VerdictKind.suspect
        reason = f"evidence e = {_fmt(det.log_stat)} above the suspect threshold {suspect:.3g}"
    elif latest is not None and latest.status == "reference_error":
        kind = VerdictKind.reference_error
        reason = latest.note
    elif not counted:
        kind = VerdictKind.insufficient_data
        reason = "no run with comparable evidence in the window"
    else:
        kind = VerdictKind.authentic
        reason = (
            f"{len(counted)} run(s) scored; evidence e = {_fmt(det.log_stat)} below "
            f"{suspect:.3g} (suspect) and {threshold:.3g} (substituted)"
        )
    needed = ""
    if kind == VerdictKind.insufficient_data:
        needed = next((e.needed for e in reversed(window) if e.needed), "") or (
            "a fingerprint run of the target paired with one of the reference"
        )
    return AuthenticityVerdict(
        kind=kind,
        gateway=gateway,
        model=model,
        comparison=comparison,
        reason=reason,
        log_evidence=det.log_stat,
        threshold=threshold,
        suspect_threshold=suspect,
        budget=budget.to_dict(),
        n=n,
        needed=needed,
        runs=tuple(e.to_dict() for e in window),
        history=tuple(history[-HISTORY_KEPT:]),
        monitor={"detectors": det.to_state(), "last_run": last},
        signals=tuple(_signal_summary(window)),
        share=share.to_dict() if share else None,
        baseline_id=baseline_id,
        note=note,
    )


def _signal_summary(window: Sequence[RunEvidence]) -> list[dict[str, Any]]:
    """Per family over the window: runs scored, summed log e-value, smallest p, last note."""
    acc: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"runs": 0, "log_e": 0.0, "p_min": None, "status": "n/a", "note": ""}
    )
    for ev in window:
        for name, sig in ev.signals.items():
            a = acc[name]
            a["status"] = sig.get("status", "n/a")
            a["note"] = sig.get("note", "") or a["note"]
            if sig.get("status") == "ok":
                a["runs"] += 1
                if sig.get("e_value"):
                    a["log_e"] += math.log(sig["e_value"])
                p = sig.get("p_min", sig.get("p_value"))
                if p is not None:
                    a["p_min"] = p if a["p_min"] is None else min(a["p_min"], p)
    return [{"signal": k, **v} for k, v in sorted(acc.items())]


def _fmt(log_stat: float) -> str:
    if log_stat == -math.inf:
        return "0"
    return f"{math.exp(log_stat):.3g}" if log_stat < 700 else "inf"
