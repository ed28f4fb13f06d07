"""The oracle of a generations stage: the best BLEU and coverage a chooser could reach among the
stored candidates; and the precision of the `accurate` label against the coverage check."""

from __future__ import annotations

import pyarrow as pa
import pytest
from sacrebleu.metrics import BLEU

from datatuner_core import evaluate as ev

REF_A = "Alan Bean was born in Wheeler, Texas."
REF_B = "Aarhus Airport serves the city of Aarhus, Denmark."


def _cand(text, label="accurate", p=0.5, lm=-1.0):
    return {"text": text, "lm_score": lm, "fidelity_label": label, "fidelity_score": p}


def rows():
    return [
        {   # the chosen (top) beam drops the birth place; the second candidate is the reference
            "id": "a", "text": "Alan Bean was born.", "fidelity_label": "accurate",
            "fidelity_score": 0.6, "references": [REF_A],
            "entities": ["Alan Bean", "Wheeler, Texas"],
            "candidates": [_cand("Alan Bean was born."), _cand(REF_A, "omission", 0.2),
                           _cand("Bean was born in Texas.", "value_error", 0.1)],
        },
        {   # one candidate only, which misses Denmark and names another record's entity
            "id": "b", "text": "Aarhus Airport serves Aarhus. Alan Bean flew.",
            "fidelity_label": "accurate", "fidelity_score": 0.7, "references": [REF_B],
            "entities": ["Aarhus Airport", "Aarhus, Denmark"],
            "candidates": [_cand("Aarhus Airport serves Aarhus. Alan Bean flew.")],
        },
        {   # complete and labelled accurate
            "id": "c", "text": REF_B, "fidelity_label": "accurate", "fidelity_score": 0.9,
            "references": [REF_B], "entities": ["Aarhus Airport", "Aarhus, Denmark"],
            "candidates": [_cand(REF_B), _cand("Aarhus Airport.", "omission")],
        },
    ]  # fmt: skip


def test_the_oracle_picks_the_best_candidate_per_input():
    metrics = ev.evaluate_generations(rows())
    oracle = metrics["oracle"]
    picks = [REF_A, "Aarhus Airport serves Aarhus. Alan Bean flew.", REF_B]
    expected = BLEU().corpus_score(picks, [[REF_A, REF_B, REF_B]]).score
    assert oracle["bleu"] == pytest.approx(expected)
    assert (
        oracle["bleu"]
        > metrics["bleu"]
        == pytest.approx(
            BLEU().corpus_score([r["text"] for r in rows()], [[REF_A, REF_B, REF_B]]).score
        )
    )
    # a: 0 errors (second candidate); b: Denmark missing + Alan Bean hallucinated; c: 0
    assert oracle["coverage_error"] == pytest.approx(2 / 6)
    assert metrics["coverage"]["chosen"]["error_rate"] == pytest.approx(3 / 6)
    assert oracle["candidates_per_input"] == pytest.approx(2.0)
    summary = ev.headline(metrics)
    assert summary["oracle_bleu"] == oracle["bleu"]
    assert summary["oracle_coverage_error"] == oracle["coverage_error"]


def test_the_oracle_of_a_table_equals_that_of_its_rows():
    table = pa.Table.from_pylist(rows())
    from_table, from_rows = ev.evaluate_generations(table), ev.evaluate_generations(rows())
    assert from_table["oracle"] == from_rows["oracle"]
    assert from_table["coverage"] == from_rows["coverage"]


def test_without_candidates_there_is_no_oracle():
    plain = [{k: v for k, v in r.items() if k != "candidates"} for r in rows()]
    metrics = ev.evaluate_generations(plain)
    assert metrics["oracle"] is None and ev.headline(metrics)["oracle_bleu"] is None


def test_accurate_precision_against_the_coverage_check():
    precision = ev.evaluate_generations(rows())["coverage"]["accurate_precision"]
    # three texts labelled accurate; only c states its record and nothing else
    assert precision == {"precision": pytest.approx(1 / 3), "accurate": 3, "without_error": 1}
