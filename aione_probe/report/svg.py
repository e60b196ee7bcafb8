"""Small inline-SVG charts for the HTML report: line charts over days or time, bar charts.

Charts are plain strings of SVG markup, wrapped in `markupsafe.Markup` so jinja2 inserts
them verbatim. Every piece of text that reaches the markup (labels, titles, series names)
goes through `_esc`, so a hostile label cannot open a tag or an attribute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from html import escape

from markupsafe import Markup

PALETTE = ("#1f4e79", "#c55a11", "#548235", "#7030a0", "#bf9000", "#2e75b6", "#a5a5a5")
_FONT = 'font-family="inherit" font-size="11"'


@dataclass(frozen=True)
class Series:
    """One line of a line chart: a name and one value (or None for a gap) per day."""

    name: str
    points: Sequence[tuple[date, float | None]]


def _esc(text: object) -> str:
    return escape(str(text), quote=True)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _nice_max(value: float) -> float:
    """Round a maximum up to 1, 2, 2.5 or 5 times a power of ten, for readable ticks."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def _svg_open(width: int, height: int, title: str) -> list[str]:
    """Open a chart: the svg element, its accessible title and the title drawn above it."""
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
        f'<text x="4" y="14" {_FONT} font-weight="600">{_esc(title)}</text>',
    ]


def _no_data(parts: list[str], width: int, height: int) -> Markup:
    """Close a chart that has nothing to plot with a centred "no data"."""
    parts.append(f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" {_FONT}>')
    parts.append("no data</text></svg>")
    return Markup("".join(parts))


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    unit: str = "",
    width: int = 520,
    height: int = 230,
) -> Markup:
    """Render daily values of one or more series as lines with point markers.

    Days are placed on a linear time axis, so a day without data leaves a gap in the line
    instead of pulling its neighbours together.

    Args:
        series: the lines; a point whose value is None is not drawn.
        title: accessible title, also drawn above the plot.
        unit: appended to the y-axis tick labels (e.g. "s").
        width: width of the drawing in px.
        height: height of the drawing in px.

    Returns:
        The SVG markup, safe to insert into an autoescaped template.
    """
    days = sorted({d for s in series for d, v in s.points if v is not None})
    values = [v for s in series for _, v in s.points if v is not None and math.isfinite(v)]
    parts = _svg_open(width, height, title)
    if not days or not values:
        return _no_data(parts, width, height)
    left, right, top, bottom = 56, 24, 26, 30
    legend_h = 16 * math.ceil(len(series) / 4)
    plot_w, plot_h = width - left - right, height - top - bottom - legend_h
    y_max = _nice_max(max(values))
    first, last = days[0].toordinal(), days[-1].toordinal()
    span = max(last - first, 1)

    def x_of(day: date) -> float:
        if first == last:
            return left + plot_w / 2
        return left + (day.toordinal() - first) / span * plot_w

    def y_of(value: float) -> float:
        return top + plot_h - value / y_max * plot_h

    for i in range(5):
        tick = y_max * i / 4
        y = y_of(tick)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            f'stroke="#d9d9d9" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT} fill="#444">'
            f"{_esc(_fmt(tick) + unit)}</text>"
        )
    step = max(1, math.ceil(len(days) / 8))
    for day in days[::step]:
        x = x_of(day)
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" {_FONT} fill="#444">'
            f"{_esc(day.strftime('%m-%d'))}</text>"
        )
    for idx, line in enumerate(series):
        colour = PALETTE[idx % len(PALETTE)]
        segments: list[list[tuple[float, float]]] = [[]]
        points = sorted((d, v) for d, v in line.points)
        previous: date | None = None
        for day, value in points:
            broken = previous is not None and (day - previous).days > 1
            if value is None or not math.isfinite(value) or broken:
                segments.append([])
            if value is not None and math.isfinite(value):
                segments[-1].append((x_of(day), y_of(value)))
                previous = day
        for seg in segments:
            if len(seg) > 1:
                coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)
                parts.append(
                    f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                    f'stroke-width="1.8"/>'
                )
            parts.extend(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.4" fill="{colour}"/>' for x, y in seg
            )
        lx = left + (idx % 4) * (plot_w / 4)
        ly = height - legend_h + 16 * (idx // 4) + 4
        parts.append(
            f'<rect x="{lx:.1f}" y="{ly:.1f}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14:.1f}" y="{ly + 9:.1f}" {_FONT}>{_esc(line.name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def bar_chart(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    unit: str = "",
    max_value: float | None = None,
    width: int = 520,
) -> Markup:
    """Render labelled values as horizontal bars, one row per item, value at the bar's end.

    Args:
        items: (label, value) pairs, drawn in the given order.
        title: accessible title, also drawn above the bars.
        unit: appended to each value label (e.g. "%").
        max_value: the value of a full-width bar (default: the largest value).
        width: width of the drawing in px.

    Returns:
        The SVG markup, safe to insert into an autoescaped template.
    """
    row_h, top, label_w, value_w = 20, 24, 180, 64
    height = top + row_h * max(len(items), 1) + 6
    parts = _svg_open(width, height, title)
    if not items:
        parts.append(f'<text x="4" y="{top + 14}" {_FONT}>no data</text></svg>')
        return Markup("".join(parts))
    full = max_value if max_value is not None else max(v for _, v in items)
    full = full if full > 0 else 1.0
    bar_w = width - label_w - value_w
    for i, (label, value) in enumerate(items):
        y = top + i * row_h
        length = max(0.0, min(value / full, 1.0)) * bar_w
        short = label if len(label) <= 32 else label[:31] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" {_FONT}>{_esc(short)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="{row_h - 6}" fill="#eef1f5"/>'
            f'<rect x="{label_w}" y="{y + 3}" width="{length:.1f}" height="{row_h - 6}" '
            f'fill="{PALETTE[0]}"/>'
            f'<text x="{label_w + bar_w + 6}" y="{y + 13}" {_FONT}>'
            f"{_esc(_fmt(value) + unit)}</text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def column_chart(
    items: Sequence[tuple[date, float]],
    *,
    title: str,
    unit: str = "",
    width: int = 520,
    height: int = 200,
) -> Markup:
    """Render one value per day as vertical columns (e.g. spend per day).

    Args:
        items: (day, value) pairs.
        title: accessible title, also drawn above the plot.
        unit: appended to the y-axis tick labels.
        width: width of the drawing in px.
        height: height of the drawing in px.

    Returns:
        The SVG markup, safe to insert into an autoescaped template.
    """
    parts = _svg_open(width, height, title)
    if not items:
        return _no_data(parts, width, height)
    items = sorted(items)
    left, right, top, bottom = 56, 24, 26, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    y_max = _nice_max(max(v for _, v in items))
    first = items[0][0].toordinal()
    n_days = items[-1][0].toordinal() - first + 1
    slot = plot_w / n_days
    for i in range(5):
        tick = y_max * i / 4
        y = top + plot_h - tick / y_max * plot_h
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            f'stroke="#d9d9d9" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT} fill="#444">'
            f"{_esc(_fmt(tick) + unit)}</text>"
        )
    step = max(1, math.ceil(n_days / 8))
    for day, value in items:
        pos = day.toordinal() - first
        x = left + pos * slot
        h = max(0.0, value) / y_max * plot_h
        parts.append(
            f'<rect x="{x + slot * 0.15:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{slot * 0.7:.1f}" height="{h:.1f}" fill="{PALETTE[0]}">'
            f"<title>{_esc(day.isoformat())}: {_esc(_fmt(value) + unit)}</title></rect>"
        )
        if pos % step == 0:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                f'{_FONT} fill="#444">{_esc(day.strftime("%m-%d"))}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def evidence_chart(
    points: Sequence[tuple[str, float]],
    *,
    threshold: float,
    suspect: float,
    title: str,
    width: int = 520,
    height: int = 200,
) -> Markup:
    """Accumulated evidence per run (log10 of the e-detector statistic) against the
    ``substituted`` and ``suspect`` thresholds (log10), one point per counted run."""
    parts = _svg_open(width, height, title)
    if not points:
        parts.append(f'<text x="{width // 2}" y="{height // 2}" text-anchor="middle" {_FONT}>')
        parts.append("no run counted yet</text></svg>")
        return Markup("".join(parts))
    left, right, top, bottom = 56, 24, 26, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [max(0.0, v) for _, v in points]
    y_max = _nice_max(max([*values, threshold * 1.1, 1.0]))

    def x_of(i: int) -> float:
        return left + (i / max(len(points) - 1, 1)) * plot_w

    def y_of(value: float) -> float:
        return top + plot_h - min(max(value, 0.0), y_max) / y_max * plot_h

    for i in range(5):
        tick = y_max * i / 4
        y = y_of(tick)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            f'stroke="#d9d9d9" stroke-width="1"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT} fill="#444">'
            f"{_esc('1e' + _fmt(tick))}</text>"
        )
    for level, colour, label in ((threshold, "#c0392b", "substituted"),
                                 (suspect, "#e69f00", "suspect")):  # fmt: skip
        y = y_of(level)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-dasharray="4 3" stroke-width="1.2"/>'
            f'<text x="{left + plot_w}" y="{y - 3:.1f}" text-anchor="end" {_FONT} '
            f'fill="{colour}">{_esc(label)}</text>'
        )
    coords = " ".join(f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in enumerate(values))
    parts.append(
        f'<polyline points="{coords}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.8"/>'
    )
    for i in sorted({0, len(points) - 1}):
        parts.append(
            f'<text x="{x_of(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle" {_FONT} '
            f'fill="#444">{_esc(points[i][0][:16].replace("T", " "))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def threshold_chart(
    series: dict[str, Sequence[tuple[datetime, float]]],
    *,
    title: str,
    width: int = 520,
    height: int = 230,
) -> Markup:
    """Detector statistics as a fraction of their thresholds over time, with the alarm
    line at 1: one line per detector, on a linear time axis.

    Args:
        series: detector name -> (time, statistic / threshold) points.
        title: accessible title, also drawn above the plot.
        width: width of the drawing in px.
        height: height of the drawing in px.

    Returns:
        The SVG markup, safe to insert into an autoescaped template.
    """
    parts = _svg_open(width, height, title)
    points = [(t, v) for line in series.values() for t, v in line if math.isfinite(v)]
    if not points:
        return _no_data(parts, width, height)
    left, right, top, bottom = 40, 24, 26, 30
    legend_h = 16 * math.ceil(len(series) / 3)
    plot_w, plot_h = width - left - right, height - top - bottom - legend_h
    y_max = _nice_max(max(1.25, max(v for _, v in points)))
    t0 = min(t for t, _ in points).timestamp()
    span = max(max(t for t, _ in points).timestamp() - t0, 1.0)

    def x_of(at: datetime) -> float:
        return left + (at.timestamp() - t0) / span * plot_w

    def y_of(value: float) -> float:
        return top + plot_h - min(value, y_max) / y_max * plot_h

    for i in range(5):
        tick = y_max * i / 4
        parts.append(
            f'<line x1="{left}" y1="{y_of(tick):.1f}" x2="{left + plot_w}" y2="{y_of(tick):.1f}" '
            f'stroke="#d9d9d9" stroke-width="1"/><text x="{left - 6}" y="{y_of(tick) + 4:.1f}" '
            f'text-anchor="end" {_FONT} fill="#444">{_esc(_fmt(tick))}</text>'
        )
    parts.append(
        f'<line x1="{left}" y1="{y_of(1.0):.1f}" x2="{left + plot_w}" y2="{y_of(1.0):.1f}" '
        f'stroke="#c00000" stroke-width="1.2" stroke-dasharray="5,3"/>'
        f'<text x="{left + plot_w}" y="{y_of(1.0) - 4:.1f}" text-anchor="end" {_FONT} '
        f'fill="#c00000">alarm</text>'
    )
    for frac in (0.0, 0.5, 1.0):
        at = datetime.fromtimestamp(t0 + frac * span, tz=UTC)
        parts.append(
            f'<text x="{left + frac * plot_w:.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
            f'{_FONT} fill="#444">{_esc(at.strftime("%m-%d %H:%M"))}</text>'
        )
    for idx, (name, line) in enumerate(sorted(series.items())):
        colour = PALETTE[idx % len(PALETTE)]
        coords = " ".join(
            f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in sorted(line) if math.isfinite(v)
        )
        parts.append(
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.6"/>'
        )
        lx = left + (idx % 3) * (plot_w / 3)
        ly = height - legend_h + 16 * (idx // 3) + 4
        parts.append(
            f'<rect x="{lx:.1f}" y="{ly:.1f}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14:.1f}" y="{ly + 9:.1f}" {_FONT}>{_esc(name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
