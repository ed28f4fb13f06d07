"""Ray set-up: `ensure_ray` starts a local instance (tried again when it times out) whose workers
run the set-up hook, which logs Ray Train's once-a-second cleaner warning once."""

from __future__ import annotations

import logging
import subprocess
import sys

from datatuner_core import ray_setup
from datatuner_core.ray_setup import CLEANER_LOGGER, Once, setup_worker

REPEATED = "Failed to query Ray Train Controller actor state. State API may be unavailable."


def test_the_repeated_warning_passes_once_and_everything_else_always():
    logger = logging.getLogger("test.ray_setup.once")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger.addHandler(handler)
    logger.addFilter(Once("Failed to query Ray Train Controller"))
    try:
        for _ in range(30):
            logger.warning(REPEATED)
            logger.warning("Monitor thread did not exit within %.2f seconds", 2.0)
    finally:
        logger.removeHandler(handler)
    assert records.count(REPEATED) == 1
    assert records.count("Monitor thread did not exit within 2.00 seconds") == 30
    setup_worker()
    assert any(isinstance(f, Once) for f in logging.getLogger(CLEANER_LOGGER).filters)


def _run_driver(script: str, cwd, timeout: int) -> subprocess.CompletedProcess:
    """Run `script` as its own Ray driver (a fresh process: `ensure_ray` starts its own
    instance there) and check it exited cleanly."""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_ensure_ray_runs_the_hook_in_every_worker(tmp_path):
    script = f"""
import logging, ray
from datatuner_core.ray_setup import ensure_ray
ensure_ray(num_cpus=1, include_dashboard=False)

@ray.remote
def filters():
    return [type(f).__name__ for f in logging.getLogger({CLEANER_LOGGER!r}).filters]

print("FILTERS", ray.get(filters.remote()))
ray.shutdown()
"""
    proc = _run_driver(script, tmp_path, timeout=180)
    assert "FILTERS ['Once']" in proc.stdout, proc.stdout[-2000:]


def test_a_training_worker_prints_once(tmp_path):
    """Ray Train's print patch (print -> stdout and the root logger) is off in `ensure_ray`'s
    jobs: a worker's `print` is the builtin one, so each progress line reaches the driver once."""
    script = f"""
import builtins, ray
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer
from datatuner_core.ray_setup import ensure_ray
ensure_ray(num_cpus=1, include_dashboard=False)

def loop():
    with open({str(tmp_path / "print.txt")!r}, "w") as f:
        f.write(builtins.print.__module__ + "." + builtins.print.__name__)

TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1)).fit()
ray.shutdown()
"""
    _run_driver(script, tmp_path, timeout=300)
    assert (tmp_path / "print.txt").read_text() == "builtins.print"


def test_a_local_start_that_times_out_is_tried_again_then_fails_with_one_line(monkeypatch, capsys):
    """On a loaded machine Ray's node can time out during start-up: `ensure_ray` tries a local
    start three times (with its own instance, `address="local"`), then raises one clear error.
    `ray.init` is replaced to raise Ray's own start-up message."""
    import pytest
    import ray

    calls = []

    def failing_init(address=None, **kwargs):
        calls.append(address)
        if len(calls) < 3:
            raise Exception("The current node timed out during startup. This could happen ...")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray_setup, "LOCAL_START_BACKOFF_S", 0.0)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", failing_init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    ray_setup.ensure_ray()  # the third try succeeds
    assert calls == ["local", "local", "local"]
    assert capsys.readouterr().err.count("Ray start-up failed (The current node timed out") == 2

    calls.clear()
    monkeypatch.setattr(ray, "init", lambda address=None, **kw: (calls.append(address), 1 / 0))
    with pytest.raises(ray_setup.RayStartError, match=r"local Ray instance \(3 tries\): division"):
        ray_setup.ensure_ray()
    assert len(calls) == 3

    calls.clear()  # a given cluster address is tried once: it is the user's, not ours to restart
    monkeypatch.setenv("RAY_ADDRESS", "ray://nowhere:10001")
    with pytest.raises(ray_setup.RayStartError, match="ray://nowhere:10001"):
        ray_setup.ensure_ray()
    assert calls == ["ray://nowhere:10001"]
