"""The pipeline flow end to end on the sample, then re-run, verbalize and regenerate on it."""

from __future__ import annotations

import json

from datatuner_core import registry, stage_reader
from datatuner_core.corrupt import LABELS
from datatuner_core.rerank import fidelity_verdict, missing_entities

from .conftest import TINY


def test_pipeline_writes_generations_report_and_registers(trained_run):
    root, summary = trained_run
    assert summary["run_id"] == "run1"
    assert (summary["read"], summary["written"], summary["quarantined"]) == (370, 370, 0)
    generations = stage_reader.read_stage(summary["generations"]).to_pylist()
    ids = [g["id"] for g in generations]
    assert len(ids) == len(set(ids)) == 30  # every capped test record exactly once
    assert all(g["split"] == "test" for g in generations)
    for g in generations:
        assert len(g["candidates"]) == 3
        assert g["fidelity_label"] in LABELS and 0.0 <= g["fidelity_score"] <= 1.0
        labels = [c["fidelity_label"] for c in g["candidates"]]
        chosen = [c for c in g["candidates"] if c["text"] == g["text"]]
        assert chosen and chosen[0]["lm_score"] == g["lm_score"]
        if "accurate" in labels:  # reranking puts an accurate candidate first when there is one
            assert chosen[0]["fidelity_label"] == "accurate"
        # the row reports the verdict (generate.verdict, on by default): the classifier's label,
        # overruled by the coverage check, so a text missing a record entity is never accurate
        verdict = fidelity_verdict(chosen[0]["fidelity_label"], chosen[0]["fidelity_score"],
                                   g["text"], g["entities"], g["linearized"])  # fmt: skip
        assert (g["fidelity_label"], g["fidelity_score"]) == verdict
        if missing_entities(g["text"], g["entities"]):
            assert g["fidelity_label"] != "accurate"
    metrics = json.loads((root / "runs" / "run1" / "report" / "metrics.json").read_text())
    assert metrics["n"] == 30 and summary["metrics"]["bleu"] == metrics["bleu"]
    # a progress artifact followed each generate stage's blocks to its end
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        progress = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["generate-progress"]))
        )
    finals = [a for a in progress if a.description.endswith("30 / 30 records")]
    assert finals and all(a.type == "progress" and float(a.data) == 100.0 for a in finals)
    for name in ("report.md", "labels.png", "coverage.png"):
        assert (root / "runs" / "run1" / "report" / name).exists()
    for kind in registry.KINDS:
        assert registry.production(str(root), kind)["version"] == "run1"
    card = json.loads((root / "models" / "lm" / "run1" / "training_card.json").read_text())
    assert card["metrics"]["steps"] == 12
    # the validation sample (generate.dev_records=5) verbalized beside test, and the LM's curve
    sample = stage_reader.read_stage(str(root / "runs" / "run1" / "validation_sample")).to_pylist()
    assert len(sample) == 5 and {r["split"] for r in sample} == {"validation"}
    dev_uri = str(root / "runs" / "run1" / "generations_validation")
    dev = stage_reader.read_stage(dev_uri).to_pylist()
    assert sorted(r["id"] for r in dev) == sorted(r["id"] for r in sample)
    assert metrics["validation"]["validation"]["n"] == 5
    assert summary["metrics"]["bleu_validation"] == metrics["validation"]["validation"]["bleu"]
    assert [p["step"] for p in metrics["lm_curve"]] == [6, 12]
    report = (root / "runs" / "run1" / "report" / "report.md").read_text()
    assert "## Test beside the validation splits" in report and "| test (reported) | 30 |" in report
    assert "## LM validation curve" in report
    # classifier.hard_negatives=4: the LM's beams on 4 train records, labelled, joined its pairs
    merged = stage_reader.read_manifest(str(root / "runs" / "run1" / "pairs_with_lm_beams"))
    hard = merged["extra"]["hard_negatives"]
    assert merged["counts"]["read"] == 4 == hard["records"] + merged["counts"]["quarantined"]
    assert hard["pairs"] == sum(hard["by_label"].values()) >= hard["records"]
    pairs = stage_reader.read_stage(str(root / "runs" / "run1" / "pairs_with_lm_beams")).to_pylist()
    lm_pairs = [p for p in pairs if p["rule"] == "lm_beam"]
    assert len(lm_pairs) == hard["pairs"] and {p["split"] for p in lm_pairs} == {"train"}
    card = json.loads((root / "models" / "classifier" / "run1" / "training_card.json").read_text())
    assert card["data"]["train"]["content_sha256"] == merged["content_sha256"]


def test_generation_sorts_records_by_length_and_keeps_every_text(trained_run):
    from datatuner_core.generator import Generator

    root, summary = trained_run
    generations = stage_reader.read_stage(summary["generations"]).to_pylist()
    lengths = [len(g["linearized"]) for g in generations]
    assert lengths == sorted(lengths)  # generate.length_sort (default): the split fits a window
    assert json.loads((root / "runs" / "run1" / "generations" / "_manifest.json").read_text())[
        "config"
    ]["length_sort"]
    # the same candidates as the LM gives the records in input order, batched with others
    linearized = stage_reader.read_stage(str(root / "runs" / "run1" / "linearized")).to_pylist()
    tests = [r for r in linearized if r["split"] == "test"]
    assert [len(r["linearized"]) for r in tests] != lengths
    plain = Generator(
        str(root / "models" / "lm" / "run1"),
        None,
        rerank=False,
        threads=2,
        beams=3,
        max_new_tokens=16,
        batch_size=16,
    )  # TINY's generate.* keys
    expected = {r["id"]: [c["text"] for c in r["candidates"]] for r in plain.generate_rows(tests)}
    assert {g["id"]: [c["text"] for c in g["candidates"]] for g in generations} == expected


SMALL_JOB = """
import json, sys, time
import ray
from datatuner_core import stage_reader
from datatuner_core.config import GenerateConfig
from datatuner_core.generate import generate_stage
root, out = sys.argv[1], sys.argv[2]
args = dict(lm_uri=f"{root}/models/lm/run1", classifier_uri=f"{root}/models/classifier/run1",
            split="test", max_records=12)
found = {}
for name, limit, window in (("local", 64, None), ("ray", 0, None), ("window_local", 64, 5),
                            ("window_ray", 0, 5)):
    started = time.time()
    section = GenerateConfig(beams=3, max_new_tokens=16, batch_size=4, in_process_max=limit,
                             sort_window=window)
    manifest = generate_stage(f"{root}/runs/run1/linearized", f"{out}/{name}", section, **args)
    rows = stage_reader.read_stage(f"{out}/{name}").to_pylist()
    found[name] = {"engine": manifest["extra"]["engine"], "ray": ray.is_initialized(),
                   "ids": [r["id"] for r in rows], "window": manifest["config"]["sort_window"],
                   "lengths": [len(r["linearized"]) for r in rows],
                   "seconds": time.time() - started, "written": manifest["counts"]["written"],
                   "texts": {r["id"]: [c["text"] for c in r["candidates"]] for r in rows},
                   "chosen": {r["id"]: r["text"] for r in rows}}
print(json.dumps(found))
"""


def test_a_small_generation_runs_in_process_without_ray(trained_run, tmp_path):
    """At most `generate.in_process_max` records: one Generator in the calling process, no Ray
    start, and the same candidates and choices as the Ray Data actors give."""
    import subprocess
    import sys

    root, _ = trained_run
    proc = subprocess.run([sys.executable, "-c", SMALL_JOB, str(root), str(tmp_path)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    local, on_ray = found["local"], found["ray"]
    assert (local["engine"], local["ray"]) == ("in_process", False)  # Ray never started
    assert (on_ray["engine"], on_ray["ray"]) == ("ray_data", True)
    assert local["written"] == on_ray["written"] == 12
    assert local["texts"] == on_ray["texts"] and local["chosen"] == on_ray["chosen"]
    # generate.sort_window=5: the length sort in windows of 5 records, streaming on Ray Data;
    # every record once, with the same texts as the whole-split sort
    for name in ("window_local", "window_ray"):
        windowed = found[name]
        assert windowed["window"] == 5 and found["local"]["window"] is None
        assert sorted(windowed["ids"]) == sorted(set(windowed["ids"])) == sorted(local["ids"])
        assert windowed["texts"] == local["texts"] and windowed["chosen"] == local["chosen"]
    # in process, the windows are the split's consecutive 5 records, each sorted by length
    lengths = found["window_local"]["lengths"]
    windows = [lengths[i : i + 5] for i in range(0, 12, 5)]
    assert all(w == sorted(w) for w in windows) and lengths != sorted(lengths)


def test_rerun_of_a_finished_run_skips_every_stage(trained_run):
    from flows.pipeline import pipeline

    root, first = trained_run
    models = [root / "models" / kind / "run1" for kind in ("lm", "classifier")]
    before = {m: ((m / "training_card.json").read_bytes(), (m / "model.safetensors").stat())
              for m in models}  # fmt: skip
    again = pipeline(None, [f"storage={root}", *TINY], "run1")
    assert again["metrics"] == first["metrics"]
    for m, (card, weights) in before.items():  # the same training jobs: nothing retrained
        assert (m / "training_card.json").read_bytes() == card
        assert (m / "model.safetensors").stat().st_mtime_ns == weights.st_mtime_ns
    for stage in ("records", "linearized", "corruptions", "generations"):
        manifest = stage_reader.read_manifest(str(root / "runs" / "run1" / stage))
        assert (
            manifest["counts"]["read"]
            == manifest["counts"]["written"] + manifest["counts"]["quarantined"]
        )
    rows = stage_reader.read_stage(first["generations"]).to_pylist()
    assert len({r["id"] for r in rows}) == 30


def test_verbalize_a_jsonl_input_with_the_production_models(trained_run, tmp_path):
    from flows.verbalize import verbalize

    root, _ = trained_run
    source = tmp_path / "facts.jsonl"
    lines = [
        {"id": "a", "triples": [["Aarhus_Airport", "cityServed", "Aarhus, Denmark"]]},
        {"id": "b", "triples": [["Alan_Bean", "birthPlace", "Wheeler, Texas"]]},
        {"id": "c", "triples": []},
    ]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = str(tmp_path / "verbalized")
    summary = verbalize(str(source), "jsonl", out, str(root), overrides=["generate.beams=2"])
    assert (summary["read"], summary["written"], summary["quarantined"]) == (3, 2, 1)
    rows = stage_reader.read_stage(out).to_pylist()
    assert sorted(r["id"] for r in rows) == ["a", "b"]
    assert all(len(r["candidates"]) == 2 and r["model_version"] == "run1+run1" for r in rows)


def test_regenerate_only_what_changed(trained_run, tmp_path):
    from flows.regenerate import regenerate

    root, _ = trained_run
    source = tmp_path / "kg.jsonl"

    def write(changed: set[int]):
        rows = [
            {
                "id": f"r{i}",
                "triples": [
                    [f"Entity_{i}", "country", "Denmark" if i not in changed else "Sweden"]
                ],
            }  # fmt: skip
            for i in range(100)
        ]
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))

    overrides = [
        f"storage={root}", "name=nightly-test", "dataset.format=jsonl",
        f"dataset.paths.train={source}", "generate.beams=2", "generate.max_new_tokens=8",
    ]  # fmt: skip
    write(set())
    first = regenerate(None, overrides, "night1")
    assert first["changes"]["new"] == 100 and first["changes"]["regenerate"] == 100
    write({3})  # 1 % of the records changed
    second = regenerate(None, overrides, "night2")
    assert second["changes"]["changed"] == 1 and second["changes"]["regenerate"] == 1
    assert second["changes"]["carried_over"] == 99 and second["records"] == 100
    snapshot = stage_reader.read_stage(second["output"]).to_pylist()
    assert sorted(r["id"] for r in snapshot) == sorted(f"r{i}" for i in range(100))
    changed = next(r for r in snapshot if r["id"] == "r3")
    assert "Sweden" in changed["linearized"]
    latest = json.loads((root / "snapshots" / "nightly-test" / "latest.json").read_text())
    assert latest["snapshot"] == "night2"


def test_quality_and_decoding_benchmarks_read_a_real_run(trained_run, tmp_path):
    """benchmarks.quality assembles FC / No_FC from a fine run (here the sample run, linked
    under a `-fine` name); `benchmarks.tune decoding` tunes on dev and refuses the test split."""
    import os

    import pytest

    from benchmarks import quality, quality_report, tune, tune_classifier

    root, summary = trained_run

    store = tmp_path / "store"
    for part in ("runs", "models/lm", "models/classifier"):
        (store / part).mkdir(parents=True)
        os.symlink(root / part / "run1", store / part / "sample-fine")
    # rescore: the run's beams re-chosen with a classifier; with the run's own classifier the
    # texts are the run's, and the report gains that FC row beside the original one
    clf_dir = root / "models" / "classifier" / "run1"
    quality.main(["rescore", "--storage", str(store), "--run", "sample-fine", "--label", "same",
                  "--classifier", str(clf_dir)])  # fmt: skip
    again = stage_reader.read_stage(str(store / "runs" / "sample-fine" / "rescored" / "same"
                                   / "generations")).to_pylist()  # fmt: skip
    first = {r["id"]: r for r in stage_reader.read_stage(summary["generations"]).to_pylist()}
    assert len(again) == 30 and {r["id"] for r in again} == set(first)
    for r in again:
        assert r["text"] == first[r["id"]]["text"]
        assert r["fidelity_label"] == first[r["id"]]["fidelity_label"]
        assert [c["fidelity_label"] for c in r["candidates"]] == [
            c["fidelity_label"] for c in first[r["id"]]["candidates"]
        ]
    # --coverage-only: fewest missing entities, then the best LM score; no classifier
    quality.main(["rescore", "--storage", str(store), "--run", "sample-fine", "--label", "cov",
                  "--coverage-only"])  # fmt: skip

    for r in stage_reader.read_stage(str(store / "runs" / "sample-fine" / "rescored" / "cov"
                                     / "generations")).to_pylist():  # fmt: skip
        best = min((missing_entities(c["text"], r["entities"]), -c["lm_score"])
                   for c in r["candidates"])  # fmt: skip
        assert (missing_entities(r["text"], r["entities"]), -r["lm_score"]) == best
        assert r["fidelity_label"] is None
    out = tmp_path / "out"
    twin = "benchmarks/results/gpu-h200-smol-fine-1ep.json"  # a gpu_quality.py result
    quality.main(["report", "--storage", str(store), "--out", str(out), "--gpu-twin", twin])
    data = json.loads((out / "quality.json").read_text())
    systems = {s["system"]: s for s in data["presets"]["sample"]["systems"]}
    assert set(systems) == {"FC", "No_FC", "FC (classifier same)", "coverage rerank"}
    metrics = summary["metrics"]
    assert systems["FC"]["bleu"] == metrics["bleu"] == systems["FC (classifier same)"]["bleu"]
    assert systems["FC (classifier same)"]["labels"] == systems["FC"]["labels"]
    assert "| sample-fine rescored same (same beams) |" in (out / "quality.md").read_text()
    assert systems["No_FC"]["bleu"] == metrics["bleu_top_beam"]
    assert systems["FC"]["coverage_error"] == metrics["coverage_error"]
    assert sum(systems["FC"]["labels"].values()) == 30
    fine = data["presets"]["sample"]["fine"]
    assert fine["lm_steps"] == 12 and 0.0 <= fine["classifier_macro_f1"] <= 1.0
    # the classifier's held-out share caught per corruption rule, from its eval.json
    assert fine["classifier_caught"] and 0.0 <= fine["classifier_caught"]["original"] <= 1.0
    assert "| sample-fine |" in (out / "quality.md").read_text().split("predicted as their rule")[1]
    assert fine["generate_wall_s"] > 0 and "| FC |" in (out / "quality.md").read_text()
    assert fine["classifier_reused_from"] is None  # trained by this run: its minutes shown
    assert quality_report.classifier_minutes(fine) == quality_report.minutes(
        fine["classifier_wall_s"]
    )
    coarse = {"classifier_reused_from": "/s/models/classifier/x-fine", "classifier_wall_s": 90}
    assert quality_report.classifier_minutes(coarse) == "0 (reused: x-fine's, 1.5 there)"
    # the coverage check on the human references: the floor the systems are measured against
    floor = data["presets"]["sample"]["reference_coverage"]
    assert 0 < floor["records"] <= metrics["n"] and 0.0 <= floor["error_rate"] < 0.5
    assert floor["entities"] > floor["records"]
    assert "| human reference (first of each record) |" in (out / "quality.md").read_text()
    twin_rows = [line for line in (out / "quality.md").read_text().splitlines()
                 if line.startswith("| gpu-h200-smol-fine-1ep.json |")]  # fmt: skip
    assert len(twin_rows) == 2 and "| No_FC (top beam) | 51.99 |" in twin_rows[0]
    assert data["gpu_twin"][0]["headline"]["bleu"] > 50
    # --keep: assembled again from a storage without the runs, every preset, figure and GPU
    # twin of the earlier report stays; merged with a storage that has them, the storage's runs
    # and rescores come first and the kept report's others stay (a preset, a rescore label)
    again = tmp_path / "again"
    quality.main(["report", "--storage", str(tmp_path / "gone"), "--out", str(again),
                  "--keep", str(out / "quality.json")])  # fmt: skip
    assert (again / "quality.md").read_text() == (out / "quality.md").read_text()
    assert json.loads((again / "quality.json").read_text())["presets"] == data["presets"]
    earlier = json.loads(json.dumps(data))
    earlier["presets"]["other"] = json.loads(json.dumps(data["presets"]["sample"]))
    old = next(r for r in earlier["presets"]["sample"]["rescored"] if r["label"] == "same")
    earlier["presets"]["sample"]["rescored"].append(old | {"label": "old"})
    earlier["presets"]["sample"]["fine"]["lm_steps"] = -1  # the storage's run must win
    old["rescore_seconds"] = -1.0  # and the storage's rescore of the same label
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    quality.main(["report", "--storage", str(store), "--out", str(again),
                  "--keep", str(tmp_path / "earlier.json")])  # fmt: skip
    merged = json.loads((again / "quality.json").read_text())["presets"]
    assert set(merged) == {"sample", "other"}
    assert [r["label"] for r in merged["sample"]["rescored"]] == ["cov", "old", "same"]
    assert "FC (classifier old)" in {s["system"] for s in merged["sample"]["systems"]}
    assert next(r for r in merged["sample"]["rescored"] if r["label"] == "same") == next(
        r for r in data["presets"]["sample"]["rescored"] if r["label"] == "same"
    )
    assert merged["other"]["fine"] == fine and merged["sample"]["fine"]["lm_steps"] == 12
    assert merged["sample"]["fine"] == fine and "## other (" in (again / "quality.md").read_text()
    with pytest.raises(SystemExit, match="--keep"):
        quality.main(["report", "--storage", str(store), "--keep", str(tmp_path / "no.json")])
    with pytest.raises(SystemExit, match="--modes"):
        quality.main(["run", "--preset", "configs/demo.yaml", "--storage", str(tmp_path),
                      "--modes", "fine,medium"])  # fmt: skip

    lm_dir, clf_dir = root / "models" / "lm" / "run1", root / "models" / "classifier" / "run1"
    common = ["--run", str(root / "runs" / "run1"), "--lm", str(lm_dir),
              "--classifier", str(clf_dir), "--records", "6", "--max-new-tokens", "8"]  # fmt: skip
    result = tmp_path / "decoding.json"
    tune.main(["decoding", *common, "--grid", "1,1.0,0 2,1.0,2,int8", "--weights", "0,1",
               "--out", str(result)])  # fmt: skip
    rows = json.loads(result.read_text())
    # per setting: label-first without and with coverage, then coverage + score for 2 weights
    assert rows["records"] == 6 and len(rows["results"]) == 8
    orders = ((False, True, 1.0), (True, True, 1.0), (True, False, 0.0), (True, False, 1.0))
    got = [(r["beams"], r["coverage"], r["label_first"], r["weight"]) for r in rows["results"]]
    assert got == [(b, *order) for b in (1, 2) for order in orders]
    with pytest.raises(SystemExit):
        tune.main(["decoding", *common, "--split", "test"])

    # tune length-sort: the two orders side by side give identical candidates
    result = tmp_path / "length-sort.json"
    tune.main(["length-sort", "--run", str(root / "runs" / "run1"), "--lm", str(lm_dir),
               "--beams", "2", "--records", "8", "--max-new-tokens", "8",
               "--out", str(result)])  # fmt: skip
    bench = json.loads(result.read_text())
    assert bench["records"] == 8 and bench["identical_candidates"] == 8
    assert len(bench["seconds_sorted"]) == len(bench["seconds_unsorted"]) == 1

    # tune new-token-cap: a cap no lower than the budget changes no text
    result = tmp_path / "cap.json"
    tune.main(["new-token-cap", "--run", str(root / "runs" / "run1"), "--lm", str(lm_dir),
               "--classifier", str(clf_dir), "--records", "6", "--beams", "2", "--settings",
               "8,none 8,100 16,0.01", "--slack", "0", "--out", str(result)])  # fmt: skip
    settings = json.loads(result.read_text())["settings"]
    assert [(s["max_new_tokens"], s["ratio"]) for s in settings] == [(8, None), (8, 100.0),
                                                                     (16, 0.01)]  # fmt: skip
    assert settings[1]["same_texts_as_first"] == 6 and settings[1]["bleu"] == settings[0]["bleu"]
    # a budget of 16 capped at 8 for every record (0.01 x a short prompt, rounded up to 8)
    # decodes exactly as a budget of 8
    assert settings[2]["same_texts_as_first"] == 6
    with pytest.raises(SystemExit, match="test split"):
        tune.main(["new-token-cap", "--run", str(root / "runs" / "run1"), "--lm", str(lm_dir),
                   "--split", "test"])  # fmt: skip

    # tune dtype: the preset's generate section per dtype; float32 twice gives the same texts,
    # bf16 is what this CPU resolves it to (float32 where it has no native bf16)
    from datatuner_core.generator import cpu_has_bf16

    result = tmp_path / "dtype.json"
    tune.main(["dtype", "--run", str(root / "runs" / "run1"), "--lm", str(lm_dir),
               "--classifier", str(clf_dir), "--records", "4", "--dtypes",
               "float32 bfloat16 float32", "--out", str(result)])  # fmt: skip
    runs = json.loads(result.read_text())["results"]
    assert [r["resolved"] for r in runs] == [
        "float32", "bfloat16" if cpu_has_bf16() else "float32", "float32"
    ]  # fmt: skip
    assert runs[2]["same_texts_as_first"] == 4 and runs[2]["bleu"] == runs[0]["bleu"]

    # tune actors: the real stage with 1, 2 and again 1 actor; every record written
    # each time, and 1 actor twice gives the same texts and candidates (the comparison's base)
    result = tmp_path / "actors.json"
    tune.main(["actors", "--run", str(root / "runs" / "run1"), "--lm", str(lm_dir),
               "--classifier", str(clf_dir), "--records", "6", "--beams", "2",
               "--max-new-tokens", "8", "--actors", "1 2 1", "--out", str(result)])  # fmt: skip
    settings = json.loads(result.read_text())["settings"]
    assert [(s["actors"], s["records"]) for s in settings] == [(1, 6), (2, 6), (1, 6)]
    assert settings[2]["same_texts_as_first"] == settings[2]["same_candidates_as_first"] == 6
    assert settings[2]["bleu"] == settings[0]["bleu"] and settings[0]["speedup_over_first"] == 1
    with pytest.raises(SystemExit, match="test split"):
        tune.main(["actors", "--run", str(root / "runs" / "run1"), "--lm", str(lm_dir),
                   "--split", "test"])  # fmt: skip

    # tune_classifier compare: one set of dev beams reranked by each classifier, and each
    # classifier on each held-out set; the same classifier twice chooses the same texts
    result = tmp_path / "classifiers.json"
    corruptions = root / "runs" / "run1" / "corruptions"
    tune_classifier.main(["compare", "--run", str(root / "runs" / "run1"), "--lm", str(lm_dir),
                          "--classifiers", f"{clf_dir} {clf_dir}", "--heldout", str(corruptions),
                          "--records", "6", "--beams", "2", "--max-new-tokens", "8",
                          "--out", str(result)])  # fmt: skip
    bench = json.loads(result.read_text())
    a, b = bench["rerank"]
    assert a["records"] == b["records"] == 6 and b["same_texts_as_first"] == 6
    assert sum(a["labels"].values()) == 6 and a["bleu"] == b["bleu"]
    held = [r for r in stage_reader.read_stage(str(corruptions)).to_pylist()
            if r["split"] == "validation"]  # fmt: skip
    x, y = bench["heldout"]
    assert x["pairs"] == y["pairs"] == len(held) > 0 and x["macro_f1"] == y["macro_f1"]
    assert set(x["caught"]) == {r["rule"] for r in held}
    with pytest.raises(SystemExit, match="test split"):
        tune_classifier.main(["compare", "--run", str(root / "runs" / "run1"), "--lm",
                              str(lm_dir), "--classifiers", str(clf_dir),
                              "--split", "test"])  # fmt: skip


def test_throughput_benchmark_runs_the_three_ways_on_the_same_records(trained_run, tmp_path):
    """benchmarks.throughput with the run's LM: the original's per-record decoder (no cache), the
    Generator in process and the Ray Data stage decode the same beam search, so the records
    they share get the same top text; every record is generated by (b) and (c)."""
    from benchmarks import throughput

    root, _ = trained_run
    out = tmp_path / "throughput.json"
    throughput.main(["--lm", str(root / "models" / "lm" / "run1"), "--records", "12",
                     "--baseline-records", "3", "--set", "generate.beams=3",
                     "--set", "generate.max_new_tokens=12", "--out", str(out)])  # fmt: skip
    found = json.loads(out.read_text())
    assert (found["records"], found["baseline_records"]) == (12, 3)
    assert found["ray_data_engine"] == "ray_data" and found["generate"]["beams"] == 3
    assert found["same_top_text_per_record_vs_in_process"] == 3
    assert found["same_top_text_ray_data_vs_in_process"] == 12
    assert all(v > 0 for v in found["records_per_s"].values())
