"""The evaluation report a person reads: `metrics.json`, `report.md` and PNG plots under one URI.

Everything is written through `storage` (local paths, s3://, memory://). Plots whose data is
absent (no input sizes, no labels, no entities) are left out, and `report.md` links only those
written. The text is `report_markdown`'s, the plots `report_plots`'.
"""

from __future__ import annotations

import json

from . import storage
from .report_markdown import render_markdown
from .report_plots import render_plots


def write_report(
    metrics: dict,
    report_uri: str,
    *,
    title: str,
    extra: dict | None = None,
    storage_options: dict | None = None,
) -> list[str]:
    """Write `metrics.json` (the metrics, plus `extra` when given), `report.md` and the plots
    under `report_uri`. Returns the URIs written, `metrics.json` first."""
    payload = {**metrics, "extra": extra} if extra else metrics
    files = {"metrics.json": json.dumps(payload, indent=2, default=str).encode()}
    plots = render_plots(metrics)
    files.update(plots)
    files["report.md"] = render_markdown(metrics, title, extra, list(plots))
    written = []
    for name, data in files.items():
        uri = storage.join_uri(report_uri, name)
        storage.write_bytes(uri, data, storage_options)
        written.append(uri)
    return written
