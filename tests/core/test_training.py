"""The Ray Train trainer: batching and schedule helpers, the knobs read from a config section, a
2-worker run, crash → exact resume, reuse of an identical job, and the saved model reloading with
plain `transformers`."""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

import pytest

from datatuner_core import checkpoints, lm, stage_reader, storage, trained_models, training
from datatuner_core import linearize as lin
from datatuner_core.config import ClassifierConfig, ConfigError, LMConfig, load_config
from datatuner_core.ingest import ingest
from datatuner_core.tokenizer import build_tokenizer
from datatuner_core.training_data import plan_batches
from datatuner_core.training_loop import lr_multiplier

# 2 layers × 64: a few steps take well under a second; Ray's worker start-up dominates.
TINY = (2, 64, 2)
HEALTH_CHECK = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
RUN = {"epochs": 2, "batch_size": 8, "warmup_steps": 2, "max_steps": 4, "checkpoint_every": 2}
CARD_FILE = trained_models.CARD_FILE


def run_config(**changes) -> LMConfig:
    """The `lm` section of these tests' runs: RUN on 2 workers, with `changes`."""
    return LMConfig(**{**RUN, "workers": 2, **changes})


def test_plan_batches_unbucketed_and_bucketed_cover_everything():
    lengths = [5, 1, 9, 3, 7, 2, 8, 4, 6]
    for bucketed in (True, False):
        plan = plan_batches(lengths, 2, "s", bucketed=bucketed, chunk=2)
        assert sorted(i for b in plan for i in b) == list(range(9))
        assert [len(b) for b in plan].count(1) == 1


def test_lr_schedule_warms_up_then_decays_to_zero():
    values = [lr_multiplier(s, 4, 20) for s in range(21)]
    assert values[:4] == [0.2, 0.4, 0.6, 0.8]
    assert values[4] == 1.0 and values[20] == 0.0
    assert all(a > b for a, b in zip(values[4:], values[5:], strict=False))


def test_the_trainer_reads_its_config_section_whole():
    """Every trainer knob is a key of the `lm` / `classifier` section, with one default; the job
    holds those that shape the model; an unknown key is an error that names it."""
    knobs = training.job_knobs(LMConfig(epochs=1, grad_accum=2, max_steps=7))
    assert [knobs[k] for k in ("epochs", "grad_accum", "max_steps", "lr")] == [1, 2, 7, 5.0e-4]
    assert not {"reuse", "workers", "checkpoint_every", "base", "max_length"} & set(knobs)
    assert training.job_knobs(ClassifierConfig()).keys() == knobs.keys()
    clf = ClassifierConfig()  # the classifier's trainer knobs, settable, as it always trained
    assert (clf.patience, clf.grad_accum, clf.max_grad_norm, clf.weight_decay) == (2, 1, 1.0, 0.0)
    config = load_config(None, ["classifier.patience=3", "classifier.grad_accum=2",
                                "classifier.max_grad_norm=0.5"])  # fmt: skip
    assert (config.classifier.patience, config.classifier.grad_accum) == (3, 2)
    assert config.classifier.max_grad_norm == 0.5
    for key in ("lm.fail_at_step=2", "classifier.bucketed=false", "lm.log_every=0"):
        with pytest.raises(ConfigError, match=f"{key.split('=')[0]}'.*unknown key"):
            load_config(None, [key])
    with pytest.raises(TypeError, match="config section"):
        training.train_with_ray(None, [], [], dict(RUN), "memory://unused")


def test_put_directory_to_memory(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("A")
    (tmp_path / "sub" / "b.txt").write_text("B")
    written = trained_models.put_directory(str(tmp_path), "memory://put-test/out")
    assert written == ["memory://put-test/out/a.txt", "memory://put-test/out/sub/b.txt"]
    loc = storage.locate("memory://put-test/out/sub/b.txt")
    assert loc.fs.cat_file(loc.path) == b"B"


# ----------------------------------------------------------------------------- Ray Train


@pytest.fixture(scope="module")
def ray_local():
    import os

    import ray

    # the Ray Train controller polls its workers every 2 s by default: finish and restart faster
    saved = os.environ.get(HEALTH_CHECK)
    os.environ[HEALTH_CHECK] = "0.2"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    if saved is None:
        os.environ.pop(HEALTH_CHECK)
    else:
        os.environ[HEALTH_CHECK] = saved


@pytest.fixture(scope="module")
def lm_task(shared_data, tmp_path_factory):
    """An LM task and (train, validation) rows from WebNLG Airport (1 triple)."""
    root = tmp_path_factory.mktemp("lm-data")
    webnlg = shared_data / "webnlg"
    inputs = {
        "train": str(webnlg / "train" / "1triples" / "Airport.xml"),
        "validation": str(webnlg / "dev" / "1triples" / "Airport.xml"),
    }
    ingest("webnlg", inputs, str(root / "records"))
    manifest = lin.linearize(str(root / "records"), str(root / "lin"))
    specials = manifest["extra"]["special_tokens"]
    rows = stage_reader.read_stage(str(root / "lin")).to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "validation"]
    corpus = [r["linearized"] for r in train] + [t for r in train for t in r["references"]]
    tok = build_tokenizer("scratch:tiny", corpus, specials, vocab_size=1000)
    task = lm.LMTask(tokenizer=tok, special_tokens=specials, max_length=96, shape=TINY)
    return task, train, val


@pytest.fixture(scope="module")
def fresh_run(ray_local, lm_task, tmp_path_factory):
    task, train, val = lm_task
    out = tmp_path_factory.mktemp("fresh") / "model"
    card = training.train_with_ray(task, train, val, run_config(), str(out))
    return card, out


class CrashingLMTask(lm.LMTask):
    """The LM task whose rank 0 dies in the step after the step-2 checkpoint, in a run that
    started without a checkpoint (a run that resumed, restarted by Ray or run again, goes on)."""

    def loss(self, model, batch: dict):
        import ray.train

        if not hasattr(self, "resumed"):  # the first step of this worker
            self.resumed, self.steps = ray.train.get_checkpoint() is not None, 0
        self.steps += 1
        if not self.resumed and self.steps == 3 and ray.train.get_context().get_world_rank() == 0:
            raise RuntimeError("injected failure after step 2")
        return super().loss(model, batch)


@pytest.fixture
def crashing_task(lm_task):
    """The fixture's LM task (same settings, same job), crashing once after step 2."""
    return CrashingLMTask(**{f.name: getattr(lm_task[0], f.name) for f in fields(lm_task[0])})


def test_two_worker_run_writes_model_and_card(fresh_run, lm_task):
    card, out = fresh_run
    _, train, val = lm_task
    assert card == json.loads((out / CARD_FILE).read_text())
    assert card["workers"] == 2 and card["device"] == "cpu"
    counts = card["parameters"]  # nothing frozen in the tiny LM: every parameter trains
    assert counts["parameters"] == counts["trainable_parameters"] > 0
    m = card["metrics"]
    assert m["steps"] == 4 and m["stopped"] == "max_steps" and len(m["train_loss"]) == 4
    assert m["train_tokens"] > 0 and m["tokens_per_s"] > 0
    assert [e["step"] for e in m["evaluations"]] == [4]  # validated when max_steps stopped it
    assert 1 < m["evaluations"][0]["val_ppl"] < 2 * len(lm_task[0].tokenizer)
    assert card["data"]["train"]["rows"] == len(train)
    assert card["data"]["encoding"]["examples"] == sum(len(r["references"]) for r in train)
    assert card["config"]["max_steps"] == 4 and card["task_config"]["base"] == "scratch:tiny"
    assert (out / "model.safetensors").exists() and not list(out.glob("*.bin"))


def test_saved_model_reloads_with_plain_transformers_and_generates(fresh_run, lm_task):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = fresh_run
    _, train, _ = lm_task
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    prompt = lm.encode_prompt(tok, train[0]["linearized"], "fine", 96)
    ids = torch.tensor([prompt["input_ids"]])
    with torch.no_grad():
        gen = model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False
        )
    new = gen[0, ids.shape[1] :].tolist()
    assert 1 <= len(new) <= 8
    assert isinstance(lm.decode_text(tok, new), str)
    assert tok.convert_ids_to_tokens(prompt["input_ids"][:2]) == ["<data>", "<subject>"]


def test_crash_then_resume_continues_with_identical_losses(
    fresh_run, lm_task, crashing_task, tmp_path
):
    """A worker dies right after the step-2 checkpoint; Ray restarts the group, which resumes
    from it (model, optimizer, scheduler, data position, RNG) and matches an unbroken run."""
    card, _ = fresh_run
    _, train, val = lm_task
    out = str(tmp_path / "model")
    crashed = training.train_with_ray(crashing_task, train, val, run_config(), out, max_failures=1)
    assert crashed["metrics"]["steps"] == 4
    assert crashed["metrics"]["train_loss"] == card["metrics"]["train_loss"]  # bit for bit
    assert crashed["metrics"]["evaluations"] == card["metrics"]["evaluations"]


def test_a_rerun_resumes_a_crashed_run_and_refuses_a_planted_pickle(
    fresh_run, lm_task, crashing_task, tmp_path
):
    """A run that crashed with no retries left its step-2 checkpoint (`state.pt`, tensors only,
    and `state.json`). A pickle planted as that `state.pt` stops the re-run with a clear error
    and is never unpickled; with the checkpoint put back, the re-run resumes it and matches an
    unbroken run."""
    import torch

    from .test_no_remote_code import Planted

    card, _ = fresh_run
    _, train, val = lm_task
    task, config, out = crashing_task, run_config(), str(tmp_path / "model")
    with pytest.raises(Exception, match="injected failure after step 2"):
        training.train_with_ray(task, train, val, config, out)
    (state,) = (tmp_path / "_checkpoints").rglob(checkpoints.STATE_FILE)
    assert state.parent.name == "step-0000002" and (state.parent / "state.json").exists()
    # a worker failing right after its report can stop the run before Ray's index of the run
    # names the checkpoint: without the index, the re-run finds the checkpoint on storage
    (state.parent.parent / "checkpoint_manager_snapshot.json").unlink(missing_ok=True)
    saved, marker = state.read_bytes(), tmp_path / "pickle-ran"
    torch.save({"model": Planted(str(marker))}, state)
    with pytest.raises(Exception, match="state.pt holds more than tensors"):
        training.train_with_ray(task, train, val, config, out)
    assert not marker.exists()
    state.write_bytes(saved)
    resumed = training.train_with_ray(task, train, val, config, out)
    assert resumed["metrics"]["train_loss"] == card["metrics"]["train_loss"]  # bit for bit
    assert resumed["metrics"]["evaluations"] == card["metrics"]["evaluations"]


def test_an_identical_job_is_reused_not_retrained(fresh_run, lm_task, tmp_path):
    """The same task, tokenizer, knobs, data and workers for another output beside the first:
    the trained model is copied (byte for byte, card marked), no training runs; the same output
    again returns its own model; another setting (max_length) is another task identity; a
    source whose card names another job is not taken, and `reuse: false` trains anew."""
    import dataclasses

    card, out = fresh_run
    task, train, val = lm_task
    index = out.parent / trained_models.JOBS_DIR / f"{card['job']}.json"
    assert json.loads(index.read_text()) == {"job": card["job"], "output": str(out)}
    twin = out.parent / "twin"
    reused = training.train_with_ray(task, train, val, run_config(), str(twin))
    assert reused["reused_from"] == str(out) and reused["output"] == str(twin)
    assert reused["job"] == card["job"] and reused["metrics"] == card["metrics"]
    assert json.loads((twin / CARD_FILE).read_text()) == reused
    names = sorted(p.name for p in out.iterdir())
    assert sorted(p.name for p in twin.iterdir()) == names and "model.safetensors" in names
    for name in names:
        if name != CARD_FILE:
            assert (twin / name).read_bytes() == (out / name).read_bytes(), name
    again = training.train_with_ray(task, train, val, run_config(), str(out))
    assert again["skipped"] and again["metrics"] == card["metrics"]
    # the job names what makes the model: a different max_length is another job
    other = dataclasses.replace(task, max_length=80)
    assert trained_models.task_identity(other) != trained_models.task_identity(task)
    assert trained_models.task_identity(task)["vocab_sha256"]
    # a source retrained since (its card names another job) is not taken
    moved = {**card, "job": "something-else"}
    (out / CARD_FILE).write_text(json.dumps(moved))
    try:
        assert trained_models.reuse_trained(card["job"], str(out.parent / "third")) is None
        fresh = training.train_with_ray(
            task, train, val, run_config(reuse=False), str(out.parent / "forced")
        )
    finally:
        (out / CARD_FILE).write_text(json.dumps(card))
    assert "reused_from" not in fresh and fresh["job"] == card["job"]
    assert fresh["metrics"]["train_loss"] == card["metrics"]["train_loss"]  # trained again
    assert not (out.parent / "third").exists()


def test_eval_every_validates_mid_epoch_and_exports_the_best(ray_local, lm_task, tmp_path):
    """`eval_every` gives a learning curve within one run: validations at steps 2 and 4 of one
    epoch (both partial: no early stopping counts them), the best of them exported."""
    task, train, val = lm_task
    config = run_config(epochs=1, max_steps=4, checkpoint_every=None, eval_every=2, workers=1)
    card = training.train_with_ray(task, train, val, config, str(tmp_path / "m"))
    m = card["metrics"]
    assert [(e["step"], e["partial"]) for e in m["evaluations"]] == [(2, True), (4, True)]
    ppl = {e["step"]: e["val_ppl"] for e in m["evaluations"]}
    assert ppl[2] != ppl[4]
    assert m["best"]["step"] == min(ppl, key=ppl.get)
    assert m["val_ppl_per_epoch"] == []  # no epoch ended: only partial validations


def test_validation_reports_each_split_beside_the_whole(ray_local, lm_task, tmp_path):
    """Validation rows of two splits (seen `validation`, held-out `validation_unseen`): every
    evaluation has the ppl over all of them (the monitored one) and each split's own, and the
    whole's NLL is the token-weighted mean of the parts'."""
    task, train, val = lm_task
    unseen = [{**r, "split": "validation_unseen"} for r in train[:6]]
    config = run_config(epochs=1, max_steps=2, checkpoint_every=None, eval_every=2, workers=1)
    card = training.train_with_ray(task, train[6:], val + unseen, config, str(tmp_path / "m"))
    (point,) = card["metrics"]["evaluations"]
    seen, held = point["val_nll@validation"], point["val_nll@validation_unseen"]
    assert seen != held
    assert min(seen, held) < point["val_nll"] < max(seen, held)
    assert point["val_ppl@validation_unseen"] == pytest.approx(math.exp(held))


def test_classifier_curve_benchmark_reports_each_validation(ray_local, tmp_path):
    """`benchmarks.tune_classifier curve`: the demo preset's data (capped) corrupted, a scratch
    classifier validated every 2 of 4 steps; the exported model is the best point's."""
    from benchmarks import tune_classifier
    from datatuner_core.classifier_metrics import metrics_from_confusion

    from ..conftest import SAMPLE

    sets = [f"dataset.paths.{k}={SAMPLE}/webnlg/{d}" for k, d in
            (("train", "train"), ("validation", "dev"), ("test", "test"))]  # fmt: skip
    sets += ["dataset.max_records.train=120", "dataset.max_records.validation=20",
             "corrupt.per_example=2", "classifier.batch_size=8", "classifier.workers=1",
             "classifier.warmup_steps=1"]  # fmt: skip
    out = tmp_path / "curve.json"
    argv = ["curve", "--preset", "configs/demo.yaml", "--storage", str(tmp_path / "store"),
            "--steps", "4", "--eval-every", "2", "--out", str(out),
            *sum((["--set", s] for s in sets), [])]  # fmt: skip
    assert tune_classifier.main(argv) == 0
    result = json.loads(out.read_text())
    points = result["points"]
    assert [p["step"] for p in points] == [2, 4] and result["steps"] == 4
    run = tmp_path / "store" / "runs" / "demo-curve"
    held = [r for r in stage_reader.read_stage(str(run / "corruptions")).to_pylist()
            if r["split"] == "validation"]  # fmt: skip
    records = stage_reader.read_stage(str(run / "records")).to_pylist()
    assert {r["split"] for r in records} == {"train", "validation"}  # the test split is not read
    assert set(points[0]["caught"]) == {r["rule"] for r in held}
    best = max(p["macro_f1"] for p in points)  # the exported model: a best point (ties: either)
    assert result["exported_step"] in [p["step"] for p in points if p["macro_f1"] == best]
    assert round(result["exported_macro_f1"], 4) == best
    card = json.loads((Path(result["model"]) / CARD_FILE).read_text())
    first = card["metrics"]["evaluations"][0]
    assert sum(map(sum, first["confusion"])) == len(held)
    assert round(metrics_from_confusion(first["confusion"])["macro_f1"], 4) == points[0]["macro_f1"]
    with pytest.raises(SystemExit):
        tune_classifier.main(["curve", "--preset", "configs/demo.yaml", "--storage",
                              str(tmp_path), "--steps", "2", "--eval-every", "3"])  # fmt: skip

    # tune_classifier freeze on the same run: the same batches for each setting, a frozen
    # layer fewer trainable parameters, a clear error for more layers than the model has
    out = tmp_path / "freeze.json"
    argv = ["freeze", "--run", str(run), "--base", "scratch:tiny", "--freeze", "0 1",
            "--steps", "2", "--rounds", "2", "--batch-size", "4", "--max-length", "64",
            "--out", str(out)]  # fmt: skip
    assert tune_classifier.main(argv) == 0
    result = json.loads(out.read_text())
    full, frozen = result["settings"]
    assert (full["freeze_layers"], frozen["freeze_layers"]) == (0, 1)
    assert len(full["round_seconds"]) == len(frozen["round_seconds"]) == 2
    assert full["speedup"] == 1.0 and frozen["speedup"] > 0 and result["tokens_per_round"] > 0
    assert full["parameters"] == frozen["parameters"] > frozen["trainable_parameters"]
    assert full["trainable_parameters"] == full["parameters"]
    with pytest.raises(ValueError, match="freeze_layers=9"):
        tune_classifier.main([*argv[:5], "--freeze", "9", *argv[7:]])
