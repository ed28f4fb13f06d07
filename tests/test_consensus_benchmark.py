"""`benchmarks.tune consensus`: stored dev candidates re-chosen by minimum Bayes risk."""

from __future__ import annotations

import json

import pytest
import sacrebleu

from benchmarks.tune import consensus_scores, main


def row(rid: str, split: str, candidates: list[tuple[str, float]], reference: str) -> dict:
    cands = [{"text": t, "lm_score": s, "fidelity_label": None, "fidelity_score": None}
             for t, s in candidates]  # fmt: skip
    return {
        "id": rid, "split": split, "text": cands[0]["text"], "lm_score": cands[0]["lm_score"],
        "candidates": cands, "references": [reference], "entities": ["Madrid", "Spain"],
        "linearized": "<subject> Madrid <predicate> country <object> Spain",
        "category": "Airport", "source": "webnlg", "fidelity_label": None,
        "fidelity_score": None, "error": None, "truncated": False,
    }  # fmt: skip


def test_the_odd_candidate_out_gets_the_lowest_consensus():
    texts = ["Madrid is in Spain.", "Madrid is located in Spain.", "Spain has a capital."]
    scores = consensus_scores(texts, sacrebleu.metrics.CHRF())
    assert len(scores) == 3 and all(0 <= s <= 1 for s in scores)
    assert scores[2] < min(scores[0], scores[1])
    assert consensus_scores(["only one"], sacrebleu.metrics.CHRF()) == [0.0]


def test_a_large_weight_chooses_the_consensus_candidate_among_the_fully_covering(tmp_path, capsys):
    # the top beam is the odd one out; the two others agree and match the reference; a candidate
    # that drops an entity is never chosen, however much the others agree with it
    rows = [
        row(f"r{i}", split,
            [("Madrid lies in the country of Spain, a nice one.", -0.1),
             ("Madrid is located in Spain.", -0.3), ("Madrid is located in Spain today.", -0.4),
             ("Madrid is located.", -0.05)],
            "Madrid is located in Spain.")
        for i, split in enumerate(["validation", "validation_unseen"] * 3)
    ]  # fmt: skip
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "result.json"
    main(["consensus", "--generations", str(path), "--weights", "0 100", "--metrics", "chrf",
          "--out", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    assert result["records"] == 6
    assert result["own_choice"]["all"]["bleu"] == result["chrf@0"]["all"]["bleu"]
    assert result["chrf@100"]["validation"]["records"] == 3
    assert result["chrf@100"]["all"]["bleu"] > result["chrf@0"]["all"]["bleu"] + 20
    assert result["chrf@100"]["all"]["coverage_error"] == 0


def test_test_rows_are_refused(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps(row("t", "test", [("Madrid is in Spain.", -0.1)], "x")) + "\n")
    with pytest.raises(SystemExit, match="test is not used"):
        main(["consensus", "--generations", str(path)])
