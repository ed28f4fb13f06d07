"""Generation with 1 actor × all cores against N actors × fewer threads, side by side in one run:
the same LM (and classifier), the same seeded records of a split (default validation), the real
Ray Data stage (`generate_stage`) exactly as `generate.actors` runs it.

    .venv/bin/python benchmarks/actors.py --run /tmp/q/runs/webnlg-smol-fine \\
        --lm /tmp/q/models/lm/webnlg-smol-fine --classifier /tmp/q/models/classifier/X \\
        --records 512 --actors "1 2" --beams 3 --batch-size 16

On a small CPU machine the question is whether one torch process with both cores beats two
processes with one core each (beam search on small batches does not keep two threads busy).
Each setting runs `--repeats` times, alternating, so that a drift in the machine's load falls on
all. Reports seconds per setting, the speedup over the first, and how many chosen texts (and
candidate lists) equal the first setting's: 1 and 2 threads sum floats in another order, so a
near-tie between beams may break the other way. Dev only: the test split is refused.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> int:
    from decoding import dev_parser, emit_result, parse_dev_args
    from length_sort import sample_stage  # benchmarks/length_sort.py: the seeded sample stage

    from datatuner_core import evaluate, stage_reader
    from datatuner_core.generate import generate_stage
    from datatuner_core.training import ensure_ray

    parser = dev_parser(__doc__, records=512)
    parser.add_argument("--classifier", default=None, help="rerank with it (else the top beam)")
    parser.add_argument("--actors", default="1 2", help="actor counts; one may repeat: '1 2 1'")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--ratio", type=float, default=None, help="generate.max_new_tokens_ratio")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--order", choices=("random", "source"), default="source")
    args = parse_dev_args(parser, argv, "actors.py")

    counts = [int(a) for a in args.actors.split()]
    work = Path(tempfile.mkdtemp(prefix="bench-actors-"))
    n = sample_stage(args.run, args.split, args.records, str(work / "lin"), args.order)
    ensure_ray()
    seconds: list[list[float]] = [[] for _ in counts]
    rows: list[list[dict]] = [[] for _ in counts]
    for i in range(args.repeats):
        for k, actors in enumerate(counts):
            out = str(work / f"gen-{k}-{actors}-{i}")
            started = time.perf_counter()
            generate_stage(
                str(work / "lin"), out, lm_uri=args.lm, classifier_uri=args.classifier,
                beams=args.beams, max_new_tokens=args.max_new_tokens,
                batch_size=args.batch_size, actors=actors, rerank=args.classifier is not None,
                decoding={"coverage": True, "max_new_tokens_ratio": args.ratio}, split=None,
            )  # fmt: skip
            seconds[k].append(round(time.perf_counter() - started, 1))
            print(f"actors {actors}: {seconds[k][-1]} s", flush=True)
            rows[k] = stage_reader.read_stage(out).to_pylist()
    first_text = {r["id"]: r["text"] for r in rows[0]}
    first_cands = {r["id"]: [c["text"] for c in r["candidates"]] for r in rows[0]}
    mean = [sum(s) / len(s) for s in seconds]
    settings = []
    for k, actors in enumerate(counts):
        metrics = evaluate.evaluate_generations(rows[k])
        settings.append({
            "actors": actors, "seconds": seconds[k], "records": len(rows[k]),
            "records_per_s": round(n / mean[k], 3),
            "speedup_over_first": round(mean[0] / mean[k], 3),
            "bleu": metrics["bleu"],
            "coverage_error": evaluate.headline(metrics)["coverage_error"],
            "same_texts_as_first": sum(first_text[r["id"]] == r["text"] for r in rows[k]),
            "same_candidates_as_first": sum(
                first_cands[r["id"]] == [c["text"] for c in r["candidates"]] for r in rows[k]
            ),
        })  # fmt: skip
    result = {
        "records": n, "split": args.split, "order": args.order, "beams": args.beams,
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "ratio": args.ratio, "classifier": args.classifier, "settings": settings,
    }  # fmt: skip
    emit_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
