"""The corruption rules (datatuner_core.corruption_rules): each rule's outputs, hand-checked."""

from __future__ import annotations

from datatuner_core.corrupt import corrupt_records
from datatuner_core.corruption_rules import (
    clause_drop,
    entity_cut,
    entity_swap,
    negation_removal,
    novel,
    sentence_drop,
    sentence_insert,
    sentence_repeat,
    sentence_substitute,
    yes_no_flip,
)

from .test_corrupt import E2E_LIN, e2e_row

# --- value_error rules ----------------------------------------------------------------------


def test_entity_swap_replaces_every_mention_of_one_entity():
    text = "Alan Bean was born in Wheeler, Texas. Alan Bean was a test pilot."
    assert entity_swap(text, ["Alan Bean", "Wheeler, Texas", "Test pilot"]) == [
        "Wheeler, Texas was born in Wheeler, Texas. Wheeler, Texas was a test pilot.",
        "Test pilot was born in Wheeler, Texas. Test pilot was a test pilot.",
        "Alan Bean was born in Alan Bean. Alan Bean was a test pilot.",
        "Alan Bean was born in Test pilot. Alan Bean was a test pilot.",
        "Alan Bean was born in Wheeler, Texas. Alan Bean was a Alan Bean.",
        "Alan Bean was born in Wheeler, Texas. Alan Bean was a Wheeler, Texas.",
    ]


def test_entity_swap_uses_the_pool_only_for_a_single_entity_record():
    assert entity_swap("Madrid is big.", ["Madrid"], ["Spain", "Madrid", "yes"]) == [
        "Spain is big."
    ]
    assert entity_swap("Madrid is big.", ["Madrid"]) == []
    assert entity_swap("Madrid is big.", ["Madrid", "Spain"], ["Paris"]) == ["Spain is big."]
    # whole words only: "Spain" inside "Spaniards" is not a mention
    assert entity_swap("Spaniards like it.", ["Spain", "Madrid"]) == []


def test_entity_cut_keeps_a_proper_prefix_but_not_a_usual_short_form():
    text = "Alan B. Miller Hall was born in Wheeler, Texas."
    assert entity_cut(text, ["Alan B. Miller Hall", "Wheeler, Texas"]) == [
        "Alan B. Miller was born in Wheeler, Texas.",
        "Alan B. was born in Wheeler, Texas.",
        "Alan was born in Wheeler, Texas.",
        # not "Wheeler" (up to the comma) nor any suffix ("Hall", "Texas")
    ]
    # every mention is cut alike, whatever its case
    assert entity_cut("Alan Bean flew. alan bean rests.", ["Alan Bean"]) == [
        "Alan flew. alan rests."
    ]
    # stop-word-only parts are skipped ("the"), a suffix is never kept ("Alamo"), nor a part
    # before a parenthesis; single-word entities cannot be cut
    assert entity_cut("He visited the Alamo.", ["the Alamo", "Texas"]) == []
    assert entity_cut("Aarhus (Denmark) Airport is big.", ["Aarhus (Denmark) Airport"]) == [
        "Aarhus (Denmark) is big."
    ]


def test_negation_removal_one_output_per_negation():
    text = "The Eagle is not cheap and doesn't serve wine. Never late. No. 5 has no pub."
    assert negation_removal(text) == [
        "The Eagle is cheap and doesn't serve wine. Never late. No. 5 has no pub.",
        "The Eagle is not cheap and does serve wine. Never late. No. 5 has no pub.",
        "The Eagle is not cheap and doesn't serve wine. Late. No. 5 has no pub.",
        "The Eagle is not cheap and doesn't serve wine. Never late. No. 5 has pub.",
    ]
    assert negation_removal("It cannot fail and won't stop.") == [
        "It can fail and won't stop.",
        "It cannot fail and will stop.",
    ]
    assert negation_removal("Nothing here is notable.") == []


def test_yes_no_flip_changes_only_the_data():
    slots = e2e_row()["data"]["slots"]
    assert yes_no_flip(E2E_LIN, slots) == [E2E_LIN.replace("[ yes ]", "[ no ]")]
    # without slot information, the `[ yes ]` / `[ no ]` pattern of the reference notes is used
    assert yes_no_flip(E2E_LIN) == [E2E_LIN.replace("[ yes ]", "[ no ]")]
    viggo = (
        "<inform> inform ( <has_multiplayer> has multiplayer: [ No ], <rating> rating: [ good ]> )"
    )
    assert yes_no_flip(viggo, [{"slot": "has_multiplayer", "value": "No"}]) == [
        viggo.replace("[ No ]", "[ Yes ]")
    ]
    assert yes_no_flip("<subject> Yes Minister <predicate> genre <object> sitcom", []) == []

    rows = [r for r in corrupt_records([e2e_row()], per_example=50) if r["rule"] == "yes_no_flip"]
    assert len(rows) == 1
    assert rows[0]["label"] == "value_error"
    assert rows[0]["text"] == e2e_row()["references"][0]
    assert rows[0]["linearized"] == E2E_LIN.replace("[ yes ]", "[ no ]")


# --- omission, repetition, hallucination rules ----------------------------------------------


def test_sentence_drop_shortest_first():
    text = "Madrid is in Spain. Felipe VI leads Spain. It is big."
    assert sentence_drop(text) == [
        "Madrid is in Spain. Felipe VI leads Spain.",
        "Felipe VI leads Spain. It is big.",
        "Madrid is in Spain. It is big.",
    ]
    assert sentence_drop("Madrid is in Spain.") == []


def test_clause_drop_to_next_comma_or_sentence_end():
    text = "Alan Bean, born in Wheeler, Texas, was a test pilot. He died in 2018."
    assert clause_drop(text) == [
        "Alan Bean, Texas, was a test pilot. He died in 2018.",
        "Alan Bean. He died in 2018.",
        "Alan Bean, born in Wheeler, was a test pilot. He died in 2018.",
        "Alan Bean, born in Wheeler. He died in 2018.",
        "Alan Bean, born in Wheeler, Texas. He died in 2018.",
    ]
    # thousands separators are not clause commas
    assert clause_drop("The runway is 1,000 metres long.") == []


def test_sentence_repeat_inserts_a_copy():
    assert sentence_repeat("Madrid is in Spain.") == ["Madrid is in Spain. Madrid is in Spain."]
    assert sentence_repeat("Madrid is in Spain. It is big.") == [
        "It is big. Madrid is in Spain. It is big.",
        "Madrid is in Spain. It is big. It is big.",
        "Madrid is in Spain. Madrid is in Spain. It is big.",
        "Madrid is in Spain. It is big. Madrid is in Spain.",
    ]
    # a final sentence without a full stop gets one when it moves inside the text
    assert sentence_repeat("Madrid is in Spain") == ["Madrid is in Spain. Madrid is in Spain"]


def test_hallucination_rules_use_foreign_sentences():
    text = "Madrid is in Spain. It is big."
    assert sentence_insert(text, ["Paris is in France.", "It is big."]) == [
        "Paris is in France. Madrid is in Spain. It is big.",
        "Madrid is in Spain. Paris is in France. It is big.",
        "Madrid is in Spain. It is big. Paris is in France.",
    ]
    assert sentence_substitute(text, ["Paris is in France."]) == [
        "Paris is in France. It is big.",
        "Madrid is in Spain. Paris is in France.",
    ]
    assert sentence_substitute("Madrid is in Spain.", ["Paris is in France."]) == []
    assert sentence_insert(text, []) == []


def test_novel_requires_a_new_name_or_number():
    known = "<subject> Aarhus Airport <predicate> city served <object> Aarhus, Denmark"
    assert not novel("Aarhus Airport serves Aarhus, Denmark.", known)
    assert novel("Aarhus Airport is 25 metres above sea level.", known)
    assert novel("It serves Aarhus, Jutland.", known)
