"""infra/kuberay and infra/kubernetes: the RayCluster and the Prefect worker manifests parse and
name their images, resources and secrets; infra/work-pool.sh is idempotent against a real Prefect
server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from .test_compose import IMAGE

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
WORKER = INFRA / "kubernetes" / "prefect-worker.yaml"
JOB_TEMPLATE = INFRA / "kubernetes" / "base-job-template.json"
WORK_POOL = INFRA / "work-pool.sh"


# ------------------------------------------------------------------------------ Kubernetes


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def containers_of(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def assert_resources(container: dict, where: str) -> None:
    res = container.get("resources", {})
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(res.get(kind, {})), f"{where}: {kind} needs cpu and memory"


def assert_aws_from_secret(container: dict, where: str) -> None:
    env = {e["name"]: e for e in container.get("env", [])}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert name in env, f"{where}: no {name}"
        assert "value" not in env[name], f"{where}: {name} has a literal value"
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "datatuner-s3" and ref["key"] == name, where


@pytest.fixture(scope="module")
def raycluster() -> dict:
    docs = load_all(RAYCLUSTER)
    assert len(docs) == 1
    return docs[0]


def test_raycluster_head_and_worker_groups(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1" and raycluster["kind"] == "RayCluster"
    assert raycluster["metadata"]["name"] == "datatuner-ray"
    spec = raycluster["spec"]
    assert spec["rayVersion"] == "2.60.0"
    # Token authentication, the token from a Secret the flow-run pods read as well.
    assert spec["authOptions"] == {"mode": "token", "secretName": "datatuner-ray-auth"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    (head_container,) = containers_of(head["template"])
    assert head_container["image"] == IMAGE
    ports = {p["containerPort"] for p in head_container["ports"]}
    assert {6379, 8265, 10001} <= ports
    assert_resources(head_container, "head")
    assert_aws_from_secret(head_container, "head")

    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert {"cpu", "gpu"} <= set(groups)
    for name, group in groups.items():
        assert "rayStartParams" in group, name
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        for container in containers_of(group["template"]):
            assert container["image"].startswith("datatuner:"), name
            assert_resources(container, name)
            assert_aws_from_secret(container, name)
    assert containers_of(groups["cpu"]["template"])[0]["image"] == IMAGE


def test_raycluster_gpu_group_asks_for_a_gpu(raycluster):
    groups = {g["groupName"]: g for g in raycluster["spec"]["workerGroupSpecs"]}
    (container,) = containers_of(groups["gpu"]["template"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert groups["gpu"]["minReplicas"] == 0  # optional: no GPU node needed until asked for
    for container in containers_of(groups["cpu"]["template"]):
        assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_prefect_worker_manifest(raycluster):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_all(WORKER)}
    assert all(
        d["metadata"]["namespace"] == raycluster["metadata"]["namespace"] for d in docs.values()
    )
    config = docs[("ConfigMap", "datatuner-env")]["data"]
    head_svc = f"{raycluster['metadata']['name']}-head-svc"  # KubeRay's name for the head Service
    assert config["RAY_ADDRESS"] == f"ray://{head_svc}:10001"
    assert config["PREFECT_API_URL"].endswith("/api")
    assert config["RAY_AUTH_MODE"] == "token"
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "RAY_AUTH_TOKEN"} & set(config)

    deployment = docs[("Deployment", "prefect-worker")]
    pod = deployment["spec"]["template"]
    (container,) = containers_of(pod)
    assert container["image"] == IMAGE
    command = " ".join(container["command"] + container["args"])
    assert "infra/work-pool.sh --kubernetes" in command
    assert "prefect worker start --pool datatuner-pool --type kubernetes" in command
    env = {e["name"]: e for e in container["env"]}
    for name in ("PREFECT_API_URL", "RAY_ADDRESS"):
        assert env[name]["valueFrom"]["configMapKeyRef"] == {"name": "datatuner-env", "key": name}
    assert_resources(container, "prefect-worker")
    assert pod["spec"]["serviceAccountName"] == "prefect-worker"
    rules = docs[("Role", "prefect-worker")]["rules"]
    assert any("jobs" in r["resources"] and "create" in r["verbs"] for r in rules)
    assert ("RoleBinding", "prefect-worker") in docs


def test_kubernetes_job_template_runs_the_image_with_secret_env(raycluster):
    template = json.loads(JOB_TEMPLATE.read_text())
    variables = template["variables"]["properties"]
    assert variables["image"]["default"] == IMAGE
    assert variables["namespace"]["default"] == raycluster["metadata"]["namespace"]
    job = template["job_configuration"]["job_manifest"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "{{ image }}"
    assert container["envFrom"] == [{"configMapRef": {"name": "datatuner-env"}}]
    assert_aws_from_secret(container, "flow-run job")
    env = {e["name"]: e for e in container["env"]}
    token = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "datatuner-ray-auth", "key": "auth_token"}
    assert all("value" not in e for e in container["env"])
    # Prefect's own variables and the `env` job variable still reach the pod.
    assert template["job_configuration"]["env"] == "{{ env }}"


# ------------------------------------------------------------------------------ work-pool.sh


def test_work_pool_script_arguments():
    assert os.access(WORK_POOL, os.X_OK)
    assert subprocess.run(["bash", "-n", str(WORK_POOL)]).returncode == 0
    usage = subprocess.run([str(WORK_POOL), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--kubernetes" in usage.stdout
    bad = subprocess.run([str(WORK_POOL), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument '--bogus'" in bad.stderr
    missing = subprocess.run(
        [str(WORK_POOL), "--kubernetes", "--template", "/nonexistent.json"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "not found" in missing.stderr


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_work_pool_script_is_idempotent_against_a_real_server(tmp_path):
    bin_dir = Path(sys.executable).parent
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_KEY", None)
    server = subprocess.Popen(
        [str(bin_dir / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "the Prefect server exited at start"
                assert time.monotonic() < deadline, "the Prefect server did not answer in 90 s"
                time.sleep(0.5)

        def script(*args):
            return subprocess.run(
                [str(WORK_POOL), *args], env=env, capture_output=True, text=True, timeout=120
            )

        first = script()
        assert first.returncode == 0, first.stderr
        assert "created work pool 'datatuner-pool' (type process" in first.stdout
        again = script()
        assert again.returncode == 0, again.stderr
        assert "already exists" in again.stdout and "nothing to do" in again.stdout
        clash = script("--kubernetes")
        assert clash.returncode == 1
        assert "already exists with type 'process', not 'kubernetes'" in clash.stderr
        k8s = script("--kubernetes", "--pool", "datatuner-k8s")
        assert k8s.returncode == 0, k8s.stderr
        assert "created work pool 'datatuner-k8s' (type kubernetes" in k8s.stdout

        with urllib.request.urlopen(f"{env['PREFECT_API_URL']}/work_pools/datatuner-k8s") as r:
            pool = json.load(r)
        assert pool["type"] == "kubernetes"
        assert pool["base_job_template"] == json.loads(JOB_TEMPLATE.read_text())
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
