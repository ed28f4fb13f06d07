"""E2E and ViGGO readers: the MR parser, exact counts of the shared CSVs, bad rows."""

from __future__ import annotations

import collections
import re

import pytest

from datatuner_core import stage_reader
from datatuner_core.ingest import IngestError, ingest, limits
from datatuner_core.ingest.mr import parse_act, parse_slots
from datatuner_core.schema import BadInput


def test_parse_slots():
    assert parse_slots("name[The Eagle], eatType[coffee shop], customer rating[5 out of 5]") == [
        ("name", "The Eagle"),
        ("eatType", "coffee shop"),
        ("customer rating", "5 out of 5"),
    ]
    assert parse_slots("genres[driving/racing, sport], x[a [b] c]") == [
        ("genres", "driving/racing, sport"),
        ("x", "a [b] c"),
    ]


def test_parse_act():
    assert parse_act("request_attribute(player_perspective[])") == (
        "request_attribute",
        [("player_perspective", "")],
    )
    act, slots = parse_act("inform(esrb[E 10+ (for Everyone 10 and Older)], rating[good])")
    assert act == "inform"
    assert slots == [("esrb", "E 10+ (for Everyone 10 and Older)"), ("rating", "good")]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("name[The Eagle", "unclosed '['"),
        ("name The Eagle", "no '['"),
        ("name[A]] food[B]", "unexpected"),
        ("", "no slots"),
        ("[A]", "bad slot name"),
    ],
)
def test_parse_slots_errors(text, reason):
    with pytest.raises(BadInput, match=re.escape(reason)):
        parse_slots(text)


def test_parse_act_error():
    with pytest.raises(BadInput, match=r"expected act\(slot\[value\], ...\)"):
        parse_act("name[X], rating[good]")


def _ingest_counts(fmt, path, tmp_path):
    out = str(tmp_path / fmt)
    manifest = ingest(fmt, str(path), out)
    rows = stage_reader.read_stage(out).to_pylist()
    records = collections.Counter(r["split"] for r in rows)
    texts = collections.Counter()
    for r in rows:
        texts[r["split"]] += len(r["references"])
    return manifest, rows, dict(records), dict(texts)


def test_e2e_counts_match_the_shared_readme(shared_data, tmp_path):
    manifest, rows, records, texts = _ingest_counts("e2e", shared_data / "e2e", tmp_path)
    # ../shared/data/README.md §2: dev 4,299 rows / 1,484 MRs, test 4,693 rows / 1,847 MRs.
    assert records == {"validation": 1484, "test": 1847}
    assert texts == {"validation": 4299, "test": 4693}
    counts = manifest["counts"]
    assert (counts["read"], counts["written"], counts["quarantined"]) == (8992, 8992, 0)
    first = next(r for r in rows if r["split"] == "test")
    assert first["data"]["act"] is None
    assert first["data"]["slots"] == [
        {"slot": "name", "value": "Blue Spice"},
        {"slot": "eatType", "value": "coffee shop"},
        {"slot": "area", "value": "city centre"},
    ]
    assert first["references"][:2] == [
        "A coffee shop in the city centre area called Blue Spice.",
        "Blue Spice is a coffee shop in city centre.",
    ]
    assert first["raw"] == "name[Blue Spice], eatType[coffee shop], area[city centre]"


def test_viggo_counts_match_the_shared_readme(shared_data, tmp_path):
    manifest, rows, records, texts = _ingest_counts("viggo", shared_data / "viggo", tmp_path)
    # ../shared/data/README.md §3: 5,103 (1,675 MRs) / 714 (238) / 1,083 (359).
    assert records == {"train": 1675, "validation": 238, "test": 359}
    assert texts == {"train": 5103, "validation": 714, "test": 1083}
    assert manifest["counts"]["read"] == manifest["counts"]["written"] == 6900
    acts = {r["data"]["act"] for r in rows}
    assert acts == {
        "inform",
        "confirm",
        "give_opinion",
        "recommend",
        "request",
        "request_attribute",
        "request_explanation",
        "suggest",
        "verify_attribute",
    }
    first = next(r for r in rows if r["split"] == "train")
    assert first["data"]["slots"][:3] == [
        {"slot": "name", "value": "Dirt: Showdown"},
        {"slot": "release_year", "value": "2012"},
        {"slot": "esrb", "value": "E 10+ (for Everyone 10 and Older)"},
    ]
    assert len(first["references"]) == 3


def test_bad_rows_are_quarantined(tmp_path):
    path = tmp_path / "viggo-test.csv"
    path.write_bytes(
        b"mr,ref\n"
        b'"inform(name[A], rating[good])",A is good.\n'
        b'"inform(name[A], rating[good])",People like A.\n'
        b'"inform(name[B], rating[good]",B is good.\n'  # no closing parenthesis
        b'"inform(name[C], rating[\xff])",C is bad bytes.\n'  # invalid UTF-8
        b'"inform(name[D])",D,extra field\n'  # too many fields
        b'"inform(name[E])",\n'  # no reference: kept, counted
    )
    out = str(tmp_path / "out")
    manifest = ingest("viggo", str(path), out)
    counts = manifest["counts"]
    assert (counts["read"], counts["written"], counts["quarantined"], counts["records"]) == (
        6,
        3,
        3,
        2,
    )
    assert counts["notes"] == {"rows_without_reference": 1}
    rows = stage_reader.read_stage(out).to_pylist()
    assert [(r["split"], r["references"]) for r in rows] == [
        ("test", ["A is good.", "People like A."]),
        ("test", []),
    ]
    bad = stage_reader.read_stage(out, quarantine=True).to_pylist()
    assert [(b["location"], b["reason"].split(":")[0]) for b in bad] == [
        ("viggo-test.csv:4", "unparsable MR"),
        ("viggo-test.csv:5", "invalid UTF-8 in the row"),
        ("viggo-test.csv:6", "malformed CSV row"),
    ]
    assert "\\xff" in bad[1]["raw"]


def test_wrong_columns_is_a_clear_error(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("meaning,text\na,b\n")
    with pytest.raises(IngestError, match=r"data.csv: expected CSV columns 'mr' and 'ref'"):
        ingest("e2e", str(path), str(tmp_path / "out"))


def _viggo(tmp_path, body: bytes):
    path = tmp_path / "viggo-test.csv"
    path.write_bytes(body)
    out = str(tmp_path / "out")
    counts = ingest("viggo", str(path), out)["counts"]
    good = stage_reader.read_stage(out).to_pylist()
    bad = stage_reader.read_stage(out, quarantine=True).to_pylist()
    return counts, good, bad


def _rows(n: int) -> list[bytes]:
    return [f'"inform(name[G{i}], rating[good])",G{i} is good.'.encode() for i in range(n)]


def test_an_unbalanced_quote_costs_one_row(tmp_path):
    """A quote never closed swallowed the rows after it (here all 12 rows became
    one record whose reference held 11 of them); now the bad row is quarantined with its line
    and every row after it is read."""
    rows = [f"name[G{i}],G{i} is a good place.".encode() for i in range(12)]
    rows[1] = b'name[G1],"G1 is a good place.'
    rows[11] = b'name[G11],"G11 is a good place."'
    path = tmp_path / "test.csv"
    path.write_bytes(b"mr,ref\n" + b"\n".join(rows) + b"\n")
    out = str(tmp_path / "out")
    counts = ingest("e2e", str(path), out)["counts"]
    assert (counts["read"], counts["written"], counts["quarantined"]) == (12, 11, 1)
    references = [r["references"] for r in stage_reader.read_stage(out).to_pylist()]
    assert references == [[f"G{i} is a good place."] for i in range(12) if i != 1]
    bad = stage_reader.read_stage(out, quarantine=True).to_pylist()
    assert (bad[0]["location"], bad[0]["raw"]) == ("test.csv:3", rows[1].decode())
    assert bad[0]["reason"] == "malformed CSV row: ',' expected after '\"'"


def test_an_open_quote_before_a_long_file_costs_one_row(tmp_path):
    """With a long file after an open quote, the run failed ("field larger
    than field limit")."""
    rows = _rows(4_000)
    rows[1] = b'"inform(name[G1], rating[good])","G1 is good.'
    counts, good, bad = _viggo(tmp_path, b"mr,ref\n" + b"\n".join(rows) + b"\n")
    assert (counts["read"], counts["written"], counts["quarantined"]) == (4_000, 3_999, 1)
    assert bad[0]["location"] == "viggo-test.csv:3"


def test_a_quoted_field_spans_at_most_max_csv_row_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_CSV_ROW_LINES", 5)
    rows = _rows(4)
    text = [b"more text"] * 6
    body = b"mr,ref\n" + b"\n".join(rows[:2] + [b'"inform(name[X])","open'] + text + rows[2:])
    counts, good, bad = _viggo(tmp_path, body)
    assert [r["references"] for r in good] == [[f"G{i} is good."] for i in range(4)]
    assert (bad[0]["location"], bad[0]["reason"]) == (
        "viggo-test.csv:4",
        "malformed CSV row: quoted field open for more than 5 lines",
    )
    assert [b["location"] for b in bad[1:]] == [f"viggo-test.csv:{n}" for n in range(5, 11)]
    assert (counts["read"], counts["written"], counts["quarantined"]) == (11, 4, 7)


def test_quoted_fields_may_span_lines(tmp_path):
    body = (
        b"mr,ref\n"
        b'"inform(name[A],\n rating[good])","A is good.\nReally, ""good""."\n'
        b'"inform(name[B])",B.\n'
        b'"inform(name[C])","C."x\n'  # text after a closing quote
        b'"inform(name[D])",D.,\n'  # one field too many
        b"\n"
        b'"inform(name[E])"\n'  # one field too few
    )
    counts, good, bad = _viggo(tmp_path, body)
    assert good[0]["references"] == ['A is good. Really, "good".']
    assert good[0]["data"]["slots"] == [
        {"slot": "name", "value": "A"},
        {"slot": "rating", "value": "good"},
    ]
    assert (counts["read"], counts["written"], counts["quarantined"]) == (5, 2, 3)
    assert [(b["location"], b["reason"]) for b in bad] == [
        ("viggo-test.csv:6", "malformed CSV row: ',' expected after '\"'"),
        ("viggo-test.csv:7", "malformed CSV row: 3 fields, the header has 2"),
        ("viggo-test.csv:9", "malformed CSV row: 1 fields, the header has 2"),
    ]


def test_oversize_cells_are_one_quarantine_row(tmp_path):
    """A 200 KB cell stopped the run; a reference and an MR have limits."""
    rows = _rows(3)
    rows[1] = b'"inform(name[G1])",' + b"y" * 200_000
    rows.append(b'"inform(name[' + b"n" * 10_001 + b'])",Long name.')
    counts, good, bad = _viggo(tmp_path, b"mr,ref\n" + b"\n".join(rows) + b"\n")
    assert (counts["read"], counts["written"], counts["quarantined"]) == (4, 2, 2)
    assert [(b["location"], b["reason"]) for b in bad] == [
        ("viggo-test.csv:3", "reference longer than 20000 characters (200000)"),
        ("viggo-test.csv:5", "MR longer than 10000 characters (10015)"),
    ]


def test_a_line_over_the_unit_limit_is_one_quarantine_row(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_UNIT_BYTES", 1_000)
    rows = _rows(3)
    rows[1] = b'"inform(name[G1])","' + b"z" * 5_000 + b'"'
    counts, good, bad = _viggo(tmp_path, b"mr,ref\n" + b"\n".join(rows) + b"\n")
    assert (counts["read"], counts["written"], counts["quarantined"]) == (3, 2, 1)
    assert (bad[0]["location"], bad[0]["reason"]) == (
        "viggo-test.csv:3",
        f"line longer than 1000 bytes ({len(rows[1])})",
    )


def test_the_same_mr_in_two_files_of_one_split_is_a_noted_duplicate_id(tmp_path):
    """Duplicate ids get a note."""
    for name in ("a-test.csv", "b-test.csv"):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / name).write_text('mr,ref\n"inform(name[A])",A.\n')
    manifest = ingest("viggo", str(tmp_path / "in"), str(tmp_path / "out"))
    assert manifest["counts"]["records"] == 2
    assert manifest["counts"]["notes"] == {"duplicate_ids": 1}
