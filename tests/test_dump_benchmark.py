"""benchmarks.dump's memory trace: the peak of each kind per trace window, and the peaks of the
run's two halves, which tell memory that grows with the work done from memory that is flat."""

from __future__ import annotations

import os
import sys

from benchmarks.dump import halves, run

GROWS = """
import json, time
keep = []
for _ in range(12):
    keep.append(bytearray(16 << 20))  # 16 MiB more every 0.25 s, touched: private pages
    time.sleep(0.25)
print(json.dumps({"done": len(keep)}))
"""


def test_the_trace_shows_a_driver_that_grows_through_the_run(tmp_path):
    found = run([sys.executable, "-c", GROWS], dict(os.environ), tmp_path / "log", trace_s=0.5)
    assert found["summary"] == {"done": 12}
    trace = found["trace"]
    assert len(trace) >= 4 and [p["t"] for p in trace] == sorted(p["t"] for p in trace)
    assert found["peak_rss_mib"]["driver"] >= 12 * 16
    split = halves(trace, found["wall_s"])
    assert split["second"]["driver"] - split["first"]["driver"] > 48  # about 96 MiB more


def test_halves_of_a_flat_trace_are_equal():
    trace = [{"t": t, "driver": 300.0, "ray_worker_max": 900.0, "ray_workers_sum": 1800.0}
             for t in range(10, 110, 10)]  # fmt: skip
    split = halves(trace, 100.0)
    assert split["first"] == split["second"] == {
        "driver": 300.0, "ray_worker_max": 900.0, "ray_workers_sum": 1800.0,
    }  # fmt: skip
    assert halves([], 10.0)["second"]["driver"] == 0.0
