"""The classifier's training step with frozen bottom layers against the full model, side by side:
the same batches, one process, the settings taking turns.

    .venv/bin/python benchmarks/classifier_freeze.py --run /tmp/curve/runs/webnlg-smol-curve \\
        --base minilm-l6 --freeze "0 3" --steps 20 --rounds 3 \\
        --out benchmarks/results/classifier-freeze-webnlg-smol.json

Reads the train pairs of a run's corruption stage (and its linearized stage's special tokens),
draws `--steps` length-bucketed batches of `--batch-size` pairs (a seeded sample of the pairs,
batched by the trainer's `plan_batches`), and for each `classifier.freeze_layers` value builds
the classifier (same initial weights: one seed) and times forward, backward, clipping and an
AdamW step over those batches, `--rounds` times in turn (0, 3, 0, 3, ...) so that a machine
getting slower or faster mid-run weighs on every setting alike; a first warm-up batch per
setting is not timed. Reports
seconds per step (the median round), tokens per second, the speed-up over the first setting,
trainable parameters, and the mean training loss of each setting's last round (the same batches:
a sign of how much the frozen layers cost in fit over these few steps, not a quality measure —
`classifier_curve.py` is that). Training in the pipeline adds Ray Train's data feeding and, with
several workers, the all-reduce; this isolates what freezing changes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> int:
    import torch
    from decoding import emit_result

    from datatuner_core import stage_reader
    from datatuner_core.classifier import ClassifierTask, _pairs_of, build_classifier_tokenizer
    from datatuner_core.tokenizer import is_scratch
    from datatuner_core.training import TrainConfig, plan_batches

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder with corruptions/ and linearized/")
    p.add_argument("--base", default="minilm-l6")
    p.add_argument("--freeze", default="0 3", help="freeze_layers values, the first the base")
    p.add_argument("--steps", type=int, default=20, help="timed batches per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=192)
    p.add_argument("--lr", type=float, default=1.0e-4)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: as is)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out")
    args = p.parse_args(argv)
    settings = [int(v) for v in args.freeze.split()]
    if not settings or args.steps < 1 or args.rounds < 1:
        p.error("--freeze needs at least one value; --steps and --rounds at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    run = Path(args.run)
    specials = stage_reader.read_manifest(str(run / "linearized"))["extra"]["special_tokens"]
    rows = [r for r in stage_reader.read_stage(str(run / "corruptions")).to_pylist()
            if r["split"] == "train"]  # fmt: skip
    if not rows:
        p.error(f"{run / 'corruptions'}: no train pairs")
    pairs = _pairs_of(rows) if is_scratch(args.base) else None
    tokenizer = build_classifier_tokenizer(args.base, pairs, specials, 8192)
    probe = ClassifierTask(tokenizer=tokenizer, base=args.base, max_length=args.max_length,
                           special_tokens=specials)  # fmt: skip
    # only the pairs the batches can draw on are encoded: one bucketing chunk, or more if the
    # steps need more (a seeded sample, not all of a 144k-pair stage)
    wanted = max(args.steps + 1, TrainConfig.bucket_chunk) * args.batch_size
    if len(rows) > wanted:
        rows = random.Random(args.seed).sample(rows, wanted)
    examples = probe.encode(rows)
    lengths = [len(e["input_ids"]) for e in examples]
    plan = plan_batches(lengths, args.batch_size, args.seed, chunk=TrainConfig.bucket_chunk)
    plan = plan[: args.steps + 1]
    batches = [probe.collate([examples[i] for i in idx]) for idx in plan]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[1:])

    states = {}
    for n in settings:
        task = ClassifierTask(tokenizer=tokenizer, base=args.base, max_length=args.max_length,
                              special_tokens=specials, freeze_layers=n)  # fmt: skip
        torch.manual_seed(args.seed)
        model = task.build_model().train()
        params = [q for q in model.parameters() if q.requires_grad]
        opt = torch.optim.AdamW(params, lr=args.lr)
        states[n] = {"task": task, "model": model, "params": params, "opt": opt,
                     "seconds": [], "losses": []}  # fmt: skip

    def step(s, batch) -> float:
        loss = s["task"].loss(s["model"], batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(s["params"], 1.0)
        s["opt"].step()
        s["opt"].zero_grad(set_to_none=True)
        return float(loss.detach())

    for s in states.values():
        step(s, batches[0])  # warm-up, not timed
    for _ in range(args.rounds):
        for s in states.values():
            started = time.perf_counter()
            losses = [step(s, b) for b in batches[1:]]
            s["seconds"].append(time.perf_counter() - started)
            s["losses"] = losses

    base = statistics.median(states[settings[0]]["seconds"]) / args.steps
    results = []
    for n, s in states.items():
        per_step = statistics.median(s["seconds"]) / args.steps
        results.append({
            "freeze_layers": n, "seconds_per_step": round(per_step, 4),
            "round_seconds": [round(x, 2) for x in s["seconds"]],
            "tokens_per_s": round(tokens / (per_step * args.steps), 1),
            "speedup": round(base / per_step, 3),
            **s["task"].parameter_counts,
            "mean_loss_last_round": round(statistics.fmean(s["losses"]), 4),
        })  # fmt: skip
    result = {
        "benchmark": "classifier_freeze", "run": str(run), "base": args.base,
        "batch_size": args.batch_size, "max_length": args.max_length, "steps": args.steps,
        "rounds": args.rounds, "tokens_per_round": tokens, "threads": torch.get_num_threads(),
        "settings": results,
    }  # fmt: skip
    emit_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
