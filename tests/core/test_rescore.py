"""datatuner_core.rescore: a generations stage re-chosen from its own candidates, without a model
(the coverage check, then the LM score); the classifier path runs in tests/flows/test_pipeline.py
on a trained run."""

from __future__ import annotations

import pytest

from datatuner_core import stage_reader, stage_writer
from datatuner_core.config import GenerateConfig
from datatuner_core.rescore import clear_labels, rescore_stage
from datatuner_core.schema import GENERATIONS


def _cand(text: str, lm: float, label: str | None = "accurate") -> dict:
    return {"text": text, "lm_score": lm, "fidelity_label": label, "fidelity_score": 0.9}


def _write(uri: str, rows: list[dict]) -> None:
    writer = stage_writer.StageWriter(uri, "generate", GENERATIONS)
    for row in rows:
        writer.add_counted({**dict.fromkeys(GENERATIONS.names), "split": "validation", **row})
    writer.commit(inputs=[], fingerprint="beams")


def test_coverage_only_chooses_fewest_missing_entities_then_lm_score(tmp_path):
    rows = [
        {"id": "a", "entities": ["Aarhus", "Denmark"], "text": "Aarhus is a city.",
         "candidates": [_cand("Aarhus is a city.", -0.1),
                        _cand("Aarhus lies in Denmark.", -0.5),
                        _cand("Aarhus, Denmark, a city.", -0.3)]},
        {"id": "b", "entities": ["Oslo"], "text": None, "error": "out of memory",
         "candidates": []},
    ]  # fmt: skip
    _write(str(tmp_path / "gen"), rows)
    section = GenerateConfig(coverage=False, label_first=True)
    manifest = rescore_stage(
        str(tmp_path / "gen"), str(tmp_path / "out"), section, coverage_only=True
    )
    assert manifest["counts"]["read"] == manifest["counts"]["written"] == 2
    assert manifest["extra"]["seconds"] >= 0
    got = {r["id"]: r for r in stage_reader.read_stage(str(tmp_path / "out")).to_pylist()}
    # both full-coverage candidates tie on entities; the better LM score wins; labels are gone
    assert got["a"]["text"] == "Aarhus, Denmark, a city." and got["a"]["lm_score"] == -0.3
    assert got["a"]["fidelity_label"] is None
    assert all(c["fidelity_label"] is None for c in got["a"]["candidates"])
    assert got["b"]["text"] is None and got["b"]["error"] == "out of memory"
    with pytest.raises(ValueError, match="classifier_uri"):
        rescore_stage(str(tmp_path / "gen"), str(tmp_path / "x"), section)


def test_clear_labels_forgets_every_candidates_label_in_place():
    rows = [{"candidates": [_cand("x", -1.0), _cand("y", -2.0, "omission")]},
            {"candidates": None}]  # fmt: skip
    assert clear_labels(rows) is rows
    assert [(c["fidelity_label"], c["fidelity_score"]) for c in rows[0]["candidates"]] == [
        (None, None),
        (None, None),
    ]
