"""A real two-node Ray cluster on one machine (`ray start --head`, then a second node with its own
temp dir and ports), moto's S3 server as the only store the nodes share, and the CLI as a data
team runs it with `RAY_ADDRESS`: `datatuner run` trains with a worker on each node and generates
with an actor on each, every output in the bucket; then `datatuner verbalize` loses the second
node (every process of it SIGKILLed) in the middle of generation and completes on the head, every
id exactly once."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import psutil
import pytest

from datatuner_core import stage_reader

from ..conftest import REPO, free_port
from .conftest import TINY

RAY = str(Path(sys.executable).parent / "ray")
GENERATOR = "MapWorker(MapBatches(Generator))"


class RayCluster:
    """A Ray head and a second node on this machine: own temp dirs (short: Ray's socket paths
    must stay under 108 characters), own ports and worker-port ranges (clear of a local Ray
    instance's 10002-19999), token authentication with a token of the test's own."""

    def __init__(self, cpus_per_node: int = 2, **env: str):
        self.root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
        self.cpus = cpus_per_node
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        token = self.root / "token"
        token.write_text(secrets.token_hex(32))
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": self.address, **env}  # fmt: skip

    def _start(self, name: str, *args: str, ports: tuple[int, int]) -> None:
        cmd = [RAY, "start", *args, "--temp-dir", str(self.root / name), "--num-cpus",
               str(self.cpus), "--node-ip-address", "127.0.0.1", "--object-store-memory",
               str(300 * 2**20), "--dashboard-agent-listen-port", str(free_port()),
               "--min-worker-port", str(ports[0]), "--max-worker-port", str(ports[1]),
               "--disable-usage-stats"]  # fmt: skip
        env = {k: v for k, v in self.env.items() if k != "RAY_ADDRESS"}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    def start(self) -> None:
        self._start("head", "--head", "--port", str(self.port), "--include-dashboard", "false",
                    ports=(23000, 23499))  # fmt: skip
        self._start("node2", "--address", self.address, "--node-manager-port",
                    str(free_port()), "--object-manager-port", str(free_port()),
                    ports=(23500, 23999))  # fmt: skip
        deadline = time.monotonic() + 120
        while len([n for n in self.state()["nodes"] if n["alive"]]) < 2:
            assert time.monotonic() < deadline, "the second node did not join"
            time.sleep(1)

    def processes(self, name: str) -> list[psutil.Process]:
        """Every process of one node: those naming its temp dir, and their descendants."""
        mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if proc.pid not in mine and any(
                    str(self.root / name) in arg for arg in proc.info["cmdline"] or []
                ):
                    found[proc.pid] = proc
                    found.update((c.pid, c) for c in proc.children(recursive=True))
            except psutil.Error:
                continue
        return list(found.values())

    def kill(self, name: str) -> int:
        """SIGKILL a node: what a machine's power loss leaves behind."""
        procs = self.processes(name)
        for proc in procs:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=30)
        return len(procs)

    def state(self) -> dict:
        """Nodes and actors (dead ones too) from the cluster's own control store, read by a
        separate driver (this test process may hold a local Ray instance of its own)."""
        script = (
            "import json, ray\n"
            "from ray._private.state import state\n"
            "ray.init(logging_level='ERROR')\n"
            "nodes = [{'id': n['NodeID'], 'alive': n['Alive'], 'head': n.get('Resources', {})"
            ".get('node:__internal_head__', 0) > 0} for n in ray.nodes()]\n"
            "actors = [{'cls': a['ActorClassName'], 'node': a['Address']['NodeID'], "
            "'job': a['JobID'], 'restarts': a.get('NumRestarts', 0), 'state': a['State']} "
            "for a in state.actor_table(None).values()]\n"
            "print('STATE', json.dumps({'nodes': nodes, 'actors': actors}))\n"
        )
        proc = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        line = next(x for x in proc.stdout.splitlines() if x.startswith("STATE "))
        return json.loads(line.removeprefix("STATE "))  # Ray's own lines go to stdout too

    def stop(self) -> None:
        for name in ("node2", "head"):
            self.kill(name)
        shutil.rmtree(self.root, ignore_errors=True)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
          "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(moto_server):
    # the nodes hold the store's endpoint and keys in their own environment, as the compose file
    # and the KubeRay manifests give them (Ray Train's controller resolves the storage path on
    # whichever node it runs)
    ray_cluster = RayCluster(**S3_ENV, AWS_ENDPOINT_URL=moto_server.endpoint)
    try:
        ray_cluster.start()
        yield ray_cluster
    finally:
        ray_cluster.stop()


@pytest.fixture(scope="module")
def bucket_env(moto_server, cluster):
    import boto3

    bucket = f"cluster-{time.monotonic_ns()}"
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint, region_name="us-east-1",
                      aws_access_key_id="k", aws_secret_access_key="s")  # fmt: skip
    s3.create_bucket(Bucket=bucket)
    env = {**cluster.env, "PYTHONWARNINGS": "ignore"}
    fs = fsspec.filesystem("s3", endpoint_url=moto_server.endpoint, key="testing-key-id",
                           secret="testing-secret-key", skip_instance_cache=True)  # fmt: skip
    return bucket, env, fs


@pytest.fixture(scope="module")
def cluster_run(cluster, bucket_env, tmp_path_factory):
    """`datatuner run` on the cluster, storage in the bucket, started from an empty directory."""
    bucket, env, _ = bucket_env
    cwd = tmp_path_factory.mktemp("cwd")
    root = f"s3://{bucket}/prod"
    scratch = ["lm.base=scratch:tiny", "lm.freeze_layers=0", "lm.freeze_embeddings=false",
               "classifier.base=scratch:tiny", "generate.actors=2",
               "generate.in_process_max=0",  # 30 records: on the actors all the same
               "classifier.hard_negatives=0", "generate.dev_records=0",  # covered elsewhere
               # a worker of 2 CPUs fills a node: one worker on each
               "lm.workers=2", "classifier.workers=2", "lm.cpus_per_worker=2",
               "classifier.cpus_per_worker=2"]  # fmt: skip
    overrides = [arg for o in [f"storage={root}", *TINY, *scratch] for arg in ("--set", o)]
    cmd = [sys.executable, "-m", "flows.cli", "run", str(REPO / "configs" / "demo.yaml"),
           "--run-id", "c1", *overrides]  # fmt: skip
    env = {**env, "PREFECT_HOME": str(tmp_path_factory.mktemp("home")),
           "PYTHONPATH": str(REPO)}  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, cwd, proc


def _jobs_of(actors: list[dict], cls: str) -> dict[str, list[dict]]:
    by_job: dict[str, list[dict]] = {}
    for actor in actors:
        if actor["cls"] == cls:
            by_job.setdefault(actor["job"], []).append(actor)
    return by_job


def test_run_trains_and_generates_on_both_nodes_with_every_output_in_s3(cluster, bucket_env,
                                                                        cluster_run):  # fmt: skip
    bucket, _, fs = bucket_env
    root, cwd, proc = cluster_run
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["generations"] == f"{root}/runs/c1/generations"
    assert summary["metrics"]["n"] == 30
    found = set(fs.find(bucket))
    for name in ("runs/c1/report/metrics.json", "runs/c1/report/report.md",
                 "runs/c1/generations/_manifest.json", "models/lm/production.json",
                 "models/classifier/production.json", "models/lm/c1/model.safetensors",
                 "models/lm/c1/training_card.json"):  # fmt: skip
        assert f"{bucket}/prod/{name}" in found, name
    assert [p for p in found if "/runs/c1/generations/part-" in p]
    assert not [p for p in cwd.rglob("*") if p.is_file()]  # nothing written beside the driver
    assert "testing-secret-key" not in proc.stdout + proc.stderr

    state = cluster.state()
    nodes = {n["id"] for n in state["nodes"] if n["alive"]}
    assert len(nodes) == 2
    # the LM and the classifier each trained with one worker on each node
    trainers = _jobs_of(state["actors"], "RayTrainWorker")
    assert trainers, sorted({a["cls"] for a in state["actors"]})
    assert all({a["node"] for a in group} == nodes for group in trainers.values()), trainers
    generators = [a for group in _jobs_of(state["actors"], GENERATOR).values() for a in group]
    assert {a["node"] for a in generators} == nodes  # an actor on each node


def test_verbalize_completes_on_the_head_after_losing_a_node(cluster, bucket_env, cluster_run,
                                                            monkeypatch):  # fmt: skip
    bucket, env, fs = bucket_env
    root, cwd, _ = cluster_run
    rows = [{"id": f"r{i}", "triples": [[f"Entity_{i}", "country", f"Land {i % 7}"]]}
            for i in range(400)]  # fmt: skip
    fs.pipe(f"{bucket}/in/facts.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    out = f"s3://{bucket}/out"
    cmd = [sys.executable, "-m", "flows.cli", "verbalize", "--input",
           f"s3://{bucket}/in/facts.jsonl", "--format", "jsonl", "--output", out,
           "--lm", f"{root}/models/lm/c1", "--classifier", f"{root}/models/classifier/c1",
           "--set", "generate.beams=2", "--set", "generate.max_new_tokens=12",
           "--set", "generate.batch_size=8", "--set", "generate.block_s=0",
           "--set", "generate.actors=2"]  # fmt: skip
    env = {**env, "PREFECT_HOME": str(cwd.parent / "home2"), "PYTHONPATH": str(REPO)}
    log = cwd.parent / "verbalize.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=sink,
                                text=True)  # fmt: skip
        deadline = time.monotonic() + 600
        while not fs.glob(f"{bucket}/out/_blocks/*/block-*.json"):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no block finished"
            fs.invalidate_cache()
            time.sleep(0.2)
        killed = cluster.kill("node2")  # mid-generation: blocks finished, most records to go
        try:  # about a minute on 2 cores; a hang (actors waiting for a lost node) fails here
            stdout, _ = proc.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("verbalize hung after the node loss:\n" + log.read_text()[-3000:])
    assert killed >= 3  # the raylet, its agents and workers
    assert proc.returncode == 0, log.read_text()[-3000:]
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["generations"] == 400 and summary["read"] == 400
    assert summary["written"] + summary["quarantined"] == summary["read"]
    for key in (*S3_ENV, "AWS_ENDPOINT_URL"):
        monkeypatch.setenv(key, env[key])
    fsspec.AbstractFileSystem.clear_instance_cache()
    ids = [r["id"] for r in stage_reader.read_stage(out).to_pylist()]
    assert len(ids) == len(set(ids)) == 400

    state = cluster.state()
    assert [n["head"] for n in state["nodes"] if n["alive"]] == [True]  # only the head is left
    by_job = _jobs_of(state["actors"], GENERATOR)
    last = by_job[max(by_job, key=lambda job: int.from_bytes(bytes.fromhex(job), "little"))]
    assert any(a["restarts"] >= 1 for a in last), last  # the lost node's actor came back
    head = next(n["id"] for n in state["nodes"] if n["alive"])
    assert {a["node"] for a in last} == {head}
