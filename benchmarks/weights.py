"""Choose `generate.weight` on DEV from stored candidates (never on test): every candidate of each
dev generations stage (made with the preset's decoding, every beam and retry kept) is scored once
by a classifier, then each record is re-chosen at every weight of `--weights` the way `generate`
chooses with `label_first: false` and the coverage check (fewest missing entities, then LM score +
weight x log P(accurate)). BLEU, the coverage error and the classifier's agreement with the entity
check, per stage and weight, side by side; weight 0 is the LM score alone.

    .venv/bin/python benchmarks/weights.py --classifier /tmp/exp22/models/classifier/exp22-hn \
        --stage /tmp/exp22/sweep/gen-retry2-unseen120 --stage /tmp/exp22/sweep/gen-retry2-seen120 \
        --weights 0 0.25 0.5 1 2 4 --out benchmarks/results/weights-hn.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rechoose(rows: list[dict], weights: list[float]) -> dict[str, dict]:
    """Each weight's headline metrics on `rows` (candidates scored already)."""
    from datatuner_core import evaluate
    from datatuner_core.generate import score_and_choose

    found = {}
    for weight in weights:
        chosen = copy.deepcopy(rows)
        score_and_choose(chosen, None, rerank=True, coverage=True, weight=weight,
                         label_first=False)  # fmt: skip
        metrics = evaluate.evaluate_generations(chosen)
        head = evaluate.headline(metrics)
        found[str(weight)] = {
            "bleu": round(head["bleu"], 2),
            "bleu_top_beam": round(head["bleu_top_beam"], 2),
            "coverage_error": head["coverage_error"],
            "changed_by_rerank": metrics.get("changed_by_rerank"),
            "accurate_rate": head["accurate_rate"],
            "classifier_agreement": head["classifier_agreement"],
        }
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--stage", action="append", required=True, help="a dev generations stage")
    parser.add_argument("--weights", nargs="+", type=float, default=[0, 0.5, 1, 2])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    from datatuner_core import stage_reader
    from datatuner_core.classifier import FidelityScorer
    from datatuner_core.generate import score_and_choose

    scorer = FidelityScorer(args.classifier)
    result = {"classifier": args.classifier, "weights": args.weights, "stages": {}}
    for stage in args.stage:
        rows = stage_reader.read_stage(stage).to_pylist()
        if any(r.get("split") == "test" for r in rows):
            raise SystemExit(f"{stage}: test rows; the weight is chosen on dev only")
        for r in rows:
            for c in r["candidates"] or []:
                c["fidelity_label"] = c["fidelity_score"] = None
        started = time.time()
        score_and_choose(rows, scorer, rerank=False, batch_size=32)  # scores every candidate
        seconds = round(time.time() - started, 1)
        result["stages"][stage] = {
            "records": len(rows),
            "candidates": sum(len(r["candidates"] or []) for r in rows),
            "score_seconds": seconds,
            "by_weight": rechoose(rows, args.weights),
        }
        print(f"{stage}: {len(rows)} records scored in {seconds} s", file=sys.stderr)
    lines = ["| stage | weight | BLEU | top beam | coverage error | changed | agreement |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for stage, found in result["stages"].items():
        for weight, m in found["by_weight"].items():
            agree = m["classifier_agreement"]
            lines.append(
                f"| {Path(stage).name} | {weight} | {m['bleu']:.2f} | {m['bleu_top_beam']:.2f} | "
                f"{m['coverage_error']:.1%} | {m['changed_by_rerank']} | "
                f"{'n/a' if agree is None else f'{agree:.2f}'} |"
            )
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
