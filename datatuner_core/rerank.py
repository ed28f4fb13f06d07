"""Reranking of beam candidates by the fidelity classifier (method §7, the DataTuner_FC system).

Candidates are ordered by the severity of their predicted label —
accurate < value_error < repetition < omission < hallucination — and, within a label, by a
combined score: the LM's length-normalised log-probability plus `weight` × log P(accurate).
The original ordered ties by beam rank only; using P(accurate) as well prefers, among candidates
with the same predicted label, the one the classifier is surest is accurate.

With the coverage check on (`generate.coverage`), the number of the record's own entities that a
candidate does not mention (`evaluate.entity_present`, the check of the report) comes first: a
candidate that drops a value is never chosen over one that states them all, whatever the
classifier says; the label and the combined score order the rest.

`label_first=False` (`generate.label_first: false`) drops the label tiers: after the coverage
check, the combined score alone orders the candidates, so `weight` sets how much the classifier's
P(accurate) may overrule the LM (0: the LM score alone). On the CPU smol model the paper's
label-first order cost 1.3 BLEU against coverage-then-LM-score at the same coverage error
(issue 6): the labels are learned on synthetic corruptions of human texts, and the LM's beams
differ from one another in other ways. Which order a preset uses is chosen on dev with
`benchmarks/decoding.py`; on WebNLG dev (seen categories only) every order scored within 0.2
BLEU, so the presets keep the paper's.
"""

from __future__ import annotations

import math

PRIORITY = ("accurate", "value_error", "repetition", "omission", "hallucination")
_RANK = {label: i for i, label in enumerate(PRIORITY)}


def combined_score(lm_score: float, p_accurate: float, weight: float = 1.0) -> float:
    """LM log-probability (length-normalised) + weight × log P(accurate)."""
    return lm_score + weight * math.log(max(p_accurate, 1e-9))


def missing_entities(text: str | None, entities) -> int:
    """How many of the record's entities `text` does not mention."""
    from .evaluate import entity_present, normalize

    normalized = normalize(text or "")
    return sum(not entity_present(e, normalized) for e in entities or [])


def rerank_candidates(
    candidates: list[dict],
    weight: float = 1.0,
    missing: list[int] | None = None,
    label_first: bool = True,
) -> list[int]:
    """Indices of `candidates` (dicts with lm_score, fidelity_label, fidelity_score) best first;
    `missing`: per candidate, the record's entities it does not mention (sorted on first).

    `label_first` (the paper's order): the predicted label's severity, then the combined score.
    A candidate without a classifier label (classifier off or failed) sorts by LM score alone,
    after every labelled one with the same coverage. Without `label_first`: the combined score
    alone (the LM score for an unlabelled candidate)."""

    def key(i: int):
        c = candidates[i]
        gap = missing[i] if missing is not None else 0
        label = c.get("fidelity_label")
        if label is None:
            return (gap, len(PRIORITY) if label_first else 0, -c["lm_score"], i)
        score = combined_score(c["lm_score"], c["fidelity_score"], weight)
        return (gap, _RANK[label] if label_first else 0, -score, i)

    return sorted(range(len(candidates)), key=key)
