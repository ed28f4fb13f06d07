"""Candidate choice: every candidate of a generations row classified in one batched pass, then the
row's text, LM score, label and score set from the candidate `rerank` puts first."""

from __future__ import annotations

from .config import GenerateConfig
from .rerank import fidelity_verdict, missing_entities, rerank_candidates


def score_and_choose(
    rows: list[dict], scorer=None, *, rerank: bool = True, coverage: bool = False,
    weight: float = GenerateConfig().weight, label_first: bool = GenerateConfig().label_first,
    batch_size: int = 32, verdict: bool = False,
    others=None,
) -> None:  # fmt: skip
    """Classify every candidate of `rows` (generations rows) in one batched pass with `scorer`
    (a `FidelityScorer`; candidates that carry a label already are not rescored), then set each
    row's text, scores and label from its chosen candidate: the top beam without `rerank`, else
    `rerank_candidates` (with the coverage check first when `coverage`, the label tiers when
    `label_first`). Rows are changed in place; a row without candidates (a failed generation)
    is left as it is. Clearing the candidates' `fidelity_label` first re-chooses with another
    classifier.

    `verdict`: the row's label and score are `rerank.fidelity_verdict` of the chosen candidate —
    the classifier's, overruled when the text leaves out a record entity (`omission`), states a
    number the record does not hold or (with `others`, an `coverage_check.EntityIndex`) another
    record's entity, or repeats a sentence. The candidates keep the classifier's own label and
    P(accurate): the choice among them is not changed by the verdict."""
    if scorer is not None:
        todo = [(r, c) for r in rows for c in r["candidates"] if c["fidelity_label"] is None]
        pairs = [(r["linearized"], c["text"]) for r, c in todo]
        scored = scorer.score(pairs, batch_size=batch_size) if pairs else []
        for (_, c), s in zip(todo, scored, strict=True):
            c["fidelity_label"], c["fidelity_score"] = s["label"], s["p_accurate"]
    for r in rows:
        if not r["candidates"]:
            continue
        missing = None
        if rerank and coverage:
            missing = [missing_entities(c["text"], r["entities"]) for c in r["candidates"]]
        order = rerank_candidates(r["candidates"], weight, missing, label_first) if rerank else [0]
        chosen = r["candidates"][order[0]]
        r["text"], r["lm_score"] = chosen["text"], chosen["lm_score"]
        label, score = chosen["fidelity_label"], chosen["fidelity_score"]
        if verdict:
            label, score = fidelity_verdict(
                label, score, chosen["text"], r.get("entities"), r.get("linearized"), others
            )
        r["fidelity_label"], r["fidelity_score"] = label, score
