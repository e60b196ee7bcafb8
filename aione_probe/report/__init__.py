"""The HTML verification report and its JSON export.

``render_report(build_report_data(store, since=..., until=...), out_dir)`` writes
``index.html``, one page per (gateway, model) and ``report.json``.
"""

from aione_probe.report.data import build_report_data
from aione_probe.report.model import ReportData, TargetReport
from aione_probe.report.render import render_report

__all__ = ["ReportData", "TargetReport", "build_report_data", "render_report"]
