"""Reliability: a generation killed (SIGKILL) and stopped (Ctrl-C) resumes from its finished
blocks; an S3 endpoint that goes away for a few seconds; credentials kept out of logs, manifests
and artifacts; two runs at once on one root."""

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

from datatuner_core import stage_reader

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
        sys.executable, "-m", "flows.cli", "verbalize", "--input", source,
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


def _journal(out: Path) -> dict[str, dict]:
    """The finished blocks of a generations stage's journal, by part name."""
    entries = [json.loads(p.read_text()) for p in out.glob("_blocks/*/block-*.json")]
    return {e["part"]: e for e in entries}


def _stop_after_new_block(cmd, env, log_path: Path, out: Path, sig) -> subprocess.Popen:
    """Start `cmd`, wait until it has finished a block of its own, then send `sig` to its
    process group (a terminal's Ctrl-C reaches the whole foreground group)."""
    before = set(_journal(out))
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not set(_journal(out)) - before:
        assert proc.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, "no block finished"
        time.sleep(0.05)
    os.killpg(proc.pid, sig)
    proc.wait(timeout=120)
    return proc


def test_killed_then_stopped_generation_resumes_from_its_finished_blocks(trained_run, tmp_path):
    """SIGKILL after some blocks, then Ctrl-C (SIGINT) after more, then a run to the end: the
    finished blocks are kept as they are, never generated again, every id exactly once."""
    root, _ = trained_run
    source = str(_jsonl(tmp_path / "in.jsonl", 400))
    out = tmp_path / "out"
    cmd = _verbalize_cmd(root, source, str(out), "--set", "generate.block_s=0")
    env = _env(tmp_path / "home")

    _stop_after_new_block(cmd, env, tmp_path / "first.log", out, signal.SIGKILL)
    assert not (out / "_manifest.json").exists()  # no half stage is visible
    killed = _journal(out)
    linearized = out / "_stages" / "linearized" / "_manifest.json"
    before = json.loads(linearized.read_text())["timings"]

    second = _stop_after_new_block(cmd, env, tmp_path / "second.log", out, signal.SIGINT)
    log = (tmp_path / "second.log").read_text()
    assert second.returncode == 130, log[-3000:]
    kept_first = sum(e["rows"] for e in killed.values())
    assert f"[generate] resuming: {kept_first} of 400 records kept" in log
    stopped = _journal(out)
    assert set(killed) < set(stopped)  # the killed run's blocks were kept, more were added
    kept = sum(e["rows"] for e in stopped.values())
    assert f"[generate] stopped: {kept} of 400 records are kept" in log
    assert not (out / "_manifest.json").exists()

    rerun = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = _last_json(rerun.stdout)
    assert summary["generations"] == 400 and summary["read"] == 400
    assert summary["resumed"] == {"blocks_kept": len(stopped), "records_kept": kept,
                                  "records_generated": 400 - kept}  # fmt: skip
    assert 0 < kept < 400
    assert json.loads(linearized.read_text())["timings"] == before  # finished stage skipped
    manifest = stage_reader.read_manifest(str(out))
    listed = {f["path"].rsplit("/", 1)[-1]: f["sha256"] for f in manifest["files"]}
    assert all(listed[part] == e["sha256"] for part, e in stopped.items())  # kept as they were
    ids = [r["id"] for r in stage_reader.read_stage(str(out)).to_pylist()]
    assert len(ids) == len(set(ids)) == 400
    kept_ids = {i for e in stopped.values() for i in e["ids"]}
    assert len(kept_ids) == kept
    assert _journal(out) == {}  # the journal goes with the commit; the parts stay, listed


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
        rows = stage_reader.read_stage(str(tmp_path / "shared-root" / name)).to_pylist()
        ids = [r["id"] for r in rows]
        assert sorted(ids) == sorted(f"{name}{i}" for i in range(60))
