"""Small jobs start fast: `datatuner verbalize` of a few records with generation on Ray Data
(`generate.in_process_max=0`) against in the calling process (the default threshold), side by side
in one run, alternating, each a fresh process (the start-up a user waits for is the point).

    python -m benchmarks.small_job --lm LM --classifier CLF --records 8 --repeats 2 \
        --out benchmarks/results/small-job.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .common import add_set_flag, cli_command, cli_env, description, emit_result, set_argv, timed


def verbalize(source: Path, out: Path, lm: str, classifier: str, extra: list[str]) -> dict:
    from datatuner_core.stage_reader import read_stage

    cmd = cli_command("verbalize", "--input", str(source), "--format", "jsonl",
                      "--output", str(out), "--lm", lm, "--classifier", classifier,
                      *set_argv(extra))  # fmt: skip
    proc, seconds = timed(subprocess.run, cmd, capture_output=True, text=True,
                          env=cli_env(out.parent / "home"), timeout=1800)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    manifest = json.loads((out / "_manifest.json").read_text())
    texts = {row["id"]: row["text"] for row in read_stage(str(out)).to_pylist()}
    return {"seconds": round(seconds, 1), "engine": manifest["extra"].get("engine"),
            "generate_s": manifest["timings"].get("seconds"), "texts": texts}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--lm", required=True)
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--records", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    add_set_flag(parser, "more config overrides")
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
    emit_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
