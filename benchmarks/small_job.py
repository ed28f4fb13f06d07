"""Small jobs start fast: `datatuner verbalize` of a few records with generation on Ray Data
(`generate.in_process_max=0`) against in the calling process (the default threshold), side by side
in one run, alternating, each a fresh process (the start-up a user waits for is the point).

    .venv/bin/python benchmarks/small_job.py --lm LM --classifier CLF --records 8 --repeats 2 \
        --out benchmarks/results/small-job.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def verbalize(source: Path, out: Path, lm: str, classifier: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "flows.cli", "verbalize", "--input", str(source),
           "--format", "jsonl", "--output", str(out), "--lm", lm, "--classifier", classifier,
           *[a for s in extra for a in ("--set", s)]]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PREFECT_HOME": str(out.parent / "home")}
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.time() - started
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    manifest = json.loads((out / "_manifest.json").read_text())
    texts = {}
    from datatuner_core import stage_reader

    for row in stage_reader.read_stage(str(out)).to_pylist():
        texts[row["id"]] = row["text"]
    return {"seconds": round(seconds, 1), "engine": manifest["extra"].get("engine"),
            "generate_s": manifest["timings"].get("seconds"), "texts": texts}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", required=True)
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--records", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="more config overrides")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="small-job-"))
    source = work / "facts.jsonl"
    source.write_text("".join(
        json.dumps({"id": f"f{i}", "triples": [[f"Entity_{i}", "country", f"Land {i % 7}"]]})
        + "\n" for i in range(args.records)
    ))  # fmt: skip
    systems = {"ray_data": ["generate.in_process_max=0"], "in_process": []}
    runs: dict[str, list[dict]] = {name: [] for name in systems}
    for k in range(args.repeats):
        for name, extra in systems.items():
            found = verbalize(source, work / f"{name}-{k}", args.lm, args.classifier,
                              [*args.set, *extra])  # fmt: skip
            runs[name].append(found)
            print(f"{name} #{k + 1}: {found['seconds']} s ({found['engine']})", file=sys.stderr)
    same = all(r["texts"] == runs["ray_data"][0]["texts"] for rs in runs.values() for r in rs)
    result = {
        "records": args.records,
        "repeats": args.repeats,
        "median_s": {n: statistics.median(r["seconds"] for r in rs) for n, rs in runs.items()},
        "runs_s": {n: [r["seconds"] for r in rs] for n, rs in runs.items()},
        "engines": {n: sorted({r["engine"] for r in rs}) for n, rs in runs.items()},
        "same_texts": same,
    }
    result["speedup"] = round(result["median_s"]["ray_data"] / result["median_s"]["in_process"], 2)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
