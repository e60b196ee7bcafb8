"""Render `ReportData` as self-contained HTML pages (inline CSS and SVG) plus a JSON export.

The jinja2 environment autoescapes everything; only our own CSS and the SVG built by
`aione_probe.report.svg` (which escapes its text itself) are marked safe. Model output is
never marked safe.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from aione_probe.redact import scrub
from aione_probe.report.data import PERCENTILES
from aione_probe.report.model import ReportData, TargetReport, verdict_tone
from aione_probe.report.svg import (
    Series,
    bar_chart,
    column_chart,
    evidence_chart,
    line_chart,
    threshold_chart,
)

TEMPLATES = Path(__file__).parent / "templates"


def _num(value: float | int | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _seconds(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * 1000:,.0f} ms" if value < 1 else f"{value:,.2f} s"


def _pct(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * 100:.1f} %"


def _pvalue(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2e}" if 0 < value < 0.001 else f"{value:.4f}"


def _utc(value: datetime | None, suffix: bool = True) -> str:
    if value is None:
        return "–"
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if suffix else "%Y-%m-%d %H:%M:%S")


def _money(value: float | None, currency: str | None = None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:,.4f}" if abs(value) < 10 else f"{value:,.2f}"
    return f"{text} {currency}" if currency else text


def environment() -> Environment:
    """The report's jinja2 environment: templates from the package, autoescape on."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_num, seconds=_seconds, pct=_pct, pvalue=_pvalue, utc=_utc, money=_money)
    env.globals["tone"] = verdict_tone
    return env


def _charts(t: TargetReport) -> dict[str, Markup]:
    charts: dict[str, Markup] = {}
    if t.latency:
        for metric, label in (("ttft", "Time to first token"), ("e2e", "End-to-end latency")):
            series = [
                Series(f"p{p}", [(d.day, getattr(d, metric)[f"p{p}"]) for d in t.latency])
                for p in PERCENTILES
            ]
            charts[metric] = line_chart(series, title=f"{label} per day (s)", unit=" s")
    if t.pass_by_day:
        points: list[tuple[date, float | None]] = [
            (date.fromisoformat(p.label), None if p.rate is None else p.rate * 100)
            for p in t.pass_by_day
        ]
        charts["pass_day"] = line_chart(
            [Series("golden pass rate", points)], title="Golden pass rate per day (%)", unit="%"
        )
    if t.pass_by_category:
        items = [(p.label, (p.rate or 0.0) * 100) for p in t.pass_by_category]
        charts["pass_cat"] = bar_chart(
            items, title="Golden pass rate by category", unit="%", max_value=100
        )
    for v in [t.authenticity, *t.comparisons]:
        if v is not None and v.threshold and v.suspect_threshold:
            charts[f"evidence:{v.comparison}"] = evidence_chart(
                v.evidence,
                threshold=math.log10(v.threshold),
                suspect=math.log10(v.suspect_threshold),
                title=f"Authenticity evidence over time ({v.comparison}, log10 e)",
            )
    for suite, detail in t.drift_detail.items():
        if detail.history:
            charts[f"drift:{suite}"] = threshold_chart(
                detail.history, title=f"Drift detectors, {suite}: statistic / threshold"
            )
    if t.spend_by_day:
        charts["spend"] = column_chart(t.spend_by_day, title="Spend per day")
    if t.errors:
        charts["errors"] = bar_chart(
            [(e.label, float(e.count)) for e in t.errors], title="Failed attempts by class"
        )
    return charts


def render_report(data: ReportData, out_dir: Path) -> list[Path]:
    """Write the report: ``index.html``, one page per (gateway, model), ``report.json``.

    Args:
        data: the numbers, from `build_report_data`.
        out_dir: folder to write into (created if needed); existing files are replaced.

    Returns:
        The paths written, index first.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment()
    css = Markup((TEMPLATES / "report.css").read_text(encoding="utf-8"))
    common: dict[str, Any] = {"data": data, "css": css}
    written: list[Path] = []
    index = out_dir / "index.html"
    # Everything written is scrubbed once more: rows stored before a key was known.
    index.write_text(scrub(env.get_template("index.html").render(**common)), encoding="utf-8")
    written.append(index)
    page = env.get_template("target.html")
    for t in data.targets:
        path = out_dir / t.page
        path.write_text(scrub(page.render(t=t, charts=_charts(t), **common)), encoding="utf-8")
        written.append(path)
    export = out_dir / "report.json"
    export.write_text(scrub(data.to_json()) + "\n", encoding="utf-8")
    written.append(export)
    return written
