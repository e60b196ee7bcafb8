"""Authenticity monitoring: per-response evidence, e-detectors over runs, typed verdicts.

In-process fakes of stored runs (the real engine is in `test_authenticity_peer.py`).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from aione_probe.analysis.run import analyse
from aione_probe.analysis.sequential import DetectorBank, EDetector
from aione_probe.analysis.stats import acat
from aione_probe.config import AuthenticityConfig, Config, GatewayConfig, ReferencePair, SuiteConfig
from aione_probe.errors import FailureKind
from aione_probe.fingerprint.evidence import (
    EvidenceSettings,
    greedy_null,
    run_evidence,
    share_estimate,
    step_calibrator,
)
from aione_probe.fingerprint.verdict import AuthenticityVerdict
from aione_probe.store import ObservationRecord, Store
from aione_probe.suites import load_suite
from aione_probe.types import Observation, Usage

ROOT = Path(__file__).resolve().parent.parent
SUITE = load_suite(ROOT / "probes" / "fingerprint.toml")
CATS = {p.id: p.category for p in SUITE.probes}
T0 = datetime(2026, 3, 1, tzinfo=UTC)
GREEDY = ("greedy-continue", "greedy-define", "greedy-primes", "greedy-title")


def _answer(probe: str, seed: int, sample: int, model: str) -> str:
    """Temperature-0 answers of a toy engine: warm repeats agree, models differ."""
    if model == "ref":
        return f"{probe} answer for run {seed}: a steady, careful reply that repeats"
    return f"zz {model} {probe} {seed} unrelated words here"


def _run(seed: int, model: str = "ref", *, usage: bool = True, fail: bool = False, route=None):
    """One fingerprint run's final observations (namespace rows like the store's)."""
    out = []
    for inst in SUITE.expand(seed, cheap_only=True):
        pid = inst.probe.id
        who = route(pid, inst.sample) if route else model
        tokens = 30 + (len(str(inst.vars.get("s", ""))) if pid.startswith("tok") else 0)
        if who != "ref" and pid == "tok-cjk":
            tokens += 5  # another tokenizer counts the canary differently
        out.append(
            SimpleNamespace(
                run_id=seed,
                probe_id=pid,
                probe_hash=inst.probe.hash,
                sample=inst.sample,
                vars=inst.vars,
                failure="http_5xx" if fail else "ok",
                content="" if fail else _answer(pid, seed, inst.sample, who),
                prompt_tokens=tokens if usage else None,
                completion_tokens=8,
                stream=False,
            )
        )
    return out


def _null(n: int = 30):
    return greedy_null([_run(s) for s in range(100, 100 + n)], CATS)


def _ev(target, ref, seed: int = 1, null=None):
    return run_evidence(
        target, ref, _null() if null is None else null, run_id=seed, reference_run_id=seed,
        started_at="", categories=CATS,
    )  # fmt: skip


def test_honest_run_is_plausible_and_a_swap_is_at_the_floor() -> None:
    honest = _ev(_run(1), _run(1))
    assert honest.status == "ok" and all(b["p_value"] == 1.0 for b in honest.blocks)
    assert honest.log_e_by_share["1.0"] < 0  # evidence for the claim, not against
    swap = _ev(_run(1, "other"), _run(1))
    assert all(b["implausible"] for b in swap.blocks)
    assert swap.log_e_by_share["1.0"] > 8  # four blocks at g = 0.5 / floor, plus tokenizer
    assert swap.signals["tokenizer"]["p_value"] < 0.01  # one canary of three differs


def test_step_calibrator_integrates_to_one() -> None:
    floor = 0.05
    assert step_calibrator(0.01, floor) * floor + step_calibrator(0.5, floor) * (1 - floor) == (
        pytest.approx(1.0)
    )


def test_caching_relay_counts_a_repeated_answer_once() -> None:
    # A relay that caches identical requests returns one answer for both warm samples:
    # the block's p-value is the smallest times the number of answers (Bonferroni), never
    # two independent pieces of evidence.
    target = _run(1, "other")
    cached = {}
    for o in target:
        key = (o.probe_hash, str(o.vars))
        o.content = cached.setdefault(key, o.content)
    ev = _ev(target, _run(1))
    assert len(ev.blocks) == len(GREEDY)
    assert all(b["n"] == 3 and b["p_value"] == pytest.approx(b["floor"]) for b in ev.blocks)


def test_a_routed_first_request_is_evidence_but_not_share() -> None:
    # A router that sends only each greedy prompt's first (cold) request elsewhere: every
    # block is at its floor through its cold answer, while the share estimate, which counts
    # warm answers only, sees nothing substituted.
    def route(pid: str, sample: int) -> str:
        return "other" if pid.startswith("greedy") and sample == 0 else "ref"

    ev = _ev(_run(1, route=route), _run(1))
    assert len(ev.blocks) == len(GREEDY)
    assert all(b["implausible"] and b["n"] == 3 and not b["warm_implausible"] for b in ev.blocks)
    est = share_estimate([ev])
    assert est is not None and est.estimate == 0.0
    # Without a cold null yet, cold answers wait (and say so); warm ones are still scored.
    warm_only = {k: v for k, v in _null().items() if not k.endswith("|cold")}
    ev = _ev(_run(1, route=route), _run(1), null=warm_only)
    assert all(b["n"] == 2 and not b["implausible"] for b in ev.blocks)
    assert "cold answers unscored" in ev.signals["greedy"]["note"]


def test_reference_down_pauses_evidence() -> None:
    ev = _ev(_run(1), _run(1, fail=True))
    assert ev.status == "reference_error" and "paused" in ev.note


def test_missing_usage_disables_only_the_tokenizer() -> None:
    ev = _ev(_run(1, usage=False), _run(1))
    assert ev.signals["tokenizer"]["status"] == "disabled"
    assert "usage.prompt_tokens" in ev.signals["tokenizer"]["note"]
    assert ev.signals["greedy"]["status"] == "ok" and ev.status == "ok"


def test_too_little_reference_history_is_insufficient_with_what_is_needed() -> None:
    ev = _ev(_run(1, usage=False), _run(1), null=_null(2))
    assert ev.status == "insufficient"
    assert "more repeated greedy answers" in ev.needed


def test_share_estimate_covers_the_routed_share() -> None:
    import random

    rng = random.Random(3)

    def route(pid: str, sample: int) -> str:  # a relay routing 30 % of requests elsewhere
        return "other" if rng.random() < 0.3 else "ref"

    evs = [_ev(_run(s, route=route), _run(s), seed=s) for s in range(40)]
    est = share_estimate(evs)
    assert est is not None and est.ci_low <= 0.3 <= est.ci_high


def test_acat_is_not_disabled_by_a_p_value_of_one() -> None:
    assert acat([1e-6, 1.0]) < 1e-4
    assert acat([1.0, 1.0]) > 0.5


def test_detector_state_round_trips() -> None:
    det = EDetector(100.0)
    det.extend([3.0, 0.5, 10.0])
    again = EDetector.from_state(det.to_state())
    assert again.log_stat == det.log_stat and again.runs == 3 and not again.alarm
    bank = DetectorBank(50.0, ("1.0", "0.1"))
    bank.update_log({"1.0": math.log(200.0), "0.1": 0.0})
    assert bank.member_threshold == 100.0 and bank.alarm and bank.alarmed_at == 1
    assert DetectorBank.from_state(bank.to_state(), 50.0, ("1.0", "0.1")).alarm
    # New banks are Shiryaev–Roberts; a stored e-CUSUM state stays an e-CUSUM.
    assert bank.members["1.0"].kind == "shiryaev_roberts"
    old = {"1.0": EDetector(100.0).to_state()}
    assert DetectorBank.from_state(old, 50.0, ("1.0",)).members["1.0"].kind == "cusum"


# --- the analysis pass over a real store ------------------------------------------------------


def _config(tmp_path: Path, **auth) -> Config:
    return Config(
        path=tmp_path / "aione.toml",
        probes_dir=str(ROOT / "probes"),
        gateways=[
            GatewayConfig(name=g, base_url="http://127.0.0.1:9/v1", auth="none") for g in ("t", "r")
        ],
        suites=[SuiteConfig(file="fingerprint.toml", interval=7200, cheap_only=True)],
        storage={"url": f"sqlite:///{tmp_path / 'store.db'}"},
        authenticity=AuthenticityConfig(
            references=[ReferencePair(gateway="t", model="m", reference_gateway="r")], **auth
        ),
    )


def _store_run(store: Store, gateway: str, rows, seed: int, at: datetime) -> int:
    store.ensure_target(gateway, "http://127.0.0.1:9/v1", "openai", "m")
    rid = store.start_run(gateway, "m", "fingerprint", 1, seed, True, started_at=at)
    records = []
    for o in rows:
        usage = Usage(prompt_tokens=o.prompt_tokens, completion_tokens=o.completion_tokens)
        obs = Observation(
            gateway=gateway, model="m", protocol="openai", stream=False, attempt=1,
            started_at=at, failure=FailureKind(o.failure), content=o.content, usage=usage,
        )  # fmt: skip
        records.append(ObservationRecord(obs, "fingerprint", o.probe_id, o.probe_hash,
                                         o.sample, o.vars))  # fmt: skip
    store.finish_run(rid, "ok", None, records, [], finished_at=at + timedelta(seconds=30))
    return rid


@pytest.fixture
def monitored(tmp_path: Path):
    cfg = _config(tmp_path)
    store = Store(cfg.storage_url())
    store.migrate()
    for i in range(30):  # the reference's stored history: its own repeat spread
        _store_run(store, "r", _run(100 + i), 100 + i, T0 + timedelta(minutes=i))
    yield cfg, store
    store.close()


def _overall(store: Store, comparison: str = "overall") -> AuthenticityVerdict:
    rows = [
        v
        for v in store.latest_verdicts("authenticity")
        if v.comparison == comparison and v.gateway == "t"
    ]
    assert len(rows) == 1
    return AuthenticityVerdict.from_row(rows[0])


def test_a_swap_is_substituted_and_reevaluation_never_counts_a_run_twice(monitored) -> None:
    cfg, store = monitored
    start = T0 + timedelta(days=1)
    for j in range(3):
        at = start + timedelta(hours=2 * j)
        _store_run(store, "r", _run(j), j, at)
        _store_run(store, "t", _run(j, "other"), j, at)
        analyse(store, cfg, at + timedelta(minutes=5))
        analyse(store, cfg, at + timedelta(minutes=6))  # re-evaluation: no new run
    ref = _overall(store, "reference:r/m")
    assert ref.kind == "substituted" and len(ref.history) == 3
    assert [h[1] for h in ref.history] == sorted({h[1] for h in ref.history})
    stat = ref.log_evidence
    analyse(store, cfg, start + timedelta(hours=6))
    assert _overall(store, "reference:r/m").log_evidence == stat
    overall = _overall(store)
    assert overall.kind == "substituted" and overall.threshold > 1e5
    assert overall.budget["false_alarms_per_year"] == 0.04
    # The detector is rebuilt from the stored per-run log e-values alone.
    bank = DetectorBank(ref.threshold, tuple(str(s) for s in EvidenceSettings().mixtures))
    for run in ref.runs:
        bank.update_log(run["log_e_by_share"])
    assert bank.log_stat == pytest.approx(stat)


def test_an_honest_target_is_authentic_and_a_down_reference_is_reference_error(
    monitored,
) -> None:
    cfg, store = monitored
    start = T0 + timedelta(days=1)
    for j in range(2):
        at = start + timedelta(hours=2 * j)
        _store_run(store, "r", _run(j), j, at)
        _store_run(store, "t", _run(j), j, at)
    analyse(store, cfg, start + timedelta(hours=3))
    assert _overall(store).kind == "authentic"
    at = start + timedelta(hours=4)
    _store_run(store, "r", _run(2, fail=True), 2, at)
    _store_run(store, "t", _run(2), 2, at)
    analyse(store, cfg, at + timedelta(minutes=5))
    v = _overall(store, "reference:r/m")
    assert v.kind == "reference_error" and "paused" in v.reason
    assert len(v.history) == 2  # the failed run added no evidence


def test_no_reference_and_no_baseline_is_insufficient_with_what_is_needed(tmp_path) -> None:
    cfg = _config(tmp_path).model_copy(update={"authenticity": AuthenticityConfig()})
    store = Store(cfg.storage_url())
    store.migrate()
    _store_run(store, "t", _run(1), 1, T0)
    analyse(store, cfg, T0 + timedelta(minutes=5))
    v = _overall(store)
    assert v.kind == "insufficient_data" and "11 more fingerprint runs" in v.needed


def test_migration_moves_packed_comparisons_out_of_suite(tmp_path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    store.migrate()
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE verdict DROP COLUMN comparison"))
        # Back to schema 3 (before the comparison column), whatever the current version.
        conn.execute(text("UPDATE schemaversion SET version = 3"))
        for suite in ("baseline:7", "reference:r/m", None):
            conn.execute(
                text(
                    "INSERT INTO verdict (kind, gateway, model, suite, created_at, verdict, n) "
                    "VALUES ('authenticity', 't', 'm', :s, '2026-01-01 00:00:00', 'authentic', 0)"
                ),
                {"s": suite},
            )
    store.migrate()
    got = sorted((v.suite, v.comparison) for v in store.verdicts(kind="authenticity"))
    assert got == [(None, "baseline"), (None, "overall"), (None, "reference:r/m")]
