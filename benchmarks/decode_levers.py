"""The LM decoder's kernel-level levers side by side: time, peak memory and texts.

One `Generator` (no Ray, no classifier: the LM's decoding alone) verbalizes the same records in
a fresh process per setting, the settings alternating over `--repeats` rounds, so each setting's
peak RSS is its own and the machine's drift falls on all of them alike:

- `before`: the prompt's forward computes the logits of every prompt position (a [records,
  tokens, vocab] tensor of which the search reads the last column) and GPT-2's `gelu_new` runs
  as seven elementwise ops;
- `last_logits`: the prompt's forward computes the last position's logits only
  (`logits_to_keep=1`, as `transformers`' `generate` does);
- `fused_gelu`: that and the fused tanh GELU (`generator.fuse_tanh_gelu`);
- `now`: those and the beam search's own KV cache (`beam_search._GrowingLayer`: a token written
  in place, the reorder copying the generated part only) instead of `transformers`'
  `DynamicCache` (two copies of the whole cache per step): the shipped decoder.

Texts are compared with `now`'s first round (equal up to float rounding: a near tie can break
the other way).

    python -m benchmarks.decode_levers --lm URI --input LINEARIZED_STAGE [--records 2048] \\
        [--set generate.beams=1 ...] [--json benchmarks/results/decode-levers-dump-tiny.json]

A dump's linearized stage: `datatuner ingest --format ntriples ...` then `datatuner linearize`
(or the work folder `python -m benchmarks.dump` leaves); any linearized stage serves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import yaml

from .common import ROOT, add_set_flag, description, write_json

SETTINGS = ("before", "last_logits", "fused_gelu", "now")

CHILD = """
import hashlib, json, resource, sys, time
from pathlib import Path
import pyarrow.parquet as pq
import datatuner_core.beam_search as bs
import datatuner_core.generator as g
args = json.loads(sys.argv[1])
setting = args["setting"]
if setting == "before":
    bs._last_logits_only = lambda model: {}
if setting in ("before", "last_logits"):
    g.fuse_tanh_gelu = lambda model: 0
if setting != "now":
    from transformers import DynamicCache
    bs._growing_cache = lambda model, capacity, rows: DynamicCache(config=model.config)
gen = g.Generator(args["lm"], None, args["section"], threads=args["threads"])
files = sorted(Path(args["input"]).rglob("part-*.parquet"))
rows = [r for f in files for r in pq.read_table(f).to_pylist()]
rows = rows[:: max(1, len(rows) // args["records"])][: args["records"]]
gen.generate_rows(rows[:16])  # warm-up: first-call allocations out of the timing
t0 = time.perf_counter()
block = args["block"]
out = [r for s in range(0, len(rows), block) for r in gen.generate_rows(rows[s : s + block])]
seconds = time.perf_counter() - t0
print(json.dumps({"records": len(rows), "seconds": round(seconds, 2),
                  "records_per_s": round(len(rows) / seconds, 2),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "fused_gelu_modules": gen.fused_gelu,
                  "texts": [r["text"] for r in out]}))
"""


def run_one(args, section: dict, setting: str) -> dict:
    payload = {"lm": args.lm, "input": args.input, "records": args.records, "block": args.block,
               "threads": args.threads, "section": section, "setting": setting}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(payload)], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"decode_levers: the {setting} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Per setting: median seconds, records/s, peak RSS, texts equal to `now`'s first round;
    and the speed-ups of `now` and `last_logits` over `before`."""
    ref = runs["now"][0]["texts"]
    out: dict = {}
    for name, rounds in runs.items():
        secs = sorted(r["seconds"] for r in rounds)
        median = secs[len(secs) // 2] if len(secs) % 2 else sum(secs[len(secs) // 2 - 1 :][:2]) / 2
        out[name] = {
            "seconds": [r["seconds"] for r in rounds],
            "median_seconds": round(median, 2),
            "records_per_s": round(rounds[0]["records"] / median, 2),
            "peak_rss_mib": [r["peak_rss_mib"] for r in rounds],
            "fused_gelu_modules": rounds[0]["fused_gelu_modules"],
            "texts_equal_to_now": sum(a == b for a, b in zip(rounds[0]["texts"], ref)),
        }
    base = out["before"]["median_seconds"]
    for name in SETTINGS[1:]:
        out[name]["speedup_over_before"] = round(base / out[name]["median_seconds"], 3)
        out[name]["peak_rss_over_before"] = round(
            min(out[name]["peak_rss_mib"]) / min(out["before"]["peak_rss_mib"]), 3
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=description(__doc__))
    ap.add_argument("--lm", required=True)
    ap.add_argument("--input", required=True, help="a linearized stage folder (local)")
    ap.add_argument("--records", type=int, default=2048, help="spread over the stage")
    ap.add_argument("--block", type=int, default=256, help="records per generate_rows call")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    add_set_flag(ap, "a generate.* key, e.g. generate.beams=1")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    section = {"beams": 1, "max_new_tokens": 8, "batch_size": 64, "rerank": False}
    for item in args.set:
        key, _, value = item.partition("=")
        section[key.removeprefix("generate.")] = yaml.safe_load(value)
    started = time.perf_counter()
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name in SETTINGS:
            runs[name].append(run_one(args, section, name))
            print(f"{name}: {runs[name][-1]['seconds']} s, peak {runs[name][-1]['peak_rss_mib']} "
                  "MiB", file=sys.stderr, flush=True)  # fmt: skip
    result = {
        "benchmark": "decode_levers",
        "command": "python -m benchmarks.decode_levers " + " ".join(argv or sys.argv[1:]),
        "lm": args.lm,
        "input": args.input,
        "threads": args.threads,
        "section": section,
        "settings": summarize(runs),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        write_json(args.json, result)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
