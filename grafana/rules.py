"""Render aione-probe's Prometheus rules: ``python grafana/rules.py [options] OUT_DIR``.

grafana/rules/*.yml are the rules as shipped, and are this script's default rendering
(tests/test_grafana.py checks that). Two switches change a copy, never the files here:

* ``--runbook-base URL``: where each alert's ``runbook_url`` points (the anchor is kept),
  e.g. your wiki's copy of docs/metrics.md. Default: `DEFAULT_RUNBOOK_BASE`.
* ``--speedup N``: divide every duration (range selectors, ``offset``, ``for:``, group
  ``interval:``) by N, so an hour of alerting happens in a minute of test (N = 60). Used by
  tests/test_prometheus.py against a real Prometheus; thresholds and volume guards stay as
  they are, so the probe rate must rise by the same factor. Annotation text is not changed.

Standalone (no aione_probe import, no YAML library): the rendering is a line-by-line text
substitution, so a rendered file diffs cleanly against the shipped one.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

RULES = Path(__file__).resolve().parent / "rules"
DEFAULT_RUNBOOK_BASE = "https://github.com/aione-probe/aione-probe/blob/main/docs/metrics.md"

_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION = r"(\d+)(ms|s|m|h|d|w|y)"
_RANGE = re.compile(r"\[" + _DURATION + r"(?::" + _DURATION + r")?\]")
_OFFSET = re.compile(r"\boffset " + _DURATION)
_FIELD = re.compile(r"^(\s*(?:for|interval): )" + _DURATION + r"\s*$")
_RUNBOOK = re.compile(r"^(\s*runbook_url: )(\S*?)(#[\w-]+)\s*$")


def _scaled(number: str, unit: str, speedup: float) -> str:
    ms = round(int(number) * _UNIT_S[unit] * 1000 / speedup)
    if ms == 0 and int(number) == 0:
        return "0s"
    if ms <= 0:
        raise ValueError(f"{number}{unit} / {speedup:g} is shorter than a millisecond")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def render(text: str, *, speedup: float = 1.0, runbook_base: str = DEFAULT_RUNBOOK_BASE) -> str:
    """One rule file with its runbook URLs rebased and its durations divided by `speedup`."""
    out = []
    for line in text.splitlines(keepends=True):
        if m := _RUNBOOK.match(line):
            line = f"{m.group(1)}{runbook_base}{m.group(3)}\n"
        elif speedup != 1.0:
            if m := _FIELD.match(line):
                line = f"{m.group(1)}{_scaled(m.group(2), m.group(3), speedup)}\n"
            elif not line.lstrip().startswith(("#", "summary:", "description:")):
                line = _RANGE.sub(lambda r: _range(r, speedup), line)
                line = _OFFSET.sub(
                    lambda o: f"offset {_scaled(o.group(1), o.group(2), speedup)}", line
                )
        out.append(line)
    return "".join(out)


def _range(m: re.Match[str], speedup: float) -> str:
    window = _scaled(m.group(1), m.group(2), speedup)
    if m.group(3) is None:
        return f"[{window}]"
    return f"[{window}:{_scaled(m.group(3), m.group(4), speedup)}]"


def render_all(
    out: Path, *, speedup: float = 1.0, runbook_base: str = DEFAULT_RUNBOOK_BASE
) -> list[Path]:
    """Render every shipped rule file into `out`; returns the written paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for src in sorted(RULES.glob("*.yml")):
        dst = out / src.name
        dst.write_text(render(src.read_text(), speedup=speedup, runbook_base=runbook_base))
        written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: render the shipped rules into OUT_DIR."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write the rule files into")
    parser.add_argument("--runbook-base", default=DEFAULT_RUNBOOK_BASE)
    parser.add_argument("--speedup", type=float, default=1.0)
    args = parser.parse_args(argv)
    if args.speedup <= 0:
        parser.error("--speedup must be positive")
    if args.out.resolve() == RULES:
        parser.error("write a copy elsewhere: grafana/rules holds the shipped rules")
    for path in render_all(args.out, speedup=args.speedup, runbook_base=args.runbook_base):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
