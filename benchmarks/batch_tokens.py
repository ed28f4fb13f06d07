"""Peak memory of one generation block against `generate.batch_tokens`, side by side.

The longest records of a linearized stage (a dump's tail: long literals) decoded as one block by
a Generator in a fresh process per setting, so that each peak RSS (`ru_maxrss`) is its own:

    python -m benchmarks.batch_tokens --linearized STAGE --lm URI [--classifier URI] \
        --settings none 65536 32768 [--records 64] [--set generate.beams=5 ...] [--json OUT]

The KV cache grows with records x beams x (prompt + new tokens); a block of long records at
`batch_size` alone holds far more tokens than one of short ones.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from .common import ROOT, add_set_flag, description, emit_result

CHILD = """
import glob, json, resource, sys, time
import pyarrow.parquet as pq
from datatuner_core.generator import Generator
args = json.loads(sys.argv[1])
rows = pq.read_table(sorted(glob.glob(args["stage"] + "/part-*.parquet"))).to_pylist()
rows.sort(key=lambda r: len(r["linearized"] or ""))
rows = rows[-args["records"]:]
gen = Generator(args["lm"], args["classifier"], None, rerank=args["classifier"] is not None,
                **args["overrides"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
started = time.perf_counter()
out = gen.generate_rows(rows)
seconds = time.perf_counter() - started
widths = [len(gen._prompt(r["linearized"])[0]) for r in rows]
print(json.dumps({"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  "rss_before_mib": round(before), "seconds": round(seconds, 1),
                  "records": len(out), "with_text": sum(r["text"] is not None for r in out),
                  "prompt_tokens_max": max(widths), "prompt_tokens_min": min(widths)}))
"""


def _value(text: str):
    return json.loads(text) if text[:1] in '-0123456789tfn[{"' else text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--linearized", required=True, help="a linearized stage folder (local)")
    parser.add_argument("--lm", required=True)
    parser.add_argument("--classifier")
    parser.add_argument("--records", type=int, default=64, help="the longest N records")
    parser.add_argument("--settings", nargs="+", default=["none", "65536", "32768"],
                        help="batch_tokens values; none = batch_size alone")  # fmt: skip
    add_set_flag(parser, "generate key=value for the Generator (without the generate. prefix)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key.removeprefix("generate.")] = _value(value)
    rows = []
    for setting in args.settings:
        tokens = None if setting == "none" else int(setting)
        child = {"stage": args.linearized, "lm": args.lm, "classifier": args.classifier,
                 "records": args.records,
                 "overrides": {**overrides, "batch_tokens": tokens}}  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(child)], cwd=ROOT,
                              capture_output=True, text=True, check=False)  # fmt: skip
        if proc.returncode != 0:
            raise SystemExit(f"batch_tokens={setting} failed:\n{proc.stderr[-3000:]}")
        row = {"batch_tokens": tokens, **json.loads(proc.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]
    for row in rows:
        row["peak_ratio"] = round(row["peak_rss_mib"] / base["peak_rss_mib"], 3)
        row["time_ratio"] = round(row["seconds"] / max(base["seconds"], 1e-9), 3)
    result = {"benchmark": "peak memory of a block of long records vs generate.batch_tokens",
              "lm": args.lm, "classifier": args.classifier, "records": args.records,
              "overrides": args.set, "rows": rows}  # fmt: skip
    emit_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
