"""JSON Lines reader: both data shapes, ids, splits, bad lines."""

from __future__ import annotations

import json

import pytest

from datatuner_core import stage_reader
from datatuner_core.ingest import ingest, limits
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
    rows = stage_reader.read_stage(out).to_pylist()
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
    bad = stage_reader.read_stage(out, quarantine=True).to_pylist()
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
    assert stage_reader.read_stage(out).column("split").to_pylist() == ["validation"]
    out2 = str(tmp_path / "out2")
    ingest("jsonl", str(path), out2)
    assert stage_reader.read_stage(out2).column("split").to_pylist() == ["test"]


def _ingest_lines(tmp_path, lines: list[bytes]):
    path = tmp_path / "mine.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = str(tmp_path / "out")
    counts = ingest("jsonl", str(path), out)["counts"]
    good = stage_reader.read_stage(out).to_pylist()
    bad = stage_reader.read_stage(out, quarantine=True).to_pylist()
    return counts, good, bad


GOOD = json.dumps({"triples": [["A", "p", "B"]], "references": ["A p B."]}).encode()


@pytest.mark.parametrize(
    "line, reason",
    [
        # Each of these stopped the whole run.
        (b"[" * 100_000 + b"]" * 100_000, "malformed JSON: nested deeper than 32 levels"),
        (
            b'{"triples": [["A", "p", ' + b"9" * 5_000 + b"]]}",
            "malformed JSON: Exceeds the limit (4300 digits) for integer string conversion",
        ),
        (
            b'{"triples": [["A", "p", "B\\ud800"]]}',
            "invalid text: lone surrogate \\ud800 in the object, character 1",
        ),
        (
            b'{"triples": [["A", "p", "B"]], "references": ["\\udc00 hi"]}',
            "invalid text: lone surrogate \\udc00 in the reference, character 0",
        ),
        (b'{"id": "\\ud800", "triples": [["A", "p", "B"]]}', "invalid text: lone surrogate"),
        (b'{"triples": [["A", "p", "B"]], "category": "\\ud800"}', "invalid text: lone surrogate"),
        # References had no length limit.
        (
            json.dumps({"triples": [["A", "p", "B"]], "references": ["x" * 20_001]}).encode(),
            "reference longer than 20000 characters (20001)",
        ),
        (
            json.dumps({"triples": [["A", "p", "B"]], "id": "i" * 10_001}).encode(),
            "id longer than 10000 characters (10001)",
        ),
    ],
)
def test_a_bad_line_is_one_quarantine_row_with_file_and_line(tmp_path, line, reason):
    counts, good, bad = _ingest_lines(tmp_path, [GOOD, line, GOOD])
    assert (counts["read"], counts["written"], counts["quarantined"]) == (3, 2, 1)
    assert len(good) == 2
    assert bad[0]["location"] == "mine.jsonl:2"
    assert bad[0]["reason"].startswith(reason)


def test_nesting_within_the_limit_is_read(tmp_path):
    deep = {"triples": [["A", "p", "B"]], "extra": json.loads("[" * 30 + "]" * 30)}
    counts, good, _ = _ingest_lines(tmp_path, [json.dumps(deep).encode(), b'["[[[[[[[[["]'])
    assert (counts["written"], counts["quarantined"]) == (1, 1)  # brackets in strings: no depth


def test_a_line_over_the_limit_is_one_quarantine_row(tmp_path, monkeypatch):
    """A line over MAX_UNIT_BYTES is skipped (memory: test_limits.py)."""
    monkeypatch.setattr(limits, "MAX_UNIT_BYTES", 1_000)
    big = b'{"triples": [["A", "p", "' + b"0" * 200_000 + b'"]]}'
    counts, good, bad = _ingest_lines(tmp_path, [GOOD, big, GOOD])
    assert (counts["read"], counts["written"], counts["quarantined"]) == (3, 2, 1)
    assert (bad[0]["location"], bad[0]["reason"]) == (
        "mine.jsonl:2",
        f"line longer than 1000 bytes ({len(big)})",
    )
    assert bad[0]["raw"] == big[: len(bad[0]["raw"])].decode()


def test_duplicate_ids_are_noted(tmp_path, caplog):
    """Records that share an id are kept and counted in the notes."""
    line = json.dumps({"id": "a", "triples": [["A", "p", "B"]]}).encode()
    other = json.dumps({"id": "b", "triples": [["A", "p", "B"]]}).encode()
    counts, good, _ = _ingest_lines(tmp_path, [line, other, line, line])
    assert [r["id"] for r in good] == ["a", "b", "a", "a"]
    assert counts["notes"] == {"duplicate_ids": 2}
    assert "duplicate_ids 2" in caplog.text
