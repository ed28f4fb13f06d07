"""Shared fixtures: the real datasets in ../shared/data, a moto S3 server on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE = REPO / "sample"

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared datasets (WebNLG, E2E, ViGGO) in their original formats."""
    if not (SHARED_DATA / "README.md").exists():
        raise RuntimeError(f"the shared datasets are missing: expected them at {SHARED_DATA}")
    return SHARED_DATA


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """moto's S3 server as a real process on 127.0.0.1; stop() and start() for outage tests."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("moto server exited at start") from None
                time.sleep(0.2)
        raise RuntimeError("moto server did not answer within 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(moto_server, monkeypatch):
    """Environment pointing s3fs at the moto server, and a fresh bucket; yields its s3:// root."""
    import boto3
    import fsspec

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    bucket = f"bucket-{time.monotonic_ns()}"
    boto3.client("s3", endpoint_url=moto_server.endpoint).create_bucket(Bucket=bucket)
    fsspec.AbstractFileSystem.clear_instance_cache()
    yield f"s3://{bucket}"
    fsspec.AbstractFileSystem.clear_instance_cache()


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 that can be switched off and on: an endpoint that goes away
    for a while (connections refused) while the server behind it keeps its data."""

    def __init__(self, target_port: int):
        self.target_port, self.port = target_port, free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        self._listener.settimeout(0.2)
        self._stop.clear()
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        listener = self._listener
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# ---- test tiers: `make test-fast` runs `-m "not heavy"` ----------------------------------------
# Heavy = trains a model, or starts Ray or a Prefect server. A test is heavy when it lives under
# tests/flows/ (a Prefect server and trained runs), uses one of these fixtures, or is named here.
HEAVY_FIXTURES = {"ray_local", "prefect_server", "trained_run", "trained", "fresh_run"}
HEAVY_TESTS = {
    "test_ensure_ray_runs_the_hook_in_every_worker",  # Ray in a driver subprocess
    "test_a_training_worker_prints_once",  # a Ray Train run in a driver subprocess
    "test_smollm2_gguf_trains_with_states_and_saves_plain_safetensors",
    "test_work_pool_script_is_idempotent_against_a_real_server",  # a Prefect server
    "test_gpu_benchmark_small_mode_on_cpu",  # trains two tiny models
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if (
            (REPO / "tests" / "flows") in path.parents
            or HEAVY_FIXTURES & set(getattr(item, "fixturenames", ()))
            or item.originalname in HEAVY_TESTS
        ):
            item.add_marker(pytest.mark.heavy)


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_ray(request, monkeypatch):
    """In the fast tier a test that starts Ray fails, naming the marker it lacks."""
    if "not heavy" not in (request.config.getoption("markexpr") or ""):
        return
    import ray

    def refuse(*args, **kwargs):
        raise AssertionError(f"{request.node.nodeid} starts Ray: mark it heavy (tests/conftest.py)")

    monkeypatch.setattr(ray, "init", refuse)
