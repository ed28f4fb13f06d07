"""Evaluation: sacrebleu equality, a hand-built generations table, and the WebNLG test references
scored as predictions."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest
import sacrebleu

from datatuner_core import bleu, breakdown, linearize, stage_reader, stage_writer
from datatuner_core import evaluate as ev
from datatuner_core.ingest import ingest

HYPS = [
    "The cat sat on the mat.",
    "Alan Bean was born in Wheeler, Texas.",
    "Aarhus Airport is in Tirstrup.",
]
REFS = [
    ["The cat is on the mat.", "A cat sat on the mat.", "There is a cat on the mat."],
    ["Alan Bean was born in Wheeler , Texas ."],
    ["Aarhus airport is located in Tirstrup.", "Tirstrup is where Aarhus Airport is."],
]


def _streams(refs):
    """Reference streams built by hand, the standard way: stream k = k-th reference or None."""
    width = max(len(r) for r in refs)
    return [[r[k] if k < len(r) else None for r in refs] for k in range(width)]


# ----------------------------------------------------------------------------- BLEU / chrF


def test_corpus_scores_equal_sacrebleu_with_uneven_reference_counts():
    scores = bleu.corpus_scores(HYPS, REFS)
    streams = _streams(REFS)
    assert scores["bleu"] == sacrebleu.corpus_bleu(HYPS, streams).score
    assert scores["chrf"] == sacrebleu.corpus_chrf(HYPS, streams).score
    assert scores["bleu_lowercase"] == sacrebleu.corpus_bleu(HYPS, streams, lowercase=True).score
    assert 0 < scores["bleu"] < 100
    assert (scores["n"], scores["n_scored"], scores["n_without_references"]) == (3, 3, 0)
    # padding with "" instead of None would add a zero-length reference: a different corpus
    assert bleu.reference_streams(REFS) == streams


def test_paired_bootstrap_separates_a_real_difference_from_noise():
    """`paired_bootstrap`: the observed difference is sacrebleu's; identical systems differ by
    exactly 0; a system that is always better wins every sample; two systems each better on half
    of the inputs get an interval across 0; two sets are averaged as a dev mean; seeded."""
    refs = [REFS[i % 3] for i in range(30)]
    good = [r[0] for r in refs]
    bad = [HYPS[i % 3].split(" ")[0] + " is ." for i in range(30)]
    scorer = bleu.CorpusScorer(refs)

    def stats(texts):
        return scorer.segment_statistics(texts, names=["bleu"])

    streams = _streams(refs)
    clear = bleu.paired_bootstrap([(scorer, stats(good), stats(bad))], samples=200)
    expected = (
        sacrebleu.corpus_bleu(good, streams).score - sacrebleu.corpus_bleu(bad, streams).score
    )
    assert clear["delta"] == round(expected, 2) and expected > 50
    assert clear["above_zero"] == 1.0 and 0 < clear["low"] <= clear["delta"] <= clear["high"]
    same = bleu.paired_bootstrap([(scorer, stats(good), stats(good))], samples=200)
    assert (same["delta"], same["low"], same["high"], same["above_zero"]) == (0, 0, 0, 0)
    half_a = good[:15] + bad[15:]
    half_b = bad[:15] + good[15:]
    tie = bleu.paired_bootstrap([(scorer, stats(half_a), stats(half_b))], samples=200)
    assert tie["low"] < 0 < tie["high"] and 0.05 < tie["above_zero"] < 0.95
    both = bleu.paired_bootstrap(
        [(scorer, stats(good), stats(bad)), (scorer, stats(good), stats(good))], samples=200
    )
    assert both["delta"] == round(expected / 2, 2) and both["above_zero"] == 1.0
    assert bleu.paired_bootstrap([(scorer, stats(half_a), stats(half_b))], samples=200) == tie


def test_lowercase_bleu_differs_only_by_case():
    hyps, refs = ["the EIFFEL tower is in PARIS ."], [["The Eiffel Tower is in Paris ."]]
    scores = bleu.corpus_scores(hyps, refs)
    assert scores["bleu_lowercase"] == pytest.approx(100.0)
    assert scores["bleu"] < 50


def test_null_text_is_failed_and_inputs_without_references_are_excluded():
    scores = bleu.corpus_scores([HYPS[0], None, "Text with no reference."], [REFS[0], REFS[1], []])
    assert scores["n"] == 3 and scores["n_failed"] == 1
    assert scores["n_without_references"] == 1 and scores["n_scored"] == 2
    expected = sacrebleu.corpus_bleu([HYPS[0], ""], _streams([REFS[0], REFS[1]])).score
    assert scores["bleu"] == expected
    empty = bleu.corpus_scores([None], [[]])
    assert empty["bleu"] is None and empty["chrf"] is None and empty["n_failed"] == 1


# ----------------------------------------------------------------------------- a generations table


def _cand(text, label, score, lm=-1.0):
    return {"text": text, "lm_score": lm, "fidelity_label": label, "fidelity_score": score}


def _data(n_triples):
    triple = {"subject": "s", "predicate": "p", "object": "o"}
    return {"triples": [triple] * n_triples, "act": None, "slots": []}


GEN_ROWS = [
    {  # seen, 1 triple; reranking changed the choice (top beam dropped the city)
        "id": "a",
        "category": "Airport",
        "data": _data(1),
        "entities": ["Aarhus Airport", "Tirstrup"],
        "references": ["Aarhus Airport is in Tirstrup.", "Tirstrup has Aarhus Airport."],
        "text": "Aarhus Airport is in Tirstrup.",
        "fidelity_label": "accurate",
        "fidelity_score": 0.9,
        "candidates": [
            _cand("Aarhus Airport is an airport.", "omission", 0.2),
            _cand("Aarhus Airport is in Tirstrup.", "accurate", 0.9),
        ],
    },
    {  # seen, 2 triples; unchanged
        "id": "b",
        "category": "Astronaut",
        "data": _data(2),
        "entities": ["Alan Bean", "Wheeler, Texas"],
        "references": ["Alan Bean was born in Wheeler, Texas."],
        "text": "Alan Bean was born in Wheeler, Texas.",
        "fidelity_label": "accurate",
        "fidelity_score": 0.8,
        "candidates": [_cand("Alan Bean was born in Wheeler, Texas.", "accurate", 0.8)],
    },
    {  # unseen, 2 triples; reranking changed; the top beam hallucinates
        "id": "c",
        "category": "Artist",
        "data": _data(2),
        "entities": ["Aaron Turner", "Black metal"],
        "references": [
            "Aaron Turner plays black metal.",
            "Aaron Turner is a black metal artist.",
            "Black metal is the genre of Aaron Turner.",
        ],
        "text": "Aaron Turner plays black metal music.",
        "fidelity_label": "value_error",
        "fidelity_score": 0.3,
        "candidates": [
            _cand("Aaron Turner of Tirstrup plays black metal.", "hallucination", 0.1),
            _cand("Aaron Turner plays black metal music.", "value_error", 0.3),
        ],
    },
    {  # unseen, 1 triple; generation failed
        "id": "d",
        "category": "Politician",
        "data": _data(1),
        "entities": ["Abdul Taib Mahmud"],
        "references": ["Abdul Taib Mahmud is a politician."],
        "text": None,
        "fidelity_label": None,
        "fidelity_score": None,
        "candidates": [],
    },
    {  # seen, 3 triples; no references (left out of BLEU)
        "id": "e",
        "category": "City",
        "data": _data(3),
        "entities": ["Denmark"],
        "references": [],
        "text": "Denmark.",
        "fidelity_label": "accurate",
        "fidelity_score": 0.7,
        "candidates": [_cand("Denmark.", "accurate", 0.7)],
    },
]


def _sacre(rows, getter):
    rows = [r for r in rows if r["references"]]
    return sacrebleu.corpus_bleu(
        [getter(r) or "" for r in rows], _streams([r["references"] for r in rows])
    ).score


def _table(rows):
    return pa.Table.from_pylist(rows)


@pytest.mark.parametrize("as_table", [False, True])
def test_evaluate_generations_hand_built(as_table):
    metrics = ev.evaluate_generations(_table(GEN_ROWS) if as_table else GEN_ROWS)
    assert (metrics["n"], metrics["n_failed"], metrics["n_without_references"]) == (5, 1, 1)
    assert metrics["bleu"] == _sacre(GEN_ROWS, lambda r: r["text"])
    top = lambda r: r["candidates"][0]["text"] if r["candidates"] else None  # noqa: E731
    assert metrics["top_beam"]["bleu"] == _sacre(GEN_ROWS, top)
    assert metrics["top_beam"]["bleu"] < metrics["bleu"]
    assert metrics["changed_by_rerank"] == 2

    chosen, beam = metrics["fidelity"]["chosen"], metrics["fidelity"]["top_beam"]
    assert chosen["counts"] == {
        "accurate": 3,
        "value_error": 1,
        "omission": 0,
        "repetition": 0,
        "hallucination": 0,
    }
    assert (chosen["labelled"], chosen["unlabelled"], chosen["accurate_rate"]) == (4, 1, 0.75)
    assert chosen["mean_fidelity_score"] == pytest.approx((0.9 + 0.8 + 0.3 + 0.7) / 4)
    assert beam["counts"]["omission"] == 1 and beam["counts"]["hallucination"] == 1
    assert beam["accurate_rate"] == 0.5

    # 8 entities; the failed record misses 1; the top beam also misses Tirstrup (a) and
    # hallucinates Tirstrup (c)
    cov = metrics["coverage"]
    assert (cov["chosen"]["missing"], cov["chosen"]["hallucinated"]) == (1, 0)
    assert (cov["top_beam"]["missing"], cov["top_beam"]["hallucinated"]) == (2, 1)
    assert cov["chosen"]["error_rate"] == 1 / 8 and cov["top_beam"]["error_rate"] == 3 / 8

    assert metrics["webnlg"] is True
    seen = [r for r in GEN_ROWS if r["category"] in breakdown.WEBNLG_SEEN]
    unseen = [r for r in GEN_ROWS if r["category"] in breakdown.WEBNLG_UNSEEN]
    assert metrics["seen"]["bleu"] == _sacre(seen, lambda r: r["text"])
    assert metrics["unseen"]["bleu"] == _sacre(unseen, lambda r: r["text"])
    assert (metrics["seen"]["n"], metrics["unseen"]["n"]) == (3, 2)
    by_size = metrics["breakdown"]["by_size"]
    assert list(by_size) == ["1", "2", "3"]
    two = [r for r in GEN_ROWS if len(r["data"]["triples"]) == 2]
    assert by_size["2"]["bleu"] == _sacre(two, lambda r: r["text"])
    assert by_size["2"]["top_beam_bleu"] == _sacre(two, top)
    assert by_size["3"]["bleu"] is None and by_size["3"]["n_without_references"] == 1
    assert set(metrics["breakdown"]["by_category"]) == {r["category"] for r in GEN_ROWS}
    assert metrics["breakdown"]["by_category"]["Artist"]["bleu"] == _sacre(
        [GEN_ROWS[2]], lambda r: r["text"]
    )
    summary = ev.headline(metrics)
    assert (
        summary["bleu"] == metrics["bleu"] and summary["bleu_unseen"] == metrics["unseen"]["bleu"]
    )
    assert (summary["coverage_error"], summary["accurate_rate_top_beam"]) == (1 / 8, 0.5)


def test_evaluate_generations_without_optional_columns():
    rows = [{k: r[k] for k in ("id", "text", "references")} for r in GEN_ROWS]
    metrics = ev.evaluate_generations(_table(rows))
    assert metrics["bleu"] == _sacre(GEN_ROWS, lambda r: r["text"])
    assert metrics["top_beam"] is None and metrics["coverage"] is None
    assert metrics["breakdown"] == {} and metrics["seen"] is None and metrics["webnlg"] is False
    # categories that are not WebNLG's: a category breakdown, no seen/unseen
    other = [{**r, "category": "restaurant"} for r in rows]
    metrics = ev.evaluate_generations(other)
    assert metrics["webnlg"] is False and list(metrics["breakdown"]) == ["by_category"]
    assert ev.headline(metrics)["bleu_seen"] is None
    forced = ev.evaluate_generations(other, webnlg_breakdown=True)
    assert list(forced["breakdown"]["seen_unseen"]) == ["other"] and forced["seen"] is None


def test_evaluate_stage_reads_through_storage(tmp_path):
    from datatuner_core.schema import LINEARIZED

    schema = pa.schema([*LINEARIZED, pa.field("text", pa.string())])
    rows = [
        {
            "id": r["id"],
            "source": "webnlg",
            "split": "test",
            "category": r["category"],
            "data": r["data"],
            "references": r["references"],
            "raw": "",
            "linearized": "",
            "entities": r["entities"],
            "text": r["text"],
        }
        for r in GEN_ROWS
    ]
    uri = str(tmp_path / "generations")
    writer = stage_writer.StageWriter(uri, "generate", schema)
    for row in rows:
        writer.add_counted(row)
    writer.commit(inputs=[], fingerprint="x")
    metrics = ev.evaluate_stage(uri)
    assert metrics["bleu"] == _sacre(GEN_ROWS, lambda r: r["text"])
    assert metrics["seen"]["n"] == 3 and list(metrics["breakdown"]["by_size"]) == ["1", "2", "3"]


# ----------------------------------------------------------------------------- WebNLG references


@pytest.fixture(scope="module")
def webnlg_test(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("webnlg")
    ingest("webnlg", str(shared_data / "webnlg" / "test"), str(root / "records"), split="test")
    linearize.linearize(str(root / "records"), str(root / "linearized"))
    return stage_reader.read_stage(str(root / "linearized"))


def test_webnlg_references_as_predictions(webnlg_test):
    rows = webnlg_test.to_pylist()
    assert len(rows) == 1862
    for row in rows:
        row["text"] = row["references"][0]
        row["candidates"] = [
            {
                "text": row["text"],
                "lm_score": -1.0,
                "fidelity_label": "accurate",
                "fidelity_score": 1.0,
            }
        ] * 5
    start = time.perf_counter()
    metrics = ev.evaluate_generations(rows)
    elapsed = time.perf_counter() - start
    # the hypothesis is one of its references: a perfect corpus
    assert metrics["bleu"] == pytest.approx(100.0)
    assert metrics["seen"]["bleu"] == pytest.approx(100.0)
    assert set(metrics["breakdown"]["by_size"]) == {str(i) for i in range(1, 8)}
    # human references convey their entities: the heuristic's floor (6.1% when measured)
    coverage = metrics["coverage"]["chosen"]
    assert coverage["entities"] == 7233 and coverage["error_rate"] < 0.08
    assert metrics["coverage"]["top_beam"] == coverage
    print(
        f"\nWebNLG test, references as predictions: evaluate {elapsed:.2f} s, "
        f"coverage error {coverage['error_rate']:.4f}, records with error "
        f"{coverage['record_error_share']:.4f}"
    )  # speed is a benchmark's business (printed here for the notes), not an assertion

    # reference[0] held out of the references: inputs with one reference drop out
    for row in rows:
        row["references"] = row["references"][1:]
        del row["candidates"], row["entities"]
    held_out = ev.evaluate_generations(rows)
    assert held_out["n_without_references"] == 109
    assert 35 < held_out["bleu"] < 70
    assert held_out["bleu_lowercase"] > held_out["bleu"]
    assert 55 < held_out["chrf"] < 85
    print(
        f"held out: BLEU {held_out['bleu']:.2f} lc {held_out['bleu_lowercase']:.2f} "
        f"chrF {held_out['chrf']:.2f} seen {held_out['seen']['bleu']:.2f} "
        f"unseen {held_out['unseen']['bleu']:.2f}"
    )
