"""The training loop of one Ray Train worker (`run_worker`), read top to bottom in `Worker.run`.

- data: every worker encodes all rows and keeps examples `[rank::world]`; micro-batches are
  length-bucketed (`training_data.plan_batches`), with the same number of micro-batches on every
  rank (the smallest count);
- optimisation: AdamW (no decay on biases / norms), linear warm-up then linear decay to 0 over
  `epochs × steps_per_epoch` or `max_steps` when that comes first, gradient accumulation,
  clipping, bf16 autocast on GPU;
- validation at every epoch end, every `eval_every` steps and when `max_steps` stops mid-epoch:
  the task's sums are added over ranks, then turned into metrics; early stopping after
  `patience` epochs without improvement of `task.monitor` (lower is better);
- checkpoints at every validation and every `checkpoint_every` steps (`checkpoints`): a crashed
  or re-run job resumes from the latest and continues exactly as an uninterrupted run would.

The knobs are the config section the driver passed (`config.TrainerConfig`), read whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field

from .checkpoints import UNVALIDATED, load_state, rng_state, save_state, seed_all, set_rng_state
from .training_data import load_rows, plan_batches

LOG_EVERY = 50  # optimizer steps between progress lines (rank 0, stdout)
PROGRESS_EVERY_S = 30.0  # a progress line at least this often, besides every LOG_EVERY steps


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


def lr_multiplier(step: int, warmup: int, total: int) -> float:
    """Linear warm-up over `warmup` steps, then linear decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def run_worker(args: dict) -> None:
    """Ray Train's entry point on every worker: `args` holds the task, the config section, the
    train / validation sources (`training_data.as_source`) and `resume`, the URI of the
    checkpoint to start from when Ray has none of this run (`checkpoints.latest_checkpoint_dir`)."""
    Worker(args).run()


class Worker:
    """The training loop of one Ray Train worker."""

    def __init__(self, args: dict):
        import ray.train
        import ray.train.torch
        import torch

        self.task = args["task"]
        self.cfg = args["config"]
        self.resume = args.get("resume")  # a checkpoint on storage Ray's index may not name
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        _set_threads(self.cfg.cpus_per_worker)
        self.device = ray.train.torch.get_device()
        self.on_gpu = self.device.type == "cuda"
        self.train = self.task.encode(load_rows(args["train"]))[self.rank :: self.world]
        self.counts = dict(getattr(self.task, "counts", {}) or {})
        # validation examples by split (`validation`, `validation_unseen`): the monitored metric
        # is over all of them, and each split's own is reported beside it (`val_ppl@split`)
        self.val_groups: dict[str, list[dict]] = {}
        val_rows = load_rows(args["val"])
        for split in dict.fromkeys(str(r.get("split") or "") for r in val_rows):
            rows = [r for r in val_rows if str(r.get("split") or "") == split]
            self.val_groups[split] = self.task.encode(rows)[self.rank :: self.world]
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
        seed_all(cfg.seed)  # identical initial weights on every rank
        self.model = self.task.build_model().to(self.device)
        self.ddp = self.model
        if self.world > 1:
            ids = [self.device.index] if self.on_gpu else None
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = _optimizer(self.model, cfg.lr, cfg.weight_decay)
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
        checkpoint = ray.train.get_checkpoint()  # Ray's latest: a restart within this run
        if checkpoint is None and self.resume:
            checkpoint = ray.train.Checkpoint(path=self.resume)
        if self._restore(checkpoint) is None:
            seed_all(cfg.seed * 1000 + self.rank)  # per-rank dropout streams
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
            seed = f"{self.cfg.seed}:{epoch}:{self.rank}"
            self._plan_cache = cached = (
                epoch,
                plan_batches(self.lengths, self.cfg.batch_size, seed),
            )
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
        late = time.monotonic() - self.last_line >= PROGRESS_EVERY_S
        if self.rank == 0 and (self.p.step % LOG_EVERY == 0 or late):
            self._progress_line()

    def _progress_line(self) -> None:
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

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _validate(self) -> dict:
        """The task's metrics over every validation example, and per split when there are
        several (`val_ppl@validation_unseen`: the curve on categories never trained on)."""
        import torch

        self.model.eval()
        size = 2 * self.cfg.batch_size  # no gradients: twice the training batch fits
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
        every rank's RNG state, config: `checkpoints.save_state`)."""
        import ray.train

        rng = _gather(rng_state())
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
                "config": self.cfg.model_dump(),
                "counts": self.counts,
                "world_size": self.world,
            }
            save_state(payload, tmp)
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(
                report, checkpoint=checkpoint, checkpoint_dir_name=f"step-{self.p.step:07d}"
            )

    def _restore(self, checkpoint) -> int | None:
        """Load the latest checkpoint, if any; returns the step it was taken at."""
        if checkpoint is None:
            return None
        payload = load_state(checkpoint)
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.p = Progress(**payload["progress"])
        rng = payload["rng"]
        if len(rng) == self.world:
            set_rng_state(rng[self.rank])
        else:  # a different world size: exact continuation is impossible; reseed per rank
            seed_all(self.cfg.seed * 1000 + self.rank + 7919 * self.p.step)
        return self.p.step


def _set_threads(cpus_per_worker: int) -> None:
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS") or cpus_per_worker or 1)
    torch.set_num_threads(max(1, threads))


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


def _optimizer(model, lr: float, weight_decay: float):
    """AdamW; matrices decay, biases and norms (1-d parameters) do not."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)
