"""Human-evaluation round trip: a stratified export of a hand-built generations stage, two
hand-annotated copies, and the import's precision/recall and Cohen's kappa checked by hand."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from datatuner_core import human_eval, stage_writer
from datatuner_core.schema import GENERATIONS

SLOTS = [{"slot": "name", "value": "Aromi"}, {"slot": "area", "value": "riverside"}]
# (text, classifier label): the slot check finds 0, 1 (wrong area), 1 (missing), 0 errors
ROWS = [("Aromi is by the river.", "accurate"), ("Aromi is in the city centre.", "accurate"),
        ("Aromi.", "omission"), ("Aromi is on the riverside.", "omission")]  # fmt: skip
# per record: (fluency, errors marked) by annotator 1 and annotator 2
ANNOTATED = {
    0: ((5, ()), (5, ())),
    1: ((4, ("value_error",)), (4, ("value_error",))),
    2: ((3, ("omission",)), (3, ("omission",))),
    3: ((5, ()), (4, ("omission",))),
}


def _stage(path) -> str:
    writer = stage_writer.StageWriter(str(path), "generate", GENERATIONS)
    for i, (text, label) in enumerate(ROWS):
        cand = {"text": text, "lm_score": -1.0, "fidelity_label": label, "fidelity_score": 0.5}
        writer.add({
            "id": f"r{i}", "linearized": "<name> Aromi <area> riverside", "text": text,
            "references": ["Aromi is by the river."], "fidelity_label": label,
            "fidelity_score": 0.5, "lm_score": -1.0, "candidates": [cand], "model_version": "v",
            "entities": ["Aromi", "riverside"], "category": None, "source": "e2e",
            "split": "test", "data": {"triples": [], "act": "inform", "slots": SLOTS},
            "truncated": False, "error": None,
        })  # fmt: skip
        writer.stats.read += 1
        writer.stats.written += 1
    writer.commit(inputs=[], fingerprint="x")
    return str(path)


def _annotate(sheet: str, out, who: int) -> None:
    key = json.loads(open(f"{sheet}.key.json").read())
    rows = list(csv.DictReader(open(sheet)))
    for row in rows:
        fluency, errors = ANNOTATED[int(key[row["item"]]["id"][1:])][who]
        row["fluency"] = str(fluency)
        for error in human_eval.ERRORS:
            row[error] = "1" if error in errors else ("0" if who else "")  # blank = no
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=human_eval.COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "flows.cli", "human-eval", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_export_annotate_import_round_trip(tmp_path):
    stage = _stage(tmp_path / "generations")
    sheet = str(tmp_path / "sample.csv")
    proc = _cli("export", "--predictions", stage, "--output", sheet, "--n", "4")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    # one text from each stratum: label x whether the slot check agrees
    assert summary["strata"] == {"accurate/agree": 1, "accurate/disagree": 1,
                                 "omission/agree": 1, "omission/disagree": 1}  # fmt: skip
    header = next(csv.reader(open(sheet)))
    assert tuple(header) == human_eval.COLUMNS  # no system verdict in what annotators see
    assert "area[riverside]" in open(sheet).read()
    _annotate(sheet, tmp_path / "a1.csv", 0)
    _annotate(sheet, tmp_path / "a2.csv", 1)
    proc = _cli(
        "import",
        "--annotations",
        str(tmp_path / "a1.csv"),
        str(tmp_path / "a2.csv"),
        "--key",
        f"{sheet}.key.json",
        "--output",
        str(tmp_path / "scores.json"),
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "scores.json").read_text())
    # gold (majority, a tie is a flaw): clean, flawed, flawed, flawed
    assert result["items"] == 4 and result["flawed_share"] == 0.75
    assert result["classifier"]["flaw"] == {"precision": 1.0, "recall": pytest.approx(2 / 3),
                                            "support": 3}  # fmt: skip
    assert result["check"]["flaw"]["recall"] == pytest.approx(2 / 3)
    assert result["classifier"]["accurate"]["precision"] == 0.5  # r0 right, r1 wrong
    # flawed: [F,T,T,F] vs [F,T,T,T]: po 3/4, pe 1/2 -> 0.5; fluency: po 3/4, pe 5/16 -> 7/11
    assert result["kappa"]["flawed"] == pytest.approx(0.5)
    assert result["kappa"]["fluency"] == pytest.approx(7 / 11)
    assert result["kappa"]["value_error"] == pytest.approx(1.0)


def test_a_bad_annotation_is_one_clear_line(tmp_path):
    stage = _stage(tmp_path / "generations")
    sheet = str(tmp_path / "sample.csv")
    assert _cli("export", "--predictions", stage, "--output", sheet).returncode == 0
    rows = list(csv.reader(open(sheet)))
    rows[1][human_eval.COLUMNS.index("omission")] = "maybe"
    with open(tmp_path / "bad.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    proc = _cli("import", "--annotations", str(tmp_path / "bad.csv"), "--key", f"{sheet}.key.json")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"datatuner: error: {tmp_path / 'bad.csv'} line 2 column omission: 'maybe' is not 1/0 "
        "(or yes/no)"
    ]
