"""WebNLG reader: exact counts of the shared v1.4 data, both XML shapes, bad entries."""

from __future__ import annotations

import collections
import gzip
import random

import pytest

from datatuner_core import stage_reader
from datatuner_core.ingest import ingest, limits, webnlg, xml_entries

# ../shared/data/README.md, section 1.
ENTRIES = {"train": 6940, "validation": 872, "test": 1862}
TEXTS = {"train": 18102, "validation": 2268, "test": 4928}
BY_SIZE = {
    "train": [1788, 1208, 1350, 1294, 942, 188, 170],
    "validation": [226, 152, 171, 162, 116, 23, 22],
    "test": [454, 349, 386, 363, 265, 24, 21],
}
UNSEEN = {"Artist", "Athlete", "CelestialBody", "MeanOfTransportation", "Politician"}


@pytest.fixture(scope="module")
def webnlg_stage(shared_data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("webnlg") / "records")
    manifest = ingest("webnlg", str(shared_data / "webnlg"), out)
    return manifest, stage_reader.read_stage(out).to_pylist()


def test_counts_match_the_shared_readme(webnlg_stage):
    manifest, rows = webnlg_stage
    entries = collections.Counter(r["split"] for r in rows)
    texts = collections.Counter()
    sizes = collections.defaultdict(lambda: [0] * 7)
    for r in rows:
        texts[r["split"]] += len(r["references"])
        sizes[r["split"]][len(r["data"]["triples"]) - 1] += 1
    assert dict(entries) == ENTRIES
    assert dict(sizes) == BY_SIZE
    # Six dev lexes are `<text/>`: counted as empty references, not kept as texts.
    assert manifest["counts"]["notes"] == {"empty_references": 6}
    assert texts["train"] == TEXTS["train"] and texts["test"] == TEXTS["test"]
    assert texts["validation"] + 6 == TEXTS["validation"]
    counts = manifest["counts"]
    assert counts["read"] == counts["written"] == counts["records"] == sum(ENTRIES.values())
    assert counts["quarantined"] == 0


def test_seen_and_unseen_test_entries(webnlg_stage):
    _, rows = webnlg_stage
    test = [r for r in rows if r["split"] == "test"]
    unseen = [r for r in test if r["category"] in UNSEEN]
    assert (len(test) - len(unseen), len(unseen)) == (971, 891)
    assert sum(len(r["references"]) for r in unseen) == 2433


def test_record_content(webnlg_stage):
    _, rows = webnlg_stage
    by_id = {r["id"]: r for r in rows}
    rec = by_id["train/1triples/Airport.xml#Id1"]
    assert rec["source"] == "webnlg" and rec["category"] == "Airport"
    assert rec["data"]["triples"] == [
        {"subject": "Aarhus_Airport", "predicate": "cityServed", "object": '"Aarhus, Denmark"'}
    ]
    assert rec["data"]["act"] is None and rec["data"]["slots"] == []
    assert rec["references"] == [
        "The Aarhus is the airport of Aarhus, Denmark.",
        "Aarhus Airport serves the city of Aarhus, Denmark.",
    ]
    assert rec["raw"].startswith('<entry category="Airport" eid="Id1" size="1">')
    assert len({r["id"] for r in rows}) == len(rows)


CHALLENGE_SHAPE = """<?xml version="1.0" ?>
<benchmark>
  <entries>
    <entry category="Food" eid="Id7" size="2">
      <originaltripleset><otriple>Ajoblanco | country | Spain@en</otriple></originaltripleset>
      <modifiedtripleset>
        <mtriple>Ajoblanco | country | Spain</mtriple>
        <mtriple>Ajoblanco | mainIngredient | "Bread, almonds"</mtriple>
      </modifiedtripleset>
      <lex comment="good" lid="Id1">Ajoblanco is from Spain and contains bread and almonds.</lex>
      <lex lid="Id2">Bread and almonds go into ajoblanco, a Spanish dish.</lex>
    </entry>
    <entry>
      <originaltripleset><otriple>Spain | capital | Madrid</otriple></originaltripleset>
      <lex>Madrid is the capital of Spain.</lex>
    </entry>
  </entries>
</benchmark>
"""


def test_challenge_shape_and_missing_attributes(tmp_path):
    path = tmp_path / "challenge" / "food.xml.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(CHALLENGE_SHAPE.encode()))
    out = str(tmp_path / "out")
    manifest = ingest("webnlg", str(tmp_path / "challenge"), out, split="test")
    rows = stage_reader.read_stage(out).to_pylist()
    assert manifest["counts"]["read"] == 2 and manifest["counts"]["written"] == 2
    first, second = rows
    assert first["id"] == "food.xml.gz#Id7" and first["split"] == "test"
    assert [t["predicate"] for t in first["data"]["triples"]] == ["country", "mainIngredient"]
    assert first["references"] == [
        "Ajoblanco is from Spain and contains bread and almonds.",
        "Bread and almonds go into ajoblanco, a Spanish dish.",
    ]
    # No eid, no category, no mtriples: the position gives the id, otriples the data.
    assert second["id"] == "food.xml.gz#entry2" and second["category"] is None
    assert second["data"]["triples"] == [
        {"subject": "Spain", "predicate": "capital", "object": "Madrid"}
    ]


def _entry(eid: str, triple: str = "A | p | B", text: str = "A p B.") -> str:
    return (
        f'<entry category="X" eid="{eid}" size="1">\n'
        f"<modifiedtripleset><mtriple>{triple}</mtriple></modifiedtripleset>\n"
        f"<lex><text>{text}</text></lex>\n</entry>\n"
    )


def test_bad_entries_are_quarantined_and_the_rest_is_read(tmp_path):
    body = (
        b"<benchmark><entries>\n"
        + _entry("Id1").encode()
        + b'<entry eid="Id2"><modifiedtripleset><mtriple>A | p | B</mtriple>'
        + b"</modifiedtripleset><lex><text>broken</lex>\n</entry>\n"  # mismatched tag
        + _entry("Id3", text="caf\xe9").encode("latin-1")  # invalid UTF-8
        + _entry("Id4", triple="only two | parts").encode()
        + b'<entry eid="Id5" size="0">\n</entry>\n'  # no triples at all
        + b'<entry eid="Id6"><modifiedtripleset><mtriple>A | p | B</mtriple>\n'  # never closed
        + _entry("Id7").encode()
        + b'<entry eid="Id8"><modifiedtripleset>\n'  # unclosed at end of file
    )
    path = tmp_path / "bad.xml"
    path.write_bytes(body)
    out = str(tmp_path / "out")
    manifest = ingest("webnlg", str(path), out)
    counts = manifest["counts"]
    assert (counts["read"], counts["written"], counts["quarantined"]) == (8, 2, 6)
    kept = stage_reader.read_stage(out).to_pylist()
    assert [r["id"] for r in kept] == ["bad.xml#Id1", "bad.xml#Id7"]
    bad = stage_reader.read_stage(out, quarantine=True).to_pylist()
    reasons = {row["location"]: row["reason"] for row in bad}
    assert reasons["bad.xml:6"].startswith("malformed XML: mismatched tag")
    assert reasons["bad.xml:8"].startswith("invalid UTF-8")
    assert reasons["bad.xml:12"].startswith("malformed triple")
    assert reasons["bad.xml:16"] == "empty record: no triples, act or slots"
    assert reasons["bad.xml:18"] == "malformed XML: <entry> is not closed before the next one"
    assert reasons["bad.xml:23"] == "malformed XML: <entry> is not closed before end of file"
    assert all(row["source"] == "webnlg" and row["raw"].startswith("<entry") for row in bad)
    assert counts["quarantined_by_reason"] == {
        "empty record": 1,
        "invalid UTF-8": 1,
        "malformed XML": 3,
        "malformed triple": 1,
    }


def test_split_mapping_and_caps(shared_data, tmp_path):
    root = shared_data / "webnlg"
    out = str(tmp_path / "out")
    sources = {"train": str(root / "train"), "validation": str(root / "dev"), "test": None}
    manifest = ingest("webnlg", sources, out, max_records={"train": 500, "validation": None})
    splits = collections.Counter(stage_reader.read_stage(out).column("split").to_pylist())
    assert dict(splits) == {"train": 500, "validation": 872}
    assert manifest["counts"]["read"] == 1372
    assert manifest["counts"]["notes"]["capped_splits"] == ["train"]
    assert manifest["config"]["max_records"] == {"train": 500}


def _ingest_file(tmp_path, body: bytes, name: str = "in.xml"):
    path = tmp_path / name
    path.write_bytes(body)
    out = str(tmp_path / "out")
    manifest = ingest("webnlg", str(path), out)
    good = stage_reader.read_stage(out).to_pylist()
    bad = stage_reader.read_stage(out, quarantine=True).to_pylist()
    return manifest["counts"], good, bad


def test_comments_cdata_and_instructions_mean_what_xml_says(tmp_path):
    """A commented-out entry is no record; an entry whose CDATA holds `<entry>`
    is read whole; `read` counts the 3 real entries (the text-pattern reader counted 5)."""
    body = (
        "<?xml version='1.0' encoding='UTF-8'?>\n<benchmark><entries>\n"
        + _entry("Id1")
        + "<!-- an old entry, taken out:\n"
        + _entry("Id2").replace("A p B.", "commented out")
        + "-->\n<?datatuner skip?>\n"
        + _entry("Id3", text="<![CDATA[Say <entry> and </entry> & mean it.]]>")
        + _entry("Id4", text="A <?pi inside?>p B.")
        + "</entries></benchmark>\n"
    ).encode()
    counts, good, bad = _ingest_file(tmp_path, body)
    assert (counts["read"], counts["written"], counts["quarantined"]) == (3, 3, 0)
    assert [r["id"] for r in good] == ["in.xml#Id1", "in.xml#Id3", "in.xml#Id4"]
    assert good[1]["references"] == ["Say <entry> and </entry> & mean it."]
    assert good[1]["raw"].startswith('<entry category="X" eid="Id3"')
    assert good[1]["raw"].endswith("</lex>\n</entry>")
    assert good[2]["references"] == ["A p B."]
    assert bad == [] and counts["notes"] == {}


def test_a_jsonl_file_given_as_webnlg_is_one_quarantine_row(tmp_path):
    """Not a silent `read 0`: the file is one quarantine row with a reason."""
    body = b'{"triples": [["A", "p", "B"]], "references": ["A p B."]}\n'
    counts, good, bad = _ingest_file(tmp_path, body, name="mine.jsonl")
    assert (counts["read"], counts["written"], counts["quarantined"]) == (1, 0, 1)
    assert good == []
    assert bad[0]["location"] == "mine.jsonl"
    assert bad[0]["reason"].startswith("not a WebNLG XML file: not well-formed")
    assert bad[0]["raw"] == body.decode()
    assert counts["quarantined_by_reason"] == {"not a WebNLG XML file": 1}


def test_xml_without_entries_and_errors_between_entries_are_noted(tmp_path):
    counts, good, _ = _ingest_file(tmp_path, b"<benchmark><entries/></benchmark>")
    assert (counts["read"], counts["notes"]) == (0, {"xml_files_without_entries": 1})
    body = (
        "<benchmark><entries>\n" + _entry("Id1") + "<oops a=1>\n" + _entry("Id2") + "</entries>"
    ).encode()  # an unquoted attribute between entries; then a missing </benchmark>
    counts, good, _ = _ingest_file(tmp_path, body, name="two.xml")
    assert [r["id"] for r in good] == ["two.xml#Id1", "two.xml#Id2"]
    assert counts["read"] == counts["written"] == 2
    assert counts["notes"] == {"xml_errors_outside_entries": 2}


def test_entity_attacks_stay_harmless(tmp_path):
    """Billion laughs and an external entity: nothing is expanded or fetched; the entries that
    use them are quarantined, the others read."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    laughs = "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i else "lol"}">' for i in range(10)
    )
    body = (
        f'<?xml version="1.0"?>\n<!DOCTYPE benchmark [{laughs}'
        f'<!ENTITY xxe SYSTEM "file://{secret}">]>\n<benchmark><entries>\n'
        + _entry("Id1", text="&lol9;")
        + _entry("Id2", text="&xxe;")
        + _entry("Id3")
        + "</entries></benchmark>\n"
    ).encode()
    counts, good, bad = _ingest_file(tmp_path, body)
    assert (counts["read"], counts["written"], counts["quarantined"]) == (3, 1, 2)
    assert [r["id"] for r in good] == ["in.xml#Id3"]
    reasons = [b["reason"].split(" at line")[0] for b in bad]
    assert reasons == ["malformed XML: undefined entity"] * 2
    assert counts["notes"] == {"xml_errors_outside_entries": 1}  # the entity declarations
    assert "TOP SECRET" not in str(good + bad) and "lollol" not in str(good + bad)


def test_an_entry_over_the_limit_is_quarantined_without_being_built(tmp_path, monkeypatch):
    """An entry over `MAX_UNIT_BYTES` costs only itself, and a reference over
    `MAX_REFERENCE_CHARS` (references once had no limit) is refused."""
    monkeypatch.setattr(limits, "MAX_UNIT_BYTES", 2_000)
    monkeypatch.setattr(xml_entries, "CHUNK", 512)
    body = (
        "<benchmark><entries>\n"
        + _entry("Id1")
        + _entry("Id2", text="x" * 5_000)
        + _entry("Id3", text="y " * 600)
        + _entry("Id4")
        + "</entries></benchmark>\n"
    ).encode()
    monkeypatch.setattr(limits, "MAX_REFERENCE_CHARS", 1_000)
    counts, good, bad = _ingest_file(tmp_path, body)
    assert [r["id"] for r in good] == ["in.xml#Id1", "in.xml#Id4"]
    assert (counts["read"], counts["quarantined"]) == (4, 2)
    assert [(b["location"], b["reason"]) for b in bad] == [
        ("in.xml:6", f"entry longer than 2000 bytes ({len(_entry('Id2', text='x' * 5_000)) - 1})"),
        ("in.xml:10", "reference longer than 1000 characters (1199)"),
    ]
    assert bad[0]["raw"].startswith('<entry category="X" eid="Id2"')


def test_never_crashes_on_mutated_xml(tmp_path, monkeypatch):
    """Random damage to a WebNLG file (bytes cut, tags, comments, CDATA, entities inserted), read
    in small chunks: every entry found is one item, and nothing raises."""
    body = (
        "<?xml version='1.0'?>\n<benchmark><entries>\n"
        + "".join(_entry(f"Id{i}", text=f"Text {i} &amp; more.") for i in range(12))
        + "</entries></benchmark>\n"
    ).encode()
    inserts = [b"<", b">", b"&", b"]]>", b"<!--", b"-->", b"<entry>", b"</entry>", b"\xff"]
    inserts += [b"<![CDATA[", b"<?x", b"<!DOCTYPE x [<!ENTITY a 'b'>]>"]
    monkeypatch.setattr(xml_entries, "CHUNK", 37)
    path = tmp_path / "in.xml"
    for seed in range(150):
        rng = random.Random(seed)
        data = bytearray(body)
        for _ in range(rng.randint(1, 5)):
            pos = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[pos:pos] = rng.choice(inserts)
            else:
                del data[pos : pos + rng.randint(1, 30)]
        path.write_bytes(bytes(data))
        items = list(webnlg.read([str(path)], str(path), None, {}))
        entries = [i for i in items if i.units == 1 and (i.record or i.quarantine)]
        assert sum(i.units for i in items) == len(entries)
