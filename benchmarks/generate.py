"""Generation throughput, side by side in one run, same model, machine and WebNLG test inputs:

  (a) the original's way: one record at a time, beam search without a KV cache;
  (b) in-process batched beam search with a KV cache (`Generator.generate_rows`, no reranking);
  (c) the Ray Data stage (`generate_stage`) with 1 and 2 actors (no reranking, as (a) and (b)).

(a) is slow, so it runs on the first `--baseline-records` inputs; records/s is per record, so
the rates compare directly. Targets (issue 4): (c) ≥ 20× (a), and (c) within 1.3× of (b)'s time.

    .venv/bin/python benchmarks/generate.py --lm artifacts/models/lm/<version> --records 500
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def test_inputs(work: Path, n: int) -> tuple[str, list[dict]]:
    from datatuner_core import linearize, stage_reader
    from datatuner_core.ingest import ingest

    ingest("webnlg", str(SHARED / "webnlg" / "test"), str(work / "records"), split="test",
           max_records={"test": n})  # fmt: skip
    linearize.linearize(str(work / "records"), str(work / "lin"))
    return str(work / "lin"), stage_reader.read_stage(str(work / "lin")).to_pylist()


def per_record_without_cache(gen, rows: list[dict]) -> float:
    """(a): the original decoded one input at a time and re-encoded the sequence every step.
    (A speed baseline: states go in as GPT-2's `token_type_ids`, so give it a GPT-2 model.)"""
    import torch

    started = time.perf_counter()
    for row in rows:
        ids, states, _ = gen._prompt(row["linearized"])
        with torch.inference_mode():
            gen.model.generate(
                input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([states]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long), use_cache=False,
                num_beams=gen.beams, num_return_sequences=gen.beams,
                max_new_tokens=gen.max_new_tokens, do_sample=False, early_stopping=True,
                eos_token_id=gen.vocab.eos, pad_token_id=gen.vocab.pad,
            )  # fmt: skip
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", required=True, help="LM version folder (URI)")
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--baseline-records", type=int, default=40)
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generate.json"))
    args = parser.parse_args()

    import torch

    from datatuner_core.generate import generate_stage
    from datatuner_core.generator import Generator
    from datatuner_core.training import ensure_ray

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    lin_uri, rows = test_inputs(work, args.records)
    knobs = dict(beams=args.beams, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    gen = Generator(args.lm, None, rerank=False, threads=2, **knobs)
    results = {"records": len(rows), "machine_cpus": torch.get_num_threads(), **knobs}

    a_rows = rows[: args.baseline_records]
    a = per_record_without_cache(gen, a_rows)
    results["a_per_record_no_cache"] = {"records": len(a_rows), "seconds": a,
                                        "records_per_s": len(a_rows) / a}  # fmt: skip
    started = time.perf_counter()
    gen.generate_rows(rows)
    b = time.perf_counter() - started
    results["b_in_process_batched"] = {"seconds": b, "records_per_s": len(rows) / b}
    ensure_ray()
    for actors in (1, 2):
        out = str(work / f"gen-{actors}")
        started = time.perf_counter()
        generate_stage(lin_uri, out, lm_uri=args.lm, classifier_uri=None, rerank=False,
                       actors=actors, split="test", **knobs)  # fmt: skip
        c = time.perf_counter() - started
        results[f"c_ray_data_{actors}_actors"] = {"seconds": c, "records_per_s": len(rows) / c}
    best_c = max(results[f"c_ray_data_{n}_actors"]["records_per_s"] for n in (1, 2))
    results["ratio_c_over_a"] = best_c / results["a_per_record_no_cache"]["records_per_s"]
    results["ratio_c_time_over_b_time"] = (len(rows) / best_c) / b
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    for key, value in results.items():
        print(f"{key:28s} {value}")


if __name__ == "__main__":
    main()
