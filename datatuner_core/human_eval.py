"""Human evaluation: a stratified sample of a generations stage exported as a CSV a person
annotates, and the import that scores the automatic judges against the annotations.

Export (`datatuner human-eval export`): up to `n` texts, stratified by the classifier's predicted
label and by whether the independent check agrees with it (the slot error rate for meaning
representations, the entity check for triples: "accurate" and no error found, or a flaw and an
error found) — equal shares per stratum, seeded, so rare labels and disagreements are in the sample.
- `{output}` (CSV, UTF-8): `item, data, text` and the blank columns a person fills in:
  `fluency` (1–5), `omission`, `hallucination`, `value_error`, `repetition` (1 = the text has
  this error, 0 = it does not), `comment`. Nothing in it shows a system's verdict.
- `{output}.key.json`: per item, the record id, the stratum, the classifier's label and
  P(accurate), and the check's error count — kept apart so the annotators do not see them.

Import (`datatuner human-eval import`): one or more annotated copies of the CSV and the key.
A text is flawed for the annotators when the majority of them mark an error (a tie counts as a
flaw); the classifier (flawed = any label but accurate) and the check (flawed = at least one
error) are scored against that: precision and recall of finding a flaw, and of "accurate".
Between annotators: Cohen's kappa per question (fluency as five categories, each error type,
and the overall flawed/clean verdict), the mean over pairs when there are more than two.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Sequence
from itertools import combinations

from . import stage_reader, storage

ERRORS = ("omission", "hallucination", "value_error", "repetition")
COLUMNS = ("item", "data", "text", "fluency", *ERRORS, "comment")
_TRUE = {"1", "yes", "y", "x", "true"}
_FALSE = {"0", "no", "n", "false", ""}


class AnnotationError(ValueError):
    """An annotation file that cannot be read: which file, row and column, and why."""


def _data_text(row: dict) -> str:
    data = row.get("data") or {}
    triples = data.get("triples") or []
    if triples:
        return "; ".join(f"{t['subject']} | {t['predicate']} | {t['object']}" for t in triples)
    slots = data.get("slots") or []
    if slots:
        inner = ", ".join(f"{s['slot']}[{s.get('value') or ''}]" for s in slots)
        return f"{data.get('act') or 'inform'}({inner})"
    return row.get("linearized") or ""


def _check_errors(row: dict, index) -> int:
    from . import coverage_check, ser

    data = row.get("data") or {}
    if data.get("slots"):
        found = ser.slot_errors(data["slots"], row.get("text"))
        return len(found["errors"])
    return coverage_check.error_count(row.get("text"), row.get("entities") or [], index)


def export(predictions: str, output: str, n: int = 100, seed: int = 0,
           storage_options: dict | None = None) -> dict:  # fmt: skip
    """Write the annotation CSV and its key; return what was written."""
    from . import coverage_check

    rows = [r for r in stage_reader.read_stage(predictions, storage_options).to_pylist()
            if r.get("text")]  # fmt: skip
    index = coverage_check.EntityIndex(e for r in rows for e in r.get("entities") or [])
    strata: dict[str, list[dict]] = {}
    for r in rows:
        label = r.get("fidelity_label") or "unlabelled"
        errors = _check_errors(r, index)
        agrees = (label == "accurate") == (errors == 0)
        r["_errors"] = errors
        strata.setdefault(f"{label}/{'agree' if agrees else 'disagree'}", []).append(r)
    rng = random.Random(seed)
    for name in sorted(strata):
        rng.shuffle(strata[name])
    picked: list[tuple[str, dict]] = []
    while len(picked) < n and any(strata.values()):
        for name in sorted(strata):  # one from each stratum in turn: equal shares
            if strata[name] and len(picked) < n:
                picked.append((name, strata[name].pop()))
    rng.shuffle(picked)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    key = {}
    for number, (stratum, r) in enumerate(picked, 1):
        item = f"t{number:04d}"
        writer.writerow([item, _data_text(r), r["text"], "", "", "", "", "", ""])
        key[item] = {
            "id": r["id"],
            "stratum": stratum,
            "label": r.get("fidelity_label"),
            "p_accurate": r.get("fidelity_score"),
            "check_errors": r["_errors"],
        }
    storage.write_bytes(output, buffer.getvalue().encode("utf-8"), storage_options)
    storage.write_bytes(f"{output}.key.json", json.dumps(key, indent=1).encode(), storage_options)
    counts = {name: sum(v["stratum"] == name for v in key.values()) for name in sorted(strata)}
    return {"items": len(key), "strata": counts, "output": output, "key": f"{output}.key.json"}


def _flag(value: str, where: str) -> bool:
    text = (value or "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise AnnotationError(f"{where}: '{value}' is not 1/0 (or yes/no)")


def read_annotations(uri: str, storage_options: dict | None = None) -> dict[str, dict]:
    """item → {fluency, the four error flags, flawed} of one annotated CSV."""
    text = storage.read_bytes(uri, storage_options).decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("item", "fluency", *ERRORS) if c not in (reader.fieldnames or [])]
    if missing:
        raise AnnotationError(f"{uri}: columns missing: {', '.join(missing)}")
    out = {}
    for line, row in enumerate(reader, 2):
        where = f"{uri} line {line}"
        fluency = (row["fluency"] or "").strip()
        if fluency and fluency not in {"1", "2", "3", "4", "5"}:
            raise AnnotationError(f"{where}: fluency '{fluency}' is not 1-5")
        flags = {e: _flag(row[e], f"{where} column {e}") for e in ERRORS}
        out[row["item"]] = {"fluency": int(fluency) if fluency else None, **flags,
                            "flawed": any(flags.values())}  # fmt: skip
    return out


def cohen_kappa(a: Sequence, b: Sequence) -> float | None:
    """Cohen's kappa of two annotators' labels on the same items (None without items)."""
    if not a:
        return None
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    labels = set(a) | set(b)
    expected = sum((list(a).count(k) / n) * (list(b).count(k) / n) for k in labels)
    if expected == 1:
        return 1.0 if observed == 1 else 0.0
    return (observed - expected) / (1 - expected)


def _pr(predicted: Sequence[bool], gold: Sequence[bool]) -> dict:
    tp = sum(p and g for p, g in zip(predicted, gold, strict=True))
    fp = sum(p and not g for p, g in zip(predicted, gold, strict=True))
    fn = sum(g and not p for p, g in zip(predicted, gold, strict=True))
    return {"precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None, "support": tp + fn}  # fmt: skip


def score(annotation_uris: Sequence[str], key_uri: str,
          storage_options: dict | None = None) -> dict:  # fmt: skip
    """The classifier's and the check's precision/recall against the annotators' majority, and
    Cohen's kappa between annotators, on the items every file annotates."""
    key = json.loads(storage.read_bytes(key_uri, storage_options))
    sheets = [read_annotations(uri, storage_options) for uri in annotation_uris]
    unknown = sorted(set().union(*sheets) - set(key))
    if unknown:
        raise AnnotationError(f"items not in the key {key_uri}: {', '.join(unknown[:5])}")
    items = sorted(set(key).intersection(*sheets))
    if not items:
        raise AnnotationError("no item is annotated in every file")
    gold = [sum(s[i]["flawed"] for s in sheets) * 2 >= len(sheets) for i in items]
    by_classifier = [key[i]["label"] not in (None, "accurate") for i in items]
    by_check = [key[i]["check_errors"] > 0 for i in items]
    result = {
        "items": len(items),
        "annotators": len(sheets),
        "flawed_share": sum(gold) / len(gold),
        "fluency_mean": _mean([s[i]["fluency"] for s in sheets for i in items]),
        "classifier": {"flaw": _pr(by_classifier, gold),
                       "accurate": _pr([not p for p in by_classifier], [not g for g in gold])},
        "check": {"flaw": _pr(by_check, gold),
                  "accurate": _pr([not p for p in by_check], [not g for g in gold])},
    }  # fmt: skip
    kappas: dict[str, float | None] = {}
    for question in ("fluency", *ERRORS, "flawed"):
        pairs = [cohen_kappa([a[i][question] for i in items], [b[i][question] for i in items])
                 for a, b in combinations(sheets, 2)]  # fmt: skip
        values = [k for k in pairs if k is not None]
        kappas[question] = sum(values) / len(values) if values else None
    result["kappa"] = kappas if len(sheets) > 1 else None
    return result


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
