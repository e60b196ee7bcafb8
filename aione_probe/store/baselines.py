"""The portable baseline document: what `export_baseline` writes and `import_baseline` reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aione_probe.store.tables import Baseline

BASELINE_FORMAT = "aione-probe-baseline"
BASELINE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class BaselineDoc:
    """A validated baseline document, ready to pin."""

    kind: str
    gateway: str
    model: str
    suite: str | None
    window_start: datetime
    window_end: datetime
    source: str
    data: dict[str, Any]
    location: str | None = None


def to_document(row: Baseline) -> dict[str, Any]:
    """The JSON-ready document of a stored baseline (timestamps as ISO 8601 with offset)."""
    return {
        "format": BASELINE_FORMAT,
        "format_version": BASELINE_FORMAT_VERSION,
        "kind": row.kind,
        "gateway": row.gateway,
        "model": row.model,
        "suite": row.suite,
        "location": row.location,
        "window_start": row.window_start.isoformat(),
        "window_end": row.window_end.isoformat(),
        "pinned_at": row.pinned_at.isoformat(),
        "source": row.source,
        "data": row.data,
    }


def parse_document(doc: dict[str, Any]) -> BaselineDoc:
    """Validate a baseline document (``pinned_at`` is informative and ignored).

    Raises:
        ValueError: the document is not a valid baseline; the message says why.
    """
    if doc.get("format") != BASELINE_FORMAT:
        raise ValueError(f"not an {BASELINE_FORMAT} document (format={doc.get('format')!r})")
    if doc.get("format_version") != BASELINE_FORMAT_VERSION:
        raise ValueError(f"unsupported baseline format_version {doc.get('format_version')!r}")
    for name in ("kind", "gateway", "model", "source"):
        if not isinstance(doc.get(name), str) or not doc[name]:
            raise ValueError(f"baseline {name} must be a non-empty string")
    for name in ("suite", "location"):  # location: absent in documents of older versions
        if doc.get(name) is not None and not isinstance(doc[name], str):
            raise ValueError(f"baseline {name} must be a string or null")
    if not isinstance(doc.get("data"), dict):
        raise ValueError("baseline data must be an object")
    window = []
    for name in ("window_start", "window_end"):
        try:
            moment = datetime.fromisoformat(doc[name])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"baseline {name} must be an ISO 8601 timestamp") from exc
        if moment.utcoffset() is None:
            raise ValueError(f"baseline {name} must carry a UTC offset")
        window.append(moment)
    return BaselineDoc(
        kind=doc["kind"],
        gateway=doc["gateway"],
        model=doc["model"],
        suite=doc.get("suite"),
        window_start=window[0],
        window_end=window[1],
        source=doc["source"],
        data=doc["data"],
        location=doc.get("location"),
    )
