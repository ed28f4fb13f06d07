"""deployments/prefect.yaml against a real Prefect server: deploy all, start a process worker,
run the `verbalize` deployment, and see the flow run complete with its output written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from datatuner_core import stage_reader

from ..conftest import REPO, free_port

PREFECT = str(Path(sys.executable).parent / "prefect")


def test_prefect_yaml_declares_the_deployments():
    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert set(by_name) == {"nightly", "retrain", "verbalize", "pipeline"}
    nightly = by_name["nightly"]["schedules"][0]
    assert nightly["cron"] == "0 2 * * *" and nightly["timezone"] == "Europe/Berlin"
    for deployment in by_name.values():
        assert deployment["work_pool"]["name"] == "datatuner-pool"
        path, _, name = deployment["entrypoint"].partition(":")
        assert (REPO / path).exists() and f"def {name}(" in (REPO / path).read_text()


def _wait_health(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited: {proc.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise RuntimeError("prefect server did not answer /api/health")


def _prefect(env, *args, timeout=180):
    return subprocess.run([PREFECT, *args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_deploy_worker_and_run(trained_run, tmp_path):
    root, _ = trained_run
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "DATATUNER_HOME": str(REPO),
        "PREFECT_CLI_PROMPT": "false",
    }
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={k: v for k, v in env.items() if k != "PREFECT_API_URL"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    worker = None
    try:
        _wait_health(api, server)
        created = _prefect(env, "work-pool", "create", "datatuner-pool", "--type", "process")
        assert created.returncode == 0, created.stdout + created.stderr
        deployed = _prefect(env, "--no-prompt", "deploy", "--all",
                            "--prefect-file", "deployments/prefect.yaml")  # fmt: skip
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        listed = _prefect(env, "deployment", "ls")
        for name in ("nightly", "retrain", "verbalize", "pipeline"):
            assert name in listed.stdout
        worker = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", "datatuner-pool"],
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        source = tmp_path / "in.jsonl"
        source.write_text(json.dumps({"id": "x1", "triples": [["A_B", "cityServed", "C"]]}) + "\n")
        out = tmp_path / "out"
        params = {
            "input_uri": str(source), "fmt": "jsonl", "output": str(out),
            "lm": str(root / "models" / "lm" / "run1"),
            "classifier": str(root / "models" / "classifier" / "run1"),
            "overrides": ["generate.beams=2", "generate.max_new_tokens=8"],
        }  # fmt: skip
        run = _prefect(
            env, "deployment", "run", "verbalize/verbalize", "--params", json.dumps(params),
            "--watch", "--watch-timeout", "600", timeout=660,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "Completed" in run.stdout
        rows = stage_reader.read_stage(str(out)).to_pylist()
        assert [r["id"] for r in rows] == ["x1"] and rows[0]["text"] is not None
    finally:
        for proc in (worker, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
