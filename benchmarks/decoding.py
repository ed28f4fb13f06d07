"""Decoding and reranking tuned on DEV (never on test): a grid of beam size, length penalty and
n-gram blocking; on each setting's beams, the reranking orders: the paper's label-first order
without and with the coverage check, and the coverage check followed by LM score + weight x
log P(accurate) (`generate.label_first: false`) for each `--weights` value. Scored on a sample
of the validation split by BLEU and by the coverage error rate of the chosen texts.

    .venv/bin/python benchmarks/decoding.py --run /tmp/q/runs/webnlg-smol-fine \
        --lm /tmp/q/models/lm/webnlg-smol-fine \
        --classifier /tmp/q/models/classifier/webnlg-smol-fine \
        --records 120 --grid "1,1.0,0 3,1.0,0 3,1.0,3 5,1.0,0 5,1.5,0"

Every setting runs in this one process on the same records (side by side); the table goes to
stdout and `--out` (JSON). Pick the preset's `generate.*` keys from it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def sample_rows(run: str, split: str, n: int, source_order: bool = False) -> list[dict]:
    """`n` seeded random linearized rows of `split` of a run (the same sample every time), in
    random order, or with `source_order` in the stage's own order (WebNLG's is by triple count)."""
    from datatuner_core import stage_reader

    linearized = stage_reader.read_stage(f"{run}/linearized").to_pylist()
    rows = [r for r in linearized if r["split"] == split]
    picked = random.Random(0).sample(range(len(rows)), min(n, len(rows)))
    return [rows[i] for i in (sorted(picked) if source_order else picked)]


def dev_parser(doc: str, records: int) -> argparse.ArgumentParser:
    """The flags every side-by-side benchmark on a run's dev records shares (a benchmark adds its
    own): the run, the LM, the split and sample size, the beam search shape, the result file."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder (its linearized stage is read)")
    parser.add_argument("--lm", required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--records", type=int, default=records)
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=None)
    return parser


def parse_dev_args(parser: argparse.ArgumentParser, argv, name: str) -> argparse.Namespace:
    """`parser`'s arguments; a benchmark that chooses settings refuses the test split."""
    args = parser.parse_args(argv)
    if args.split == "test":
        raise SystemExit(f"{name} compares on dev; the test split is not used to choose")
    return args


def emit_result(result: dict, out: str | None) -> None:
    """Print a benchmark's result as JSON, and write it to `out` when given."""
    print(json.dumps(result, indent=2))
    if out:
        Path(out).write_text(json.dumps(result, indent=2) + "\n")


def main(argv=None) -> int:
    from datatuner_core import evaluate
    from datatuner_core.generate import Generator

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run folder (its linearized stage is read)")
    parser.add_argument("--lm", required=True)
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--records", type=int, default=120)
    parser.add_argument("--split", default="validation")
    parser.add_argument(
        "--grid",
        default="1,1.0,0 3,1.0,0 3,1.0,3 5,1.0,0 5,1.5,0",
        help="space-separated beams,length_penalty,no_repeat_ngram[,int8]",
    )
    parser.add_argument(
        "--weights", default="0,0.5,1", help="label_first=false variants: weights of log P(acc)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16, help="records per beam search")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    if args.split == "test":
        parser.error("decoding is tuned on the validation split, never on test")
    rows = sample_rows(args.run, args.split, args.records)
    results = []
    for item in args.grid.split():
        beams, penalty, ngram, *rest = item.split(",")
        int8 = bool(rest and rest[0] == "int8")
        gen = Generator(
            args.lm, args.classifier, beams=int(beams), max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size, rerank=True, length_penalty=float(penalty),
            no_repeat_ngram=int(ngram), int8=int8, threads=args.threads,
        )  # fmt: skip
        started = time.time()
        out = gen.generate_rows(rows)
        seconds = time.time() - started
        orders = [(False, True, 1.0), (True, True, 1.0)]  # (coverage, label_first, weight)
        orders += [(True, False, float(w)) for w in args.weights.split(",") if w.strip()]
        for coverage, label_first, weight in orders:
            gen.coverage, gen.label_first, gen.weight = coverage, label_first, weight
            gen._score_and_choose(out)  # re-choose (labels are kept: scored once)
            m = evaluate.evaluate_generations(out)
            results.append({
                "beams": int(beams), "length_penalty": float(penalty),
                "no_repeat_ngram": int(ngram), "int8": int8, "coverage": coverage,
                "label_first": label_first, "weight": weight,
                "bleu": m["bleu"], "bleu_top_beam": m["top_beam"]["bleu"],
                "coverage_error": m["coverage"]["chosen"]["error_rate"],
                "coverage_error_top_beam": m["coverage"]["top_beam"]["error_rate"],
                "accurate": m["fidelity"]["chosen"]["counts"]["accurate"],
                "seconds": round(seconds, 1), "records_per_s": round(len(rows) / seconds, 2),
            })  # fmt: skip
            r = results[-1]
            order = "label, score" if label_first else f"score (weight {weight:g})"
            print(
                f"beams {r['beams']} lp {r['length_penalty']} ngram {r['no_repeat_ngram']} "
                f"{'int8 ' if int8 else ''}"
                f"coverage {coverage!s:5} then {order}: BLEU {r['bleu']:.2f} "
                f"(top beam {r['bleu_top_beam']:.2f}) coverage error "
                f"{r['coverage_error']:.3f} (top {r['coverage_error_top_beam']:.3f}) "
                f"accurate {r['accurate']}/{len(rows)}  {r['records_per_s']} records/s",
                flush=True,
            )
        del gen
    if args.out:
        Path(args.out).write_text(json.dumps({"records": len(rows), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
