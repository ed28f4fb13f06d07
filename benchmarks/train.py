"""Benchmark LM training throughput through the real trainer (`training.train_with_ray`).

Side by side in one run, on the same `scratch:tiny` LM (4 layers × 256) and the same WebNLG train
split (or its first `--entries` entries; one example per reference; batches are drawn at random
from all of it), `batch_size` sequences per worker and step:

1. length-bucketed batches with dynamic padding vs every batch padded to the split's longest
   sequence (the original DataTuner recipe's padding: the tokens computed per batch do not depend
   on how the batches are drawn), both on 1 Ray Train worker with all CPUs;
2. 2 Ray Train workers (DDP over gloo, half the CPUs each) vs 1 worker with all CPUs.

Throughput = non-pad training tokens (all workers) per second of training-step time (forward,
backward, optimizer; Ray start-up, validation and checkpoints excluded). Results go to
`benchmarks/results/train.json`.

    python -m benchmarks.train --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from .common import RESULTS, SHARED_DATA, description, write_json

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
SHARED = SHARED_DATA / "webnlg"


def prepare(work: Path, entries: int, max_length: int):
    """(tokenizer, special tokens, train rows, validation rows, encoded train lengths, the
    longest encoded sequence of either split: every batch, validation too, is padded to it)."""
    from datatuner_core import linearize as lin
    from datatuner_core import lm
    from datatuner_core.ingest import ingest
    from datatuner_core.stage_reader import read_stage
    from datatuner_core.tokenizer import build_tokenizer

    inputs = {"train": str(SHARED / "train"), "validation": str(SHARED / "dev")}
    caps = {"train": entries, "validation": 64}  # entries=None: the whole train split
    ingest("webnlg", inputs, str(work / "records"), max_records=caps)
    specials = lin.linearize(str(work / "records"), str(work / "lin"))["extra"]["special_tokens"]
    rows = read_stage(str(work / "lin")).to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    val = [r for r in rows if r["split"] == "validation"]
    corpus = [r["linearized"] for r in train] + [t for r in train for t in r["references"]]
    tok = build_tokenizer("scratch:tiny", corpus, specials)
    examples, _ = lm.encode_rows(tok, train, specials, "fine", max_length)
    held, _ = lm.encode_rows(tok, val, specials, "fine", max_length)
    longest = max(len(e["input_ids"]) for e in [*examples, *held])
    return tok, specials, train, val, [len(e["input_ids"]) for e in examples], longest


def run_case(name, tok, specials, train, val, *, workers, cpus, pad_to, args, work):
    from datatuner_core import lm, training
    from datatuner_core.config import LMConfig

    task = lm.LMTask(
        tokenizer=tok, special_tokens=specials, max_length=args.max_length, pad_to=pad_to
    )
    section = LMConfig(
        epochs=1, batch_size=args.batch_size, warmup_steps=10, max_steps=args.steps,
        workers=workers, cpus_per_worker=cpus, seed=1,
        reuse=False,  # a timing: always train, even a case an earlier run already trained
    )  # fmt: skip
    started = time.perf_counter()
    card = training.train_with_ray(task, train, val, section, str(work / name))
    m = card["metrics"]
    result = {
        "workers": workers,
        "cpus_per_worker": cpus,
        "batching": f"pad-to-split-max ({pad_to})" if pad_to else "bucketed-dynamic",
        "steps": m["steps"],
        "train_tokens": m["train_tokens"],
        "train_seconds": m["train_seconds"],
        "tokens_per_s": m["tokens_per_s"],
        "call_seconds": round(time.perf_counter() - started, 1),
    }
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument(
        "--entries", type=int, default=None, help="cap on WebNLG train entries (file order)"
    )
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per case")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per worker per step")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--out", default=str(RESULTS / "train.json"))
    args = parser.parse_args(argv)

    import ray

    from datatuner_core.ray_setup import ensure_ray

    ensure_ray(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    cpus = os.cpu_count() or 2
    with tempfile.TemporaryDirectory(prefix="datatuner-bench-train-") as tmp:
        work = Path(tmp)
        tok, specials, train, val, lengths, split_max = prepare(work, args.entries, args.max_length)
        common = dict(tok=tok, specials=specials, train=train, val=val, args=args, work=work)
        cases = {
            "bucketed_1w": run_case("bucketed_1w", workers=1, cpus=cpus, pad_to=None, **common),
            "padmax_1w": run_case("padmax_1w", workers=1, cpus=cpus, pad_to=split_max, **common),
            "bucketed_2w": run_case(
                "bucketed_2w", workers=2, cpus=max(1, cpus // 2), pad_to=None, **common
            ),
        }
    ray.shutdown()
    ratios = {
        "bucketed_over_padmax": round(
            cases["bucketed_1w"]["tokens_per_s"] / cases["padmax_1w"]["tokens_per_s"], 2
        ),
        "two_workers_over_one": round(
            cases["bucketed_2w"]["tokens_per_s"] / cases["bucketed_1w"]["tokens_per_s"], 2
        ),
    }
    report = {
        "benchmark": "train",
        "model": "scratch:tiny (GPT-2, 4 layers x 256)",
        "data": {
            "train_entries": len(train),
            "train_examples": len(lengths),
            "mean_length": round(sum(lengths) / len(lengths), 1),
            "split_max_length": split_max,
            "pad_fraction_padmax": round(1 - sum(lengths) / (split_max * len(lengths)), 3),
        },
        "settings": vars(args),
        "cases": cases,
        "ratios": ratios,
        "machine": {
            "cpus": cpus,
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    out = write_json(args.out, report)
    print(f"bucketed/pad-to-max tokens/s: {ratios['bucketed_over_padmax']}x")
    print(f"2 workers/1 worker tokens/s: {ratios['two_workers_over_one']}x")
    print(json.dumps({"output": str(out), **ratios}))


if __name__ == "__main__":
    main()
