"""The report: metrics.json, report.md and PNG plots, written through storage (local, memory://)."""

from __future__ import annotations

import json

import fsspec
import pytest

from datatuner_core import evaluate as ev
from datatuner_core import report, report_markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cand(text, label, score):
    return {"text": text, "lm_score": -1.0, "fidelity_label": label, "fidelity_score": score}


def _data(n):
    return {
        "triples": [{"subject": "s", "predicate": "p", "object": "o"}] * n,
        "act": None,
        "slots": [],
    }


ROWS = [
    {
        "id": "a",
        "category": "Airport",
        "data": _data(1),
        "entities": ["Aarhus Airport", "Tirstrup"],
        "references": ["Aarhus Airport is in Tirstrup."],
        "text": "Aarhus Airport is in Tirstrup.",
        "fidelity_label": "accurate",
        "fidelity_score": 0.9,
        "candidates": [
            _cand("Aarhus Airport is an airport.", "omission", 0.2),
            _cand("Aarhus Airport is in Tirstrup.", "accurate", 0.9),
        ],
    },
    {
        "id": "b",
        "category": "Artist",
        "data": _data(2),
        "entities": ["Aaron Turner", "Black metal"],
        "references": ["Aaron Turner plays black metal.", "Aaron Turner is a black metal artist."],
        "text": "Aaron Turner plays black metal music.",
        "fidelity_label": "value_error",
        "fidelity_score": 0.4,
        "candidates": [_cand("Aaron Turner plays black metal music.", "value_error", 0.4)],
    },
]


@pytest.fixture(scope="module")
def metrics():
    return ev.evaluate_generations(ROWS)


def _read(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as f:
        return f.read()


@pytest.mark.parametrize("where", ["local", "memory"])
def test_write_report_files_and_content(metrics, tmp_path, where):
    root = str(tmp_path / "report") if where == "local" else f"memory://report-{tmp_path.name}"
    written = report.write_report(metrics, root, title="WebNLG tiny", extra={"run_id": "r1"})
    names = [uri.rsplit("/", 1)[-1] for uri in written]
    assert names == ["metrics.json", "bleu_by_size.png", "labels.png", "coverage.png", "report.md"]
    if where == "local":
        assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(names)

    loaded = json.loads(_read(written[0]))
    assert loaded.pop("extra") == {"run_id": "r1"}
    assert loaded == json.loads(json.dumps(metrics))  # round-trips
    for uri in written[1:4]:
        assert _read(uri).startswith(PNG_MAGIC)

    text = _read(written[-1]).decode()
    assert text.startswith("# WebNLG tiny")
    assert f"| BLEU (all) | {metrics['bleu']:.2f} | {metrics['top_beam']['bleu']:.2f} |" in text
    assert f"| BLEU seen | {metrics['seen']['bleu']:.2f} |" in text
    assert f"| BLEU unseen | {metrics['unseen']['bleu']:.2f} |" in text
    assert f"| chrF | {metrics['chrf']:.2f} |" in text
    assert f"| BLEU (lowercased) | {metrics['bleu_lowercase']:.2f} |" in text
    assert "| accurate | 1 | 50.0% | 0 | 0.0% |" in text  # reranked vs top beam
    top_cov = metrics["coverage"]["top_beam"]
    missing_share, per_record = top_cov["records_missing_share"], top_cov["missing_per_record"]
    assert f"| top beam | {100 * missing_share:.1f}% | {per_record:.2f} |" in text
    assert "| reranked | 0.0% | 0.00 | 0.00 | 0.0% |" in text
    assert "FC" not in text.split("BLEU: sacrebleu")[0]  # system names in words, above the notes
    # example texts: the chosen texts here state every entity, so only good ones
    assert [g["id"] for g in metrics["examples"]["good"]] == ["a"]  # b is not labelled accurate
    assert "  - **text** Aarhus Airport is in Tirstrup." in text
    assert "### Texts with a flaw" not in text
    assert "### By category" in text and "| Airport | 1 |" in text
    assert "![bleu_by_size](bleu_by_size.png)" in text
    assert "| run_id | `r1` |" in text


def test_examples_name_the_flaw_of_a_bad_text(tmp_path):
    rows = [dict(ROWS[0], text="Aarhus Airport is an airport.", fidelity_label="accurate"),
            dict(ROWS[1], text=None, fidelity_label=None, fidelity_score=None)]  # fmt: skip
    metrics = ev.evaluate_generations(rows)
    assert [b["id"] for b in metrics["examples"]["bad"]] == ["a", "b"]
    assert metrics["examples"]["good"] == []
    assert metrics["coverage"]["chosen"]["records_missing_share"] == 1.0
    text = report_markdown.render_markdown(metrics, "t").decode()
    assert "verdict: accurate, P(accurate) 0.90; missing: Tirstrup" in text
    assert "**text** (generation failed)" in text


def test_write_report_without_optional_parts(tmp_path):
    rows = [{"id": r["id"], "text": r["text"], "references": r["references"]} for r in ROWS]
    metrics = ev.evaluate_generations(rows)
    written = report.write_report(metrics, str(tmp_path), title="plain")
    assert [u.rsplit("/", 1)[-1] for u in written] == ["metrics.json", "report.md"]
    text = (tmp_path / "report.md").read_text()
    assert "| BLEU (all) |" in text and "Plots" not in text and "every fact" not in text
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads(json.dumps(metrics))


def test_the_report_sets_test_beside_the_validation_splits_and_the_curve(tmp_path):
    """A generations stage of the validation sample is scored per split (`evaluate_splits`),
    each beside test in one table, with the oracle; the LM curve shows each split's ppl."""
    from datatuner_core import stage_writer
    from datatuner_core.schema import GENERATIONS

    dev = str(tmp_path / "dev")
    writer = stage_writer.StageWriter(dev, "generate", GENERATIONS)
    for split, row in (("validation", ROWS[0]), ("validation_unseen", ROWS[1])):
        full = {name: None for name in GENERATIONS.names}
        full.update({**row, "split": split, "data": None, "linearized": "x"})
        writer.add_counted(full)
    writer.commit(inputs=[], fingerprint="dev")
    splits = ev.evaluate_splits(dev)
    assert list(splits) == ["validation", "validation_unseen"]
    seen, unseen = splits["validation"], splits["validation_unseen"]
    assert seen["n"] == unseen["n"] == 1
    assert seen["bleu"] == pytest.approx(100.0)  # the reranked text is the reference
    assert seen["bleu_top_beam"] < seen["bleu"] == seen["bleu_oracle"]
    assert seen["coverage_error_top_beam"] == 0.5 and seen["coverage_error"] == 0.0
    metrics = {**ev.evaluate_generations(ROWS), "validation": splits,
               "lm_curve": [{"step": 6, "val_ppl": 3.0, "val_ppl@validation": 2.5,
                             "val_ppl@validation_unseen": 4.25}], "lm_best_step": 6}  # fmt: skip
    text = report_markdown.render_markdown(metrics, "t").decode()
    assert "## Test beside the validation splits" in text
    rows = [line for line in text.splitlines() if line.startswith("| validation")]
    assert rows[0].startswith("| validation (seen categories) | 1 | 100.00 |")
    assert rows[1].startswith("| validation_unseen (held-out categories) | 1 |")
    assert "| 6 | 3.000 | 2.500 | 4.250 |" in text and "step 6's" in text
    assert ev.headline(metrics)["bleu_validation"] == seen["bleu"]


def test_the_classifier_is_checked_against_the_coverage_check_on_real_candidates(metrics):
    """Candidate by candidate: a's omission (Tirstrup missing) and a's accurate text agree with
    the coverage check; b's `value_error` names a text with every entity: a disagreement."""
    agree = metrics["coverage"]["classifier_agreement"]
    assert agree == {"candidates": 3, "agreement": pytest.approx(2 / 3), "precision": 1.0,
                     "error_recall": 1.0}  # fmt: skip
    head = ev.headline(metrics)
    assert head["classifier_agreement"] == pytest.approx(2 / 3)
    assert head["verdict_accurate_precision"] == 1.0
    text = report_markdown.render_markdown(metrics, "t").decode()
    assert "Of the 1 texts reported `accurate`, 100.0% have no coverage error" in text
    assert (
        "On all 3 candidates, the classifier's own label agrees with the coverage check on 66.7%"
        in text
    )
