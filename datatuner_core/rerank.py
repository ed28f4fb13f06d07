"""Reranking of beam candidates by the fidelity classifier (method §7, the DataTuner_FC system).

Candidates are ordered by the severity of their predicted label —
accurate < value_error < repetition < omission < hallucination — and, within a label, by a
combined score: the LM's length-normalised log-probability plus `weight` × log P(accurate).
The original ordered ties by beam rank only; using P(accurate) as well prefers, among candidates
with the same predicted label, the one the classifier is surest is accurate.

With the coverage check on (`generate.coverage`), the number of the record's own entities that a
candidate does not mention (`coverage_check.entity_present`, the check of the report) comes
first: a candidate that drops a value is never chosen over one that states them all, whatever the
classifier says; the label and the combined score order the rest.

`label_first=False` (`generate.label_first: false`) drops the label tiers: after the coverage
check, the combined score alone orders the candidates, so `weight` sets how much the classifier's
P(accurate) may overrule the LM (0: the LM score alone). The labels are learned on synthetic
corruptions of human texts, while the LM's beams differ from one another in other ways, so the
label tiers can cost BLEU. Which order a preset uses is chosen on dev
(`python -m benchmarks.tune decoding`; the figures are in docs/presets.md).

`fidelity_verdict` (`generate.verdict`) sets the label and score a user sees for the chosen text:
the classifier's, overruled by the rules of `hard_negatives` when they find evidence against the
text (a record entity missing, a number the record does not hold, a repeated sentence). It does
not change which candidate is chosen.
"""

from __future__ import annotations

import math

from .config import GenerateConfig

_GENERATE = GenerateConfig()  # the section whose defaults the reranking keywords share

PRIORITY = ("accurate", "value_error", "repetition", "omission", "hallucination")
_RANK = {label: i for i, label in enumerate(PRIORITY)}


def combined_score(lm_score: float, p_accurate: float, weight: float = 1.0) -> float:
    """LM log-probability (length-normalised) + weight × log P(accurate)."""
    return lm_score + weight * math.log(max(p_accurate, 1e-9))


def missing_entities(text: str | None, entities) -> int:
    """How many of the record's entities `text` does not mention."""
    from .coverage_check import entity_present, normalize

    normalized = normalize(text or "")
    return sum(not entity_present(e, normalized) for e in entities or [])


def rerank_candidates(
    candidates: list[dict],
    weight: float = _GENERATE.weight,
    missing: list[int] | None = None,
    label_first: bool = _GENERATE.label_first,
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


def fidelity_verdict(
    label: str | None,
    p_accurate: float | None,
    text: str | None,
    entities,
    linearized: str | None = None,
    others=None,
) -> tuple[str | None, float | None]:
    """The label and score a user sees for one text: the classifier's, overruled by evidence.

    The rules of `hard_negatives` check the text against its record (the report's coverage check,
    numbers the record does not hold, repeated sentences; entities of other records too when
    `others`, a `coverage_check.EntityIndex`, is given). When they find nothing, the classifier's
    label and P(accurate) stand (the rules cannot confirm a text, only refute it). When they find
    something, the rule label is reported — so a text that leaves out any record entity, its
    subject included, is `omission` (or `value_error` if it states a value the record does not
    hold), never `accurate` — and the score becomes P(accurate) x the share of the text's record
    content that is right: (entities mentioned) / (entities + invented or foreign values); for a
    repetition, 1 - (words of the repeated copy) / (words of the text). Without a classifier
    label (no classifier) nothing is reported."""
    from .coverage_check import normalize
    from .hard_negatives import rule_findings, rule_label

    if label is None or p_accurate is None:
        return label, p_accurate
    found = rule_findings(text, list(entities or []), linearized, others)
    rule = rule_label(found)
    if rule == "accurate":
        return label, p_accurate
    n, extra = len(entities or []), len(found["foreign"]) + len(found["invented"])
    if found["missing"] or extra:
        share = (n - len(found["missing"])) / max(n + extra, 1)
    else:  # each repeated span once: its second copy is the redundant part
        words = len(normalize(text or "").split())
        share = 1 - sum(len(span.split()) for span in found["repeated"]) / max(words, 1)
    return rule, p_accurate * max(share, 0.0)
