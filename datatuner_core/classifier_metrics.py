"""The classifier's metrics: the 5×5 confusion matrix (rows = gold, columns = predicted, in
`corrupt.LABELS` order) and what follows from it (accuracy, macro-F1, per-class precision /
recall / F1, the majority-class baseline), each corruption rule's predictions (`by_rule`: which
kinds of error the classifier catches), and the Markdown report. The trainer sums the cells over
ranks (`rule_sums`, `confusion_from_sums`); a scorer counts them itself."""

from __future__ import annotations

from .classifier_pairs import RULES
from .corrupt import LABELS, RULE_LABELS


def rule_sums(rules, pred) -> dict[str, float]:
    """`rule_{r}_pred_{p}`: how many pairs of rule r were predicted as label p (tensors [B]; rules
    of id -1 are left out)."""
    import torch

    known = rules >= 0
    n = len(LABELS)
    cells = torch.bincount(rules[known] * n + pred[known], minlength=len(RULES) * n).tolist()
    return {f"rule_{i // n}_pred_{i % n}": float(c) for i, c in enumerate(cells) if c}


def by_rule_from_sums(sums: dict[str, float]) -> dict[str, dict]:
    """Per rule with any pair: its label, the pairs, the share predicted as that label (`caught`;
    for `original`, the accurate pairs kept as accurate), and the predicted-label counts."""
    out = {}
    for r, rule in enumerate(RULES):
        predicted = {
            label: int(round(sums.get(f"rule_{r}_pred_{p}", 0.0))) for p, label in enumerate(LABELS)
        }
        pairs = sum(predicted.values())
        if pairs:
            label = RULE_LABELS[rule]
            out[rule] = {
                "label": label,
                "pairs": pairs,
                "caught": predicted[label] / pairs,
                "predicted": predicted,
            }
    return out


def confusion_from_sums(sums: dict[str, float]) -> list[list[int]]:
    n = len(LABELS)
    return [[int(round(sums.get(f"cm_{g}_{p}", 0.0))) for p in range(n)] for g in range(n)]


def metrics_from_confusion(cm: list[list[int]]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, the majority-class baseline.
    `cm[gold][predicted]`, in `LABELS` order. A class with no prediction has precision 0; macro-F1
    averages over the classes present in gold or predictions."""
    n = len(LABELS)
    total = sum(map(sum, cm))
    correct = sum(cm[k][k] for k in range(n))
    per_class, f1s = {}, []
    for k, label in enumerate(LABELS):
        support = sum(cm[k])
        predicted = sum(cm[g][k] for g in range(n))
        precision = cm[k][k] / predicted if predicted else 0.0
        recall = cm[k][k] / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "predicted": predicted,
        }
        if support or predicted:
            f1s.append(f1)
    supports = [sum(cm[k]) for k in range(n)]
    majority = max(range(n), key=lambda k: supports[k]) if total else 0
    return {
        "n": total,
        "accuracy": correct / total if total else 0.0,
        "macro_f1": sum(f1s) / len(f1s) if f1s else 0.0,
        "per_class": per_class,
        "confusion": cm,
        "labels": list(LABELS),
        "majority_label": LABELS[majority],
        "majority_baseline": supports[majority] / total if total else 0.0,
    }


def format_report(metrics: dict) -> str:
    """A Markdown report: per-class table, averages, the baseline and the confusion matrix."""
    lines = [
        "| label | precision | recall | F1 | support | predicted |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label in LABELS:
        c = metrics["per_class"][label]
        lines.append(
            f"| {label} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} "
            f"| {c['support']} | {c['predicted']} |"
        )
    lines += [
        "",
        f"- pairs: {metrics['n']}",
        f"- accuracy: {metrics['accuracy']:.4f}",
        f"- macro-F1: {metrics['macro_f1']:.4f}",
        f"- majority-class baseline ({metrics['majority_label']}): "
        f"{metrics['majority_baseline']:.4f}",
    ]
    if "val_loss" in metrics:
        lines.append(f"- loss: {metrics['val_loss']:.4f}")
    lines += [
        "",
        "Confusion matrix (rows = gold, columns = predicted):",
        "",
        "| gold \\ predicted | " + " | ".join(LABELS) + " |",
        "|---|" + "---:|" * len(LABELS),
    ]
    for label, row in zip(LABELS, metrics["confusion"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    if metrics.get("by_rule"):
        lines += [
            "",
            "By corruption rule (`caught`: predicted as the rule's label; `original` = the "
            "accurate pairs):",
            "",
            "| rule | label | pairs | caught | " + " | ".join(LABELS) + " |",
            "|---|---|---:|---:|" + "---:|" * len(LABELS),
        ]
        for rule, r in metrics["by_rule"].items():
            counts = " | ".join(str(r["predicted"][label]) for label in LABELS)
            lines.append(f"| {rule} | {r['label']} | {r['pairs']} | {r['caught']:.3f} | {counts} |")
    return "\n".join(lines) + "\n"
