"""The E2E metric set, each against a value published or derived by hand on a small known case."""

from __future__ import annotations

import pytest

from datatuner_core import metrics

# Papineni et al.'s BLEU example, as NLTK's NIST documentation uses it (case kept)
HYP1 = ("It is a guide to action which ensures that the military always obeys the commands of "
        "the party")  # fmt: skip
HYP2 = "It is to insure the troops forever hearing the activity guidebook that party direct"
REFS = [
    "It is a guide to action that ensures that the military will forever heed Party commands",
    "It is the guiding principle which guarantees the military forces always being under the "
    "command of the Party",
    "It is the practical guide for the army always to heed the directions of the party",
]


def test_nist_matches_the_published_values():
    refs = [metrics.tokenize(r, lowercase=False) for r in REFS]
    for hyp, published in ((HYP1, 3.3709), (HYP2, 1.4619)):  # NLTK's documented values
        value = metrics.nist([metrics.tokenize(hyp, lowercase=False)], [refs])
        assert value == pytest.approx(published, abs=1e-4)


def test_rouge_l_matches_the_lcs_by_hand():
    # rouge-score's README case: LCS "the quick brown jumps the" = 5 of 8 and 9 tokens
    value = metrics.rouge_l(["The quick brown dog jumps on the log."],
                            [["The quick brown fox jumps over the lazy dog"]])  # fmt: skip
    p, r = 5 / 8, 5 / 9
    assert value == pytest.approx(100 * 2 * p * r / (p + r))  # 58.82
    # the best of several references counts
    best = metrics.rouge_l(["a b c"], [["x y z", "a b c"]])
    assert best == pytest.approx(100.0)


def test_cider_d_by_hand():
    # two inputs, each text equal to its one reference, two tokens long: unigrams and bigrams
    # match exactly (cosine 1), there are no 3- or 4-grams: 10 x (1 + 1 + 0 + 0) / 4 = 5.0
    same = metrics.cider([["a", "b"], ["c", "d"]], [[["a", "b"]], [["c", "d"]]])
    assert same == pytest.approx(5.0)
    wrong = metrics.cider([["c", "d"], ["a", "b"]], [[["a", "b"]], [["c", "d"]]])
    assert wrong == pytest.approx(0.0)


def test_standard_metrics_on_a_corpus_with_gaps():
    out = metrics.standard_metrics(
        ["The quick brown fox.", None, "Nothing to compare."],
        [["The quick brown fox."], ["A reference."], []],
    )
    assert out["n_scored"] == 2  # the third input has no reference
    assert out["rouge_l"] == pytest.approx(50.0)  # 100 and 0 (a missing text scores 0)
    assert out["nist"] > 0 and out["cider"] >= 0
    assert out["meteor"] is None and "WordNet" in out["meteor_note"]
    assert metrics.standard_metrics([None], [[]])["nist"] is None
    # texts shorter than NIST's 5-grams (an undertrained model's): no division by zero
    short = metrics.standard_metrics(["a b", "c"], [["a b c d e f"], ["c d"]])
    assert short["nist"] > 0
