"""Reliability: SIGKILL during generation then re-run; an S3 endpoint that goes away for a few
seconds; credentials kept out of logs, manifests and artifacts; two runs at once on one root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import fsspec

from datatuner_core import storage

from ..conftest import REPO, TcpProxy

SECRET_ID, SECRET_KEY = "AKIDSECRETIDVALUE123", "very-secret-key-value-456"


def _jsonl(path: Path, n: int, prefix: str = "r") -> Path:
    rows = [
        {"id": f"{prefix}{i}", "triples": [[f"Entity_{i}", "country", f"Land {i % 7}"]]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _verbalize_cmd(root: Path, source: str, output: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "datatuner_core.cli", "verbalize", "--input", source,
        "--format", "jsonl", "--output", output,
        "--lm", str(root / "models" / "lm" / "run1"),
        "--classifier", str(root / "models" / "classifier" / "run1"),
        "--set", "generate.beams=2", "--set", "generate.max_new_tokens=12",
        "--set", "generate.batch_size=8", *extra,
    ]  # fmt: skip


def _env(home: Path, **extra) -> dict:
    return {**os.environ, "PREFECT_HOME": str(home), "PYTHONWARNINGS": "ignore", **extra}


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_sigkill_during_generation_then_rerun(trained_run, tmp_path):
    root, _ = trained_run
    source = str(_jsonl(tmp_path / "in.jsonl", 400))
    out = str(tmp_path / "out")
    cmd = _verbalize_cmd(root, source, out)
    env = _env(tmp_path / "home")
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while "[generate] " not in (tmp_path / "first.log").read_text():  # generation is under way
        assert proc.poll() is None and time.monotonic() < deadline, "generation never started"
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out" / "_manifest.json").exists()  # no half stage is visible
    linearized = tmp_path / "out" / "_stages" / "linearized" / "_manifest.json"
    before = json.loads(linearized.read_text())["timings"]

    rerun = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = _last_json(rerun.stdout)
    assert summary["generations"] == 400 and summary["read"] == 400
    assert json.loads(linearized.read_text())["timings"] == before  # finished stage skipped
    ids = [r["id"] for r in storage.read_stage(out).to_pylist()]
    assert len(ids) == len(set(ids)) == 400


def test_s3_outage_is_retried_and_secrets_stay_out(trained_run, moto_server, tmp_path):
    import boto3

    root, _ = trained_run
    proxy = TcpProxy(moto_server.port)
    proxy.start()
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint, aws_access_key_id=SECRET_ID,
                      aws_secret_access_key=SECRET_KEY, region_name="us-east-1")  # fmt: skip
    s3.create_bucket(Bucket="outage")
    s3.put_object(Bucket="outage", Key="in/facts.jsonl",
                  Body=_jsonl(tmp_path / "facts.jsonl", 20, "s").read_bytes())  # fmt: skip
    env = _env(
        tmp_path / "home", AWS_ENDPOINT_URL=proxy.endpoint, AWS_ACCESS_KEY_ID=SECRET_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    proxy.stop()  # the endpoint is gone when the run starts, and comes back after a retry
    cmd = _verbalize_cmd(root, "s3://outage/in/facts.jsonl", "s3://outage/out")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    stderr_lines: list[str] = []

    def watch():
        for line in proc.stderr:
            stderr_lines.append(line)
            if "Retry 1/" in line and proxy._listener is None:
                proxy.start()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    stdout = proc.stdout.read()
    proc.wait(timeout=900)
    watcher.join(timeout=30)
    proxy.stop()
    stderr = "".join(stderr_lines)
    assert proc.returncode == 0, stderr[-3000:]
    assert "cannot reach s3://outage/in/facts.jsonl" in stderr and "Retry 1/" in stderr
    assert _last_json(stdout)["generations"] == 20
    fs = fsspec.filesystem("s3", endpoint_url=moto_server.endpoint, key=SECRET_ID,
                           secret=SECRET_KEY)  # fmt: skip
    texts = [stdout, stderr]
    for path in fs.find("outage/out"):
        if path.endswith(".json"):
            texts.append(fs.cat_file(path).decode())
    for db in (tmp_path / "home").rglob("*.db"):  # the Prefect database: logs and artifacts
        texts.append(db.read_bytes().decode("latin-1"))
    for text in texts:
        assert SECRET_KEY not in text and SECRET_ID not in text


def test_two_runs_at_once_on_one_root(trained_run, tmp_path):
    root, _ = trained_run
    procs = []
    for name in ("a", "b"):
        source = str(_jsonl(tmp_path / f"{name}.jsonl", 60, name))
        cmd = _verbalize_cmd(root, source, str(tmp_path / "shared-root" / name))
        procs.append(
            subprocess.Popen(
                cmd,
                env=_env(tmp_path / f"home-{name}"),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for name, proc in zip(("a", "b"), procs):
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-3000:]
        ids = [
            r["id"] for r in storage.read_stage(str(tmp_path / "shared-root" / name)).to_pylist()
        ]
        assert sorted(ids) == sorted(f"{name}{i}" for i in range(60))
