"""One trainer for every model of the pipeline (the LM and the fidelity classifier), run through
Ray Train: `TorchTrainer`, DDP (gloo on CPU, NCCL on GPU), one process per worker.

A model family plugs in as a `TrainTask` (build, encode rows, collate, loss, validation sums,
save). `train_with_ray(task, train_rows, val_rows, section, output_uri)` does the rest, with the
knobs of `section` (a `config.TrainerConfig`: the `lm` or `classifier` section, read whole):

- the job (task settings and vocabulary, knobs, data content, workers, code version): a job that
  already made a model is not run again (`trained_models.reuse_trained`);
- the loop on every worker (`training_loop`): bucketed batches, AdamW with warm-up and decay,
  validation, early stopping, checkpoints;
- checkpoints (`checkpoints`) in Ray's storage at `{parent of output}/_checkpoints/{name}`
  (local and s3:// outputs; a temp folder for memory://), run name `{task}-{job hash}`; a
  crashed run (`max_failures`) or a re-run of the same job resumes from the latest one (found
  on storage, `checkpoints.latest_checkpoint_dir`, not only through Ray's index of the run);
- output: the best checkpoint's model and `training_card.json` (written last, with the job) at
  `output_uri` (local, s3://, memory://; `trained_models.export_model`).
"""

from __future__ import annotations

import time

from . import fingerprints
from .checkpoints import best_checkpoint, default_run_dir, latest_checkpoint_dir, load_state
from .config import TrainerConfig
from .ray_setup import ensure_ray
from .trained_models import export_model, index_job, reuse_trained, task_description, task_identity
from .training_data import as_source, data_fingerprint
from .training_loop import run_worker

# trainer knobs that do not change the trained model: left out of the job
NOT_KNOBS = {"reuse", "workers", "checkpoint_every"}


class TrainTask:
    """What the trainer needs from a model family. Subclass (a dataclass is handy) and override.

    The task object is pickled to every worker: keep it small (tokenizer, names, sizes)."""

    name: str = "task"  # folder / card name
    monitor: str = "val_loss"  # key of eval_metrics() used for best model and early stopping (min)

    def build_model(self):
        """A fresh `torch.nn.Module` (a `transformers` model for `save`)."""
        raise NotImplementedError

    def encode(self, rows: list[dict]) -> list[dict]:
        """Rows → examples (plain lists, not tensors). May set `self.counts` (dict of ints)."""
        raise NotImplementedError

    def length(self, example: dict) -> int:
        """Size used for length bucketing."""
        return len(example["input_ids"])

    def collate(self, examples: list[dict]) -> dict:
        """Examples → a batch of CPU tensors."""
        raise NotImplementedError

    def loss(self, model, batch: dict):
        """The scalar training loss of a batch (model may be DDP-wrapped)."""
        raise NotImplementedError

    def count_tokens(self, batch: dict) -> int:
        """Non-pad tokens of a batch (throughput)."""
        return int(batch["attention_mask"].sum())

    def eval_sums(self, model, batch: dict) -> dict[str, float]:
        """Additive validation statistics of a batch (summed over batches and ranks)."""
        raise NotImplementedError

    def eval_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Summed statistics → metrics; must contain `monitor`."""
        raise NotImplementedError

    def save(self, model, directory: str) -> None:
        """Write the model (and its tokenizer) to a local directory."""
        raise NotImplementedError


def job_knobs(section: TrainerConfig) -> dict:
    """The trainer knobs of a section that shape the trained model (part of the job)."""
    return section.model_dump(include=set(TrainerConfig.model_fields) - NOT_KNOBS)


def train_with_ray(
    task: TrainTask,
    train_rows,
    val_rows,
    section: TrainerConfig,
    output_uri: str,
    *,
    max_failures: int = 0,
    storage_options: dict | None = None,
    card_extra: dict | None = None,
) -> dict:
    """Train `task` on Ray Train and write the best model + `training_card.json` to `output_uri`.

    `train_rows` / `val_rows`: a list of row dicts or a `training_data.StageRows`. `section`:
    the `lm` / `classifier` config section, read whole (`workers`: the Ray Train workers).
    Re-running with the same output, section and data resumes from the latest checkpoint.
    Reuse (`section.reuse`): the job — the task's settings and tokenizer, the trainer knobs, the
    data's content, the worker count, the code version — is looked up first. A model at
    `output_uri` made by the same job is returned as it is; one made by the same job for another
    output beside it (`{parent}/_jobs/{job}.json`) is copied here, its card marked
    `reused_from`. Otherwise the model is trained and indexed under its job, on GPUs when the
    cluster has one per worker. `max_failures`: times Ray restarts a failed worker group, from
    the latest checkpoint. Returns the training card."""
    import sys

    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if not isinstance(section, TrainerConfig):
        raise TypeError(f"the trainer reads a config section (LMConfig, ClassifierConfig), got "
                        f"{type(section).__name__}")  # fmt: skip
    started = time.time()
    num_workers = section.workers
    data = {"train": data_fingerprint(train_rows), "validation": data_fingerprint(val_rows)}
    job = fingerprints.fingerprint(task.name, job_knobs(section), data, num_workers,
                                   task_identity(task), fingerprints.code_version())  # fmt: skip
    if section.reuse and (card := reuse_trained(job, output_uri, storage_options)) is not None:
        return card
    ensure_ray()
    use_gpu = ray.cluster_resources().get("GPU", 0) >= num_workers
    run_name, run_dir = f"{task.name}-{job[:12]}", default_run_dir(output_uri)
    resources = {"CPU": section.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    # the newest checkpoint on storage, whether or not Ray's own index of the run names it
    found = latest_checkpoint_dir(f"{run_dir}/{run_name}", storage_options)
    if found is not None:
        print(f"[{task.name}] resuming from {found}", file=sys.stderr, flush=True)
    trainer = TorchTrainer(
        run_worker,
        train_loop_config={
            "task": task,
            "config": section,
            "train": as_source(train_rows),
            "val": as_source(val_rows),
            "resume": found,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=run_dir,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=1,  # the best by the monitor; Ray always keeps the latest too
                checkpoint_score_attribute=task.monitor,
                checkpoint_score_order="min",
            ),
        ),
    )
    result = trainer.fit()
    latest = load_state(result.checkpoint)
    best_one = best_checkpoint(result, task.monitor) or result.checkpoint
    best = latest if best_one == result.checkpoint else load_state(best_one)
    card = _training_card(task, section, data, latest, best, num_workers, use_gpu, started)
    card.update(
        {"output": output_uri, "run": f"{run_dir}/{run_name}", "job": job, **(card_extra or {})}
    )
    export_model(task, best["model"], card, output_uri, storage_options)  # adds parameter counts
    index_job(job, output_uri, storage_options)
    return card


def _training_card(task, section, data, latest, best, num_workers, use_gpu, started) -> dict:
    p = latest["progress"]
    per_epoch = [e for e in p["evaluations"] if not e["partial"]]
    monitor = task.monitor
    return {
        "task": task.name,
        "config": section.model_dump(),
        "task_config": task_description(task),
        "data": {**data, "encoding": latest.get("counts", {})},
        "workers": num_workers,
        "device": "gpu" if use_gpu else "cpu",
        "metrics": {
            f"{monitor}_per_epoch": [e.get(monitor) for e in per_epoch],
            "evaluations": p["evaluations"],
            "best": {"step": best["progress"]["step"], monitor: best["progress"]["best"]},
            "steps": p["step"],
            "epochs_completed": p["epoch"],
            "stopped": p["stopped"],
            "train_tokens": p["tokens"],
            "train_seconds": round(p["train_seconds"], 3),
            "tokens_per_s": round(p["tokens"] / p["train_seconds"], 1)
            if p["train_seconds"]
            else None,
            "train_loss": p["losses"],
            "wall_seconds": round(time.time() - started, 3),
        },
    }
