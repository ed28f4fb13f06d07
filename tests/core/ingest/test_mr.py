"""E2E and ViGGO readers: the MR parser, exact counts of the shared CSVs, bad rows."""

from __future__ import annotations

import collections
import re

import pytest

from datatuner_core import storage
from datatuner_core.ingest import IngestError, ingest
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
    rows = storage.read_stage(out).to_pylist()
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
    rows = storage.read_stage(out).to_pylist()
    assert [(r["split"], r["references"]) for r in rows] == [
        ("test", ["A is good.", "People like A."]),
        ("test", []),
    ]
    bad = storage.read_stage(out, quarantine=True).to_pylist()
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
