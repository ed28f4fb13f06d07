"""Evaluation of a generations stage (method §8): corpus BLEU/chrF and the E2E metric set, the
fidelity picture, the coverage check, the SER of meaning representations, the oracle, and a
breakdown by seen/unseen category, category and input size.

The top beam (`candidates[0]`) is the paper's No_FC system; the chosen text is FC (reranked).
The scores themselves live in `bleu`, `metrics` (NIST, ROUGE-L, CIDEr), `coverage_check`, `ser`,
`oracle` and `breakdown`; this module reads the stage and puts them together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from .bleu import CorpusScorer
from .breakdown import bleu_breakdown, is_webnlg
from .corrupt import LABELS
from .coverage_check import (
    EntityIndex,
    accurate_precision,
    classifier_agreement,
    coverage_error_rate,
    coverage_errors,
)
from .metrics import standard_metrics
from .oracle import oracle
from .ser import ser_metrics

_COLUMNS = ("text", "fidelity_label", "fidelity_score", "candidates", "references", "entities")


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def label_summary(labels: Sequence[str | None], scores: Sequence[float | None]) -> dict:
    """Counts and shares of predicted labels (shares over labelled texts), the accurate rate and
    the mean P(accurate)."""
    counts = Counter(label for label in labels if label is not None)
    labelled = sum(counts.values())
    known = [*LABELS, *sorted(set(counts) - set(LABELS))]
    valid = [s for s in scores if s is not None]
    return {
        "counts": {label: counts.get(label, 0) for label in known},
        "shares": {label: _ratio(counts.get(label, 0), labelled) for label in known},
        "labelled": labelled,
        "unlabelled": len(labels) - labelled,
        "accurate_rate": _ratio(counts.get("accurate", 0), labelled),
        "mean_fidelity_score": _ratio(sum(valid), len(valid)),
    }


# ----------------------------------------------------------------------------- the whole stage


def _rows_of(table_or_rows: pa.Table | Sequence[dict]) -> list[dict]:
    """Rows with only what evaluation reads; `candidates` cut to the top beam, `size` = number of
    triples (or slots) of the input."""
    if isinstance(table_or_rows, pa.Table):
        table = table_or_rows
        names = set(table.column_names)
        cols = {
            c: table.column(c) for c in (*_COLUMNS, "category", "id", "linearized") if c in names
        }
        if "candidates" in cols:
            cols["candidate_texts"] = _candidate_texts(cols["candidates"])
            cols["candidate_labels"] = _candidate_texts(cols["candidates"], "fidelity_label")
            cols["candidates"] = pc.list_slice(cols["candidates"], 0, 1)
        if "data" in names:
            cols["size"] = _sizes(table.column("data"))
            cols["data"] = table.column("data")  # the slots the slot aligner (SER) checks
        lists = {n: c if isinstance(c, list) else c.to_pylist() for n, c in cols.items()}
        rows = [dict(zip(lists, values)) for values in zip(*lists.values())]
        return rows if lists else [{} for _ in range(table.num_rows)]
    rows = []
    for row in table_or_rows:
        row = dict(row)
        if "candidates" in row and "candidate_texts" not in row:
            row["candidate_texts"] = [c.get("text") for c in row["candidates"] or []]
            row["candidate_labels"] = [c.get("fidelity_label") for c in row["candidates"] or []]
        if "data" in row and "size" not in row:
            data = row.pop("data") or {}
            row["size"] = len(data.get("triples") or []) or len(data.get("slots") or [])
        rows.append(row)
    return rows


def _candidate_texts(candidates: pa.ChunkedArray, field: str = "text") -> pa.Array:
    """Each row's candidate texts (list<string>; or another string `field` of the candidate
    structs), without the rest of the structs."""
    lists = candidates.combine_chunks()
    return pa.ListArray.from_arrays(lists.offsets, lists.values.field(field), mask=lists.is_null())


def _sizes(data: pa.ChunkedArray) -> list[int]:
    data = data.combine_chunks()
    fields = {data.type.field(i).name for i in range(data.type.num_fields)}
    sizes = [0] * len(data)
    for name in ("triples", "slots"):
        if name in fields:
            lengths = pc.fill_null(pc.list_value_length(pc.struct_field(data, name)), 0)
            sizes = [s or n for s, n in zip(sizes, lengths.to_pylist())]
    return sizes


def _top(row: dict) -> dict:
    candidates = row.get("candidates") or []
    return candidates[0] if candidates else {}


def evaluate_generations(
    table_or_rows: pa.Table | Sequence[dict], *, webnlg_breakdown: bool | None = None
) -> dict:
    """Metrics of a generations table (or rows): BLEU/chrF of the chosen text and of the top beam,
    the predicted-label picture, coverage errors before and after reranking, and breakdowns.
    `webnlg_breakdown=None` adds the seen/unseen split when the categories are WebNLG's."""
    rows = _rows_of(table_or_rows)
    has_top = any("candidates" in r for r in rows)
    has_entities = any("entities" in r for r in rows)
    categories = [r.get("category") for r in rows]
    webnlg = is_webnlg(categories) if webnlg_breakdown is None else webnlg_breakdown

    scorer = CorpusScorer([r.get("references") for r in rows])
    texts = [r.get("text") for r in rows]
    chosen = scorer.segment_statistics(texts)
    top_texts = [_top(r).get("text") for r in rows]
    top = scorer.segment_statistics(top_texts, reuse=(texts, chosen)) if has_top else None
    metrics = scorer.scores(chosen)
    metrics["top_beam"] = scorer.scores(top) if has_top else None
    if has_top:
        metrics["changed_by_rerank"] = sum(r.get("text") != _top(r).get("text") for r in rows)
    references = [r.get("references") for r in rows]
    metrics["standard"] = standard_metrics(texts, references)
    metrics["top_beam_standard"] = standard_metrics(top_texts, references) if has_top else None

    metrics["fidelity"] = {
        "chosen": label_summary(
            [r.get("fidelity_label") for r in rows], [r.get("fidelity_score") for r in rows]
        ),
        "top_beam": label_summary(
            [_top(r).get("fidelity_label") for r in rows],
            [_top(r).get("fidelity_score") for r in rows],
        )
        if has_top
        else None,
    }

    metrics["coverage"], index = None, None
    if has_entities:
        index = EntityIndex(e for r in rows for e in r.get("entities") or [])
        metrics["coverage"] = {
            "chosen": coverage_error_rate(rows, lambda r: r.get("text"), index),
            "top_beam": coverage_error_rate(rows, lambda r: _top(r).get("text"), index)
            if has_top
            else None,
            "accurate_precision": accurate_precision(
                rows, lambda r: (r.get("text"), r.get("fidelity_label")), index
            ),
            "classifier_agreement": classifier_agreement(rows, index) if has_top else None,
        }
    metrics["ser"] = ser_metrics(rows, (lambda r: _top(r).get("text")) if has_top else None)
    metrics["oracle"] = oracle(rows, scorer, chosen, index) if has_top else None
    metrics["examples"] = examples(rows, index)

    metrics["webnlg"] = webnlg
    metrics["breakdown"] = bleu_breakdown(rows, scorer, chosen, top, webnlg)
    for part in ("seen", "unseen"):
        metrics[part] = metrics["breakdown"].get("seen_unseen", {}).get(part)
    return metrics


EXAMPLES = 3  # good and bad example texts in the report


def examples(rows: Sequence[dict], index: EntityIndex | None, n: int = EXAMPLES) -> dict:
    """A few texts a person can judge: `good` (labelled accurate, no coverage error) and `bad`
    (a missing or hallucinated entity, or a failed generation), in input order."""
    good, bad = [], []
    for row in rows:
        if len(good) >= n and len(bad) >= n:
            break
        errors = (
            coverage_errors(row.get("text"), row.get("entities") or [], index)
            if index is not None
            else {"missing": [], "hallucinated": []}
        )
        item = {
            "id": row.get("id"),
            "data": row.get("linearized"),
            "text": row.get("text"),
            "label": row.get("fidelity_label"),
            "score": row.get("fidelity_score"),
            "reference": (row.get("references") or [None])[0],
            "missing": errors["missing"],
            "hallucinated": errors["hallucinated"],
        }
        flawed = row.get("text") is None or errors["missing"] or errors["hallucinated"]
        if flawed and len(bad) < n:
            bad.append(item)
        elif not flawed and row.get("fidelity_label") in (None, "accurate") and len(good) < n:
            good.append(item)
    return {"good": good, "bad": bad}


def headline(metrics: dict) -> dict:
    """The few numbers a summary line carries (the CLI's `metrics`, a run note), flat."""
    get = lambda *keys: _dig(metrics, keys)  # noqa: E731
    return {
        "bleu": metrics["bleu"],
        "bleu_lowercase": metrics["bleu_lowercase"],
        "chrf": metrics["chrf"],
        "n": metrics["n"],
        "n_failed": metrics["n_failed"],
        "n_without_references": metrics["n_without_references"],
        "bleu_seen": get("seen", "bleu"),
        "bleu_unseen": get("unseen", "bleu"),
        "bleu_top_beam": get("top_beam", "bleu"),
        "nist": get("standard", "nist"),
        "rouge_l": get("standard", "rouge_l"),
        "cider": get("standard", "cider"),
        "accurate_rate": get("fidelity", "chosen", "accurate_rate"),
        "accurate_rate_top_beam": get("fidelity", "top_beam", "accurate_rate"),
        "coverage_error": get("coverage", "chosen", "error_rate"),
        "coverage_error_top_beam": get("coverage", "top_beam", "error_rate"),
        "records_missing_share": get("coverage", "chosen", "records_missing_share"),
        "missing_per_record": get("coverage", "chosen", "missing_per_record"),
        "hallucinated_per_record": get("coverage", "chosen", "hallucinated_per_record"),
        "ser": get("ser", "chosen", "ser"),
        "ser_references": get("ser", "references", "ser"),
        "oracle_bleu": get("oracle", "bleu"),
        "oracle_coverage_error": get("oracle", "coverage_error"),
        "verdict_accurate_precision": get("coverage", "accurate_precision", "precision"),
        "classifier_agreement": get("coverage", "classifier_agreement", "agreement"),
        # the pipeline's dev sample (generate.dev_records), when it verbalized one
        "bleu_validation": get("validation", "validation", "bleu"),
        "bleu_validation_unseen": get("validation", "validation_unseen", "bleu"),
    }


def split_summary(metrics: dict) -> dict:
    """The few figures of one split's metrics that the report sets side by side (test and the
    validation splits settings are chosen on)."""
    get = lambda *keys: _dig(metrics, keys)  # noqa: E731
    return {
        "n": metrics["n"],
        "bleu": metrics["bleu"],
        "bleu_top_beam": get("top_beam", "bleu"),
        "nist": get("standard", "nist"),
        "rouge_l": get("standard", "rouge_l"),
        "cider": get("standard", "cider"),
        "bleu_oracle": get("oracle", "bleu"),
        "coverage_error": get("coverage", "chosen", "error_rate"),
        "coverage_error_top_beam": get("coverage", "top_beam", "error_rate"),
        "coverage_error_oracle": get("oracle", "coverage_error"),
        "records_missing_share": get("coverage", "chosen", "records_missing_share"),
        "accurate_rate": get("fidelity", "chosen", "accurate_rate"),
    }


def evaluate_splits(generations_uri: str, storage_options: dict | None = None) -> dict:
    """`split_summary` of each split of a generations stage (the dev sample: `validation`,
    `validation_unseen`), each split scored on its own (its own corpus entity index)."""
    from . import stage_reader

    rows = stage_reader.read_stage(generations_uri, storage_options).to_pylist()
    splits = dict.fromkeys(str(r.get("split")) for r in rows)
    return {
        split: split_summary(
            evaluate_generations([r for r in rows if str(r.get("split")) == split],
                                 webnlg_breakdown=False)
        )
        for split in splits
    }  # fmt: skip


def _dig(value, keys):
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def evaluate_stage(
    generations_uri: str,
    storage_options: dict | None = None,
    *,
    webnlg_breakdown: bool | None = None,
) -> dict:
    """`evaluate_generations` on a generations stage folder (read through `storage`)."""
    from . import stage_reader

    table = stage_reader.read_stage(generations_uri, storage_options)
    metrics = evaluate_generations(table, webnlg_breakdown=webnlg_breakdown)
    if "model_version" in table.column_names:
        versions = pc.unique(table.column("model_version").combine_chunks()).to_pylist()
        metrics["model_versions"] = sorted(v for v in versions if v is not None)
    metrics["source"] = generations_uri
    return metrics
