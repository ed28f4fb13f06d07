"""Fidelity classifiers compared side by side, as rerankers and on each other's held-out pairs.

    .venv/bin/python benchmarks/classifiers.py --run /tmp/q/runs/webnlg-smol-fine \\
        --lm /tmp/q/models/lm/webnlg-smol-fine --classifiers "CLF_A CLF_B" \\
        --heldout "RUN_A/corruptions RUN_B/corruptions" --records 480

(1) Reranking: the beams of `--records` seeded dev records are generated once (the LM does not
depend on the classifier), then each classifier labels every candidate and the preset's
reranking (coverage check, then label tiers, then the LM score) chooses; reports per classifier
dev BLEU, the coverage error of the chosen texts, the predicted labels, texts changed from the
top beam, and chosen texts equal to the first classifier's. (2) With `--heldout`: each
classifier on the validation pairs of each corruption stage (macro-F1 and the share of each
rule's pairs predicted as its label): classifiers trained on different corruption rules each
have their own held-out set, and only the cross table compares them on the same pairs.
Dev only: the test split is refused.
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
sys.path.insert(0, str(ROOT / "benchmarks"))


def rerank_on_dev(args, classifiers: list[str]) -> list[dict]:
    from decoding import sample_rows  # benchmarks/decoding.py: the same seeded dev sample

    from datatuner_core import evaluate
    from datatuner_core.classifier import FidelityScorer
    from datatuner_core.generate import Generator, score_and_choose

    rows = sample_rows(args.run, args.split, args.records, source_order=True)
    gen = Generator(
        args.lm, None, beams=args.beams, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, rerank=False, max_new_tokens_ratio=args.ratio,
        threads=args.threads,
    )  # fmt: skip
    started = time.perf_counter()
    beams = gen.generate_rows(rows)
    print(f"beams of {len(beams)} records: {time.perf_counter() - started:.1f} s", flush=True)
    del gen
    results, first = [], None
    for uri in classifiers:
        out = copy.deepcopy(beams)
        for r in out:
            for c in r["candidates"]:
                c["fidelity_label"] = c["fidelity_score"] = None
        started = time.perf_counter()
        score_and_choose(out, FidelityScorer(uri), rerank=True, coverage=True, batch_size=64,
                         verdict=args.verdict)  # fmt: skip
        seconds = time.perf_counter() - started
        m = evaluate.evaluate_generations(out)
        texts = {r["id"]: r["text"] for r in out}
        first = first or texts
        results.append({
            "classifier": uri, "records": len(out), "bleu": m["bleu"],
            "bleu_top_beam": m["top_beam"]["bleu"],
            "coverage_error": m["coverage"]["chosen"]["error_rate"],
            "coverage_error_top_beam": m["coverage"]["top_beam"]["error_rate"],
            "labels": m["fidelity"]["chosen"]["counts"],
            "changed_by_rerank": m["changed_by_rerank"],
            "same_texts_as_first": sum(texts[k] == v for k, v in first.items()),
            "score_seconds": round(seconds, 1),
        })  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    return results


def cross_heldout(classifiers: list[str], stages: list[str], batch_size: int = 64) -> list[dict]:
    from datatuner_core import stage_reader
    from datatuner_core.classifier import FidelityScorer, evaluate_classifier

    table = []
    for stage in stages:
        rows = stage_reader.read_stage(stage).to_pylist()
        pairs = [r for r in rows if r["split"] == "validation"]
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


def main(argv=None) -> int:
    from decoding import dev_parser, emit_result, parse_dev_args

    from datatuner_core.config import GenerateConfig

    parser = dev_parser(__doc__, records=480)
    parser.add_argument("--classifiers", required=True, help="space-separated classifier URIs")
    parser.add_argument("--heldout", default="", help="space-separated corruption stage URIs")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--ratio", type=float, default=1.0, help="generate.max_new_tokens_ratio")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--verdict", action=argparse.BooleanOptionalAction,
        default=GenerateConfig.model_fields["verdict"].default,
        help="the chosen texts' labels are the fidelity verdict (generate.verdict)",
    )  # fmt: skip
    args = parse_dev_args(parser, argv, "classifiers.py")

    classifiers = args.classifiers.split()
    result = {
        "records": args.records, "split": args.split, "beams": args.beams,
        "verdict": args.verdict,
        "rerank": rerank_on_dev(args, classifiers),
        "heldout": cross_heldout(classifiers, args.heldout.split()),
    }  # fmt: skip
    emit_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
