"""JSON Lines reader: both data shapes, ids, splits, bad lines."""

from __future__ import annotations

import json

from datatuner_core import storage
from datatuner_core.ingest import ingest
from datatuner_core.schema import content_id


def test_jsonl_shapes_and_bad_lines(tmp_path):
    lines = [
        json.dumps(
            {
                "id": "a1",
                "triples": [["Alan_Bean", "birthPlace", "Wheeler, Texas"]],
                "references": ["Alan Bean was born in Wheeler, Texas."],
                "category": "Astronaut",
            }
        ),
        json.dumps({"act": "inform", "slots": {"name": "The Eagle", "food": "French"}}),
        "",
        json.dumps({"slots": [["name", "X"], ["platforms", ["PC", "Xbox"]]], "split": "test"}),
        json.dumps({"triples": [{"subject": "A", "predicate": "p", "object": 3}]}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"triples": []}),
        json.dumps({"triples": [["A", "p"]]}),
        json.dumps({"triples": [["A", "p", "x" * 10_001]]}),
        json.dumps({"triples": [["A", "p", "B"]], "references": [1]}),
    ]
    path = tmp_path / "mine.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"triples": [["\xff", "p", "o"]]}\n')
    out = str(tmp_path / "out")
    manifest = ingest("jsonl", str(path), out, split=None)
    counts = manifest["counts"]
    assert (counts["read"], counts["written"], counts["quarantined"]) == (11, 4, 7)
    rows = storage.read_stage(out).to_pylist()
    assert rows[0]["id"] == "a1" and rows[0]["category"] == "Astronaut"
    assert rows[0]["data"]["triples"] == [
        {"subject": "Alan_Bean", "predicate": "birthPlace", "object": "Wheeler, Texas"}
    ]
    assert rows[1]["data"]["act"] == "inform"
    assert rows[1]["data"]["slots"] == [
        {"slot": "name", "value": "The Eagle"},
        {"slot": "food", "value": "French"},
    ]
    assert rows[1]["id"] == content_id(
        "jsonl", [], "inform", [("name", "The Eagle"), ("food", "French")]
    )
    assert rows[1]["split"] == "all" and rows[2]["split"] == "test"
    assert rows[2]["data"]["slots"][1] == {"slot": "platforms", "value": "PC, Xbox"}
    assert rows[3]["data"]["triples"][0]["object"] == "3"
    bad = storage.read_stage(out, quarantine=True).to_pylist()
    assert [(b["location"], b["reason"].split(":")[0]) for b in bad] == [
        ("mine.jsonl:6", "malformed JSON"),
        ("mine.jsonl:7", "malformed record"),
        ("mine.jsonl:8", "empty record"),
        ("mine.jsonl:9", "malformed triple"),
        ("mine.jsonl:10", "value longer than 10000 characters (10001)"),
        ("mine.jsonl:11", "malformed record"),
        ("mine.jsonl:12", "invalid UTF-8"),
    ]


def test_split_option_overrides_line_split(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"triples": [["A", "p", "B"]], "split": "test"}) + "\n")
    out = str(tmp_path / "out")
    ingest("jsonl", str(path), out, split="validation")
    assert storage.read_stage(out).column("split").to_pylist() == ["validation"]
    out2 = str(tmp_path / "out2")
    ingest("jsonl", str(path), out2)
    assert storage.read_stage(out2).column("split").to_pylist() == ["test"]
