"""Reranking: label priority first, then LM score + log P(accurate); unlabelled last."""

from __future__ import annotations

import math

from datatuner_core.rerank import PRIORITY, combined_score, rerank_candidates


def _c(label, lm, p):
    return {"text": f"{label}/{lm}", "lm_score": lm, "fidelity_label": label, "fidelity_score": p}


def test_an_accurate_candidate_comes_first_whenever_there_is_one():
    candidates = [
        _c("omission", -0.1, 0.05),
        _c("hallucination", -0.2, 0.01),
        _c("accurate", -2.0, 0.6),
        _c("value_error", -0.3, 0.2),
        _c("accurate", -1.5, 0.4),
    ]
    order = rerank_candidates(candidates)
    assert [candidates[i]["fidelity_label"] for i in order] == [
        "accurate", "accurate", "value_error", "omission", "hallucination"
    ]  # fmt: skip
    # among the two accurate ones: -1.5 + log 0.4 = -2.42 beats -2.0 + log 0.6 = -2.51
    assert combined_score(-1.5, 0.4) > combined_score(-2.0, 0.6)
    assert order[:2] == [4, 2]


def test_priority_order_is_the_papers():
    assert PRIORITY == ("accurate", "value_error", "repetition", "omission", "hallucination")
    candidates = [_c(label, -1.0, 0.5) for label in reversed(PRIORITY)]
    order = rerank_candidates(candidates)
    assert [candidates[i]["fidelity_label"] for i in order] == list(PRIORITY)


def test_without_labels_the_lm_score_decides_and_labelled_come_first():
    plain = [{"text": str(i), "lm_score": s, "fidelity_label": None, "fidelity_score": None}
             for i, s in enumerate([-3.0, -1.0, -2.0])]  # fmt: skip
    assert rerank_candidates(plain) == [1, 2, 0]
    mixed = [*plain, _c("hallucination", -9.0, 0.0)]
    assert rerank_candidates(mixed)[0] == 3
    assert math.isfinite(combined_score(-1.0, 0.0))


def test_coverage_check_comes_before_the_label():
    from datatuner_core.rerank import missing_entities

    entities = ["Aarhus Airport", "Aarhus, Denmark", "25.0"]
    texts = [
        "Aarhus Airport serves Aarhus.",  # misses the elevation (and Denmark)
        "Aarhus Airport, 25 metres above sea level, serves Aarhus, Denmark.",
        "The airport is 25 metres high.",
    ]
    missing = [missing_entities(t, entities) for t in texts]
    assert missing == [2, 0, 2]
    candidates = [_c("accurate", -0.5, 0.9), _c("omission", -1.0, 0.2), _c("accurate", -0.7, 0.9)]
    assert rerank_candidates(candidates)[0] == 0  # the classifier alone prefers the first
    order = rerank_candidates(candidates, missing=missing)
    assert order == [1, 0, 2]  # the only complete text first, then label + score
    assert missing_entities(None, entities) == 3 and missing_entities("x", []) == 0


def test_without_label_first_the_combined_score_orders_within_a_coverage_level():
    candidates = [
        _c("value_error", -0.4, 0.30),  # best LM score, labelled value_error
        _c("accurate", -1.2, 0.55),
        _c("accurate", -0.9, 0.50),
    ]
    assert rerank_candidates(candidates)[0] == 2  # paper: accurate ones first
    # weight 0: the LM score alone; weight 1: -0.4 + log 0.30 = -1.60 < -0.9 + log 0.5 = -1.59
    assert rerank_candidates(candidates, weight=0.0, label_first=False) == [0, 2, 1]
    assert rerank_candidates(candidates, weight=1.0, label_first=False) == [2, 0, 1]
    # the coverage check still comes first, and unlabelled candidates rank by LM score
    assert rerank_candidates(candidates, 0.0, missing=[1, 0, 1], label_first=False) == [1, 0, 2]
    plain = [
        {"text": t, "lm_score": s, "fidelity_label": None, "fidelity_score": None}
        for t, s in (("a", -2.0), ("b", -0.5))
    ]
    assert rerank_candidates([*plain, _c("accurate", -1.0, 0.9)], label_first=False)[0] == 1


def test_score_and_choose_follows_label_first():
    from datatuner_core.candidate_choice import score_and_choose

    def rows():
        cands = [{**_c("value_error", -0.4, 0.30), "text": "x"}, {**_c("accurate", -0.9, 0.5)}]
        return [{"linearized": "l", "entities": [], "candidates": cands}, {"candidates": []}]

    paper, scored = rows(), rows()
    score_and_choose(paper, None)
    score_and_choose(scored, None, weight=0.0, label_first=False)
    assert (paper[0]["fidelity_label"], paper[0]["lm_score"]) == ("accurate", -0.9)
    assert (scored[0]["text"], scored[0]["fidelity_label"]) == ("x", "value_error")
    assert "text" not in paper[1]  # a row without candidates is left as it is
