"""A generator's private memory over a dump, with and without `generate.trim_memory`, side by side.

One `Generator` in a fresh process (no Ray: the actor's work alone) verbalizes a linearized stage
in blocks of `--block` records, in the length order the generate stage gives them (short to
long), and records its private memory (USS: RSS less shared pages) after every block. The two
processes run one after the other on the same rows with the same models; the only difference is
`generate.trim_memory`.

    python -m benchmarks.trim_memory --lm URI --input LINEARIZED_STAGE \
        [--set generate.beams=1 ...] [--json benchmarks/results/trim-memory-dump-1e4.json]

A linearized stage of a dump: `python -m benchmarks.dump` leaves one per size under its work
folder, or `datatuner ingest --format ntriples ...` then `datatuner linearize ...`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import yaml

from .common import ROOT, add_set_flag, description, write_json

CHILD = """
import json, sys, time
from pathlib import Path
import psutil, pyarrow.parquet as pq
from datatuner_core.config import GenerateConfig
from datatuner_core.generator import Generator
args = json.loads(sys.argv[1])
section = GenerateConfig(**args["section"])
gen = Generator(args["lm"], args["classifier"], section, threads=args["threads"])
files = sorted(Path(args["input"]).glob("part-*.parquet"))
rows = [r for f in files for r in pq.read_table(f).to_pylist()]
rows.sort(key=lambda r: len(r.get("linearized") or ""))
proc, trace, t0 = psutil.Process(), [], time.perf_counter()
for start in range(0, len(rows), args["block"]):
    gen.generate_rows(rows[start : start + args["block"]])
    trace.append(round(proc.memory_full_info().uss / 2**20, 1))
print(json.dumps({"records": len(rows), "seconds": round(time.perf_counter() - t0, 3),
                  "uss_mib": trace}))
"""


def run_one(args, section: dict) -> dict:
    payload = {"lm": args.lm, "classifier": args.classifier, "input": args.input,
               "block": args.block, "threads": args.threads, "section": section}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(payload)], cwd=ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    trace = result["uss_mib"]
    result.update(first_mib=trace[0], peak_mib=max(trace), last_mib=trace[-1],
                  peak_over_first=round(max(trace) / trace[0], 3))  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=description(__doc__))
    ap.add_argument("--lm", required=True)
    ap.add_argument("--classifier", default=None)
    ap.add_argument("--input", required=True, help="a linearized stage folder (local)")
    ap.add_argument("--block", type=int, default=256, help="records per generate_rows call")
    ap.add_argument("--threads", type=int, default=1)
    add_set_flag(ap, "a generate.* key, e.g. generate.beams=1")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    section = {"beams": 1, "max_new_tokens": 8, "batch_size": 64,
               "rerank": args.classifier is not None}  # fmt: skip
    for item in args.set:
        key, _, value = item.partition("=")
        section[key.removeprefix("generate.")] = yaml.safe_load(value)
    result: dict = {
        "benchmark": "trim_memory",
        "lm": args.lm,
        "classifier": args.classifier,
        "input": args.input,
        "block": args.block,
        "section": section,
        "runs": {},
    }
    started = time.perf_counter()
    for name, trim in (("trim", True), ("no_trim", False)):
        result["runs"][name] = run_one(args, {**section, "trim_memory": trim})
        print(f"{name}: peak {result['runs'][name]['peak_mib']} MiB", file=sys.stderr, flush=True)
    runs = result["runs"]
    result["peak_ratio_no_trim_over_trim"] = round(
        runs["no_trim"]["peak_mib"] / runs["trim"]["peak_mib"], 3
    )
    result["seconds_ratio_trim_over_no_trim"] = round(
        runs["trim"]["seconds"] / runs["no_trim"]["seconds"], 3
    )
    result["wall_s"] = round(time.perf_counter() - started, 1)
    if args.json:
        write_json(args.json, result)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    return result


if __name__ == "__main__":
    main()
