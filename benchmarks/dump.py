"""End to end on a knowledge-graph dump: synthetic N-Triples -> `datatuner verbalize`.

For each size, a DBpedia-like dump of that many subjects (the generator of benchmarks.ingest:
labels in several languages, IRI objects, typed and language-tagged literals, lines shuffled in
blocks) plus the bad lines a real dump has (one in 500: a truncated line, a missing terminator,
an unclosed IRI, a literal with a broken escape) is verbalized by the CLI in a fresh process, as
a user runs it. Measured per size:

- wall time, records generated per second (over the wall time and over the generate stage) and
  per core;
- peak private memory (RSS less shared pages: Ray maps its object store into every worker) of
  the driver (the `datatuner` process) and of the rest of its process tree: Ray's workers and
  actors (largest one and sum) and the rest (Ray's own daemons, Prefect's server), polled every
  0.2 s, and a trace of them (the peak of every `--trace-s` seconds) with the peaks of the first
  and the second half of the run (memory that grows with the records done is higher in the
  second; memory that is flat is not);
- the share of the wall time per stage: ingest, linearize and generate from the manifests'
  timings, `write` (the generate stage writing its blocks) from its manifest, and the rest
  (start-up of Prefect and Ray, model loading);
- `read == written + quarantined` at ingest, and one generation per ingested record;
- the projection for 10^7 subjects on 1, 4 and 16 nodes like this one (generation scales with
  the actors; ingest and linearize run once, on the driver's node).

    python -m benchmarks.dump --lm URI --classifier URI --subjects 1000 10000 \
        [--set generate.beams=2 ...] [--variant window=generate.sort_window=10000 ...] \
        [--json benchmarks/results/dump-tiny.json]

`--variant NAME=KEY=VALUE` (repeatable; one variant may take several keys, NAME=K1=V1,K2=V2):
each size also runs with these overrides on top of `--set`, right after the plain run on the
same dump, and the rows carry the variant's name; the growth of each variant's peak memory
from the smallest size to each larger one is in `growth`.

Models: any LM / classifier versions, e.g. those of `datatuner run --config
configs/webnlg-tiny.yaml` (the `tiny` preset) or of the smol preset (`--subjects 200`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from .common import ROOT, add_set_flag, cli_command, cli_env, description, set_argv, write_json
from .ingest import BLOCK_SUBJECTS, subject_lines

BAD_EVERY = 500
BAD_LINES = [
    "<http://dbpedia.org/resource/Truncated> <http://dbpedia.org/ontology/location>",
    '<http://dbpedia.org/resource/NoDot> <http://www.w3.org/2000/01/rdf-schema#label> "x"@en',
    "<http://dbpedia.org/resource/Open <http://dbpedia.org/ontology/owner> <http://x.org/y> .",
    '<http://dbpedia.org/resource/Esc> <http://dbpedia.org/ontology/abstract> "bad \\q esc" .',
]


def write_dump(path: Path, n_subjects: int, seed: int = 0) -> dict:
    """A dump of `n_subjects` subjects with a bad line every BAD_EVERY lines."""
    rng = random.Random(seed)
    lines_written = bad = 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("# synthetic DBpedia-like dump with bad lines\n")
        for start in range(0, n_subjects, BLOCK_SUBJECTS):
            block: list[str] = []
            for i in range(start, min(n_subjects, start + BLOCK_SUBJECTS)):
                block.extend(subject_lines(rng, i, n_subjects))
            rng.shuffle(block)
            for line in block:
                f.write(line + "\n")
                lines_written += 1
                if lines_written % BAD_EVERY == 0:
                    f.write(BAD_LINES[bad % len(BAD_LINES)] + "\n")
                    bad += 1
    return {"subjects": n_subjects, "lines": lines_written + bad, "bad_lines": bad,
            "bytes": path.stat().st_size}  # fmt: skip


def _kind(proc: psutil.Process, driver: int) -> str:
    if proc.pid == driver:
        return "driver"
    try:
        name = " ".join(proc.cmdline()[:3])
    except psutil.Error:
        return "other"
    return "ray_workers" if "ray::" in name or "default_worker.py" in name else "other"


def run(cmd: list[str], env: dict, log: Path, trace_s: float = 10.0) -> dict:
    """Run the CLI; peak RSS by kind over its process tree, polled every 0.2 s, and a trace:
    every `trace_s` seconds the peak of each kind since the last trace point."""
    started = time.perf_counter()
    trace: list[dict] = []
    window = {"driver": 0, "ray_workers_sum": 0, "ray_worker_max": 0, "other": 0}
    last = started
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        peak = {"driver": 0, "ray_workers_sum": 0, "ray_worker_max": 0, "other": 0}
        while proc.poll() is None:
            now = {"driver": 0, "ray_workers_sum": 0, "ray_worker_max": 0, "other": 0}
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                tree = []
            for p in tree:
                try:
                    info = p.memory_info()
                except psutil.Error:
                    continue
                # private memory: Ray maps its shared object store into every worker, and
                # those pages would be counted once per process in the RSS
                rss = info.rss - getattr(info, "shared", 0)
                kind = _kind(p, proc.pid)
                if kind == "ray_workers":
                    now["ray_workers_sum"] += rss
                    now["ray_worker_max"] = max(now["ray_worker_max"], rss)
                else:
                    now[kind] += rss
            peak = {k: max(peak[k], now[k]) for k in peak}
            window = {k: max(window[k], now[k]) for k in window}
            if time.perf_counter() - last >= trace_s:
                last = time.perf_counter()
                trace.append({"t": round(last - started, 1),
                              **{k: round(v / 2**20, 1) for k, v in window.items()}})  # fmt: skip
                window = dict.fromkeys(window, 0)
            time.sleep(0.2)
    wall = time.perf_counter() - started
    text = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"verbalize failed ({proc.returncode}), see {log}:\n{text[-3000:]}")
    summary = json.loads(next(ln for ln in reversed(text.splitlines()) if ln.startswith("{")))
    return {"wall_s": wall, "peak_rss_mib": {k: round(v / 2**20, 1) for k, v in peak.items()},
            "summary": summary, "trace": trace}  # fmt: skip


def halves(trace: list[dict], wall: float) -> dict:
    """The peak of each kind over the first and the second half of the run: memory that grows
    with the records done is higher in the second half; memory that is flat is not."""
    out = {}
    for name, keep in (("first", lambda t: t <= wall / 2), ("second", lambda t: t > wall / 2)):
        points = [p for p in trace if keep(p["t"])]
        out[name] = {k: max((p[k] for p in points), default=0.0)
                     for k in ("driver", "ray_worker_max", "ray_workers_sum")}  # fmt: skip
    return out


def stage_seconds(out: Path) -> dict:
    def manifest(path: Path) -> dict:
        return json.loads((path / "_manifest.json").read_text())

    gen = manifest(out)
    return {
        "ingest": manifest(out / "_stages" / "records")["timings"]["seconds"],
        "linearize": manifest(out / "_stages" / "linearized")["timings"]["seconds"],
        "generate": gen["timings"]["seconds"],
        "write": (gen.get("extra") or {}).get("write_s", 0.0),
        "ingest_counts": manifest(out / "_stages" / "records")["counts"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--lm", required=True)
    parser.add_argument("--classifier", required=True)
    parser.add_argument("--subjects", type=int, nargs="+", default=[1000, 10000])
    add_set_flag(parser)
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE",
        help="also run each size with these overrides (see the module doc)",
    )
    parser.add_argument("--trace-s", type=float, default=10.0,
                        help="seconds between the points of each run's memory trace")  # fmt: skip
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--keep", help="keep the dumps and outputs under this folder")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    work = Path(args.keep or tempfile.mkdtemp(prefix="dump-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = cli_env(work / "prefect")
    variants = [("plain", [])]
    for spec in args.variant:
        name, _, settings = spec.partition("=")
        if not name or "=" not in settings:
            parser.error(f"--variant expects NAME=KEY=VALUE, got {spec!r}")
        variants.append((name, settings.split(",")))
    rows, shapes = [], {}
    for n, (variant, extra) in ((n, v) for n in args.subjects for v in variants):
        dump = work / f"dump-{n}.nt"
        if n not in shapes:  # one dump per size, verbalized by every variant
            shapes[n] = write_dump(dump, n)
        shape = shapes[n]
        out = work / f"out-{n}-{variant}"
        cmd = cli_command("verbalize", "--input", str(dump), "--format", "ntriples",
                          "--output", str(out), "--lm", args.lm, "--classifier", args.classifier,
                          *set_argv([*args.set, *extra]))  # fmt: skip
        result = run(cmd, env, work / f"verbalize-{n}-{variant}.log", args.trace_s)
        stages = stage_seconds(out)
        counts = stages.pop("ingest_counts")
        # ingest counts lines (triples); a subject becomes one record per max_triples triples
        assert counts["read"] == counts["written"] + counts["quarantined"], counts
        generated = result["summary"]["generations"]
        assert generated == counts["records"], (generated, counts)
        wall = result["wall_s"]
        named = stages["ingest"] + stages["linearize"] + stages["generate"]
        share = {k: round(v / wall, 3) for k, v in stages.items()}
        share["generate"] = round((stages["generate"] - stages["write"]) / wall, 3)
        share["startup_and_rest"] = round(max(0.0, wall - named) / wall, 3)
        gen_rate = generated / max(stages["generate"], 1e-9)
        row = {
            "variant": variant,
            "overrides": extra,
            **shape,
            "records": generated,
            "triples_read": counts["read"],
            "quarantined": counts["quarantined"],
            "quarantined_by_reason": counts["quarantined_by_reason"],
            "wall_s": round(wall, 1),
            "records_per_s_wall": round(generated / wall, 2),
            "records_per_s_generate": round(gen_rate, 2),
            "records_per_s_per_core": round(gen_rate / cores, 2),
            "stage_s": {k: round(v, 1) for k, v in stages.items()},
            "share_of_wall": share,
            "peak_rss_mib": result["peak_rss_mib"],
            "peak_rss_mib_by_half": halves(result["trace"], wall),
            "rss_trace_mib": result["trace"],
        }
        ingest_rate = n / max(stages["ingest"] + stages["linearize"], 1e-9)  # subjects/s
        per_subject = generated / n  # records per subject (max_triples splits large ones)
        row["projection_1e7_subjects_h"] = {
            f"{nodes}_nodes": round(
                (1e7 / ingest_rate + 1e7 * per_subject / (gen_rate * nodes)) / 3600, 1
            )
            for nodes in (1, 4, 16)
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    growth = {}
    for variant, _ in variants:
        mine = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["subjects"])
        base = mine[0]
        growth[variant] = {
            f"{base['subjects']}->{r['subjects']}": {
                k: round(r["peak_rss_mib"][k] / max(base["peak_rss_mib"][k], 1e-9), 2)
                for k in ("driver", "ray_worker_max", "ray_workers_sum")
            }
            for r in mine[1:]
        }
    result = {"benchmark": "dump -> verbalize", "cores": cores, "overrides": args.set,
              "lm": args.lm, "classifier": args.classifier, "rows": rows,
              "growth": growth}  # fmt: skip
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
