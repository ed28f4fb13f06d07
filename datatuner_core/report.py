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


def report_stage(
    generations_uri: str,
    report_uri: str,
    *,
    title: str,
    dev: str | None = None,
    lm: str | None = None,
    storage_options: dict | None = None,
) -> dict:
    """The evaluate stage: score a generations stage and write its report under `report_uri`.
    `dev`: a generations stage of the validation splits' sample, scored per split beside it;
    `lm`: the LM version whose validation curve the report shows. Returns `metrics`, the
    `headline` and the `files` written (`metrics.json` first)."""
    from . import evaluate
    from .trained_models import read_card

    metrics = evaluate.evaluate_stage(generations_uri, storage_options)
    if dev:
        metrics["validation"] = evaluate.evaluate_splits(dev, storage_options)
    if lm:
        lm_metrics = read_card(lm, storage_options).get("metrics") or {}
        metrics["lm_curve"] = lm_metrics.get("evaluations") or []
        metrics["lm_best_step"] = (lm_metrics.get("best") or {}).get("step")
    files = write_report(metrics, report_uri, title=title, storage_options=storage_options)
    return {"metrics": metrics, "headline": evaluate.headline(metrics), "files": files}
