"""Benchmark the N-Triples ingest on synthetic DBpedia-like dumps of growing size.

For each size, a dump is generated into a temp folder (labels in several languages, IRI
objects, literals with language tags and datatypes, 5-10 triples per subject, lines shuffled
in blocks of 20,000 subjects whose IRIs do not sort in file order, so grouping is real work),
then ingested in a fresh Python subprocess. Measured per size: wall time of the child, the time
inside `ingest()`, triples/s, and the child's peak RSS (the larger of the child's own
`ru_maxrss` and the sum of RSS over the child's process tree, polled every 50 ms with psutil).

    python -m benchmarks.ingest --sizes 100000 1000000 10000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from .common import RESULTS, ROOT, description, write_json

R = "http://dbpedia.org/resource/"
ONT = "http://dbpedia.org/ontology/"
LABEL = "<http://www.w3.org/2000/01/rdf-schema#label>"
TYPE = "<http://www.w3.org/1999/02/22-rdf-syntax-ns#type>"
XSD = "http://www.w3.org/2001/XMLSchema#"
CLASSES = ["Airport", "City", "Person", "Company", "River", "Film", "Book", "Band"]
IRI_PREDICATES = ["birthPlace", "cityServed", "country", "location", "author", "genre", "owner"]
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda omicron sigma".split()
BLOCK_SUBJECTS = 20_000

CHILD = """
import json, resource, sys, time
from datatuner_core.ingest import ingest
t = time.perf_counter()
m = ingest("ntriples", sys.argv[1], sys.argv[2], force=True,
           options={"memory_limit": sys.argv[3]} if len(sys.argv) > 3 else None)
seconds = time.perf_counter() - t
print(json.dumps({"counts": m["counts"], "ingest_s": seconds,
                  "self_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def subject_iri(i: int) -> str:
    # a multiplicative scramble: IRI order is unrelated to generation order
    return f"{R}Entity_{(i * 2654435761) % 4294967291:010d}"


def subject_lines(rng: random.Random, i: int, n_subjects: int) -> list[str]:
    s = f"<{subject_iri(i)}>"
    name = f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()} {i}"
    lines = [f'{s} {LABEL} "{name}"@en .']
    if rng.random() < 0.4:
        lines.append(f'{s} {LABEL} "{name} (de)"@de .')
    lines.append(f"{s} {TYPE} <{ONT}{rng.choice(CLASSES)}> .")
    for _ in range(rng.randint(3, 7)):
        kind = rng.random()
        if kind < 0.45:
            other = subject_iri(rng.randrange(n_subjects))
            lines.append(f"{s} <{ONT}{rng.choice(IRI_PREDICATES)}> <{other}> .")
        elif kind < 0.7:
            lang = rng.choice(["en", "de", "fr"])
            text = " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
            lines.append(f'{s} <{ONT}abstract> "{text} caf\\u00E9 {i}"@{lang} .')
        elif kind < 0.9:
            value = rng.randint(1, 10**7)
            lines.append(f'{s} <{ONT}populationTotal> "{value}"^^<{XSD}nonNegativeInteger> .')
        else:
            lines.append(f'{s} <{ONT}foundingDate> "19{rng.randint(10, 99)}-01-01"^^<{XSD}date> .')
    return lines


def generate(path: Path, n_triples: int, seed: int = 0) -> int:
    """Write about `n_triples` lines (exactly, by trimming the last block); returns the count."""
    rng = random.Random(seed)
    n_subjects = max(1, n_triples * 10 // 75)  # about 7.5 triples per subject
    written, i = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        f.write("# synthetic DBpedia-like dump\n")
        while written < n_triples:
            block: list[str] = []
            for _ in range(BLOCK_SUBJECTS):
                block.extend(subject_lines(rng, i, n_subjects))
                i += 1
                if written + len(block) >= n_triples:
                    break
            block = block[: n_triples - written]
            rng.shuffle(block)
            f.write("\n".join(block))
            f.write("\n")
            written += len(block)
    return written


def measure(dump: Path, out: Path, python: str, memory_limit: str | None = None) -> dict:
    """Run one ingest in a fresh subprocess (DuckDB's `memory_limit`: the reader's default
    when None); wall time and peak RSS of its process tree."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [python, "-c", CHILD, str(dump), str(out), *([memory_limit] if memory_limit else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            rss = 0
            for p in tree:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"ingest child failed ({proc.returncode}):\n{stderr[-4000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    peak = max(peak, result["self_maxrss_kib"] * 1024)
    return {"wall_s": wall, "peak_rss_bytes": peak, **result}


def result_row(dump: Path, lines: int, limit: str | None, m: dict) -> dict:
    counts = m["counts"]
    assert counts["read"] == lines == counts["written"] + counts["quarantined"], counts
    return {
        "triples": lines,
        "memory_limit": limit or "1GB (default)",
        "input_bytes": dump.stat().st_size,
        "records": counts["records"],
        "quarantined": counts["quarantined"],
        "wall_s": round(m["wall_s"], 2),
        "ingest_s": round(m["ingest_s"], 2),
        "triples_per_s": round(lines / m["ingest_s"]),
        "peak_rss_mib": round(m["peak_rss_bytes"] / 2**20, 1),
    }


def print_row(row: dict) -> None:
    print(
        f"{row['triples']:>12,} triples  {row['records']:>10,} records  "
        f"{row['ingest_s']:>8.1f}s  {row['triples_per_s']:>9,}/s  "
        f"peak RSS {row['peak_rss_mib']:>7.1f} MiB  (limit {row['memory_limit']})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    parser.add_argument(
        "--memory-limits",
        nargs="+",
        default=[None],
        metavar="LIMIT",
        help="DuckDB memory limits to run each size with, side by side (dataset.ingest_memory)",
    )
    parser.add_argument("--out", default=str(RESULTS / "ingest.json"))
    parser.add_argument("--python", default=sys.executable, help="interpreter for the children")
    parser.add_argument("--tmp", default=None, help="folder for the dumps and outputs")
    parser.add_argument("--keep", action="store_true", help="keep the generated dumps")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="datatuner-bench-", dir=args.tmp))
    results = []
    try:
        for size in args.sizes:
            dump = work / f"dump-{size}.nt"
            t = time.perf_counter()
            lines = generate(dump, size)
            gen_s = time.perf_counter() - t
            mib = dump.stat().st_size / 2**20
            print(f"generated {lines:,} lines ({mib:.0f} MiB) in {gen_s:.1f}s", flush=True)
            for limit in args.memory_limits:
                m = measure(dump, work / f"out-{size}", args.python, limit)
                results.append(result_row(dump, lines, limit, m))
                print_row(results[-1])
            if not args.keep:
                dump.unlink()
            shutil.rmtree(work / f"out-{size}", ignore_errors=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"{'triples':>12} {'records':>10} {'ingest s':>9} {'wall s':>8} {'triples/s':>10} "
        f"{'peak RSS MiB':>13}"
    )
    for r in results:
        print(
            f"{r['triples']:>12,} {r['records']:>10,} {r['ingest_s']:>9.1f} {r['wall_s']:>8.1f} "
            f"{r['triples_per_s']:>10,} {r['peak_rss_mib']:>13.1f}"
        )
    report = {
        "benchmark": "ingest ntriples",
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
        },
        "results": results,
    }
    print(f"wrote {write_json(args.out, report)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
