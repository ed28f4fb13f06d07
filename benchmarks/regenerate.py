"""Nightly regeneration cost: a run with 1 % of the records changed against a full run, side by
side in one process, same models and data (a JSON Lines corpus of synthetic WebNLG-like triples).

    python -m benchmarks.regenerate --root artifacts --records 1000

`--root` must hold production models (`datatuner run` or `retrain` registers them).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from .common import RESULTS, add_set_flag, description, write_json

PREDICATES = ["country", "city served", "leader name", "location", "runway length"]


def write_corpus(path: Path, n: int, changed: set[int]) -> None:
    rng = random.Random(7)
    lines = []
    for i in range(n):
        value = f"Value {rng.randrange(1000)}"  # drawn for every record: the others stay equal
        if i in changed:
            value = f"Changed {i}"
        triples = [[f"Entity_{i}", rng.choice(PREDICATES), value]]
        lines.append(json.dumps({"id": f"r{i}", "triples": triples}))
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=description(__doc__))
    parser.add_argument("--root", required=True, help="storage root with production models")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--changed", type=float, default=0.01, help="share of records changed")
    parser.add_argument("--out", default=str(RESULTS / "regenerate.json"))
    add_set_flag(parser, "more config overrides, e.g. generate.in_process_max=0 (the changed "
                 "records on Ray Data)")  # fmt: skip
    args = parser.parse_args(argv)

    from prefect.testing.utilities import prefect_test_harness

    from flows.regenerate import regenerate

    work = Path(tempfile.mkdtemp(prefix="bench-regenerate-"))
    corpus = work / "corpus.jsonl"
    overrides = [
        f"storage={args.root}", "dataset.format=jsonl", f"dataset.paths.train={corpus}",
        "generate.beams=5", "generate.max_new_tokens=40", *args.set,
    ]  # fmt: skip
    n_changed = max(1, int(args.records * args.changed))
    results = {"records": args.records, "changed": n_changed, "overrides": args.set}
    with prefect_test_harness(server_startup_timeout=120):
        write_corpus(corpus, args.records, set())
        started = time.perf_counter()
        name = f"name=bench-{work.name}"  # its own snapshots: a root used before has others
        full = regenerate(None, [*overrides, name], "full")
        results["full_seconds"] = time.perf_counter() - started
        results["full_regenerated"] = full["changes"]["regenerate"]
        write_corpus(corpus, args.records, set(range(n_changed)))
        started = time.perf_counter()
        nightly = regenerate(None, [*overrides, name], "nightly")
        results["incremental_seconds"] = time.perf_counter() - started
        results["incremental_regenerated"] = nightly["changes"]["regenerate"]
    results["cost_ratio"] = results["incremental_seconds"] / results["full_seconds"]
    write_json(args.out, results)
    for key, value in results.items():
        print(f"{key:24s} {value}")


if __name__ == "__main__":
    main()
