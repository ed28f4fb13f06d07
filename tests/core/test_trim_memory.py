"""`generate.trim_memory`: glibc keeps the memory a batch freed in its arenas (a generator's
private memory stays at its longest batch's peak); `release_freed_memory` hands it back to the
OS, and the Generator does so after every batch unless told not to."""

from __future__ import annotations

import subprocess
import sys

from datatuner_core import generator as generator_module
from datatuner_core.generator import Generator

from .test_generate import ROWS
from .test_generate import llama_dir as llama_dir  # noqa: F401 - the module-scoped fixture

FRAGMENT = """
import psutil, torch
from datatuner_core.generator import release_freed_memory
p = psutil.Process()
keep = [torch.ones(1 << 14) for _ in range(4000)]  # 64 KiB each: heap blocks, not mmapped
before = p.memory_full_info().uss / 2**20
del keep[0::2]  # 125 MiB of holes between live blocks: nothing at the heap's top to give back
freed = p.memory_full_info().uss / 2**20
released = release_freed_memory()
after = p.memory_full_info().uss / 2**20
print(before, freed, after, released)
"""


def test_freed_heap_memory_stays_private_until_released():
    proc = subprocess.run([sys.executable, "-c", FRAGMENT], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    before, freed, after, released = proc.stdout.split()
    before, freed, after = float(before), float(freed), float(after)
    assert released == "True"  # glibc, as on every Linux machine this project targets
    assert freed > before - 20  # freeing alone gives (almost) nothing back
    assert freed - after > 80  # most of the 125 MiB of holes go back to the OS


def test_the_generator_releases_after_every_batch_unless_told_not_to(llama_dir, monkeypatch):  # noqa: F811
    calls = []
    monkeypatch.setattr(generator_module, "release_freed_memory", lambda: calls.append(1))
    gen = Generator(llama_dir, None, beams=1, max_new_tokens=4, rerank=False, threads=1)
    rows = gen.generate_rows(ROWS)
    gen.generate_rows(ROWS[:1])
    assert len(calls) == 2 and [r["id"] for r in rows] == ["a", "b", "c"]
    off = Generator(llama_dir, None, beams=1, max_new_tokens=4, rerank=False, trim_memory=False)
    assert [r["text"] for r in off.generate_rows(ROWS)] == [r["text"] for r in rows]
    assert len(calls) == 2


def test_the_side_by_side_benchmark_runs_both_settings_on_the_same_rows(llama_dir, tmp_path):  # noqa: F811
    """benchmarks.trim_memory on a 40-record stage in blocks of 16: a private-memory trace per
    block for each setting, and the ratios."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks import trim_memory

    stage = tmp_path / "linearized"
    stage.mkdir()
    rows = [dict(ROWS[i % 2], id=f"r{i}") for i in range(40)]
    pq.write_table(pa.Table.from_pylist(rows), stage / "part-0.parquet")
    out = tmp_path / "trim.json"
    argv = ["--lm", llama_dir, "--input", str(stage), "--block", "16"]
    result = trim_memory.main([*argv, "--set", "generate.max_new_tokens=4", "--json", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["section"]["max_new_tokens"] == 4
    for run in result["runs"].values():
        assert run["records"] == 40 and len(run["uss_mib"]) == 3  # 16 + 16 + 8
        assert run["peak_mib"] == max(run["uss_mib"]) > 0
    assert result["peak_ratio_no_trim_over_trim"] > 0
