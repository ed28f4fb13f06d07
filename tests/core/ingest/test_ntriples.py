"""The N-Triples reader: parsing, names, grouping, quarantine and conservation."""

from __future__ import annotations

import gzip
import random

import pytest

from datatuner_core.ingest import IngestError, ingest, limits
from datatuner_core.ingest import ntriples_syntax as syntax
from datatuner_core.schema import MAX_VALUE_CHARS
from datatuner_core.stage_reader import read_manifest, read_stage

R = "http://example.org/r/"
O = "http://example.org/o/"  # noqa: E741
LABEL = "<http://www.w3.org/2000/01/rdf-schema#label>"
XSD = "http://www.w3.org/2001/XMLSchema#"

LONG = "x" * (MAX_VALUE_CHARS + 1)

# (tag, line): tags name the lines the assertions talk about; None for the rest.
DUMP: list[tuple[str | None, bytes]] = [
    (None, b"# a synthetic dump with every kind of line"),
    (None, b""),
    ("airport_city", f"<{R}Aarhus_Airport> <{O}cityServed> <{R}Aarhus> .".encode()),
    ("aarhus_de", f'<{R}Aarhus> {LABEL} "Aarhus"@de .'.encode()),
    ("aarhus_en", f'<{R}Aarhus> {LABEL} "Aarhus (en)"@en-GB .'.encode()),
    ("aarhus_plain", f'<{R}Aarhus> {LABEL} "Aarhus plain" .'.encode()),
    (
        "airport_runway",
        f'<{R}Aarhus_Airport> <{O}runwayLength> "2776.0"^^<{XSD}double> .'.encode(),
    ),
    (None, b"   # an indented comment"),
    (None, b"\t"),
    ("airport_org", f"<{R}Aarhus_Airport>\t<{O}operating_organisation> _:b0.  # trailing".encode()),
    (
        "b0_name",
        (
            f"_:b0 <{O}name> "
            r'"Caf\u00e9 \U0001F600 tab\there \"q\" \'s\' back\\slash nl\nline cr\r bs\b ff\f"@fr .'
        ).encode(),
    ),
    ("b1_label", f'_:b1 {LABEL} "Anon"@en .'.encode()),
    ("b1_knows", f"_:b1 <{O}knows> <{R}Aarhus_Airport> .".encode()),
    ("cafe", rf"<{R}Caf\u00e9_Bar> <{O}location> <{R}S%C3%A3o_Paulo> .".encode()),
    ("big_c5", f"<{R}Big> <{O}memberOf> <{R}Club_5> .".encode()),
    ("big_label", f'<{R}Big> {LABEL} "The Big One"@en .'.encode()),
    ("big_c2", f"<{R}Big> <{O}memberOf> <{R}Club_2> .".encode()),
    ("big_pop", f'<{R}Big> <{O}populationTotal> "42"^^<{XSD}int> .'.encode()),
    ("big_c7", f"<{R}Big> <{O}memberOf> <{R}Club_7> .".encode()),
    ("big_c1", f"<{R}Big> <{O}memberOf> <{R}Club_1> .".encode()),
    ("big_typed_label", f'<{R}Big> {LABEL} "Big typed"^^<{XSD}string> .'.encode()),
    ("big_c4", f"<{R}Big> <{O}memberOf> <{R}Club_4> .".encode()),
    ("big_birth", f"<{R}Big> <{O}birthPlace> <{R}Aarhus> .".encode()),
    ("big_c6", f"<{R}Big> <{O}memberOf> <{R}Club_6> .".encode()),
    ("big_c3", f"<{R}Big> <{O}memberOf> <{R}Club_3> .".encode()),
    ("big_iri_label", f"<{R}Big> {LABEL} <{R}Not_A_Literal> .".encode()),
    ("only_en", f'<{R}Only_Label> {LABEL} "Only Label"@en .'.encode()),
    ("only_de", f'<{R}Only_Label> {LABEL} "Nur Label"@de .'.encode()),
    (None, b"# caf\xe9: invalid UTF-8 inside a comment is still a comment"),
    # ----- bad lines
    ("bad_dot", f"<{R}X> <{O}p> <{R}Y>".encode()),
    ("bad_literal_subject", f'"lit" <{O}p> <{R}Y> .'.encode()),
    ("bad_iri_subject", f'<{R}X <{O}p> "v" .'.encode()),
    ("bad_iri_object", f"<{R}X> <{O}p> <{R}Y .".encode()),
    ("bad_iri_space", f'<{R}X Y> <{O}p> "v" .'.encode()),
    ("bad_literal_open", f'<{R}X> <{O}p> "open .'.encode()),
    ("bad_escape", f'<{R}X> <{O}p> "bad \\q escape" .'.encode()),
    ("bad_iri_escape", f'<{R}X\\n> <{O}p> "v" .'.encode()),
    ("bad_surrogate", f'<{R}X> <{O}p> "\\uD83D alone" .'.encode()),
    ("bad_utf8", f'<{R}X> <{O}p> "caf'.encode() + b'\xe9" .'),
    ("bad_long", f'<{R}X> <{O}p> "{LONG}" .'.encode()),
    ("bad_empty", f'<{R}X> <{O}p> "  " .'.encode()),
    ("bad_garbage", b"this is not a triple"),
    ("bad_bnode_predicate", f"<{R}X> _:p <{R}Y> .".encode()),
    ("bad_extra", f"<{R}X> <{O}p> <{R}Y> <{R}Z> .".encode()),
    ("bad_after_dot", f"<{R}X> <{O}p> <{R}Y> . more".encode()),
    ("bad_lang", f'<{R}X> <{O}p> "v"@ .'.encode()),
]
LINE = {tag: i + 1 for i, (tag, _) in enumerate(DUMP) if tag}
UNITS = sum(1 for _, line in DUMP if line.strip(b" \t") and not line.strip(b" \t").startswith(b"#"))
BAD = [tag for tag in LINE if tag.startswith("bad_")]
TEXT = {tag: line.decode("utf-8", "replace") for tag, line in DUMP if tag}

EXPECTED_REASONS = {
    "bad_dot": "malformed N-Triples: missing final '.'",
    "bad_literal_subject": "malformed N-Triples: literal as subject",
    "bad_iri_subject": "malformed N-Triples: unterminated IRI (subject)",
    "bad_iri_object": "malformed N-Triples: unterminated IRI (object)",
    "bad_iri_space": "malformed N-Triples: invalid character ' ' in IRI (subject)",
    "bad_literal_open": "malformed N-Triples: unterminated literal",
    "bad_escape": "malformed N-Triples: bad escape \\q",
    "bad_iri_escape": "malformed N-Triples: bad escape in IRI \\n",
    "bad_surrogate": "malformed N-Triples: bad escape (lone surrogate)",
    "bad_utf8": "invalid UTF-8: invalid continuation byte at byte 54",
    "bad_long": f"value longer than {MAX_VALUE_CHARS} characters ({MAX_VALUE_CHARS + 1})",
    "bad_empty": "empty value: literal object is empty or only whitespace",
    "bad_garbage": (
        "malformed N-Triples: expected IRI or blank node as subject, found 'this is not '"
    ),
    "bad_bnode_predicate": "malformed N-Triples: blank node as predicate",
    "bad_extra": f"malformed N-Triples: expected final '.', found '<{R[:11]}'",
    "bad_after_dot": "malformed N-Triples: unexpected text after final '.': 'more'",
    "bad_lang": "malformed N-Triples: bad language tag '@ .'",
}


def write_dump(path, lines: list[bytes]) -> None:
    data = b"\n".join(lines) + b"\n"
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    base = tmp_path_factory.mktemp("nt")
    write_dump(base / "dump.nt", [line for _, line in DUMP])
    out = base / "out"
    manifest = ingest("ntriples", str(base / "dump.nt"), str(out))
    return base, out, manifest


def triples(record: dict) -> list[tuple[str, str, str]]:
    return [(t["subject"], t["predicate"], t["object"]) for t in record["data"]["triples"]]


def test_records_in_subject_order_with_names_resolved(stage):
    _, out, _ = stage
    records = read_stage(str(out)).to_pylist()
    by_id = {r["id"]: r for r in records}
    assert [r["id"] for r in records] == [
        "_:b0#0",
        "_:b1#0",
        f"{R}Aarhus_Airport#0",
        f"{R}Big#0",
        f"{R}Big#1",
        f"{R}Café_Bar#0",
    ]
    for r in records:
        assert (r["source"], r["split"], r["category"]) == ("ntriples", "all", None)
        assert r["data"]["act"] is None and r["data"]["slots"] == [] and r["references"] == []

    # label rank: @en-GB beats untagged beats @de; no labels → local name; blank node → its label
    assert triples(by_id[f"{R}Aarhus_Airport#0"]) == [
        ("Aarhus Airport", "city served", "Aarhus (en)"),
        ("Aarhus Airport", "operating organisation", "b0"),
        ("Aarhus Airport", "runway length", "2776.0"),
    ]
    # every escape kind decoded; language tag dropped
    assert triples(by_id["_:b0#0"]) == [
        ("b0", "name", "Café \U0001f600 tab\there \"q\" 's' back\\slash nl\nline cr\r bs\b ff\f")
    ]
    assert triples(by_id["_:b1#0"]) == [("Anon", "knows", "Aarhus Airport")]
    # \u escape in an IRI, percent-decoding of local names
    assert triples(by_id[f"{R}Café_Bar#0"]) == [("Café Bar", "location", "São Paulo")]
    # a subject with labels only gives no record: its labels name it where it is an object
    assert f"{R}Aarhus#0" not in by_id and f"{R}Only_Label#0" not in by_id


def test_subject_with_more_than_seven_triples_is_split(stage):
    _, out, _ = stage
    by_id = {r["id"]: r for r in read_stage(str(out)).to_pylist()}
    big = "The Big One"  # @en beats the xsd:string label
    assert triples(by_id[f"{R}Big#0"]) == [
        (big, "birth place", "Aarhus (en)"),
        *[(big, "member of", f"Club {i}") for i in range(1, 7)],
    ]
    assert triples(by_id[f"{R}Big#1"]) == [
        (big, "member of", "Club 7"),
        (big, "population total", "42"),
        (big, "label", "Not A Literal"),  # rdfs:label with an IRI object is a fact
    ]
    # the first record carries the subject's label lines (best first), then its facts' lines
    assert by_id[f"{R}Big#0"]["raw"].split("\n") == [
        TEXT[t] for t in ["big_label", "big_typed_label", "big_birth"]
    ] + [TEXT[f"big_c{i}"] for i in range(1, 7)]
    assert by_id[f"{R}Big#1"]["raw"] == "\n".join(
        TEXT[t] for t in ["big_c7", "big_pop", "big_iri_label"]
    )


def test_counts_are_conserved(stage):
    _, out, manifest = stage
    counts = read_manifest(str(out))["counts"]
    assert counts == manifest["counts"]
    assert UNITS == 41
    assert counts["read"] == UNITS
    assert counts["quarantined"] == len(BAD) == 17
    assert counts["written"] == UNITS - len(BAD) == 24
    assert counts["read"] == counts["written"] + counts["quarantined"]
    assert counts["records"] == 6
    # label lines consumed as names: Big's two literal labels and _:b1's, and the 3 + 2 labels of
    # the two label-only subjects (Aarhus, Only_Label)
    assert counts["notes"] == {"label_only_subjects": 2, "label_triples": 8}
    assert counts["quarantined_by_reason"] == {
        "malformed N-Triples": 14,
        "invalid UTF-8": 1,
        "value longer than 10000 characters": 1,
        "empty value": 1,
    }
    # every other written unit is one raw line of exactly one record
    raw_lines = [line for r in read_stage(str(out)).to_pylist() for line in r["raw"].split("\n")]
    label_only = [t for t in LINE if t.startswith(("aarhus_", "only_"))]
    assert len(label_only) == 5
    assert len(raw_lines) == counts["written"] - len(label_only)
    good = [TEXT[t] for t in LINE if not t.startswith("bad_") and t not in label_only]
    assert sorted(raw_lines) == sorted(good)


def test_quarantine_reasons_and_locations(stage):
    _, out, _ = stage
    rows = read_stage(str(out), quarantine=True).to_pylist()
    got = {row["location"]: row for row in rows}
    assert set(got) == {f"dump.nt:{LINE[tag]}" for tag in BAD}
    for tag in BAD:
        row = got[f"dump.nt:{LINE[tag]}"]
        assert row["source"] == "ntriples"
        assert row["reason"] == EXPECTED_REASONS[tag], tag
        if tag == "bad_utf8":
            assert row["raw"] == f'<{R}X> <{O}p> "caf\\xe9" .'
        else:
            assert row["raw"] == TEXT[tag]


def test_stable_across_runs_and_line_order(stage, tmp_path):
    base, out, _ = stage
    again = ingest("ntriples", str(base / "dump.nt"), str(tmp_path / "again"), force=True)
    assert again["counts"] == read_manifest(str(out))["counts"]
    first = read_stage(str(out)).to_pylist()
    assert read_stage(str(tmp_path / "again")).to_pylist() == first
    # the same graph with its lines in another order gives the same records
    shuffled = [line for _, line in DUMP]
    random.Random(7).shuffle(shuffled)
    write_dump(tmp_path / "shuffled.nt", shuffled)
    ingest("ntriples", str(tmp_path / "shuffled.nt"), str(tmp_path / "shuffled"))
    assert read_stage(str(tmp_path / "shuffled")).to_pylist() == first


def test_gzip_input_and_folders(stage, tmp_path):
    _, out, _ = stage
    folder = tmp_path / "in"
    (folder / "part").mkdir(parents=True)
    write_dump(folder / "part" / "dump.nt.gz", [line for _, line in DUMP])
    manifest = ingest("ntriples", str(folder), str(tmp_path / "gz"), split="train")
    assert manifest["counts"] == read_manifest(str(out))["counts"]
    records = read_stage(str(tmp_path / "gz")).to_pylist()
    assert {r["split"] for r in records} == {"train"}
    assert [{**r, "split": "all"} for r in records] == read_stage(str(out)).to_pylist()
    locations = read_stage(str(tmp_path / "gz"), quarantine=True).column("location").to_pylist()
    assert f"part/dump.nt.gz:{LINE['bad_dot']}" in locations


def test_max_triples_option(tmp_path):
    lines = [f"<{R}S> <{O}p{i}> <{R}O{i}> .".encode() for i in range(5)]
    write_dump(tmp_path / "s.nt", lines)
    manifest = ingest(
        "ntriples", str(tmp_path / "s.nt"), str(tmp_path / "o"), options={"max_triples": 2}
    )
    records = read_stage(str(tmp_path / "o")).to_pylist()
    assert [r["id"] for r in records] == [f"{R}S#0", f"{R}S#1", f"{R}S#2"]
    assert [len(r["data"]["triples"]) for r in records] == [2, 2, 1]
    assert manifest["counts"]["written"] == 5


def test_names():
    assert syntax.predicate_name(f"{O}birthPlace") == "birth place"
    assert syntax.predicate_name(f"{O}cityServed") == "city served"
    assert syntax.predicate_name(f"{O}operating_organisation") == "operating organisation"
    assert (
        syntax.predicate_name("http://xmlns.com/foaf/0.1/isPrimaryTopicOf") == "is primary topic of"
    )
    assert syntax.predicate_name("http://www.w3.org/1999/02/22-rdf-syntax-ns#type") == "type"
    assert syntax.iri_name(f"{R}S%C3%A3o_Paulo") == "São Paulo"
    assert syntax.iri_name("http://example.org/") == "example.org"
    assert syntax.iri_name("urn:isbn:0451450523") == "0451450523"
    assert syntax.node_name("_:genid42") == "genid42"
    assert syntax.label_rank("en", None) == 0
    assert syntax.label_rank("EN-us", None) == 0
    assert syntax.label_rank(None, None) == syntax.label_rank(None, f"{XSD}string") == 1
    assert syntax.label_rank("de", None) == syntax.label_rank(None, f"{XSD}int") == 2


def test_fast_and_slow_parsers_agree():
    """The whole-line regex and the token parser accept the same lines with the same parts."""
    rng = random.Random(3)
    good = [line.decode() for tag, line in DUMP if tag and not tag.startswith("bad_")]
    alphabet = ' \t<>"\\_:.@^#-abcuU0123456789éx'
    checked = 0
    for _ in range(3000):
        chars = list(rng.choice(good))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(chars) + 1)
            op = rng.random()
            if op < 0.4 and chars:
                del chars[min(pos, len(chars) - 1)]
            else:
                chars.insert(pos, rng.choice(alphabet))
        text = "".join(chars)
        m = syntax.LINE_RE(text)
        try:
            slow = syntax.parse_slow(text)
        except syntax.BadTerm:
            slow = None
        if m is not None:
            checked += 1
            assert slow == m.groups(), text
    assert checked > 100


def test_never_crashes_on_random_bytes(tmp_path):
    rng = random.Random(11)
    lines = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 60))) for _ in range(500)]
    lines = [line.replace(b"\n", b" ").replace(b"\r", b" ") for line in lines]
    lines += [
        b'<http://e/x> <http://e/p> "' + bytes(rng.randrange(256) for _ in range(20)) + b'" .'
    ]
    write_dump(tmp_path / "noise.nt", lines)
    counts = ingest("ntriples", str(tmp_path / "noise.nt"), str(tmp_path / "o"))["counts"]
    assert counts["read"] == counts["written"] + counts["quarantined"]
    assert counts["read"] == sum(1 for line in lines if line.strip(b" \t")[:1] not in (b"", b"#"))


def test_temp_folder_removed_also_on_error(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    write_dump(tmp_path / "ok.nt", [f"<{R}S> <{O}p> <{R}O> .".encode()])
    ingest(
        "ntriples", str(tmp_path / "ok.nt"), str(tmp_path / "o1"), options={"tmp_dir": str(work)}
    )
    assert list(work.iterdir()) == []
    good = gzip.compress(b"\n".join([f"<{R}S> <{O}p> <{R}O{i}> .".encode() for i in range(999)]))
    (tmp_path / "broken.nt.gz").write_bytes(good[: len(good) // 2])  # truncated stream
    with pytest.raises(IngestError, match="cannot read broken.nt.gz"):
        ingest(
            "ntriples",
            str(tmp_path / "broken.nt.gz"),
            str(tmp_path / "o2"),
            options={"tmp_dir": str(work)},
        )
    assert list(work.iterdir()) == []
    with pytest.raises(IngestError, match="max_triples"):
        ingest(
            "ntriples", str(tmp_path / "ok.nt"), str(tmp_path / "o3"), options={"max_triples": 0}
        )


def test_a_line_over_the_limit_in_a_gz_is_one_quarantine_row(tmp_path, monkeypatch):
    """A line of zeros in a `.nt.gz` is skipped in chunks and quarantined with
    its line number; the lines after it are read (memory: test_limits.py)."""
    monkeypatch.setattr(limits, "MAX_UNIT_BYTES", 4_096)
    zeros = b"0" * 100_000
    comment = b"# " + b"c" * 10_000  # a long comment is still a comment, not a unit
    good = [f"<{R}S> <{O}p> <{R}O{i}> .".encode() for i in range(3)]
    write_dump(tmp_path / "dump.nt.gz", [good[0], zeros, comment, good[1], good[2]])
    out = tmp_path / "out"
    manifest = ingest("ntriples", str(tmp_path / "dump.nt.gz"), str(out))
    counts = manifest["counts"]
    assert (counts["read"], counts["written"], counts["quarantined"]) == (4, 3, 1)
    bad = read_stage(str(out), quarantine=True).to_pylist()
    assert (bad[0]["location"], bad[0]["reason"]) == (
        "dump.nt.gz:2",
        "line longer than 4096 bytes (100000)",
    )
    assert bad[0]["raw"].startswith("0000")
    assert [t["object"] for t in read_stage(str(out)).to_pylist()[0]["data"]["triples"]] == [
        "O0",
        "O1",
        "O2",
    ]


def test_the_memory_limit_bounds_duckdb_and_never_changes_the_stage(stage, tmp_path):
    """`memory_limit` (`dataset.ingest_memory`): the same records under a small limit, and a
    stage made under one limit is current under another (resource options are not part of the
    fingerprint); a changed `max_triples` is a new stage."""
    base, out, _ = stage
    small = ingest("ntriples", str(base / "dump.nt"), str(tmp_path / "small"),
                   options={"max_triples": 7, "memory_limit": "32MB"})  # fmt: skip
    assert read_stage(str(tmp_path / "small")).to_pylist() == read_stage(str(out)).to_pylist()
    assert small["counts"] == read_manifest(str(out))["counts"]
    again = ingest("ntriples", str(base / "dump.nt"), str(tmp_path / "small"),
                   options={"max_triples": 7, "memory_limit": "2GB", "threads": 1})  # fmt: skip
    assert again.get("skipped") is True and again["fingerprint"] == small["fingerprint"]
    other = ingest("ntriples", str(base / "dump.nt"), str(tmp_path / "small"),
                   options={"max_triples": 3, "memory_limit": "32MB"})  # fmt: skip
    assert not other.get("skipped") and other["fingerprint"] != small["fingerprint"]
    with pytest.raises(Exception, match="(?i)memory"):
        ingest("ntriples", str(base / "dump.nt"), str(tmp_path / "bad"),
               options={"memory_limit": "lots"})  # fmt: skip
