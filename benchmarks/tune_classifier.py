"""The fidelity classifier's settings side by side: rerankers compared, a learning curve, frozen
layers. Dev and held-out corruption pairs only; the test split is never read.

    python -m benchmarks.tune_classifier compare --run RUN --lm LM --classifiers "CLF_A CLF_B" \\
        --heldout "RUN_A/corruptions RUN_B/corruptions" --records 480
    python -m benchmarks.tune_classifier curve --preset configs/webnlg-smol.yaml \\
        --storage /tmp/curve --steps 2400 --eval-every 600 \\
        --out benchmarks/results/classifier-curve-webnlg-smol.json
    python -m benchmarks.tune_classifier freeze --run /tmp/curve/runs/webnlg-smol-curve \\
        --base minilm-l6 --freeze "0 3" --steps 20 --rounds 3

- `compare`: (1) the beams of `--records` seeded dev records generated once (the LM does not
  depend on the classifier), then each classifier labels every candidate and the preset's
  reranking chooses: dev BLEU, coverage error, labels, texts changed from the top beam and texts
  equal to the first classifier's; (2) with `--heldout`, each classifier on each corruption
  stage's validation pairs (macro-F1, each rule's catch): only this cross table compares
  classifiers trained on different corruption rules on the same pairs.
- `curve`: ingests, linearizes and corrupts the preset's dataset under
  `--storage/runs/{name}-curve` (each stage skips itself when already there), then trains the
  preset's classifier with `max_steps=--steps`, validating over every held-out pair each
  `--eval-every` steps: macro-F1 and each rule's catch against training seconds. The learning
  rate decays to 0 at `--steps`, so middle points are not what a shorter run reaches; they show
  whether the curve still rises. No LM is trained.
- `freeze`: the classifier's training step with each `classifier.freeze_layers` value on the same
  seeded length-bucketed batches of a run's train pairs, the settings taking turns `--rounds`
  times (a warm-up batch each, untimed): seconds per step (median round), tokens/s, speed-up over
  the first, trainable parameters, the last round's mean loss (a sign, not a quality measure:
  `curve` is that). Ray Train's data feeding and all-reduce are left out on purpose.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from pathlib import Path

from .common import (
    add_dev_flags,
    add_set_flag,
    description,
    emit_result,
    refuse_test_split,
    same_count,
    sample_rows,
    timed,
)

# ----------------------------------------------------------------------------- compare


def rerank_on_dev(args, classifiers: list[str]) -> list[dict]:
    from datatuner_core import evaluate
    from datatuner_core.candidate_choice import score_and_choose
    from datatuner_core.classifier_scorer import FidelityScorer
    from datatuner_core.generator import Generator
    from datatuner_core.rescore import clear_labels

    rows = sample_rows(args.run, args.split, args.records, source_order=True)
    gen = Generator(
        args.lm, None, beams=args.beams, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, rerank=False, max_new_tokens_ratio=args.ratio,
        threads=args.threads,
    )  # fmt: skip
    beams, seconds = timed(gen.generate_rows, rows)
    print(f"beams of {len(beams)} records: {seconds:.1f} s", flush=True)
    del gen
    results, first = [], None
    for uri in classifiers:
        out = clear_labels(copy.deepcopy(beams))
        _, seconds = timed(score_and_choose, out, FidelityScorer(uri), rerank=True,
                           coverage=True, batch_size=64, verdict=args.verdict)  # fmt: skip
        m = evaluate.evaluate_generations(out)
        first = first or {r["id"]: r["text"] for r in out}
        results.append({
            "classifier": uri, "records": len(out), "bleu": m["bleu"],
            "bleu_top_beam": m["top_beam"]["bleu"],
            "coverage_error": m["coverage"]["chosen"]["error_rate"],
            "coverage_error_top_beam": m["coverage"]["top_beam"]["error_rate"],
            "labels": m["fidelity"]["chosen"]["counts"],
            "changed_by_rerank": m["changed_by_rerank"],
            "same_texts_as_first": same_count(first, out),
            "score_seconds": round(seconds, 1),
        })  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    return results


def cross_heldout(classifiers: list[str], stages: list[str], batch_size: int = 64) -> list[dict]:
    from datatuner_core.classifier_scorer import FidelityScorer, evaluate_classifier
    from datatuner_core.stage_reader import read_stage

    table = []
    for stage in stages:
        pairs = [r for r in read_stage(stage).to_pylist() if r["split"] == "validation"]
        for uri in classifiers:
            m = evaluate_classifier(FidelityScorer(uri, batch_size=batch_size), pairs,
                                    batch_size=batch_size)  # fmt: skip
            caught = {rule: v["caught"] for rule, v in (m.get("by_rule") or {}).items()}
            table.append({
                "classifier": uri, "heldout": stage, "pairs": len(pairs),
                "macro_f1": m["macro_f1"], "accuracy": m["accuracy"], "caught": caught,
            })  # fmt: skip
            print(json.dumps(table[-1]), flush=True)
    return table


def compare(args) -> None:
    refuse_test_split(args, "tune_classifier compare")
    classifiers = args.classifiers.split()
    result = {
        "records": args.records, "split": args.split, "beams": args.beams,
        "verdict": args.verdict,
        "rerank": rerank_on_dev(args, classifiers),
        "heldout": cross_heldout(classifiers, args.heldout.split()),
    }  # fmt: skip
    emit_result(result, args.out)


# ----------------------------------------------------------------------------- curve


def curve_points(card: dict) -> list[dict]:
    """One point per validation of a classifier training card: step, macro-F1, accuracy, loss,
    training seconds up to it (from the card's per-step timing share) and each rule's catch."""
    from datatuner_core.classifier_metrics import metrics_from_confusion

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


def curve(args) -> None:
    from datatuner_core.classifier import train_classifier
    from datatuner_core.config import load_config
    from datatuner_core.corrupt import corrupt
    from datatuner_core.ingest import ingest
    from datatuner_core.linearize import linearize
    from datatuner_core.runs import RunPaths

    if not 0 < args.eval_every <= args.steps:
        raise SystemExit("--eval-every must be between 1 and --steps")
    overrides = [f"storage={args.storage}", f"classifier.max_steps={args.steps}",
                 f"classifier.eval_every={args.eval_every}", *args.set]  # fmt: skip
    config = load_config(args.preset, overrides)
    run = RunPaths(config.storage, f"{config.name}-curve")
    data = config.dataset
    paths = {k: v for k, v in data.paths.model_dump(exclude_none=True).items() if k != "test"}
    started = time.perf_counter()
    ingest(data.format, paths, run.stage("records"), max_records=data.max_records.model_dump())
    lin = linearize(run.stage("records"), run.stage("linearized"), config.linearize)
    stage = corrupt(run.stage("linearized"), run.stage("corruptions"), config.corrupt)
    prepare_s = time.perf_counter() - started
    output = str(Path(config.storage) / "models" / "classifier" / f"{config.name}-{args.label}")
    card = train_classifier(
        run.stage("corruptions"), output, config.classifier, lin["extra"]["special_tokens"]
    )
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


# ----------------------------------------------------------------------------- freeze


def freeze_batches(args, probe, rows: list[dict]) -> list[dict]:
    """`--steps` + 1 seeded length-bucketed batches (the first a warm-up); only the pairs the
    batches can draw on are encoded: one bucketing chunk, or more if the steps need more."""
    from datatuner_core.training_data import BUCKET_CHUNK, plan_batches

    wanted = max(args.steps + 1, BUCKET_CHUNK) * args.batch_size
    if len(rows) > wanted:
        rows = random.Random(args.seed).sample(rows, wanted)
    examples = probe.encode(rows)
    lengths = [len(e["input_ids"]) for e in examples]
    plan = plan_batches(lengths, args.batch_size, args.seed, chunk=BUCKET_CHUNK)
    return [probe.collate([examples[i] for i in idx]) for idx in plan[: args.steps + 1]]


def freeze(args) -> None:
    import torch

    from datatuner_core.classifier_model import ClassifierTask
    from datatuner_core.classifier_pairs import build_classifier_tokenizer, pairs_of
    from datatuner_core.stage_reader import read_manifest, read_stage
    from datatuner_core.tokenizer import is_scratch

    settings = [int(v) for v in args.freeze.split()]
    if not settings or args.steps < 1 or args.rounds < 1:
        raise SystemExit("--freeze needs at least one value; --steps and --rounds at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    run = Path(args.run)
    specials = read_manifest(str(run / "linearized"))["extra"]["special_tokens"]
    rows = [r for r in read_stage(str(run / "corruptions")).to_pylist() if r["split"] == "train"]
    if not rows:
        raise SystemExit(f"{run / 'corruptions'}: no train pairs")
    pairs = pairs_of(rows) if is_scratch(args.base) else None
    tokenizer = build_classifier_tokenizer(args.base, pairs, specials, 8192)
    task_args = dict(tokenizer=tokenizer, base=args.base, max_length=args.max_length,
                     special_tokens=specials)  # fmt: skip
    batches = freeze_batches(args, ClassifierTask(**task_args), rows)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[1:])

    states = {}
    for n in settings:
        task = ClassifierTask(**task_args, freeze_layers=n)
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
            s["losses"], seconds = timed(lambda s=s: [step(s, b) for b in batches[1:]])
            s["seconds"].append(seconds)

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


# ----------------------------------------------------------------------------- the command line


def parser() -> argparse.ArgumentParser:
    from datatuner_core.config import GenerateConfig

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.tune_classifier", description=description(__doc__)
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = add_dev_flags(sub.add_parser("compare", help="classifiers as rerankers, held out"), 480)
    c.add_argument("--classifiers", required=True, help="space-separated classifier URIs")
    c.add_argument("--heldout", default="", help="space-separated corruption stage URIs")
    c.add_argument("--max-new-tokens", type=int, default=64)
    c.add_argument("--ratio", type=float, default=1.0, help="generate.max_new_tokens_ratio")
    c.add_argument("--threads", type=int, default=None)
    c.add_argument(
        "--verdict", action=argparse.BooleanOptionalAction,
        default=GenerateConfig.model_fields["verdict"].default,
        help="the chosen texts' labels are the fidelity verdict (generate.verdict)",
    )  # fmt: skip
    k = sub.add_parser("curve", help="held-out macro-F1 every --eval-every steps")
    k.add_argument("--preset", required=True)
    k.add_argument("--storage", required=True)
    k.add_argument("--steps", type=int, required=True, help="classifier.max_steps")
    k.add_argument("--eval-every", type=int, required=True, help="steps between validations")
    k.add_argument("--label", default="curve", help="the model version's name under models/")
    add_set_flag(k, "extra config override")
    k.add_argument("--out", help="also write the JSON result here")
    f = sub.add_parser("freeze", help="training step with classifier.freeze_layers values")
    f.add_argument("--run", required=True, help="run folder with corruptions/ and linearized/")
    f.add_argument("--base", default="minilm-l6")
    f.add_argument("--freeze", default="0 3", help="freeze_layers values, the first the base")
    f.add_argument("--steps", type=int, default=20, help="timed batches per round")
    f.add_argument("--rounds", type=int, default=3)
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--max-length", type=int, default=192)
    f.add_argument("--lr", type=float, default=1.0e-4)
    f.add_argument("--threads", type=int, default=None, help="torch threads (default: as is)")
    f.add_argument("--seed", type=int, default=7)
    f.add_argument("--out")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    {"compare": compare, "curve": curve, "freeze": freeze}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
