"""A stranger's first contact, as the README tells it: the CLI run from a directory of the user's
own, with relative paths everywhere (storage root, dataset folders, --input, --output,
--registry), while an unrelated local Ray instance runs on the same machine; the console quiet
(progress and stage counts; Ray's own output in the log file), the JSON summary last.

Before the fix, Ray Train ran each worker in a folder of its own, so the relative storage root
named nothing there (`StageNotFound: no stage at ./store/runs/…/linearized`), and a bare
`ray.init()` joined the unrelated instance (here one with no CPUs, so training waited forever)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from datatuner_core import stage_reader

from ..conftest import SAMPLE, free_port

RUN_TIMEOUT_S = 900

CONFIG = {
    "name": "firstcontact",
    "storage": "./store",
    "dataset": {
        "format": "webnlg",
        "paths": {"train": "data/train", "validation": "data/dev", "test": "data/test"},
        "max_records": {"train": 200, "validation": 30, "test": 24},
    },
    "corrupt": {"per_example": 2},
    # scratch models: this test is about paths, Ray and the console, not the packaged bases
    # (`make demo` runs those); with them it was the suite's slowest test, 176 s
    "lm": {
        "base": "scratch:tiny",
        "freeze_layers": 0,
        "freeze_embeddings": False,
        "max_steps": 8,
        "batch_size": 16,
        "warmup_steps": 2,
    },
    "classifier": {"base": "scratch:tiny", "max_steps": 8, "batch_size": 16, "warmup_steps": 2},
    "generate": {"beams": 2, "max_new_tokens": 12, "batch_size": 8, "actors": 1},
}


def _datatuner(cwd: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "flows.cli", *args]
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def _summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # where `ray start` names its cluster


def _unrelated_ray(tmp_path: Path, env: dict) -> subprocess.Popen:
    """`ray start --head --block` with no CPUs: a job that joins it can never train."""
    port = free_port()
    os.environ["DATATUNER_TEST_UNRELATED_RAY_PORT"] = str(port)
    cmd = [
        shutil.which("ray", path=os.path.dirname(sys.executable)) or "ray",
        "start", "--head", "--block", f"--port={port}", "--num-cpus=0",
        "--include-dashboard=false", f"--dashboard-agent-listen-port={free_port()}",
        "--disable-usage-stats",
    ]  # fmt: skip
    log = open(tmp_path / "unrelated-ray.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = (tmp_path / "unrelated-ray.log").read_text()
        if "Ray runtime started" in text:
            return proc
        assert proc.poll() is None, text[-2000:]
        time.sleep(1)
    raise AssertionError("the unrelated Ray instance did not start in 120 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    # `ray start` leaves its address in /tmp/ray/ray_current_cluster, where a later bare
    # `ray.init()` on this machine would look for it: take the stopped instance's out
    port = os.environ.pop("DATATUNER_TEST_UNRELATED_RAY_PORT", None)
    if port and CURRENT_CLUSTER.exists() and CURRENT_CLUSTER.read_text().strip().endswith(port):
        CURRENT_CLUSTER.unlink()


def test_relative_paths_from_another_directory_beside_an_unrelated_ray(tmp_path):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    for split in ("train", "dev", "test"):
        shutil.copytree(SAMPLE / "webnlg" / split, work / "data" / split)
    (work / "demo.yaml").write_text(yaml.safe_dump(CONFIG))
    facts = [
        {"id": "a", "triples": [["Aarhus_Airport", "cityServed", "Aarhus, Denmark"]]},
        {"id": "b", "triples": [["Alan_Bean", "birthPlace", "Wheeler, Texas"]]},
        {"id": "c", "triples": []},  # quarantined: no triples
    ]
    (work / "facts.jsonl").write_text("".join(json.dumps(f) + "\n" for f in facts))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONWARNINGS": "ignore"}
    env.pop("RAY_ADDRESS", None)

    unrelated = _unrelated_ray(tmp_path, env)
    try:
        run = _datatuner(work, "run", "demo.yaml", "--run-id", "r1", env=env)
        first = _datatuner(
            work, "verbalize", "--input", "facts.jsonl", "--format", "jsonl",
            "--output", "out", "--registry", "store", env=env,
        )  # fmt: skip
        again = _datatuner(
            work, "verbalize", "--input", "store/runs/r1/records", "--output", "out2",
            "--registry", "store", env=env,
        )  # fmt: skip
    finally:
        _stop(unrelated)

    # the pipeline ran from the user's directory: every stage under ./store, found by the workers
    summary = _summary(run)
    root = work / "store"
    assert summary["generations"] == str(root / "runs" / "r1" / "generations")
    assert summary["metrics"]["n"] == 24
    assert (root / "models" / "lm" / "r1" / "model.safetensors").exists()
    assert (root / "models" / "classifier" / "r1" / "model.safetensors").exists()

    # a quiet console: stage counts and progress on stderr, no Ray chatter or colour codes, the
    # JSON last; Ray's output went to the log file named at the start
    assert "\x1b[" not in run.stdout and "\x1b[" not in run.stderr
    assert "RayTrainWorker" not in run.stderr and "TrainController" not in run.stderr
    assert "multiple active Ray instances" not in run.stderr
    assert "ingest written: read 254" in run.stderr  # Prefect's stage line (200 + 30 + 24)
    assert "[generate] 24 / 24 records" in run.stderr
    log = root / "runs" / "r1" / "logs" / "run.log"
    assert f"log file {log}" in run.stderr
    text = log.read_text()
    assert "RayTrainWorker" in text and "[lm]" in text
    assert "multiple active Ray instances" not in text
    assert len(run.stderr.splitlines()) <= 60, run.stderr

    # relative --input / --output / --registry, with the settings recorded at promotion
    pointer = json.loads((root / "models" / "lm" / "production.json").read_text())
    assert pointer["generate"]["beams"] == 2 and pointer["generate"]["max_new_tokens"] == 12
    out = _summary(first)
    assert out["output"] == str(work / "out")
    assert (out["read"], out["written"], out["quarantined"], out["records"]) == (3, 2, 1, 2)
    assert out["generate"]["beams"] == 2  # the recorded setting, not the library default (5)
    for key in ("quarantined_by_reason", "notes", "shards", "skipped"):
        assert key in out
    rows = stage_reader.read_stage(str(work / "out")).to_pylist()
    assert sorted(r["id"] for r in rows) == ["a", "b"]
    assert all(len(r["candidates"]) == 2 for r in rows)

    # a records stage written by `ingest` (here: the run's) is taken as input, no --format
    out2 = _summary(again)
    assert out2["read"] == 254 and out2["records"] == 254
    assert len(stage_reader.read_stage(str(work / "out2"))) == 254
