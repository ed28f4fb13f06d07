"""`datatuner run` with its storage root on S3 (moto's server on 127.0.0.1, through s3fs and Ray
Train's own S3 checkpoint storage): generations, scores, report and models land in the bucket."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fsspec

from ..conftest import REPO
from .conftest import TINY


def test_run_with_storage_on_s3(s3_env, tmp_path):
    root = f"{s3_env}/prod"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"), "PYTHONWARNINGS": "ignore"}
    # scratch models: this test is about where the stages and models land, not their quality
    # (the demo's packaged SmolLM2 and MiniLM made it the suite's slowest test, 5.7 min)
    scratch = ["lm.base=scratch:tiny", "lm.freeze_layers=0", "lm.freeze_embeddings=false",
               "classifier.base=scratch:tiny"]  # fmt: skip
    overrides = [arg for o in [f"storage={root}", *TINY, *scratch] for arg in ("--set", o)]
    cmd = [sys.executable, "-m", "datatuner_core.cli", "run", "configs/demo.yaml",
           "--run-id", "s3run", *overrides]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["generations"] == f"{root}/runs/s3run/generations"
    assert summary["metrics"]["n"] == 30
    fs = fsspec.filesystem("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    bucket = root.removeprefix("s3://")
    found = set(fs.find(bucket))
    for name in ("runs/s3run/report/metrics.json", "runs/s3run/report/report.md",
                 "runs/s3run/generations/_manifest.json", "models/lm/production.json",
                 "models/classifier/production.json", "models/lm/s3run/model.safetensors",
                 "models/lm/s3run/training_card.json"):  # fmt: skip
        assert f"{bucket}/{name}" in found, name
    generations = [p for p in found if "/runs/s3run/generations/part-" in p]
    assert generations
    assert "testing-secret-key" not in proc.stdout + proc.stderr
