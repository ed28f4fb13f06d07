"""Tests of the corruption stage (datatuner_core.corrupt): drawing, balancing, stats."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest

from datatuner_core.config import CorruptConfig, LinearizeConfig
from datatuner_core.corrupt import (
    LABELS,
    RULE_LABELS,
    balance_classes,
    corrupt_records,
    corruption_stats,
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
    linearize.linearize(records, coarse_lin, LinearizeConfig(mode="coarse"))
    other = corrupt(coarse_lin, coarse, CorruptConfig(per_example=5, seed=13, balance="upsample"))
    assert other["fingerprint"] != manifest["fingerprint"]
    assert other["content_sha256"] == manifest["content_sha256"]
    assert stage_reader.read_stage(coarse).to_pylist() == rows
    seed14 = CorruptConfig(per_example=5, seed=14, balance="upsample")
    other_seed = corrupt(lin, str(tmp_path / "seed14"), seed14)
    assert other_seed["content_sha256"] != manifest["content_sha256"]
