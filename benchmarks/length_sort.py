"""Generation with and without `generate.length_sort`, side by side in one run: the same LM,
the same records (a seeded sample of a split, default validation), the real Ray Data stage.

    .venv/bin/python benchmarks/length_sort.py --run /tmp/q/runs/webnlg-smol-fine \\
        --lm /tmp/q/models/lm/webnlg-smol-fine --records 256 --beams 3 --batch-size 16

Each setting runs `--repeats` times, alternating (off, on, off, on, …), so that a drift in the
machine's load falls on both. Reports seconds per setting, the ratio, and how many records'
candidates are identical between the two orders (the sort must change speed, not texts).
No classifier: reranking does not depend on the order.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def sample_stage(run: str, split: str, n: int, out: str, order: str = "random") -> int:
    """Write a linearized stage of `n` seeded random rows of `split`, in random order or in the
    source's own order (`order="source"`: for WebNLG that is by triple count, the files being
    1triples … 7triples, so the input is already roughly sorted by length)."""
    from decoding import sample_rows  # benchmarks/decoding.py: the same seeded dev sample

    from datatuner_core import stage_writer
    from datatuner_core.schema import LINEARIZED

    rows = sample_rows(run, split, n, source_order=order == "source")
    writer = stage_writer.StageWriter(out, "linearize", LINEARIZED)
    for r in rows:
        writer.add_counted(r)
    writer.commit(inputs=[{"uri": f"{run}/linearized"}], fingerprint=f"sample-{split}-{n}")
    return len(rows)


def main(argv=None) -> int:
    from decoding import dev_parser, emit_result

    from datatuner_core import stage_reader
    from datatuner_core.generate import generate_stage
    from datatuner_core.training import ensure_ray

    parser = dev_parser(__doc__, records=256)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--order", choices=("random", "source"), default="random",
        help="the sample's input order: random, or the split's own (WebNLG: by triple count)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-length-sort-"))
    n = sample_stage(args.run, args.split, args.records, str(work / "lin"), args.order)
    ensure_ray()
    seconds: dict[bool, list[float]] = {False: [], True: []}
    candidates: dict[bool, dict] = {}
    for i in range(args.repeats):
        for length_sort in (False, True):
            out = str(work / f"gen-{length_sort}-{i}")
            started = time.perf_counter()
            generate_stage(
                str(work / "lin"), out, lm_uri=args.lm, beams=args.beams,
                max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, rerank=False,
                split=None, length_sort=length_sort,
            )  # fmt: skip
            seconds[length_sort].append(round(time.perf_counter() - started, 1))
            print(f"length_sort {length_sort!s:5}: {seconds[length_sort][-1]} s", flush=True)
            candidates[length_sort] = {
                r["id"]: [c["text"] for c in r["candidates"]]
                for r in stage_reader.read_stage(out).to_pylist()
            }
    same = sum(candidates[True][k] == v for k, v in candidates[False].items())
    off, on = (sum(seconds[k]) / len(seconds[k]) for k in (False, True))
    result = {
        "records": n, "split": args.split, "order": args.order, "beams": args.beams,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens, "seconds_unsorted": seconds[False],
        "seconds_sorted": seconds[True], "records_per_s_unsorted": round(n / off, 3),
        "records_per_s_sorted": round(n / on, 3), "speedup": round(off / on, 3),
        "identical_candidates": same,
    }  # fmt: skip
    emit_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
