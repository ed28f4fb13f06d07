"""One trainer for every model of the pipeline (the LM now, the fidelity classifier next), run
through Ray Train: `TorchTrainer`, DDP (gloo on CPU, NCCL on GPU), one process per worker.

A model family plugs in as a `TrainTask` (build, encode rows, collate, loss, validation sums,
save). `train_with_ray(task, train_rows, val_rows, config, output_uri)` does the rest:

- data: every worker encodes all rows and keeps examples `[rank::world]`; micro-batches are
  length-bucketed (sorted inside random chunks of `bucket_chunk` batches, batches shuffled),
  with the same number of micro-batches on every rank (the smallest count);
- optimisation: AdamW (no decay on biases / norms), linear warm-up then linear decay to 0 over
  `epochs × steps_per_epoch` or `max_steps` when that comes first, gradient
  accumulation, clipping, bf16 autocast on GPU;
- validation at every epoch end (and when `max_steps` stops mid-epoch): the task's sums are
  added over ranks, then turned into metrics (`val_ppl` for the LM); early stopping after
  `patience` epochs without improvement of `task.monitor` (lower is better);
- checkpoints (rank 0 writes; Ray keeps the best by `task.monitor` plus the latest): `state.pt`
  (tensors only: model, optimizer, scheduler, every rank's torch RNG state; read back with
  `weights_only=True`, so nothing in a checkpoint folder can run code) and `state.json`
  (position: epoch, step, step in epoch; history; every rank's python and numpy RNG state; the
  resolved config). A crashed run (`FailureConfig(max_failures)`) or a re-run of the same job
  resumes from the latest checkpoint and continues exactly as an uninterrupted run would;
- output: the best checkpoint's model via `task.save` (`save_pretrained`, safetensors, plus
  tokenizer) and `training_card.json` (written last, with the job) at `output_uri` (local,
  s3://, memory://);
- the job (task settings and vocabulary, knobs, data content, workers, code version): a job that
  already made a model is not run again (`reuse_trained`: the output's own model, or a sibling's
  found through `{parent of output}/_jobs/{job}.json`, copied).

Checkpoints live in Ray's storage at `run_dir` (default: `{parent of output}/_checkpoints/{name}`
for local and s3:// outputs, a temp folder for memory://), run name `{task}-{job hash}`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import fingerprints, stage_reader, storage

STATE_FILE = "state.pt"  # tensors and plain containers: loaded with weights_only=True
PLAIN_STATE_FILE = "state.json"  # the rest of a checkpoint (progress, config, RNG streams)
TENSOR_STATE = ("model", "optimizer", "scheduler")  # checkpoint keys kept in STATE_FILE
RNG_TENSORS = ("torch", "cuda")  # per-rank RNG states kept in STATE_FILE
CARD_FILE = "training_card.json"
JOBS_DIR = "_jobs"  # beside the models: {job fingerprint}.json → the output it trained
NOT_KNOBS = {"log_every", "reuse"}  # TrainConfig fields that do not change the trained model
PROGRESS_EVERY_S = 30.0  # a progress line at least this often (rank 0), besides every log_every
UNVALIDATED = 1e30  # monitor value of mid-epoch checkpoints (never the best)


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


@dataclass
class TrainConfig:
    """Trainer knobs (read from an `LMConfig` / `ClassifierConfig`; missing ones take defaults)."""

    epochs: int = 3
    batch_size: int = 32  # examples per worker per micro-batch
    lr: float = 5e-4
    warmup_steps: int = 100  # optimizer steps of linear warm-up
    weight_decay: float = 0.0
    grad_accum: int = 1  # micro-batches per optimizer step
    max_grad_norm: float = 1.0
    patience: int = 2  # epochs without improvement before stopping
    max_steps: int | None = None  # stop after this many optimizer steps
    seed: int = 42
    eval_batch_size: int | None = None  # default: 2 × batch_size
    checkpoint_every: int | None = None  # optimizer steps between mid-epoch checkpoints
    eval_every: int | None = None  # optimizer steps between mid-epoch validations (+ checkpoint)
    bucket_chunk: int = 50  # batches per length-sorting chunk
    bucketed: bool = True  # False: plain random batches (the benchmark baseline)
    cpus_per_worker: int = 1
    fail_at_step: int | None = None  # tests: crash once right after the checkpoint at this step
    log_every: int = 50  # optimizer steps between progress lines (rank 0, stdout)
    reuse: bool = True  # take the model of an identical job made before (`reuse_trained`)

    @classmethod
    def resolve(cls, config=None, **overrides) -> TrainConfig:
        """From a pydantic model, a dict or a TrainConfig, plus keyword overrides."""
        if config is None:
            values = {}
        elif isinstance(config, dict):
            values = dict(config)
        elif dataclasses.is_dataclass(config):
            values = dataclasses.asdict(config)
        else:
            values = config.model_dump()
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**values, **overrides}.items() if k in names})


@dataclass
class StageRows:
    """Rows of a stage folder (optionally one split, or several: a tuple), read by each worker
    itself."""

    uri: str
    split: str | tuple[str, ...] | None = None
    storage_options: dict | None = None

    def load(self) -> list[dict]:
        rows = []
        for batch in stage_reader.iter_stage_batches(self.uri, self.storage_options):
            rows.extend(r for r in batch.to_pylist() if self.wants(r.get("split")))
        return rows

    def wants(self, split: str | None) -> bool:
        """Whether a row of `split` is one of these rows."""
        if self.split is None:
            return True
        return split in self.split if isinstance(self.split, tuple) else split == self.split

    def fingerprint(self) -> dict:
        """The rows' identity: the stage's content hash and the split (two stages with the
        same rows are the same training data wherever they live); a stage written before
        manifests carried a content hash: its location and lineage fingerprint."""
        manifest = stage_reader.read_manifest(self.uri, self.storage_options)
        if manifest.get("content_sha256"):
            return {"split": self.split, "content_sha256": manifest["content_sha256"]}
        return {"uri": self.uri, "split": self.split, "fingerprint": manifest["fingerprint"]}


# ----------------------------------------------------------------------------- batching


def plan_batches(
    lengths: list[int], batch_size: int, seed: str | int, *, bucketed: bool = True, chunk: int = 50
) -> list[list[int]]:
    """Indices of every example once, in batches. Bucketed: shuffle, cut into chunks of
    `chunk × batch_size`, sort each chunk by length, batch, shuffle the batches."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not bucketed:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    span = chunk * batch_size
    batches = []
    for start in range(0, len(order), span):
        part = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def lr_multiplier(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


# ----------------------------------------------------------------------------- the worker


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0
    step: int = 0  # optimizer steps done
    step_in_epoch: int = 0
    tokens: int = 0  # non-pad training tokens, all ranks
    train_seconds: float = 0.0  # time inside training steps
    losses: list[float] = field(default_factory=list)  # mean loss of every optimizer step
    evaluations: list[dict] = field(default_factory=list)
    best: float | None = None
    bad_epochs: int = 0
    stopped: str | None = None


def _set_threads(cpus_per_worker: int) -> None:
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS") or cpus_per_worker or 1)
    torch.set_num_threads(max(1, threads))


def _seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    """This process's RNG streams: python and numpy as JSON-able lists, torch (and CUDA) as
    tensors."""
    import numpy as np
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _all_reduce(values: list[float], op: str = "sum") -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return tensor.tolist()


def _gather(obj) -> list:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _optimizer(model, cfg: TrainConfig):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)


class _Worker:
    """The training loop of one Ray Train worker, top to bottom in `run()`."""

    def __init__(self, args: dict):
        import ray.train
        import ray.train.torch
        import torch

        self.task: TrainTask = args["task"]
        self.cfg = TrainConfig(**args["config"])
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        _set_threads(self.cfg.cpus_per_worker)
        self.device = ray.train.torch.get_device()
        self.on_gpu = self.device.type == "cuda"
        self.train = _load_rows(args["train"])
        self.train = self.task.encode(self.train)[self.rank :: self.world]
        self.counts = dict(getattr(self.task, "counts", {}) or {})
        # validation examples by split (`validation`, `validation_unseen`): the monitored metric
        # is over all of them, and each split's own is reported beside it (`val_ppl@split`)
        self.val_groups: dict[str, list[dict]] = {}
        val_rows = _load_rows(args["val"])
        for split in dict.fromkeys(str(r.get("split") or "") for r in val_rows):
            rows = [r for r in val_rows if str(r.get("split") or "") == split]
            self.val_groups[split] = self.task.encode(rows)[self.rank :: self.world]
        self.val = [e for group in self.val_groups.values() for e in group]
        self.lengths = [self.task.length(e) for e in self.train]
        self.ctx_autocast = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
            if self.on_gpu
            else contextlib.nullcontext
        )

    def run(self) -> None:
        import ray.train
        import torch

        cfg = self.cfg
        _seed_all(cfg.seed)  # identical initial weights on every rank
        self.model = self.task.build_model().to(self.device)
        self.ddp = self.model
        if self.world > 1:
            ids = [self.device.index] if self.on_gpu else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = _optimizer(self.model, cfg)
        n_micro = int(_all_reduce([len(self._plan(0))], "min")[0])
        self.steps_per_epoch = n_micro // cfg.grad_accum
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"too few training examples for batch_size={cfg.batch_size} × grad_accum="
                f"{cfg.grad_accum} on {self.world} workers ({len(self.train)} on rank {self.rank})"
            )
        total = cfg.epochs * self.steps_per_epoch
        # schedule horizon: the linear decay reaches zero where training stops (max_steps when it
        # comes first: a time-boxed CPU run still ends with a decayed learning rate)
        horizon = min(total, cfg.max_steps) if cfg.max_steps else total
        self.horizon, self.last_line = horizon, time.monotonic()
        warmup = min(cfg.warmup_steps, horizon)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_multiplier(s, warmup, horizon)
        )
        self.p = Progress()
        self.resumed_at = self._restore(ray.train.get_checkpoint())
        if self.resumed_at is None:
            _seed_all(cfg.seed * 1000 + self.rank)  # per-rank dropout streams
        max_steps = cfg.max_steps or total
        if self.p.stopped == "max_steps" and self.p.step < max_steps:
            self.p.stopped = None  # a run stopped by max_steps continues with a larger one
        while self.p.stopped is None:
            self._train_step(self._plan(self.p.epoch)[:n_micro])
            if self.p.step_in_epoch == self.steps_per_epoch:
                self.p.epoch, self.p.step_in_epoch = self.p.epoch + 1, 0
                if self.p.epoch >= cfg.epochs:
                    self.p.stopped = "epochs"
                elif self.p.step >= max_steps:
                    self.p.stopped = "max_steps"
                self._validate_and_checkpoint(partial=False)
            elif self.p.step >= max_steps:
                self.p.stopped = "max_steps"
                self._validate_and_checkpoint(partial=True)
            elif cfg.eval_every and self.p.step % cfg.eval_every == 0:
                self._validate_and_checkpoint(partial=True)  # a learning curve within one run
            elif cfg.checkpoint_every and self.p.step % cfg.checkpoint_every == 0:
                self._checkpoint({self.task.monitor: UNVALIDATED})

    def _plan(self, epoch: int) -> list[list[int]]:
        """This rank's micro-batches of `epoch` (a function of seed, epoch and rank only)."""
        cached = getattr(self, "_plan_cache", None)
        if cached is None or cached[0] != epoch:
            cfg, seed = self.cfg, f"{self.cfg.seed}:{epoch}:{self.rank}"
            plan = plan_batches(
                self.lengths, cfg.batch_size, seed, bucketed=cfg.bucketed, chunk=cfg.bucket_chunk
            )
            self._plan_cache = cached = (epoch, plan)
        return cached[1]

    def _train_step(self, plan: list[list[int]]) -> None:
        """One optimizer step over `grad_accum` micro-batches."""
        import torch

        cfg, started = self.cfg, time.perf_counter()
        self.ddp.train()
        first = self.p.step_in_epoch * cfg.grad_accum
        micro = plan[first : first + cfg.grad_accum]
        loss_sum, tokens = 0.0, 0
        for i, indices in enumerate(micro):
            batch = self._to_device(self.task.collate([self.train[j] for j in indices]))
            last = i == len(micro) - 1
            sync = (
                contextlib.nullcontext() if last or self.ddp is self.model else self.ddp.no_sync()
            )
            with sync:
                with self.ctx_autocast():
                    loss = self.task.loss(self.ddp, batch) / len(micro)
                loss.backward()
            loss_sum += float(loss.detach())
            tokens += self.task.count_tokens(batch)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_total, tokens_total = _all_reduce([loss_sum, tokens])
        self.p.train_seconds += time.perf_counter() - started
        self.p.step += 1
        self.p.step_in_epoch += 1
        self.p.tokens += int(tokens_total)
        self.p.losses.append(loss_total / self.world)
        due = self.p.step % cfg.log_every == 0 if cfg.log_every else False
        late = cfg.log_every and time.monotonic() - self.last_line >= PROGRESS_EVERY_S
        if self.rank == 0 and (due or late):
            self.last_line = time.monotonic()
            rate = self.p.tokens / max(self.p.train_seconds, 1e-9)
            per_step = self.p.train_seconds / max(self.p.step, 1)
            left = int(max(self.horizon - self.p.step, 0) * per_step)
            print(
                f"[{self.task.name}] step {self.p.step} / {self.horizon} (epoch {self.p.epoch}, "
                f"{self.p.step_in_epoch}/{self.steps_per_epoch}) loss {self.p.losses[-1]:.4f} "
                f"lr {self.scheduler.get_last_lr()[0]:.2e} {rate:,.0f} tokens/s, "
                f"ETA {left // 60}:{left % 60:02d}",
                flush=True,
            )
        if self.p.step == cfg.fail_at_step and (self.resumed_at or 0) < cfg.fail_at_step:
            self._checkpoint({self.task.monitor: UNVALIDATED})
            if self.rank != 0:
                # only rank 0 crashes, once its checkpoint is reported: another rank raising first
                # could end the group before that checkpoint is registered (seen on a loaded host)
                _all_reduce([0.0])  # waits for rank 0, whose death fails the group
                return
            raise RuntimeError(f"injected failure after step {self.p.step} (fail_at_step)")

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _validate(self) -> dict:
        """The task's metrics over every validation example, and per split when there are
        several (`val_ppl@validation_unseen`: the curve on categories never trained on)."""
        import torch

        self.model.eval()
        size = self.cfg.eval_batch_size or 2 * self.cfg.batch_size
        sums: dict[str, float] = {}
        with torch.no_grad(), self.ctx_autocast():
            for split, examples in self.val_groups.items():
                plan = plan_batches([self.task.length(e) for e in examples], size, 0, chunk=10**9)
                for indices in plan:
                    batch = self._to_device(self.task.collate([examples[j] for j in indices]))
                    for key, value in self.task.eval_sums(self.model, batch).items():
                        sums[key] = sums.get(key, 0.0) + value
                        sums[f"{key}@{split}"] = sums.get(f"{key}@{split}", 0.0) + value
        keys = sorted(set().union(*_gather(sorted(sums))))
        totals = dict(zip(keys, _all_reduce([sums.get(k, 0.0) for k in keys]), strict=True))
        overall = {k: v for k, v in totals.items() if "@" not in k}
        if not overall:
            return {}
        metrics = self.task.eval_metrics(overall)
        splits = sorted({k.split("@", 1)[1] for k in totals if "@" in k})
        if len(splits) > 1:
            for split in splits:
                part = {k.split("@", 1)[0]: v for k, v in totals.items() if k.endswith(f"@{split}")}
                for key, value in self.task.eval_metrics(part).items():
                    metrics[f"{key}@{split}"] = value
        return metrics

    def _validate_and_checkpoint(self, partial: bool) -> None:
        metrics = self._validate()
        value = metrics.get(self.task.monitor)
        record = {"epoch": self.p.epoch, "step": self.p.step, "partial": partial, **metrics}
        self.p.evaluations.append(record)
        if self.rank == 0:
            print(f"[{self.task.name}] evaluation {json.dumps(record)}", flush=True)
        if value is None:
            pass  # no validation data: neither best model nor early stopping
        elif self.p.best is None or value < self.p.best:
            self.p.best, self.p.bad_epochs = value, 0
        elif not partial:
            self.p.bad_epochs += 1
            if self.p.bad_epochs >= self.cfg.patience and self.p.stopped is None:
                self.p.stopped = "early_stopping"
        self._checkpoint({self.task.monitor: UNVALIDATED if value is None else value, **metrics})

    def _checkpoint(self, metrics: dict) -> None:
        """All ranks report; rank 0 writes the checkpoint (model, optimizer, scheduler, progress,
        every rank's RNG state, config: `_save_state`)."""
        import ray.train

        rng = _gather(_rng_state())
        report = {**metrics, "step": self.p.step, "epoch": self.p.epoch}
        if self.rank != 0:
            ray.train.report(report, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="datatuner-ckpt-") as tmp:
            payload = {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "progress": dataclasses.asdict(self.p),
                "rng": rng,
                "config": dataclasses.asdict(self.cfg),
                "counts": self.counts,
                "world_size": self.world,
            }
            _save_state(payload, tmp)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(
                report, checkpoint=checkpoint, checkpoint_dir_name=f"step-{self.p.step:07d}"
            )

    def _restore(self, checkpoint) -> int | None:
        """Load the latest checkpoint, if any; returns the step it was taken at."""
        if checkpoint is None:
            return None
        payload = _load_state(checkpoint)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.p = Progress(**payload["progress"])
        rng = payload["rng"]
        if len(rng) == self.world:
            _set_rng_state(rng[self.rank])
        else:  # a different world size: exact continuation is impossible; reseed per rank
            _seed_all(self.cfg.seed * 1000 + self.rank + 7919 * self.p.step)
        return self.p.step


def _save_state(payload: dict, directory: str) -> None:
    """Write a checkpoint payload as `state.pt` (tensors: `TENSOR_STATE` and the torch RNG
    states) and `state.json` (everything else), so that loading it never unpickles code."""
    import torch

    tensors = {key: payload[key] for key in TENSOR_STATE}
    tensors["rng"] = [{k: v for k, v in r.items() if k in RNG_TENSORS} for r in payload["rng"]]
    plain = {key: v for key, v in payload.items() if key not in TENSOR_STATE}
    plain["rng"] = [{k: v for k, v in r.items() if k not in RNG_TENSORS} for r in payload["rng"]]
    torch.save(tensors, Path(directory) / STATE_FILE)
    Path(directory, PLAIN_STATE_FILE).write_text(json.dumps(plain))


def _load_state(checkpoint) -> dict:
    """A checkpoint written by `_save_state`, as one payload; `state.pt` is read with
    `weights_only=True`. Anything else (a checkpoint of the older one-pickle format, a planted
    pickle) is refused, never unpickled."""
    with checkpoint.as_directory() as directory:
        return read_state(directory, name=str(checkpoint.path))


def read_state(directory: str, name: str | None = None) -> dict:
    """The payload of the checkpoint folder `directory` (`name`: how errors call it)."""
    import pickle
    import re

    import torch

    name = name or str(directory)
    if not Path(directory, PLAIN_STATE_FILE).exists():
        raise ValueError(
            f"checkpoint {name} has no {PLAIN_STATE_FILE}: it is not in this trainer's format "
            f"(an older checkpoint holds one pickle, which is never loaded); delete the run "
            f"folder to train from scratch"
        )
    try:
        tensors = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        names = f" (it names {found.group(1)})" if found else ""
        raise ValueError(
            f"checkpoint {name}: {STATE_FILE} holds more than tensors and plain containers{names}, "
            f"so it is not loaded: unpickling it could run code from the checkpoint folder"
        ) from None
    plain = json.loads(Path(directory, PLAIN_STATE_FILE).read_text())
    rng = [{**p, **t} for p, t in zip(plain.pop("rng"), tensors.pop("rng"), strict=True)]
    return {**plain, **tensors, "rng": rng}


def _load_rows(source) -> list[dict]:
    import ray

    if isinstance(source, StageRows):
        return source.load()
    if isinstance(source, ray.ObjectRef):
        return ray.get(source)
    return list(source or [])


def _worker_entry(args: dict) -> None:
    _Worker(args).run()


# ----------------------------------------------------------------------------- the driver


LOCAL_START_TRIES = 3  # a local Ray start that times out on a busy machine is tried again
LOCAL_START_BACKOFF_S = 5.0


class RayStartError(RuntimeError):
    """Ray could not be started or reached; the message says what was tried."""


def ensure_ray(**init_kwargs) -> None:
    """`ray.init()` unless already connected; `RAY_ADDRESS` selects a cluster. A local instance
    runs its workers at normal priority (Ray's default niceness 15 starves training on a busy
    machine; `RAY_worker_niceness` set by the user wins). Every worker process of the job runs
    `ray_setup.setup_worker` first (it quiets a warning Ray Train repeats once a second, and
    pins `RAY_ADDRESS` to this job's cluster so that nothing in a worker goes looking for "a"
    cluster and finds another local instance). Ray Train's print patch is off unless the user
    sets `RAY_TRAIN_ENABLE_PRINT_PATCH`: with it, a training worker's `print` goes both to its
    stdout and through the root logger to stderr, so every progress line reached the driver
    twice. A local start that fails (on a loaded machine Ray's node can time out during start-up)
    is tried `LOCAL_START_TRIES` times; then one clear error. In quiet mode (`console`), Ray's
    own output goes to the log file."""
    import ray

    from . import console

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    address = os.environ.get("RAY_ADDRESS") or None
    if address is None:
        os.environ.setdefault("RAY_worker_niceness", "0")
    runtime_env = dict(init_kwargs.pop("runtime_env", None) or {})
    runtime_env.setdefault("worker_process_setup_hook", "datatuner_core.ray_setup.setup_worker")
    if not console.verbose():
        init_kwargs.setdefault("logging_level", "WARNING")
    tries = 1 if address else LOCAL_START_TRIES
    for attempt in range(1, tries + 1):
        try:
            # "local": a new instance of this job's own, never "a" cluster that happens to run
            # on this machine (a bare `ray.init()` joins one started by `ray start`)
            ray.init(address=address or "local", runtime_env=runtime_env, **init_kwargs)
            break
        except Exception as exc:  # noqa: BLE001 - Ray raises plain exceptions on start-up
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            if ray.is_initialized():
                ray.shutdown()
            if attempt == tries:
                where = f"the Ray cluster at {address}" if address else "a local Ray instance"
                raise RayStartError(
                    f"could not start or reach {where} ({tries} tries): {first}"
                ) from exc
            console.write_log(f"ray.init attempt {attempt} failed: {exc!r}")
            print(f"[datatuner] Ray start-up failed ({first}); trying again "
                  f"({attempt + 1}/{tries})", file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(LOCAL_START_BACKOFF_S * attempt)
    console.quiet_ray_driver()


def data_fingerprint(rows) -> dict:
    """Identify training data: a stage's manifest fingerprint, or a hash of in-memory rows."""
    if isinstance(rows, StageRows):
        return rows.fingerprint()
    rows = list(rows or [])
    return {"rows": len(rows), "sha256": fingerprints.fingerprint(rows)}


def split_output(output_uri: str) -> tuple[str, str]:
    """An output URI as (the folder it sits in, or ".", its own name)."""
    parent, _, base = str(output_uri).rstrip("/").rpartition("/")
    return parent or ".", base


def default_run_dir(output_uri: str) -> str:
    """Where Ray keeps checkpoints for an output: beside it under `_checkpoints/`."""
    if str(output_uri).startswith("memory://"):
        return str(Path(tempfile.gettempdir()) / "datatuner-checkpoints")
    parent, base = split_output(output_uri)
    local = "://" not in parent
    return (
        str(Path(parent).resolve() / "_checkpoints" / base)
        if local
        else f"{parent}/_checkpoints/{base}"
    )


def train_with_ray(
    task: TrainTask,
    train_rows,
    val_rows,
    config,
    output_uri: str,
    num_workers: int | None = None,
    *,
    run_dir: str | None = None,
    run_name: str | None = None,
    max_failures: int = 0,
    use_gpu: bool | None = None,
    storage_options: dict | None = None,
    card_extra: dict | None = None,
    reuse: bool | None = None,
) -> dict:
    """Train `task` on Ray Train and write the best model + `training_card.json` to `output_uri`.

    `train_rows` / `val_rows`: a list of row dicts or a `StageRows`. `config`: an LMConfig-like
    object, dict or TrainConfig (its `workers` gives `num_workers` when that is None).
    Re-running with the same output, config and data resumes from the latest checkpoint.
    Reuse (`reuse`, default the config's `reuse`, else on): the job — the task's settings and
    tokenizer, the trainer knobs, the data's content, the worker count, the code version — is
    looked up first. A model at `output_uri` made by the same job is returned as it is; one made
    by the same job for another output beside it (`{parent}/_jobs/{job}.json`) is copied here,
    its card marked `reused_from`. Otherwise the model is trained and indexed under its job.
    Returns the training card."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    started = time.time()
    cfg = TrainConfig.resolve(config)
    num_workers = num_workers or getattr(config, "workers", None) or 1
    data = {"train": data_fingerprint(train_rows), "validation": data_fingerprint(val_rows)}
    knobs = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_KNOBS}
    job = fingerprints.fingerprint(
        task.name, knobs, data, num_workers, task_identity(task), fingerprints.code_version()
    )
    reuse = cfg.reuse if reuse is None else reuse
    if reuse and (card := reuse_trained(job, output_uri, storage_options)) is not None:
        return card
    ensure_ray()
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0) >= num_workers
    run_name = run_name or f"{task.name}-{job[:12]}"
    run_dir = run_dir or default_run_dir(output_uri)
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker_entry,
        train_loop_config={
            "task": task,
            "config": dataclasses.asdict(cfg),
            "train": _as_source(train_rows),
            "val": _as_source(val_rows),
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
    latest = _load_state(result.checkpoint)
    best_checkpoint = _best_checkpoint(result, task.monitor) or result.checkpoint
    best = latest if best_checkpoint == result.checkpoint else _load_state(best_checkpoint)
    card = _training_card(task, cfg, data, latest, best, num_workers, use_gpu, started)
    card.update(
        {"output": output_uri, "run": f"{run_dir}/{run_name}", "job": job, **(card_extra or {})}
    )
    export_model(task, best["model"], card, output_uri, storage_options)  # adds parameter counts
    storage.write_json(job_index_uri(output_uri, job), {"job": job, "output": output_uri},
                       storage_options)  # fmt: skip
    return card


def task_identity(task: TrainTask) -> dict:
    """What defines the model apart from the data and the trainer knobs: the task's plain
    settings (base, shape, lengths, states, frozen layers, special tokens) and its tokenizer's
    vocabulary (a scratch tokenizer is trained on the data, a packaged one is fixed)."""
    identity = {"task": task.name, **_task_description(task)}
    tokenizer = getattr(task, "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "get_vocab"):
        identity["vocab_sha256"] = fingerprints.fingerprint(sorted(tokenizer.get_vocab().items()))
    return identity


def job_index_uri(output_uri: str, job: str) -> str:
    """Where the model trained by `job` is recorded: `{parent of output}/_jobs/{job}.json` (the
    sibling versions of one registry kind share the index)."""
    return storage.join_uri(split_output(output_uri)[0], JOBS_DIR, f"{job}.json")


def reuse_trained(job: str, output_uri: str, storage_options: dict | None = None) -> dict | None:
    """The card of a model made by `job`, now at `output_uri`, or None (train it). The model
    at `output_uri` itself when its card names this job; else the indexed one, copied here
    (every file, the card last, with `reused_from`). A missing, deleted or retrained source
    (its card names another job) is None."""
    own = storage.read_json(storage.join_uri(output_uri, CARD_FILE), storage_options,
                            missing_ok=True)  # fmt: skip
    if own and own.get("job") == job:
        return {**own, "skipped": True}
    index = storage.read_json(job_index_uri(output_uri, job), storage_options, missing_ok=True)
    source = (index or {}).get("output")
    if not source or source.rstrip("/") == str(output_uri).rstrip("/"):
        return None
    card = storage.read_json(storage.join_uri(source, CARD_FILE), storage_options,
                             missing_ok=True)  # fmt: skip
    if not card or card.get("job") != job:
        return None
    copied = storage.copy_dir(source, output_uri, storage_options, skip=[CARD_FILE])
    card = {**card, "output": output_uri, "reused_from": source, "files_copied": len(copied)}
    storage.write_json(storage.join_uri(output_uri, CARD_FILE), card, storage_options)
    return card


def _as_source(rows):
    import ray

    return rows if isinstance(rows, StageRows) else ray.put(list(rows or []))


def _best_checkpoint(result, monitor: str):
    scored = [
        (metrics.get(monitor, UNVALIDATED), checkpoint)
        for checkpoint, metrics in (result.best_checkpoints or [])
    ]
    scored = [(value, c) for value, c in scored if value < UNVALIDATED]
    return min(scored, key=lambda vc: vc[0])[1] if scored else None


def _training_card(task, cfg, data, latest, best, num_workers, use_gpu, started) -> dict:
    p = latest["progress"]
    per_epoch = [e for e in p["evaluations"] if not e["partial"]]
    monitor = task.monitor
    return {
        "task": task.name,
        "config": dataclasses.asdict(cfg),
        "task_config": _task_description(task),
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


def _task_description(task) -> dict:
    """The task's plain settings (no tokenizer objects) for the card."""
    if not dataclasses.is_dataclass(task):
        return {"name": task.name}
    out = {}
    for f in dataclasses.fields(task):
        value = getattr(task, f.name)
        if isinstance(value, str | int | float | bool | type(None) | list | tuple | dict):
            out[f.name] = value
    return json.loads(json.dumps(out, default=str))


def export_model(task, state_dict, card: dict, output_uri: str, storage_options=None) -> None:
    """Build the model, load `state_dict`, `task.save` it locally, upload; the card goes last."""
    model = task.build_model()
    model.load_state_dict(state_dict)
    counts = getattr(task, "parameter_counts", None)
    if counts:  # total / trainable parameters as trained (freezing leaves most of a base fixed)
        card["parameters"] = counts  # the caller's card: what it returns is what is written
    with tempfile.TemporaryDirectory(prefix="datatuner-export-") as tmp:
        task.save(model, tmp)
        put_directory(tmp, output_uri, storage_options)
    storage.write_json(storage.join_uri(output_uri, CARD_FILE), card, storage_options)


def put_directory(local_dir: str, uri: str, storage_options: dict | None = None) -> list[str]:
    """Copy every file under `local_dir` to `uri` (`storage.upload_dir`); returns the URIs."""
    names = storage.upload_dir(local_dir, uri, storage_options)
    return [storage.join_uri(uri, name) for name in names]


def read_card(output_uri: str, storage_options: dict | None = None) -> dict:
    """The training card of a saved model."""
    return storage.read_json(storage.join_uri(output_uri, CARD_FILE), storage_options)
