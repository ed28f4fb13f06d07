"""`benchmarks.tune weights`: stored dev candidates re-chosen by each reranking order and weight
of the classifier's log P(accurate), with the verdict a user would see."""

from __future__ import annotations

import json

import pytest

from benchmarks.tune import main

from .test_consensus_benchmark import row


def labelled(rid: str, split: str) -> dict:
    # the top beam by LM score is judged an omission (P(accurate) 0.01); the second states the
    # reference and is judged accurate (0.99); the third drops "Spain" and is never chosen
    r = row(rid, split, [("Madrid lies in the country Spain, it is.", -0.1),
                         ("Madrid is located in Spain.", -0.5), ("Madrid is located.", -0.01)],
            "Madrid is located in Spain.")  # fmt: skip
    for c, (label, p) in zip(r["candidates"], [("omission", 0.01), ("accurate", 0.99),
                                               ("accurate", 0.9)]):  # fmt: skip
        c["fidelity_label"], c["fidelity_score"] = label, p
    return r


def test_a_weight_on_the_classifier_chooses_the_candidate_it_trusts(tmp_path):
    rows = [labelled(f"r{i}", s) for i, s in enumerate(["validation", "validation_unseen"] * 3)]
    path, out = tmp_path / "dev.jsonl", tmp_path / "weights.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    main(["weights", "--generations", str(path), "--weights", "0 1",
          "--orders", "coverage label_first", "--out", str(out)])  # fmt: skip
    result = json.loads(out.read_text())
    assert result["records"] == {"validation": 3, "validation_unseen": 3}
    settings = result["settings"]
    assert set(settings) == {"coverage@0", "coverage@1", "label_first@0", "label_first@1"}
    plain, weighted = settings["coverage@0"], settings["coverage@1"]
    # weight 0: the LM's favourite among the fully covering ones, labelled omission by the
    # classifier, so the verdict is never `accurate`; weight 1: the reference itself
    assert weighted["validation"]["bleu"] == 100 and plain["validation"]["bleu"] < 60
    assert (
        plain["validation"]["accurate_rate"] == 0 and weighted["validation"]["accurate_rate"] == 1
    )
    assert weighted["validation_unseen"]["verdict_accurate_precision"] == 1
    assert all(s["coverage_error"] == 0 for e in settings.values() for s in
               (e["validation"], e["validation_unseen"]))  # fmt: skip
    assert settings["label_first@0"]["mean_bleu"] == 100 == weighted["mean_bleu"]
    assert result["best_on_dev"] in {"coverage@1", "label_first@0", "label_first@1"}


def test_unlabelled_candidates_need_a_classifier_and_test_rows_are_refused(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text(json.dumps(row("r", "validation", [("Madrid is in Spain.", -0.1)], "x")) + "\n")
    with pytest.raises(SystemExit, match="give --classifier"):
        main(["weights", "--generations", str(path)])
    path.write_text(json.dumps(labelled("t", "test")) + "\n")
    with pytest.raises(SystemExit, match="test is not used"):
        main(["weights", "--generations", str(path)])
