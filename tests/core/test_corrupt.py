"""Tests of the corruption stage (datatuner_core.corrupt): rules, drawing, balancing, stats."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from datatuner_core.config import CorruptConfig
from datatuner_core.corrupt import (
    LABELS,
    RULE_LABELS,
    balance_classes,
    corrupt_records,
    corruption_stats,
)
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
from datatuner_core.sentences import split_sentences

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
AIRPORT_XML = SHARED_DATA / "webnlg" / "train" / "3triples" / "Airport.xml"

E2E_LIN = (
    "<name> name = [ The Eagle ] ; <eatType> eatType = [ pub ] ; "
    "<familyFriendly> familyFriendly = [ yes ] ; <area> area = [ riverside ]"
)


def triples_row(rid: str, triples: list[tuple[str, str, str]], refs: list[str]) -> dict:
    """A `linearized` row for a triple set, with the simple linearization of the brief."""
    return {
        "id": rid,
        "split": "train",
        "source": "webnlg",
        "category": None,
        "data": {
            "triples": [{"subject": s, "predicate": p, "object": o} for s, p, o in triples],
            "act": None,
            "slots": [],
        },
        "references": refs,
        "linearized": " ; ".join(
            f"<subject> {s} <predicate> {p} <object> {o}" for s, p, o in triples
        ),
        "entities": list(dict.fromkeys(v for s, _, o in triples for v in (s, o))),
    }


def e2e_row(rid: str = "e2e-1") -> dict:
    """An E2E-like `linearized` row with a yes/no slot."""
    slots = [
        ("name", "The Eagle"),
        ("eatType", "pub"),
        ("familyFriendly", "yes"),
        ("area", "riverside"),
    ]
    return {
        "id": rid,
        "split": "train",
        "source": "e2e",
        "category": None,
        "data": {"triples": [], "act": None, "slots": [{"slot": k, "value": v} for k, v in slots]},
        "references": ["The Eagle is a family-friendly pub by the riverside."],
        "linearized": E2E_LIN,
        "entities": [v for _, v in slots],
    }


BEAN = triples_row(
    "bean",
    [("Alan Bean", "birth place", "Wheeler, Texas"), ("Alan Bean", "occupation", "Test pilot")],
    [
        "Alan Bean was born in Wheeler, Texas. He worked as a test pilot.",
        "Alan Bean, born in Wheeler, Texas, was a test pilot.",
    ],
)
AARHUS = triples_row(
    "aarhus",
    [("Aarhus Airport", "city served", "Aarhus, Denmark"), ("Aarhus Airport", "elevation", "25.0")],
    ["Aarhus Airport serves Aarhus, Denmark and is 25 metres above sea level."],
)
MADRID = triples_row(
    "madrid",
    [("Madrid", "country", "Spain"), ("Spain", "leader", "Felipe VI")],
    [
        "Madrid is in Spain. Felipe VI leads Spain.",
        "The leader of Spain, home of Madrid, is Felipe VI.",
    ],
)
SMALL = [BEAN, AARHUS, MADRID, e2e_row()]


# --- sentence splitting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Alan Bean was born in 1932. He died in 2018.",
            ["Alan Bean was born in 1932.", "He died in 2018."],
        ),
        (
            "Dr. Smith lives in St. Louis. He is a pilot.",
            ["Dr. Smith lives in St. Louis.", "He is a pilot."],
        ),
        (
            "J. R. R. Tolkien wrote it. It is 3.5 km long.",
            ["J. R. R. Tolkien wrote it.", "It is 3.5 km long."],
        ),
        (
            "It was written by J. K. Rowling. She is British.",
            ["It was written by J. K. Rowling.", "She is British."],
        ),
        (
            "It serves the U.S. Navy. The U.S. is large.",
            ["It serves the U.S. Navy.", "The U.S. is large."],
        ),
        ("He moved to the U.S. He stayed there.", ["He moved to the U.S.", "He stayed there."]),
        (
            "The club plays at No. 5 Road. It is old!",
            ["The club plays at No. 5 Road.", "It is old!"],
        ),
        ("Is it open? Yes. It is.", ["Is it open?", "Yes.", "It is."]),
        ("The runway is 3.5 km long", ["The runway is 3.5 km long"]),
        (
            "He was born in Washington, D.C. The city is big.",
            ["He was born in Washington, D.C.", "The city is big."],
        ),
        (
            "The A-Rosa (e.g. Luna) sails. it is large.",
            ["The A-Rosa (e.g. Luna) sails. it is large."],
        ),
        ('He said "Hi." She left.', ['He said "Hi."', "She left."]),
        ("  Two   spaces.\nNew line.  ", ["Two spaces.", "New line."]),
        ("", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


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


# --- corrupt_records -----------------------------------------------------------------------


def test_every_reference_has_its_accurate_pair_first():
    rows = list(corrupt_records(SMALL))
    for record in SMALL:
        for r, ref in enumerate(record["references"]):
            first = next(x for x in rows if x["id"] == f"{record['id']}/{r}/0")
            assert first == {
                "id": f"{record['id']}/{r}/0",
                "record_id": record["id"],
                "linearized": record["linearized"],
                "text": ref,
                "label": "accurate",
                "rule": "original",
            }
    assert sum(r["label"] == "accurate" for r in rows) == sum(len(x["references"]) for x in SMALL)


def test_rows_are_well_formed_and_never_equal_to_the_original():
    rows = list(corrupt_records(SMALL, per_example=8))
    assert {r["label"] for r in rows} <= set(LABELS)
    assert len({r["id"] for r in rows}) == len(rows)
    originals = {
        (r["record_id"], r["id"].split("/")[1]): r for r in rows if r["rule"] == "original"
    }
    for row in rows:
        assert RULE_LABELS[row["rule"]] == row["label"]
        if row["rule"] != "original":
            original = originals[(row["record_id"], row["id"].split("/")[1])]
            assert (row["linearized"], row["text"]) != (original["linearized"], original["text"])
            if row["rule"] != "yes_no_flip":
                assert row["linearized"] == original["linearized"]
                assert row["text"] != original["text"]
    per_ref = Counter(r["id"].rsplit("/", 1)[0] for r in rows)
    assert max(per_ref.values()) <= 1 + 8


def test_labels_are_spread_before_a_label_repeats():
    rows = [r for r in corrupt_records(SMALL, per_example=4) if r["record_id"] == "bean"]
    for r in range(2):
        labels = [x["label"] for x in rows if x["id"].startswith(f"bean/{r}/")]
        assert sorted(labels) == sorted(LABELS)


def test_per_example_and_max_references_caps():
    rows = list(corrupt_records(SMALL, per_example=0, max_references=1))
    assert [r["id"] for r in rows] == ["bean/0/0", "aarhus/0/0", "madrid/0/0", "e2e-1/0/0"]
    with pytest.raises(ValueError, match="balance"):
        corrupt_records(SMALL, balance="downsample")
    with pytest.raises(ValueError, match="per_example"):
        corrupt_records(SMALL, per_example=-1)


def test_records_without_references_yield_nothing():
    assert list(corrupt_records([{**BEAN, "references": []}, {**BEAN, "references": ["  "]}])) == []


def test_determinism_and_seed_sensitivity():
    first = list(corrupt_records(SMALL, seed=13))
    assert first == list(corrupt_records(SMALL, seed=13))
    assert first != list(corrupt_records(SMALL, seed=14))


def test_a_record_does_not_depend_on_other_records_beyond_the_pool():
    def bean_rows(others):
        rows = corrupt_records([*others, BEAN], per_example=5)
        return [r for r in rows if r["record_id"] == "bean" and r["label"] != "hallucination"]

    # both orders give the record a pool; only the foreign sentences may differ
    assert bean_rows([AARHUS, MADRID]) == bean_rows([MADRID, AARHUS])


def test_pool_feeds_hallucinations_even_for_the_first_record():
    rows = list(corrupt_records(SMALL, per_example=20))
    hallucinated = [r for r in rows if r["record_id"] == "bean" and r["label"] == "hallucination"]
    assert hallucinated
    bean_text = " ".join(BEAN["references"])
    for row in hallucinated:
        assert any(s not in bean_text for s in split_sentences(row["text"]))
    # a lone record has no other record to borrow sentences from
    alone = list(corrupt_records([BEAN], per_example=20))
    assert "hallucination" not in {r["label"] for r in alone}


# --- balancing and stats ------------------------------------------------------------------


def _labelled(counts: dict[str, int]) -> list[dict]:
    return [
        {"id": f"{label}-{i}", "label": label, "rule": "r"}
        for label, n in counts.items()
        for i in range(n)
    ]


def test_balance_classes_grows_minorities_at_most_4x():
    rows = _labelled({"accurate": 20, "omission": 2, "repetition": 10, "hallucination": 20})
    balanced = balance_classes(rows, seed=1)
    assert Counter(r["label"] for r in balanced) == {
        "accurate": 20,
        "omission": 8,
        "repetition": 20,
        "hallucination": 20,
    }
    assert len({r["id"] for r in balanced}) == len(balanced)
    assert balanced == balance_classes(rows, seed=1)
    assert balanced != balance_classes(rows, seed=2)
    assert balance_classes([], seed=1) == []


def test_corrupt_records_upsample_matches_balance_classes():
    plain = list(corrupt_records(SMALL, seed=5))
    assert list(corrupt_records(SMALL, seed=5, balance="upsample")) == balance_classes(plain, 5)


def test_corruption_stats():
    stats = corruption_stats(_labelled({"accurate": 3, "omission": 1}))
    assert stats == {
        "total": 4,
        "by_label": {
            "accurate": 3,
            "value_error": 0,
            "omission": 1,
            "repetition": 0,
            "hallucination": 0,
        },
        "by_rule": {"r": 4},
    }


# --- real data -----------------------------------------------------------------------------


def _clean(value: str) -> str:
    return value.replace("_", " ").strip().strip('"').strip()


def _webnlg_rows(path: Path, limit: int) -> list[dict]:
    """`linearized` rows for the first `limit` entries of a WebNLG XML file."""
    rows = []
    for entry in ET.parse(path).getroot().iter("entry"):
        triples = [
            tuple(part.strip() for part in t.text.split(" | "))
            for t in entry.find("modifiedtripleset").findall("mtriple")
        ]
        refs = [lex.findtext("text") for lex in entry.findall("lex")]
        row = triples_row(entry.get("eid"), [], [r for r in refs if r and r.strip()])
        row["linearized"] = " ; ".join(
            f"<subject> {_clean(s)} <predicate> {p} <object> {_clean(o)}" for s, p, o in triples
        )
        row["entities"] = list(dict.fromkeys(_clean(v) for s, _, o in triples for v in (s, o)))
        rows.append(row)
        if len(rows) == limit:
            break
    return rows


def test_real_webnlg_sample():
    records = _webnlg_rows(AIRPORT_XML, 50)
    assert len(records) == 50
    rows = list(corrupt_records(records, per_example=5, seed=13))
    stats = corruption_stats(rows)
    n_refs = sum(min(3, len(r["references"])) for r in records)
    assert stats["by_label"]["accurate"] == n_refs
    assert all(stats["by_label"][label] > 0.2 * n_refs for label in LABELS[1:]), stats
    assert n_refs * 4 <= stats["total"] <= n_refs * 6
    assert set(stats["by_rule"]) >= {
        "entity_swap",
        "entity_cut",
        "sentence_repeat",
        "clause_drop",
        "sentence_insert",
    }
    originals = {r["id"].rsplit("/", 1)[0]: r["text"] for r in rows if r["rule"] == "original"}
    assert all(
        r["text"] != originals[r["id"].rsplit("/", 1)[0]] for r in rows if r["rule"] != "original"
    )
    assert rows == list(corrupt_records(records, per_example=5, seed=13))


def test_corrupt_stage_on_the_sample(tmp_path):
    from datatuner_core import linearize, stage_reader
    from datatuner_core.corrupt import corrupt
    from datatuner_core.ingest import ingest

    from ..conftest import SAMPLE

    records, lin, out = (str(tmp_path / n) for n in ("records", "lin", "corrupt"))
    ingest("webnlg", str(SAMPLE / "webnlg"), records)
    linearize.linearize(records, lin)
    manifest = corrupt(lin, out, CorruptConfig(per_example=5, seed=13, balance="upsample"))
    counts = manifest["counts"]
    assert (counts["read"], counts["written"], counts["quarantined"]) == (627, 627, 0)  # train+dev
    rows = stage_reader.read_stage(out).to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    dev = [r for r in rows if r["split"] == "validation"]
    by_label = Counter(r["label"] for r in train)
    assert set(by_label) == set(LABELS) and len(set(by_label.values())) <= 2  # balanced
    assert manifest["extra"]["pairs"]["train"]["by_label"] == dict(by_label) | {
        k: by_label[k] for k in LABELS
    }
    dev_ids = {r["record_id"] for r in dev}
    accurate_dev = {r["record_id"] for r in dev if r["rule"] == "original"}
    assert dev_ids == accurate_dev and len(dev_ids) == 61  # every dev record keeps its pair
    assert len({r["id"] for r in rows}) == len(rows)
    section = CorruptConfig(per_example=5, seed=13, balance="upsample")
    assert corrupt(lin, out, section)["skipped"] is True
    # coarse states change the LM's inputs, not the pairs: the No_FS run's corruption stage has
    # another lineage (fingerprint) but the same content, so its classifier is the fine run's job
    coarse_lin, coarse = str(tmp_path / "lin-coarse"), str(tmp_path / "corrupt-coarse")
    linearize.linearize(records, coarse_lin, mode="coarse")
    other = corrupt(coarse_lin, coarse, CorruptConfig(per_example=5, seed=13, balance="upsample"))
    assert other["fingerprint"] != manifest["fingerprint"]
    assert other["content_sha256"] == manifest["content_sha256"]
    assert stage_reader.read_stage(coarse).to_pylist() == rows
    seed14 = CorruptConfig(per_example=5, seed=14, balance="upsample")
    other_seed = corrupt(lin, str(tmp_path / "seed14"), seed14)
    assert other_seed["content_sha256"] != manifest["content_sha256"]
