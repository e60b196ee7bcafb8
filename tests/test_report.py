"""The HTML verification report: data from a real store, rendering, escaping, JSON export."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from aione_probe.errors import FailureKind
from aione_probe.fingerprint.verdict import AuthenticityVerdict, VerdictKind
from aione_probe.report import build_report_data, render_report
from aione_probe.report.model import category_of, slug
from aione_probe.report.svg import Series, bar_chart, column_chart, line_chart
from aione_probe.store import CheckRecord, ObservationRecord, Store
from aione_probe.types import CheckResult, CheckValue, Observation, Usage

HOSTILE = (
    "<script>document.title='pwned';window.__pwned=1</script>"
    "<img src=x onerror=\"document.title='pwned';window.__pwned=2\">"
)
HOSTILE_LABEL = "<svg onload=alert(1)>"
DAY0 = datetime(2025, 3, 1, tzinfo=UTC)
SINCE, UNTIL = DAY0, DAY0 + timedelta(days=3)
GOOD = ("gw-a", "gpt-4o")
ODD = ("gw-b", "meta/llama 3")


def _obs(target: tuple[str, str], at: datetime, i: int, **kw: object) -> Observation:
    values: dict[str, object] = {
        "gateway": target[0],
        "model": target[1],
        "stream": True,
        "started_at": at,
        "response_id": f"chatcmpl-{target[0]}-{at:%d}-{i}",
        "response_model": target[1],
        "content": "391",
        "finish_reason": "stop",
        "usage": Usage(prompt_tokens=20, completion_tokens=3, total_tokens=23, raw={}),
        "first_token_s": 0.1 + 0.01 * i,
        "end_s": 0.5 + 0.02 * i,
    }
    values.update(kw)
    return Observation(**values)  # type: ignore[arg-type]


def populate(store: Store) -> dict[str, object]:
    """Three days of runs for two targets; returns the values the report must reproduce."""
    expected: dict[str, object] = {"ttft": [], "cost": 0.0, "final": 0, "final_ok": 0}
    for day in range(3):
        at = DAY0 + timedelta(days=day, hours=6)
        for target in (GOOD, ODD):
            run_id = store.start_run(*target, "golden", 1, 7, True, started_at=at)
            observations: list[ObservationRecord] = []
            checks: list[CheckRecord] = []
            for i in range(10):
                obs = _obs(target, at + timedelta(seconds=i), i)
                if target == GOOD and day == 2 and i == 9:
                    obs = _obs(target, at + timedelta(seconds=i), i, content=HOSTILE)
                probe = "arith-mul-01" if i % 2 else "logic-order-02"
                observations.append(
                    ObservationRecord(obs, "golden", probe, f"hash{probe[:4]}", cost=0.001)
                )
                category = HOSTILE_LABEL if probe.startswith("logic") else None
                value = CheckValue.failed if i == 9 else CheckValue.passed
                meta = {"category": category} if category else {}
                checks.append(
                    CheckRecord(
                        CheckResult("numeric", value, answer=obs.content, metadata=meta),
                        len(observations) - 1,
                        probe,
                        f"hash{probe[:4]}",
                    )
                )
                if target == GOOD:
                    expected["ttft"].append(obs.first_token_s)  # type: ignore[union-attr]
            if target == GOOD:
                retry = _obs(target, at, 99, failure=FailureKind.rate_limited, content="")
                observations.append(
                    ObservationRecord(retry, "golden", "arith-mul-01", "hasharit", final=False)
                )
                checks.append(
                    CheckRecord(
                        CheckResult(
                            "finish_reason",
                            CheckValue.failed,
                            answer="length",
                            expected="stop",
                            explanation="finish_reason length where stop was expected",
                        ),
                        0,
                        "logic-order-02",
                        "hashlogi",
                    )
                )
                checks.append(
                    CheckRecord(
                        CheckResult(
                            "cache",
                            CheckValue.passed,
                            metadata={
                                "hit_ratio": 0.75,
                                "saved": 0.002,
                                "currency": "USD",
                                "verified": True,
                            },
                        ),
                        None,
                        "cache-long-01",
                        "hashcach",
                    )
                )
                expected["cost"] += 0.01  # type: ignore[operator]
                expected["final"] += 10  # type: ignore[operator]
                expected["final_ok"] += 10  # type: ignore[operator]
            store.finish_run(run_id, "ok", None, observations, checks, finished_at=at)
    late = DAY0 + timedelta(days=2, hours=12)
    budget = {"false_alarms_per_year": 0.04, "runs_per_year": 4380.0, "comparisons": 1}
    common = {"threshold": 109500.0, "suspect_threshold": 1095.0, "budget": budget}
    store.save_verdict(
        **AuthenticityVerdict(
            kind=VerdictKind.authentic,
            gateway=GOOD[0],
            model=GOOD[1],
            comparison="overall",
            reason="3 run(s) scored; evidence below both thresholds",
            log_evidence=0.7,
            n=120,
            signals=(
                {
                    "signal": "greedy",
                    "runs": 3,
                    "log_e": 1.6,
                    "p_min": 0.2011,
                    "status": "ok",
                    "note": HOSTILE_LABEL,
                },
            ),
            history=(("2025-03-01T00:00:00+00:00", 1, 0.2, 0.2),),
            share={"estimate": 0.0, "ci_low": 0.0, "ci_high": 0.12, "n": 12, "level": 0.95},
            **common,
        ).record(),
        created_at=late,
    )
    store.save_verdict(
        **AuthenticityVerdict(
            kind=VerdictKind.insufficient_data,
            gateway=ODD[0],
            model=ODD[1],
            comparison="overall",
            reason="no reference configured and no baseline pinned yet",
            log_evidence=float("-inf"),
            n=12,
            needed="11 more fingerprint runs before a baseline is pinned",
            **common,
        ).record(),
        created_at=late,
    )
    store.save_verdict(
        "drift",
        *GOOD,
        "golden",
        "drift",
        0.003,
        0.05,
        30,
        None,
        {
            "metrics": {
                "pass_rate": {
                    "test": "fisher_exact",
                    "statistic": 4.2,
                    "p_value": 0.003,
                    "n": 30,
                    "baseline_id": 9,
                    "result": "drift",
                }
            },
            # A probe id comes from the suite file, but the report escapes it like the rest.
            "probes_below_baseline": [
                {"probe": HOSTILE, "hash": "h1", "baseline": 0.95, "passed": 1, "scored": 6}
            ],
        },
        created_at=late,
    )
    return expected


@pytest.fixture
def store(tmp_path: Path) -> Store:
    st = Store(f"sqlite:///{tmp_path / 'probe.db'}")
    st.migrate()
    yield st
    st.close()


@pytest.fixture
def report(store: Store, tmp_path: Path) -> tuple[dict[str, object], Path, list[Path]]:
    expected = populate(store)
    data = build_report_data(store, since=SINCE, until=UNTIL)
    out = tmp_path / "report"
    return expected, out, render_report(data, out)


def _html(out: Path, name: str) -> str:
    return (out / name).read_text(encoding="utf-8")


def test_files_written_with_sanitised_page_names(report) -> None:
    _, out, written = report
    names = [p.name for p in written]
    assert names == ["index.html", "gw-a--gpt-4o.html", "gw-b--meta_llama_3.html", "report.json"]
    index = _html(out, "index.html")
    assert 'href="gw-b--meta_llama_3.html"' in index


def test_index_has_a_badge_per_target(report) -> None:
    _, out, _ = report
    index = _html(out, "index.html")
    rows = re.findall(r"<tr>\s*<td>(gw-[ab])</td>(.*?)</tr>", index, re.S)
    assert [gw for gw, _ in rows] == ["gw-a", "gw-b"]
    assert '<span class="badge good">authentic</span>' in rows[0][1]
    assert '<span class="badge bad">drift</span>' in rows[0][1]
    assert "insufficient data" in rows[1][1] and "n = 12" in rows[1][1]
    assert "No data for this period" not in index


def test_target_page_sections(report) -> None:
    _, out, _ = report
    page = _html(out, "gw-a--gpt-4o.html")
    for section in (
        "authenticity",
        "quality",
        "drift",
        "latency",
        "conformance",
        "cache",
        "spend",
        "errors",
        "models",
        "evidence",
    ):
        assert f'<section id="{section}">' in page, section
    assert "per-run e-values" in page and "0.2011" in page and "e-detector" in page
    assert "Substituted share of requests" in page
    assert "pass_rate" in page and "fisher_exact" in page
    assert "Probes below their baseline" in page and "95.0 % → 1/6" in page
    assert "rate_limited" in page  # error class of the retried attempt
    assert "finish_reason length where stop was expected" in page
    assert "75.0 %" in page and "0.0060 USD" in page  # cache: mean ratio, three runs saved
    assert page.count("<svg") >= 4


def test_sections_without_data_are_left_out(report) -> None:
    _, out, _ = report
    page = _html(out, "gw-b--meta_llama_3.html")
    assert '<section id="drift">' not in page and '<section id="cache">' not in page
    assert "<strong>Insufficient data</strong> for an authenticity verdict" in page
    assert "12 samples in hand; still needed: 11 more fingerprint runs" in page


def test_hostile_model_output_is_inert(report) -> None:
    _, out, written = report
    for path in written:
        text = path.read_text(encoding="utf-8")
        assert "<script" not in text.lower()
        assert "<img" not in text.lower()
        assert "<svg onload" not in text.lower()
    page = _html(out, "gw-a--gpt-4o.html")
    assert "&lt;script&gt;document.title=" in page
    assert "&lt;svg onload=alert(1)&gt;" in page  # category label inside the SVG bar chart


def test_empty_period_says_so(store: Store, tmp_path: Path) -> None:
    populate(store)
    data = build_report_data(
        store, since=UNTIL + timedelta(days=30), until=UNTIL + timedelta(days=31)
    )
    written = render_report(data, tmp_path / "empty")
    assert [p.name for p in written] == ["index.html", "report.json"]
    index = written[0].read_text(encoding="utf-8")
    assert "No data for this period" in index
    assert "<svg" not in index and 'id="targets"' not in index
    assert json.loads(written[1].read_text())["targets"] == []


def test_filters_restrict_targets(store: Store) -> None:
    populate(store)
    data = build_report_data(store, since=SINCE, until=UNTIL, gateways=["gw-b"])
    assert [(t.gateway, t.model) for t in data.targets] == [ODD]


def test_json_export_matches_the_numbers(report) -> None:
    expected, out, _ = report
    doc = json.loads(_html(out, "report.json"))
    gw_a = next(t for t in doc["targets"] if t["gateway"] == "gw-a")
    assert gw_a["final"] == expected["final"] and gw_a["final_ok"] == expected["final_ok"]
    assert gw_a["attempts"] == expected["final"] + 3
    assert gw_a["success_ratio"] == 1.0
    assert gw_a["spend"] == pytest.approx(expected["cost"])
    assert gw_a["ttft_p50"] == pytest.approx(float(np.percentile(expected["ttft"], 50)))
    assert gw_a["ttft_p99"] == pytest.approx(float(np.percentile(expected["ttft"], 99)))
    assert gw_a["golden"]["passed"] == 27 and gw_a["golden"]["failed"] == 3
    assert [d["label"] for d in gw_a["pass_by_day"]] == ["2025-03-01", "2025-03-02", "2025-03-03"]
    assert {c["label"] for c in gw_a["pass_by_category"]} == {"arith", HOSTILE_LABEL}
    assert gw_a["errors"] == [{"label": "rate_limited", "count": 3, "final": 0}]
    assert gw_a["cache"] == {
        "n": 3,
        "hit_ratio": 0.75,
        "saved": pytest.approx(0.006),
        "currency": "USD",
        "unverified": 0.0,
        "unverified_runs": 0,
    }
    assert gw_a["authenticity"]["signals"][0]["p_value"] == 0.2011
    assert gw_a["authenticity"]["threshold"] == 109500.0
    assert gw_a["drift"][0]["signals"][0]["signal"] == "pass_rate"
    gw_b = next(t for t in doc["targets"] if t["gateway"] == "gw-b")
    assert gw_b["authenticity"]["verdict"] == "insufficient_data"
    assert gw_b["authenticity"]["needed"].startswith("11 more")
    page = _html(out, "gw-a--gpt-4o.html")
    assert f"{gw_a['ttft_p50'] * 1000:,.0f} ms" in page
    assert f"{gw_a['golden']['rate'] * 100:.1f} %" in page


def test_evidence_lists_failures_first(report) -> None:
    _, out, _ = report
    doc = json.loads(_html(out, "report.json"))
    evidence = next(t for t in doc["targets"] if t["gateway"] == "gw-a")["evidence"]
    flagged = [e["failure"] != "ok" or any(":fail" in c for c in e["checks"]) for e in evidence]
    assert flagged[0] and flagged == sorted(flagged, reverse=True)
    assert any(e["excerpt"].startswith("<script>") for e in evidence)  # parsed JSON keeps the text


def test_large_targets_use_a_stated_sample(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    populate(store)
    monkeypatch.setattr("aione_probe.report.data.LATENCY_SAMPLE_CAP", 7)
    data = build_report_data(store, since=SINCE, until=UNTIL)
    t = data.targets[0]
    assert t.latency_stride == 5  # ceil(30 / 7)
    assert 0 < t.latency_n < t.final_ok


def test_slug_and_category_helpers() -> None:
    assert slug("gw a", "../../etc/passwd") == "gw_a--etc_passwd"
    assert category_of("arith-mul-01", None) == "arith"
    assert category_of("arith-mul-01", "maths") == "maths"


def test_svg_helpers_escape_and_handle_gaps() -> None:
    d0 = DAY0.date()
    chart = line_chart(
        [
            Series(
                HOSTILE_LABEL,
                [(d0, 1.0), (d0 + timedelta(days=1), None), (d0 + timedelta(days=2), 2.0)],
            )
        ],
        title="<b>t</b>",
    )
    assert "<svg onload" not in chart and "&lt;b&gt;t&lt;/b&gt;" in chart
    assert "<polyline" not in chart  # the gap leaves two single points, no line
    assert chart.count("<circle") == 2
    assert "no data" in line_chart([], title="x")
    assert "no data" in bar_chart([], title="x")
    bars = bar_chart([('a"onmouseover="x', 3.0)], title="x")
    assert 'a"onmouseover' not in bars and "a&#x27;" not in bars
    assert "&quot;onmouseover=&quot;x" in bars
    assert column_chart([(d0, 2.0)], title="spend").count("<rect") == 1


def test_comparisons_cross_protocol_and_reconciliation(store: Store, tmp_path: Path) -> None:
    populate(store)
    late = DAY0 + timedelta(days=2, hours=13)
    signal = {
        "signal": "tokenizer",
        "test": "tokenizer_delta_exact",
        "p_value": 1e-9,
        "n": 8,
        "result": "reject",
    }
    store.save_verdict(
        **AuthenticityVerdict(
            kind=VerdictKind.substituted,
            gateway=GOOD[0],
            model=GOOD[1],
            comparison="reference:vendor/gpt-4o",
            reason="accumulated evidence crossed the threshold at run 2",
            log_evidence=14.2,
            threshold=109500.0,
            suspect_threshold=1095.0,
            budget={"false_alarms_per_year": 0.04, "runs_per_year": 4380.0, "comparisons": 1},
            n=40,
            history=(
                ("2025-03-02T00:00:00+00:00", 7, 7.0, 7.0),
                ("2025-03-02T02:00:00+00:00", 8, 7.2, 14.2),
            ),
        ).record(),
        created_at=late,
    )
    store.save_verdict(
        "cross_protocol",
        *GOOD,
        "vs:gw-anthropic",
        "inconsistent",
        0.001,
        0.01,
        20,
        None,
        {"signals": [{**signal, "signal": "prompt_tokens"}]},
        created_at=late,
    )
    check = {
        "name": "reconcile_requests",
        "value": "fail",
        "explanation": "under-reported",
        "metadata": {
            "model": "gpt-4o",
            "field": "requests",
            "gateway_value": 9,
            "probe_value": 12,
            "tolerance": 0,
        },
    }
    store.save_verdict(
        "reconcile",
        GOOD[0],
        "*",
        None,
        "discrepant",
        0.5,
        None,
        12,
        None,
        {"checks": [check]},
        created_at=late,
    )
    out = tmp_path / "r"
    written = render_report(build_report_data(store, since=SINCE, until=UNTIL), out)
    assert not any("*" in p.name for p in written)  # a gateway-wide verdict is not a target
    page = _html(out, "gw-a--gpt-4o.html")
    assert "Against reference:vendor/gpt-4o" in page
    assert "Authenticity evidence over time (reference:vendor/gpt-4o" in page
    assert "Cross-protocol consistency and reconciliation" in page
    assert "reconcile_requests gpt-4o requests" in page and "gateway 9 vs probe 12" in page
    assert 'id="consistency"' not in _html(out, "gw-b--meta_llama_3.html")


def test_image_thumbnails_only_from_decoded_images(store: Store, tmp_path: Path) -> None:
    import base64
    import io

    from PIL import Image

    from aione_probe.checks.image import compact_parts

    buf = io.BytesIO()
    Image.new("RGB", (640, 360), (200, 30, 30)).save(buf, format="PNG")
    good = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    parts = compact_parts(
        [
            {"type": "text", "text": "here"},
            {"type": "image_url", "image_url": {"url": good}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]
    )
    assert good not in json.dumps(parts)  # the gateway's data URI is never stored
    at = DAY0 + timedelta(hours=3)
    run = store.start_run(*GOOD, "image", 1, 1, True, started_at=at)
    obs = _obs(GOOD, at, 0, content="", content_parts=parts)
    store.finish_run(run, "ok", "", [ObservationRecord(obs, "image", "img-1", "h" * 16)], [])
    out = tmp_path / "r"
    render_report(build_report_data(store, since=SINCE, until=UNTIL), out)
    page = _html(out, "gw-a--gpt-4o.html")
    assert page.count('class="thumb"') == 1
    assert good not in page
