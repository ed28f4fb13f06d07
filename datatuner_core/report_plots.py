"""The report's PNG plots, rendered with matplotlib's Agg canvas (no pyplot) into memory."""

from __future__ import annotations

import io


def render_plots(metrics: dict) -> dict[str, bytes]:
    """The plots whose data `metrics` holds, as PNG bytes by file name."""
    plots = {
        "bleu_by_size.png": _plot_bleu_by_size,
        "labels.png": _plot_labels,
        "coverage.png": _plot_coverage,
    }
    return {name: png for name, plot in plots.items() if (png := plot(metrics)) is not None}


def _figure():
    """A figure that renders with Agg, without pyplot (no global backend, no open-figure list)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    return fig, fig.subplots()


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _bars(ax, names: list[str], series: dict[str, list[float | None]]) -> None:
    """Grouped bars, one group per name, the legend in a band of headroom above them."""
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(names))]
        ax.bar(xs, [v or 0.0 for v in values], width, label=label)
    ax.set_xticks(range(len(names)), names)
    top = max((v or 0.0 for values in series.values() for v in values), default=0.0)
    columns = len(series) if len(series) <= 3 else 2
    ax.set_ylim(0, max(top, 1e-9) * (1.25 if columns == len(series) else 1.4))
    if len(series) > 1:
        ax.legend(loc="upper center", ncol=columns, frameon=False)


def _plot_bleu_by_size(metrics: dict) -> bytes | None:
    groups = (metrics.get("breakdown") or {}).get("by_size")
    if not groups:
        return None
    fig, ax = _figure()
    names = list(groups)
    series = {"reranked": [groups[n]["bleu"] for n in names]}
    if any(g.get("top_beam_bleu") is not None for g in groups.values()):
        series["top beam"] = [groups[n].get("top_beam_bleu") for n in names]
    _bars(ax, [f"{n}\n(n={groups[n]['n']})" for n in names], series)
    ax.set(xlabel="input size (triples)", ylabel="BLEU", title="BLEU by input size")
    return _png(fig)


def _plot_labels(metrics: dict) -> bytes | None:
    fidelity = metrics.get("fidelity") or {}
    present = {k: v for k, v in fidelity.items() if v and v.get("labelled")}
    if not present:
        return None
    fig, ax = _figure()
    names = list(dict.fromkeys(label for v in present.values() for label in v["counts"]))
    titles = {"chosen": "reranked", "top_beam": "top beam"}
    _bars(
        ax, names, {titles.get(k, k): [v["counts"][n] for n in names] for k, v in present.items()}
    )
    ax.set(ylabel="texts", title="Predicted fidelity labels")
    ax.tick_params(axis="x", labelrotation=15)
    return _png(fig)


def _plot_coverage(metrics: dict) -> bytes | None:
    coverage = metrics.get("coverage") or {}
    systems = [(n, coverage.get(k)) for n, k in (("top beam", "top_beam"), ("reranked", "chosen"))]
    systems = [(n, c) for n, c in systems if c and c.get("entities")]
    if not systems:
        return None
    fig, ax = _figure()
    names = [n for n, _ in systems]
    _bars(
        ax,
        names,
        {
            "records missing an entity": [
                100 * (c.get("records_missing_share") or 0) for _, c in systems
            ],
            "entities missing": [100 * c["missing_rate"] for _, c in systems],
            "records with any error": [100 * c["record_error_share"] for _, c in systems],
        },
    )
    ax.set(ylabel="%", title="Texts that leave out or add facts, before / after reranking")
    return _png(fig)
