"""Rule labels of the LM's own texts on hand-made beams, the classifier pairs made from them, and
the fidelity verdict that never reports a text that drops a record entity as `accurate`."""

from __future__ import annotations

import pytest

from datatuner_core.candidate_choice import score_and_choose
from datatuner_core.corrupt import LABELS
from datatuner_core.coverage_check import EntityIndex
from datatuner_core.hard_negatives import (
    HARD_NEGATIVE_RULE,
    hard_negative_pairs,
    invented_numbers,
    label_beam,
    repeated_spans,
    rule_findings,
)
from datatuner_core.rerank import fidelity_verdict

LINEARIZED = (
    "<subject> Aarhus Airport <predicate> city served <object> Aarhus, Denmark ; "
    "<subject> Aarhus Airport <predicate> elevation <object> 25.0"
)
ENTITIES = ["Aarhus Airport", "Aarhus, Denmark", "25.0"]
OTHERS = EntityIndex([*ENTITIES, "Turkish Airlines", "Ankara", "Alan Bean"])
GOOD = "Aarhus Airport serves Aarhus, Denmark and is 25 metres above sea level."


@pytest.mark.parametrize(
    ("text", "label"),
    [
        (GOOD, "accurate"),
        ("Aarhus Airport, 25.0 m above sea level, serves the city of Aarhus in Denmark.",
         "accurate"),  # paraphrased: `Aarhus, Denmark` by its parts, 25.0 as 25 0
        ("Aarhus Airport serves Aarhus, Denmark.", "omission"),  # the elevation
        ("The airport serves Aarhus, Denmark and is 25 metres high.", "omission"),  # the subject
        ("", "omission"),
        # a value stated wrongly: 25.0 missing, 31 nowhere in the record
        ("Aarhus Airport serves Aarhus, Denmark and is 31 metres above sea level.",
         "value_error"),
        # another record's entity in place of one of this record's
        ("Aarhus Airport serves Ankara and is 25 metres above sea level.", "value_error"),
        # something added, nothing missing: an invented year, another record's entity
        (GOOD + " It opened in 1925.", "hallucination"),
        (GOOD + " It is the hub of Turkish Airlines.", "hallucination"),
        ("Aarhus Airport serves Aarhus, Denmark. It is 25 metres above sea level. It is 25 "
         "metres above sea level.", "repetition"),
        ("Aarhus Airport serves Aarhus, Denmark and is 25 metres above sea level and the "
         "airport serves aarhus denmark and is 25 metres above sea level and", "repetition"),
    ],
)  # fmt: skip
def test_rule_labels_of_hand_made_beams(text, label):
    assert label_beam(text, ENTITIES, LINEARIZED, OTHERS) == label
    assert label in LABELS


def test_findings_name_the_evidence():
    found = rule_findings(
        "Aarhus Airport serves Ankara and is 31 metres high.", ENTITIES, LINEARIZED, OTHERS
    )
    assert found == {
        "missing": ["Aarhus, Denmark", "25.0"],
        "foreign": ["Ankara"],
        "invented": ["31"],
        "repeated": [],
    }
    # without a corpus index only the record itself is known: no foreign entities
    assert label_beam(GOOD + " It is the hub of Turkish Airlines.", ENTITIES, LINEARIZED) == (
        "accurate"
    )
    # numbers the record holds in another form are not invented: dates, thousands, ordinals
    assert invented_numbers(
        "He was born on April 26th, 1945 and the runway is 2,776 m long.",
        ["1945-04-26", "2776.0"], None,
    ) == []  # fmt: skip
    assert invented_numbers("Runway 08 is 3 km.", ["8"], None) == ["3"]
    assert repeated_spans("One two three. Four five six.") == []


def _row(record_id, texts, entities=ENTITIES, linearized=LINEARIZED):
    return {
        "id": record_id, "linearized": linearized, "entities": entities, "split": "train",
        "candidates": [{"text": t, "lm_score": -1.0, "fidelity_label": None,
                        "fidelity_score": None} for t in texts],
    }  # fmt: skip


def test_hard_negative_pairs_from_train_beams():
    rows = [
        _row("a", [GOOD, "Aarhus Airport serves Aarhus, Denmark.", GOOD, "  "]),
        _row("b", ["Alan Bean was born in Wheeler, Texas. Aarhus Airport too."],
             entities=["Alan Bean", "Wheeler, Texas"], linearized="<subject> Alan Bean ..."),
        {"id": "c", "candidates": []},
    ]  # fmt: skip
    pairs = hard_negative_pairs(rows)
    assert [(p["record_id"], p["label"]) for p in pairs] == [
        ("a", "accurate"),
        ("a", "omission"),
        ("b", "hallucination"),
    ]  # fmt: skip  (duplicate and blank beams dropped; b names record a's airport)
    assert {p["rule"] for p in pairs} == {HARD_NEGATIVE_RULE}
    assert pairs[1] == {
        "id": "a/lm_beam/1", "record_id": "a", "split": "train", "linearized": LINEARIZED,
        "text": "Aarhus Airport serves Aarhus, Denmark.", "label": "omission", "rule": "lm_beam",
    }  # fmt: skip
    assert [p["label"] for p in hard_negative_pairs(rows, keep_accurate=False)] == [
        "omission", "hallucination",
    ]  # fmt: skip


def test_the_verdict_never_reports_an_omission_as_accurate():
    no_subject = "The airport serves Aarhus, Denmark and is 25 metres high."
    label, score = fidelity_verdict("accurate", 0.9, no_subject, ENTITIES, LINEARIZED)
    assert label == "omission" and score == pytest.approx(0.9 * 2 / 3)
    # nonsense of the kind the demo labelled accurate
    assert fidelity_verdict("accurate", 0.45, "The the the.", ENTITIES)[0] == "omission"
    # an invented value: value_error when it replaces one, hallucination when added
    wrong = "Aarhus Airport serves Aarhus, Denmark and is 31 metres above sea level."
    label, score = fidelity_verdict("accurate", 0.8, wrong, ENTITIES, LINEARIZED)
    assert label == "value_error" and score == pytest.approx(0.8 * 2 / 4)
    added = GOOD + " It opened in 1925."
    assert fidelity_verdict("accurate", 0.8, added, ENTITIES, LINEARIZED)[0] == "hallucination"
    # no evidence against the text: the classifier's label and score stand, whatever they are
    assert fidelity_verdict("accurate", 0.7, GOOD, ENTITIES, LINEARIZED) == ("accurate", 0.7)
    assert fidelity_verdict("repetition", 0.2, GOOD, ENTITIES, LINEARIZED) == ("repetition", 0.2)
    # a repetition: the score loses the repeated copy's share of the words
    again = "Aarhus Airport serves Aarhus, Denmark. It is 25 m high. It is 25 m high."
    label, score = fidelity_verdict("accurate", 0.9, again, ENTITIES, LINEARIZED)
    assert label == "repetition" and score == pytest.approx(0.9 * (1 - 5 / 15))
    # no classifier, no verdict
    assert fidelity_verdict(None, None, no_subject, ENTITIES) == (None, None)


def test_score_and_choose_reports_the_verdict_and_keeps_the_classifiers_labels():
    def rows():
        r = _row("a", ["Aarhus Airport serves Aarhus, Denmark.", GOOD])
        for c, p in zip(r["candidates"], (0.9, 0.4), strict=True):
            c["fidelity_label"], c["fidelity_score"], c["lm_score"] = "accurate", p, -0.5 - p
        return [r]

    plain, judged = rows(), rows()
    score_and_choose(plain, None)  # the classifier's own label: today's behaviour
    score_and_choose(judged, None, verdict=True)
    assert plain[0]["text"] == judged[0]["text"] == "Aarhus Airport serves Aarhus, Denmark."
    assert (plain[0]["fidelity_label"], plain[0]["fidelity_score"]) == ("accurate", 0.9)
    assert judged[0]["fidelity_label"] == "omission"
    assert judged[0]["fidelity_score"] == pytest.approx(0.9 * 2 / 3)
    assert [c["fidelity_label"] for c in judged[0]["candidates"]] == ["accurate", "accurate"]
    # with the coverage check in the choice, the complete text is chosen and stays accurate
    covered = rows()
    score_and_choose(covered, None, coverage=True, verdict=True)
    assert (covered[0]["text"], covered[0]["fidelity_label"]) == (GOOD, "accurate")


def test_hard_negatives_join_the_synthetic_pairs_as_train_pairs(tmp_path):
    """`with_hard_negatives`: every synthetic pair kept, the beams' pairs added to train, a
    record whose generation failed quarantined with its reason; read == written + quarantined."""
    from datatuner_core import stage_reader, stage_writer
    from datatuner_core.hard_negatives import with_hard_negatives
    from datatuner_core.schema import CORRUPTIONS, GENERATIONS

    synthetic = [
        {"id": f"s{i}", "record_id": "r", "split": split, "linearized": LINEARIZED, "text": GOOD,
         "label": label, "rule": rule}
        for i, (split, label, rule) in enumerate([
            ("train", "accurate", "original"), ("train", "omission", "entity_cut"),
            ("validation", "accurate", "original")])
    ]  # fmt: skip
    writer = stage_writer.StageWriter(str(tmp_path / "pairs"), "corrupt", CORRUPTIONS)
    for pair in synthetic:
        writer.add(pair)
    writer.commit(inputs=[], fingerprint="pairs", extra={"pairs": {"validation": {"total": 1}}})
    beams = [
        _row("a", [GOOD, "Aarhus Airport serves Aarhus, Denmark."]),
        {**_row("f", []), "text": None, "error": "out of memory"},
    ]
    writer = stage_writer.StageWriter(str(tmp_path / "beams"), "generate", GENERATIONS)
    for row in beams:
        full = dict.fromkeys(GENERATIONS.names)
        full.update({**row, "split": "train"})
        writer.add(full)
    writer.commit(inputs=[], fingerprint="beams")
    out = str(tmp_path / "merged")
    manifest = with_hard_negatives(str(tmp_path / "pairs"), str(tmp_path / "beams"), out)
    counts = manifest["counts"]
    assert (counts["read"], counts["written"], counts["quarantined"]) == (2, 1, 1)
    assert counts["quarantined_by_reason"] == {"no LM text to label": 1}
    rows = stage_reader.read_stage(out).to_pylist()
    assert [r["id"] for r in rows[:3]] == ["s0", "s1", "s2"]
    added = [(r["split"], r["label"], r["rule"]) for r in rows[3:]]
    assert added == [("train", "accurate", "lm_beam"), ("train", "omission", "lm_beam")]
    extra = manifest["extra"]
    assert extra["hard_negatives"] == {
        "records": 1, "pairs": 2, "by_label": {"accurate": 1, "omission": 1}
    }  # fmt: skip
    assert extra["pairs"]["train"]["total"] == 4 and extra["pairs"]["validation"] == {"total": 1}
    again = with_hard_negatives(str(tmp_path / "pairs"), str(tmp_path / "beams"), out)
    assert again["skipped"] is True
