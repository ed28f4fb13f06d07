"""What several benchmarks share: config overrides on the command line, the result file, timing,
the CLI in a fresh process, and the seeded dev sample the side-by-side benchmarks compare on."""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SHARED_DATA = ROOT.parent / "shared" / "data"


# ----------------------------------------------------------------------------- the command line


def add_set_flag(parser: argparse.ArgumentParser, help: str = "config override, KEY=VALUE"):
    """`--set KEY=VALUE`, repeatable, collected in `args.set`."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)


def set_argv(overrides: list[str]) -> list[str]:
    """`["--set", o1, "--set", o2, ...]`: overrides passed on to the CLI."""
    return [a for o in overrides for a in ("--set", o)]


def description(doc: str | None) -> str:
    """A module docstring's first paragraph, for `--help`."""
    return (doc or "").split("\n\n")[0]


# ----------------------------------------------------------------------------- results and timing


def write_json(path: str | Path, data: dict) -> Path:
    """`data` as indented JSON at `path` (its folder made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def emit_result(result: dict, out: str | Path | None) -> None:
    """Print a benchmark's result as JSON, and write it to `out` when given."""
    print(json.dumps(result, indent=2, default=str))
    if out:
        write_json(out, result)


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    """`fn(*args, **kwargs)` and the wall seconds it took."""
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return value, time.perf_counter() - started


# ----------------------------------------------------------------- the CLI, as a user runs it


def cli_command(*args: str) -> list[str]:
    """The `datatuner` CLI with `args`, in a fresh interpreter of this one's environment."""
    return [sys.executable, "-m", "flows.cli", *args]


def cli_env(prefect_home: str | Path) -> dict:
    """The environment for a CLI child: quiet warnings, its own Prefect home."""
    return {**os.environ, "PYTHONWARNINGS": "ignore", "PREFECT_HOME": str(prefect_home)}


# ----------------------------------------------------------------------------- a run's dev sample


def sample_rows(run: str, split: str, n: int, source_order: bool = False) -> list[dict]:
    """`n` seeded random linearized rows of `split` of a run (the same sample every time), in
    random order, or with `source_order` in the stage's own order (WebNLG's is by triple count)."""
    from datatuner_core.stage_reader import read_stage

    rows = [r for r in read_stage(f"{run}/linearized").to_pylist() if r["split"] == split]
    picked = random.Random(0).sample(range(len(rows)), min(n, len(rows)))
    return [rows[i] for i in (sorted(picked) if source_order else picked)]


def sample_stage(run: str, split: str, n: int, out: str, order: str = "random") -> int:
    """Write a linearized stage of `n` seeded random rows of `split` (`sample_rows`), in random
    order or in the source's own (`order="source"`); returns its row count."""
    from datatuner_core.schema import LINEARIZED
    from datatuner_core.stage_writer import StageWriter

    rows = sample_rows(run, split, n, source_order=order == "source")
    writer = StageWriter(out, "linearize", LINEARIZED)
    for r in rows:
        writer.add_counted(r)
    writer.commit(inputs=[{"uri": f"{run}/linearized"}], fingerprint=f"sample-{split}-{n}")
    return len(rows)


def add_dev_flags(
    parser: argparse.ArgumentParser, records: int, beams: bool = True
) -> argparse.ArgumentParser:
    """The flags every side-by-side benchmark on a run's dev records shares (a benchmark adds its
    own): the run, the LM, the split and sample size, the beam search shape, the result file."""
    parser.add_argument("--run", required=True, help="a run folder (its linearized stage is read)")
    parser.add_argument("--lm", required=True)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--records", type=int, default=records)
    if beams:
        parser.add_argument("--beams", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16, help="records per beam search")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    return parser


def refuse_test_split(args: argparse.Namespace, name: str) -> None:
    """A benchmark that chooses settings compares on dev: the test split is refused."""
    if args.split == "test":
        raise SystemExit(f"{name} compares on dev; the test split is not used to choose")


def same_count(first: dict, rows: list[dict], key=lambda r: r["text"]) -> int:
    """How many of `rows` equal `first` (id -> value) in `key`."""
    return sum(first[r["id"]] == key(r) for r in rows)
