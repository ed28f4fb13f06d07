"""benchmarks.ingest runs each dump size under each DuckDB memory limit, side by side, with the
same records counted under every limit."""

from __future__ import annotations

import json

from benchmarks import ingest as ingest_bench


def test_each_size_runs_under_each_memory_limit(tmp_path):
    out = tmp_path / "ingest.json"
    ingest_bench.main(["--sizes", "3000", "--memory-limits", "64MB", "512MB",
                       "--out", str(out), "--tmp", str(tmp_path)])  # fmt: skip
    rows = json.loads(out.read_text())["results"]
    assert [(r["triples"], r["memory_limit"]) for r in rows] == [(3000, "64MB"), (3000, "512MB")]
    assert rows[0]["records"] == rows[1]["records"] > 300
    assert all(r["peak_rss_mib"] > 0 and r["triples_per_s"] > 0 for r in rows)
