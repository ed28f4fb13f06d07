"""Coverage (datatuner_core.coverage_check): hand-checked missing and hallucinated entities, the
normalisations, the corpus error rate, and the 5k-entity index against benchmarks.coverage."""

from __future__ import annotations

import pytest

from datatuner_core import coverage_check

CORPUS = [
    "Alan Bean",
    "Wheeler, Texas",
    "Texas",
    "NASA",
    "Apollo 12",
    "1932-03-15",
    "Tirstrup",
    "Denmark",
    "Aarhus Airport",
    "Aarhus",
    "2776.0",
    "UK",
    "English language",
    "Houston",
]


def test_coverage_missing_and_hallucinated_hand_checked():
    index = coverage_check.EntityIndex(CORPUS)
    entities = ["Alan Bean", "Wheeler, Texas", "1932-03-15"]
    good = coverage_check.coverage_errors(
        "Alan Bean was born in Wheeler, Texas on March 15th, 1932.", entities, index
    )
    assert good == {"missing": [], "hallucinated": []}
    bad = coverage_check.coverage_errors(
        "Alan Bean, born in Houston, flew on Apollo 12 for NASA.", entities, index
    )
    assert bad["missing"] == ["Wheeler, Texas", "1932-03-15"]
    assert bad["hallucinated"] == ["Houston", "Apollo 12", "NASA"]
    # a null text conveys nothing
    assert coverage_check.coverage_errors(None, entities, index)["missing"] == entities


def test_coverage_no_false_positive_for_part_of_a_present_entity():
    index = coverage_check.EntityIndex(CORPUS)
    # `Texas` and `Aarhus` are corpus entities, but parts of this record's own entities
    errors = coverage_check.coverage_errors(
        "Aarhus Airport serves Wheeler, Texas.", ["Aarhus Airport", "Wheeler, Texas"], index
    )
    assert errors == {"missing": [], "hallucinated": []}
    # short (UK) and purely numeric (2776.0) corpus entities are never hallucinations
    errors = coverage_check.coverage_errors(
        "Its runway in the UK is 2776 m long.", ["Aarhus Airport"], index
    )
    assert errors == {"missing": ["Aarhus Airport"], "hallucinated": []}


def test_coverage_normalisations():
    present = coverage_check.entity_present
    assert present(
        "Adolfo Suárez Madrid–Barajas Airport",
        coverage_check.normalize("adolfo suarez madrid-barajas airport"),
    )
    assert present("2776.0", coverage_check.normalize("a runway of 2,776 metres"))
    assert not present("1", coverage_check.normalize("born in 1945"))  # numbers are whole tokens
    assert present("1945-04-26", coverage_check.normalize("on 26th April, 1945"))
    assert present("1945-04-26", coverage_check.normalize("on April 26, 1945"))
    assert present("Abilene, Texas", coverage_check.normalize("the city of Abilene in Texas"))
    assert present("Asterix (comicsCharacter)", coverage_check.normalize("Asterix is a hero"))
    assert present("Washington, D.C.", coverage_check.normalize("Washington DC"))
    assert present("English language", coverage_check.normalize("written in English"))
    assert present("Alison ODonnell", coverage_check.normalize("Alison O'Donnell"))
    assert present("United States", coverage_check.normalize("born in the U.S."))
    assert not present("United States", coverage_check.normalize("the house"))


def test_coverage_error_rate_counts_over_the_corpus():
    rows = [
        {"entities": ["Alan Bean", "Wheeler, Texas"], "text": "Alan Bean is from Wheeler, Texas."},
        {"entities": ["Aarhus Airport", "Tirstrup"], "text": "Aarhus Airport is near Alan Bean."},
    ]
    rate = coverage_check.coverage_error_rate(rows, lambda r: r["text"])
    assert (rate["missing"], rate["hallucinated"], rate["entities"]) == (1, 1, 4)
    assert rate["error_rate"] == 0.5 and rate["record_error_share"] == 0.5


def test_coverage_over_5k_entities_counts_every_miss_and_hallucination():
    """5,000 records against a 5,000-entity index: every count is known in closed form (record i
    names entities i and 7i, its text names i and 13i, all mod 5,000). The speed of the index
    against re-indexing per text is `benchmarks.coverage`'s business, not an assertion here."""
    n = 5_000
    words = [f"Entity number {i} {chr(97 + i % 26)}lpha" for i in range(n)]
    rows = [{"entities": [words[i], words[(i * 7) % n]]} for i in range(n)]
    texts = [
        f"{words[i]} is related to {words[(i * 13) % n]} and more words here." for i in range(n)
    ]
    index = coverage_check.EntityIndex(words)
    assert len(index) == n
    missing = sum((7 * i) % n not in {i, (13 * i) % n} for i in range(n))
    hallucinated = sum((13 * i) % n not in {i, (7 * i) % n} for i in range(n))
    with_error = sum(
        (7 * i) % n not in {i, (13 * i) % n} or (13 * i) % n not in {i, (7 * i) % n}
        for i in range(n)
    )
    assert 4_990 < missing < n and 4_990 < hallucinated < n  # a few i make 7i or 13i equal i
    got = coverage_check.coverage_error_rate(rows, lambda r, it=iter(texts): next(it), index)
    assert got["missing"] == missing and got["hallucinated"] == hallucinated
    assert got["entities"] == 2 * n and got["records_with_error"] == with_error
    assert got["error_rate"] == pytest.approx((missing + hallucinated) / (2 * n), abs=1e-4)
    # the same counts without a prebuilt index (the corpus index is built from the rows)
    again = coverage_check.coverage_error_rate(rows, lambda r, it=iter(texts): next(it))
    assert (again["missing"], again["hallucinated"]) == (missing, hallucinated)


def test_coverage_benchmark_checks_the_index_against_a_plain_scan(tmp_path):
    """benchmarks.coverage times the index against a scan of every entity per text and fails
    unless both count the same errors; here on a small corpus, reading its JSON."""
    import json

    from benchmarks import coverage as bench

    out = tmp_path / "coverage.json"
    assert bench.main(["--entities", "300", "--records", "120", "--candidates", "2",
                       "--scan-records", "40", "--out", str(out)]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert result["counts"]["entities"] == 240 and result["counts"]["agree_on_scanned"] is True
    # 120 records over 300 entities: entity 7i is named by the text when 6i = 0 (mod 300), i.e.
    # i = 0, 50, 100; entity 13i is the record's own when 12i = 0 (i = 0, 25, 50, 75, 100)
    assert result["counts"]["missing"] == 117 and result["counts"]["hallucinated"] == 115
    assert result["scan_records"] == 40 and result["speedup"] > 0
