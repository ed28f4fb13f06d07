"""The fidelity classifier's learning curve in one run: held-out macro-F1 (and the share of each
corruption rule caught) every `--eval-every` optimizer steps, against training seconds.

    .venv/bin/python benchmarks/classifier_curve.py --preset configs/webnlg-smol.yaml \\
        --storage /tmp/curve --steps 2400 --eval-every 600 \\
        --out benchmarks/results/classifier-curve-webnlg-smol.json

Ingests, linearizes and corrupts the preset's dataset under `--storage/runs/{name}-curve` (each
stage skips itself when it is already there), then trains the preset's classifier (its
`classifier.*` settings, `max_steps` set to `--steps`, extra `--set` overrides) with a validation
over every held-out pair each `--eval-every` steps. The learning-rate schedule is the one of a
`--steps` run (it decays to 0 at the last step), so the middle points are not what a shorter run
would reach; they show whether the curve is still rising. No LM is trained and the test split is
not read: the held-out pairs are the corruption stage's validation split (built from dev).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def curve_points(card: dict) -> list[dict]:
    """One point per validation of a classifier training card: step, macro-F1, accuracy, loss,
    training seconds up to it (from the card's per-step timing share) and each rule's catch."""
    from datatuner_core.classifier import metrics_from_confusion

    m = card["metrics"]
    per_step = m["train_seconds"] / max(m["steps"], 1)
    points = []
    for e in m["evaluations"]:
        if "confusion" not in e:
            continue
        held = metrics_from_confusion(e["confusion"])
        points.append({
            "step": e["step"], "train_seconds": round(per_step * e["step"], 1),
            "macro_f1": round(held["macro_f1"], 4), "accuracy": round(held["accuracy"], 4),
            "val_loss": e.get("val_loss"),
            "caught": {rule: round(v["caught"], 4) for rule, v in (e.get("by_rule") or {}).items()},
        })  # fmt: skip
    return points


def main(argv=None) -> int:
    from decoding import emit_result

    from datatuner_core.classifier import train_classifier
    from datatuner_core.config import load_config
    from datatuner_core.corrupt import corrupt
    from datatuner_core.ingest import ingest
    from datatuner_core.linearize import linearize
    from datatuner_core.runs import RunPaths

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--steps", type=int, required=True, help="classifier.max_steps")
    p.add_argument("--eval-every", type=int, required=True, help="steps between validations")
    p.add_argument("--label", default="curve", help="the model version's name under models/")
    p.add_argument("--set", action="append", default=[], help="extra config override")
    p.add_argument("--out", help="also write the JSON result here")
    args = p.parse_args(argv)
    if not 0 < args.eval_every <= args.steps:
        p.error("--eval-every must be between 1 and --steps")

    overrides = [f"storage={args.storage}", f"classifier.max_steps={args.steps}", *args.set]
    config = load_config(args.preset, overrides)
    run = RunPaths(config.storage, f"{config.name}-curve")
    data = config.dataset
    paths = {k: v for k, v in data.paths.model_dump(exclude_none=True).items() if k != "test"}
    started = time.perf_counter()
    ingest(data.format, paths, run.stage("records"), max_records=data.max_records.model_dump())
    lin = linearize(run.stage("records"), run.stage("linearized"), mode=config.linearize.mode)
    c = config.corrupt
    stage = corrupt(
        run.stage("linearized"), run.stage("corruptions"),
        per_example=c.per_example, seed=c.seed, balance=c.balance,
    )  # fmt: skip
    prepare_s = time.perf_counter() - started
    output = str(Path(config.storage) / "models" / "classifier" / f"{config.name}-{args.label}")
    card = train_classifier(
        run.stage("corruptions"), output, config.classifier, lin["extra"]["special_tokens"],
        train_overrides={"eval_every": args.eval_every},
    )  # fmt: skip
    m = card["metrics"]
    result = {
        "benchmark": "classifier_curve", "preset": args.preset, "overrides": args.set,
        "base": config.classifier.base, "batch_size": config.classifier.batch_size,
        "lr": config.classifier.lr, "steps": m["steps"], "eval_every": args.eval_every,
        "train_pairs": stage.get("extra", {}).get("pairs"), "prepare_seconds": round(prepare_s, 1),
        "train_seconds": m["train_seconds"], "wall_seconds": m["wall_seconds"],
        "tokens_per_s": m["tokens_per_s"], "model": output,
        "exported_step": card["eval"].get("step"), "exported_macro_f1": card["eval"]["macro_f1"],
        "points": curve_points(card),
    }  # fmt: skip
    emit_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
