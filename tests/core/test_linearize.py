"""Linearization: hand-checked strings per format, entities, vocabulary, state ids."""

from __future__ import annotations

import pytest

from datatuner_core import linearize as lin
from datatuner_core import stage_reader, stage_writer
from datatuner_core.ingest import ingest
from datatuner_core.schema import make_record


def _triples(*triples):
    return {"triples": [dict(zip(("subject", "predicate", "object"), t)) for t in triples]}


def test_webnlg_triples_sorted_cleaned_and_entities():
    text, entities, tokens = lin.linearize_data(
        _triples(
            ("Aarhus_Airport", "location", "Tirstrup"),
            ("Tirstrup", "country", "Denmark"),
            ("Denmark", "language", "Danish_language"),
            ("Alan_Bean", "birthPlace", '"Wheeler, Texas"'),
        )
    )
    assert text == (
        "<subject> Aarhus Airport <predicate> location <object> Tirstrup ; "
        "<subject> Alan Bean <predicate> birth place <object> Wheeler, Texas ; "
        "<subject> Denmark <predicate> language <object> Danish language ; "
        "<subject> Tirstrup <predicate> country <object> Denmark"
    )
    assert entities == [
        "Aarhus Airport",
        "Tirstrup",
        "Alan Bean",
        "Wheeler, Texas",
        "Denmark",
        "Danish language",
    ]
    assert tokens == ["<subject>", "<predicate>", "<object>"]


@pytest.mark.parametrize(
    "predicate, cleaned",
    [
        ("birthPlace", "birth place"),
        ("cityServed", "city served"),
        ("leader_name", "leader name"),
        ("ISBN_number", "isbn number"),
        ("runwayLength", "runway length"),
    ],
)
def test_clean_predicate(predicate, cleaned):
    assert lin.clean_predicate(predicate) == cleaned


def test_e2e_slots():
    data = {
        "act": None,
        "slots": [
            {"slot": "name", "value": "The Eagle"},
            {"slot": "customer rating", "value": "5 out of 5"},
            {"slot": "familyFriendly", "value": "yes"},
        ],
    }
    text, entities, tokens = lin.linearize_data(data)
    assert text == (
        "<name> name = [ The Eagle ] ; <customer rating> customer rating = [ 5 out of 5 ] ; "
        "<familyFriendly> familyFriendly = [ yes ]"
    )
    assert entities == ["The Eagle", "5 out of 5"]  # yes/no is paraphrased, never literal
    assert tokens == ["<name>", "<customer rating>", "<familyFriendly>"]


def test_viggo_act_and_list_values():
    data = {
        "act": "request_attribute",
        "slots": [
            {"slot": "platforms", "value": "PlayStation, Xbox, PC"},
            {"slot": "player_perspective", "value": ""},
        ],
    }
    text, entities, tokens = lin.linearize_data(data)
    assert text == (
        "<request_attribute> request attribute ( <platforms> platforms: [ PlayStation, Xbox, PC ], "
        "<player_perspective> player perspective: [ ] )"
    )
    assert entities == ["PlayStation", "Xbox", "PC"]
    assert tokens == ["<request_attribute>", "<platforms>", "<player_perspective>"]


def test_shared_data_examples(shared_data, tmp_path):
    records, out = str(tmp_path / "records"), str(tmp_path / "lin")
    ingest("viggo", str(shared_data / "viggo"), records)
    manifest = lin.linearize(records, out)
    rows = {r["raw"]: r for r in stage_reader.read_stage(out).to_pylist()}
    row = rows[
        "verify_attribute(name[Little Big Adventure], rating[average], has_multiplayer[no], "
        "platforms[PlayStation])"
    ]
    assert row["linearized"] == (
        "<verify_attribute> verify attribute ( <name> name: [ Little Big Adventure ], "
        "<rating> rating: [ average ], <has_multiplayer> has multiplayer: [ no ], "
        "<platforms> platforms: [ PlayStation ] )"
    )
    assert row["entities"] == ["Little Big Adventure", "average", "PlayStation"]
    vocab = manifest["extra"]["special_tokens"]
    assert vocab[:4] == ["<data>", "<text>", "<eos>", "<pad>"]
    assert vocab[4:] == sorted(vocab[4:]) and len(vocab) == 4 + 9 + 14  # 9 acts, 14 slots
    assert manifest["extra"]["vocabulary_split"] == "train"
    assert manifest["counts"]["read"] == manifest["counts"]["written"] == 2272


def _record(rid, split, slots):
    return make_record(id=rid, source="t", split=split, raw=rid, slots=slots)


def test_vocabulary_comes_from_train_only_and_is_deterministic(tmp_path):
    from datatuner_core.schema import RECORDS

    writer = stage_writer.StageWriter(str(tmp_path / "rec"), "ingest", RECORDS)
    rows = [
        _record("a", "train", [("zeta", "1"), ("alpha", "2")]),
        _record("b", "test", [("only_in_test", "3")]),
        _record("c", "train", [("mid", "4")]),
    ]
    for row in rows:
        writer.add_counted(row)
    writer.commit(inputs=[], fingerprint="x")
    m1 = lin.linearize(str(tmp_path / "rec"), str(tmp_path / "l1"))
    m2 = lin.linearize(str(tmp_path / "rec"), str(tmp_path / "l2"))
    vocab = m1["extra"]["special_tokens"]
    assert vocab == ["<data>", "<text>", "<eos>", "<pad>", "<alpha>", "<mid>", "<zeta>"]
    assert m2["extra"]["special_tokens"] == vocab
    assert "<only_in_test>" not in vocab
    assert lin.linearize(str(tmp_path / "rec"), str(tmp_path / "l1"))["skipped"] is True


def test_state_ids_fine_and_coarse():
    # <data> <subject> Alan Bean <predicate> birth place <object> Wheeler ; <text> Alan was <eos>
    D, T, EOS, S, P, O = 1, 2, 3, 10, 11, 12
    seq = [D, S, 50, 51, P, 52, 53, O, 54, 55, T, 50, 56, S, EOS]
    specials = {S, P, O}
    assert lin.state_ids(seq, specials, D, T, "fine") == [
        D, S, S, S, P, P, P, O, O, O, T, T, T, T, T
    ]  # fmt: skip
    assert lin.state_ids(seq, specials, D, T, "coarse") == [D] * 10 + [T] * 5
    # Tokens before any marker take the <data> state; a second <data> resets it.
    assert lin.state_ids([50, S, 51, D, 52], specials, D, T) == [D, S, S, D, D]
    with pytest.raises(ValueError, match="unknown linearize mode 'medium'"):
        lin.state_ids(seq, specials, D, T, "medium")


def test_ntriples_and_jsonl_records_linearize(tmp_path):
    dump = tmp_path / "kg.nt"
    dump.write_text(
        "<http://ex.org/Alan_Bean> <http://ex.org/birthPlace> <http://ex.org/Wheeler> .\n"
        "<http://ex.org/Wheeler> <http://www.w3.org/2000/01/rdf-schema#label> "
        '"Wheeler, Texas"@en .\n'
        '<http://ex.org/Alan_Bean> <http://ex.org/almaMater> "UT Austin" .\n'
    )
    ingest("ntriples", str(dump), str(tmp_path / "r"))
    lin.linearize(str(tmp_path / "r"), str(tmp_path / "l"))
    (row,) = stage_reader.read_stage(str(tmp_path / "l")).to_pylist()
    assert row["linearized"] == (
        "<subject> Alan Bean <predicate> alma mater <object> UT Austin ; "
        "<subject> Alan Bean <predicate> birth place <object> Wheeler, Texas"
    )
    assert row["entities"] == ["Alan Bean", "UT Austin", "Wheeler, Texas"]

    lines = tmp_path / "mine.jsonl"
    lines.write_text(
        '{"act": "inform", "slots": {"name": "The Eagle", "platforms": ["PC", "Mac"]}}\n'
    )
    ingest("jsonl", str(lines), str(tmp_path / "r2"))
    lin.linearize(str(tmp_path / "r2"), str(tmp_path / "l2"))
    (row,) = stage_reader.read_stage(str(tmp_path / "l2")).to_pylist()
    assert row["linearized"] == (
        "<inform> inform ( <name> name: [ The Eagle ], <platforms> platforms: [ PC, Mac ] )"
    )
    assert row["entities"] == ["The Eagle", "PC", "Mac"]
