"""The per-record new-token cap (`generate.max_new_tokens_ratio`) against the fixed budget, side
by side in one run: the same LM and classifier, the same seeded dev records in the split's own
order (WebNLG's: by triple count), in-process `Generator` with reranking as the preset runs it.

    .venv/bin/python benchmarks/new_token_cap.py --run /tmp/q/runs/webnlg-smol-fine \\
        --lm /tmp/q/models/lm/webnlg-smol-fine --classifier /tmp/q/models/classifier/X \\
        --records 400 --settings "64,none 64,1.0 96,1.0"

Each setting is `max_new_tokens,ratio` (ratio `none`: no cap); `--slack` is shared. Reports per
setting seconds, records/s, dev BLEU (cased, multi-reference), the coverage error, and how many
chosen texts equal the first setting's. Dev only: the test split is refused (nothing is tuned
on it).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def parse_settings(text: str) -> list[tuple[int, float | None]]:
    out = []
    for item in text.split():
        tokens, ratio = item.split(",")
        out.append((int(tokens), None if ratio == "none" else float(ratio)))
    return out


def main(argv=None) -> int:
    from decoding import dev_parser, emit_result, parse_dev_args, sample_rows

    from datatuner_core import evaluate
    from datatuner_core.generate import Generator

    parser = dev_parser(__doc__, records=400)
    parser.add_argument("--classifier", default=None, help="rerank with it (else the top beam)")
    parser.add_argument("--settings", default="64,none 64,1.0")
    parser.add_argument("--slack", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parse_dev_args(parser, argv, "new_token_cap.py")

    rows = sample_rows(args.run, args.split, args.records, source_order=True)
    results, first = [], None
    for tokens, ratio in parse_settings(args.settings):
        gen = Generator(
            args.lm, args.classifier, beams=args.beams, max_new_tokens=tokens,
            batch_size=args.batch_size, rerank=args.classifier is not None, coverage=True,
            max_new_tokens_ratio=ratio, max_new_tokens_slack=args.slack, threads=args.threads,
        )  # fmt: skip
        started = time.perf_counter()
        out = gen.generate_rows(rows)
        seconds = time.perf_counter() - started
        metrics = evaluate.evaluate_generations(out)
        texts = {r["id"]: r["text"] for r in out}
        first = first or texts
        results.append({
            "max_new_tokens": tokens, "ratio": ratio, "slack": args.slack,
            "seconds": round(seconds, 1), "records_per_s": round(len(out) / seconds, 3),
            "bleu": metrics["bleu"], "coverage_error": evaluate.headline(metrics)["coverage_error"],
            "same_texts_as_first": sum(texts[k] == v for k, v in first.items()),
        })  # fmt: skip
        print(json.dumps(results[-1]), flush=True)
    result = {
        "records": len(rows), "split": args.split, "beams": args.beams,
        "batch_size": args.batch_size, "classifier": args.classifier, "settings": results,
    }  # fmt: skip
    emit_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
