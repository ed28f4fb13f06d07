"""infra/: the compose file validates with Debian's docker-compose and requires its credentials;
the KubeRay and Kubernetes manifests parse and name their images, resources and secrets; no
literal secret anywhere under infra/; work-pool.sh is idempotent against a real Prefect server."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
WORKER = INFRA / "kubernetes" / "prefect-worker.yaml"
JOB_TEMPLATE = INFRA / "kubernetes" / "base-job-template.json"
DOCKERFILE = INFRA / "Dockerfile"
WORK_POOL = INFRA / "work-pool.sh"

# The variables compose must refuse to start without (dummy values: never real ones).
REQUIRED = {
    "MINIO_ROOT_USER": "test-minio-admin",
    "MINIO_ROOT_PASSWORD": "test-minio-password",
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "RAY_AUTH_TOKEN": "test-ray-token",
}
SERVICES = {"prefect-server", "minio", "minio-init", "ray-head", "ray-worker", "prefect-worker"}
S3_SERVICES = {"ray-head", "ray-worker", "prefect-worker"}  # processes that run pipeline code
IMAGE = "datatuner:latest"


# ------------------------------------------------------------------------------ docker compose


def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip(
            "docker-compose is not installed and `make tools` could not install it "
            "(it needs apt-get as root or passwordless sudo: `apt-get install docker-compose`, "
            "Debian's package, 1.29)"
        )
    return exe


def compose(
    *args: str, env: dict[str, str], tmp_path: Path, env_file: Path | None = None
) -> subprocess.CompletedProcess:
    """docker-compose on infra/docker-compose.yml with exactly `env` as its variables: an empty
    --env-file so that a developer's infra/.env (real credentials) is never read here."""
    if env_file is None:
        env_file = tmp_path / "empty.env"
        env_file.touch()
    base = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    return subprocess.run(
        [docker_compose(), "--env-file", str(env_file), "-f", str(COMPOSE), *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_config_validates_with_required_variables(tmp_path):
    result = compose("config", "-q", env=REQUIRED, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr


def test_compose_env_example_lists_every_required_variable(tmp_path):
    result = compose("config", "-q", env={}, tmp_path=tmp_path, env_file=INFRA / ".env.example")
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_each_credential(tmp_path):
    """Every credential is `${VAR:?message}`: missing or empty fails, naming the variable."""
    cases = [(name, None) for name in REQUIRED] + [("AWS_SECRET_ACCESS_KEY", "")]

    def run(case):
        name, value = case
        env = {k: v for k, v in REQUIRED.items() if k != name}
        if value is not None:
            env[name] = value
        return case, compose("config", "-q", env=env, tmp_path=tmp_path)

    with ThreadPoolExecutor(len(cases)) as pool:
        for (name, value), result in pool.map(run, cases):
            assert result.returncode != 0, f"compose accepted {name}={value!r}"
            assert f"{name} is required" in result.stderr, result.stderr
            assert "infra/.env" in result.stderr, result.stderr


def test_compose_credentials_are_required_not_defaulted():
    text = COMPOSE.read_text()
    for name in REQUIRED:
        uses = re.findall(rf"^\s*{name}:\s*(.+)$", text, flags=re.M)
        assert uses, f"{name} is not passed to any service"
        for value in uses:
            assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", value.strip()), (
                f"{name} must be `${{{name}:?message}}`, found {value!r}"
            )


@pytest.fixture(scope="module")
def compose_raw() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_resolved(tmp_path_factory) -> dict:
    """`docker-compose config`: anchors merged and variables interpolated, as compose sees it."""
    result = compose("config", env=REQUIRED, tmp_path=tmp_path_factory.mktemp("compose"))
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_services_and_shared_settings(compose_raw):
    assert set(compose_raw["services"]) == SERVICES
    # The Compose Specification as docker-compose 1.29 reads it: no `version:` key.
    assert "version" not in compose_raw
    env = compose_raw["x-datatuner-env"]  # the shared settings, merged into services by anchor
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    telemetry = {"PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK", "RAY_USAGE_STATS_ENABLED"}
    assert telemetry <= set(env)


def test_compose_every_s3_service_gets_the_resolved_settings(compose_resolved):
    services = compose_resolved["services"]
    for name in S3_SERVICES:
        env = services[name]["environment"]
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000", name
        assert env["AWS_ACCESS_KEY_ID"] == REQUIRED["AWS_ACCESS_KEY_ID"], name
        assert env["AWS_SECRET_ACCESS_KEY"] == REQUIRED["AWS_SECRET_ACCESS_KEY"], name
        assert env["AWS_DEFAULT_REGION"], name
        assert env["RAY_USAGE_STATS_ENABLED"] == "0", name
        # Ray token authentication on every node and driver, with the required token.
        assert env["RAY_AUTH_MODE"] == "token", name
        assert env["RAY_AUTH_TOKEN"] == REQUIRED["RAY_AUTH_TOKEN"], name
        assert services[name]["image"] == IMAGE, name
        assert services[name]["build"]["dockerfile"] == "infra/Dockerfile", name
    assert services["prefect-server"]["image"] == IMAGE
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    # The worker's flow runs are Ray drivers outside the cluster: Ray Client, not the GCS address.
    assert services["prefect-worker"]["environment"]["RAY_ADDRESS"] == "ray://ray-head:10001"
    assert "RAY_ADDRESS" not in services["ray-head"]["environment"]


def test_compose_service_commands(compose_resolved):
    services = compose_resolved["services"]
    server = services["prefect-server"]
    assert server["command"][:5] == ["prefect", "server", "start", "--host", "0.0.0.0"]
    assert "/api/health" in " ".join(server["healthcheck"]["test"])
    assert "prefect-db:/var/lib/prefect:rw" in server["volumes"]  # SQLite on a named volume
    assert "prefect-db" in compose_resolved["volumes"]
    assert server["environment"]["PREFECT_HOME"] == "/var/lib/prefect"

    head = services["ray-head"]["command"]
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    assert "--dashboard-port=8265" in head and "--ray-client-server-port=10001" in head
    worker = services["ray-worker"]["command"]
    assert worker[:2] == ["ray", "start"] and "--address=ray-head:6379" in worker
    assert "--block" in worker
    assert services["ray-worker"]["depends_on"]["ray-head"]["condition"] == "service_healthy"

    pw = services["prefect-worker"]
    command = " ".join(pw["command"])
    assert "infra/work-pool.sh" in command
    assert "prefect worker start --pool datatuner-pool" in command
    assert pw["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert pw["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"


def test_compose_publishes_ports_on_localhost_only(compose_resolved):
    published = [
        (name, str(port))
        for name, service in compose_resolved["services"].items()
        for port in service.get("ports", [])
    ]
    assert {name for name, _ in published} == {"prefect-server", "minio", "ray-head"}
    assert all(port.startswith("127.0.0.1:") for _, port in published), published


def test_compose_minio_bucket_is_created_at_start(compose_resolved):
    services = compose_resolved["services"]
    assert services["minio"]["image"].startswith("minio/minio:")
    init = services["minio-init"]
    assert init["image"].startswith("minio/mc:")
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    assert init["environment"]["DATATUNER_BUCKET"] == "datatuner"
    script = " ".join(init["command"])
    assert "mc mb --ignore-existing" in script and "DATATUNER_BUCKET" in script
    # The shell in the container expands the secrets ($$ in the file), compose does not.
    assert REQUIRED["AWS_SECRET_ACCESS_KEY"] not in script
    assert REQUIRED["MINIO_ROOT_PASSWORD"] not in script


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


# ------------------------------------------------------------------------------ the image


def test_dockerfile_builds_one_image_without_secrets():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", text, re.M)
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim$", text, re.M)
    assert re.search(r"^ARG TORCH_VERSION=2\.13\.0$", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", text, re.M)
    torch_at = re.search(r'^RUN pip install .*"torch==\$\{TORCH_VERSION\}"$', text, re.M)
    project_at = re.search(r"^RUN .*pip install \. ", text, re.M)
    assert torch_at and project_at
    assert torch_at.start() < project_at.start()  # torch first, so `pip install .` keeps it
    assert "ray[default,client,data,train]==2.60.0" in text  # dashboard + Ray Client server
    assert not re.search(r"^(ENV|ARG)\b.*\b(AWS_|SECRET|PASSWORD|TOKEN)", text, re.M)
    # Every COPY source exists, so the build does not break on a moved folder.
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (REPO / source).exists(), f"COPY source missing: {source}"


# ------------------------------------------------------------------------------ secrets


ENV_NAME = re.compile(
    r"\b([A-Z][A-Z0-9_]*(?:SECRET|PASSWORD|PASSWD|ACCESS_KEY|TOKEN|API_KEY|CREDENTIAL)[A-Z0-9_]*)"
    r"[\"']?\s*[:=]\s*(.*)$"
)
LOWER_NAME = re.compile(
    r"(?i)[\"']?\b(password|passwd|secret|secret_key|access_key|aws_secret_access_key|token|"
    r"auth_token|api_key)"
    r"[\"']?\s*[:=]\s*(.*)$"
)
LITERAL_ANYWHERE = [
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # an AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bminioadmin\b"),  # MinIO's well-known default credentials
]
PLACEHOLDER = re.compile(
    r"""^(|\$.*|["']\$.*|\.\.\.|<[^>]*>|change-me[\w-]*|valueFrom.*|\{\{.*\}\}|[|>]-?)$"""
)


def literal_secrets(text: str) -> list[str]:
    """Lines that assign a literal value to something named like a secret."""
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for pattern in LITERAL_ANYWHERE:
            if pattern.search(line):
                found.append(f"{lineno}: {line.strip()}")
        for pattern in (ENV_NAME, LOWER_NAME):
            for match in pattern.finditer(line):
                # The value: a quoted string or the first word.
                rest = match.group(2).strip()
                quoted = re.match(r"""("[^"]*"|'[^']*')""", rest)
                value = quoted.group(1) if quoted else (rest.split() or [""])[0].rstrip(",")
                if not PLACEHOLDER.match(value):
                    found.append(f"{lineno}: {line.strip()}")
    return found


def test_secret_scanner_catches_literals():
    assert literal_secrets("AWS_SECRET_ACCESS_KEY: abc123")
    assert literal_secrets("  - AWS_ACCESS_KEY_ID=hunter22")
    assert literal_secrets('ENV MINIO_ROOT_PASSWORD="s3cr3t-value"')
    assert literal_secrets("password: hunter2")
    assert literal_secrets('"token": "ghp_0123456789"')
    assert literal_secrets("key AKIAIOSFODNN7EXAMPLE")
    assert literal_secrets("MINIO_ROOT_USER: minioadmin")
    assert literal_secrets("--from-literal=auth_token=abcdef0123")
    assert literal_secrets("RAY_AUTH_TOKEN: 0123456789abcdef")
    for fine in (
        "AWS_SECRET_ACCESS_KEY: ${AWS_SECRET_ACCESS_KEY:?required}",
        'mc admin user add local "$$AWS_ACCESS_KEY_ID" "$$AWS_SECRET_ACCESS_KEY"',
        '  --from-literal=AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \\',
        "AWS_SECRET_ACCESS_KEY=change-me-datatuner-secret",
        "export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...",
        "secretKeyRef: {name: datatuner-s3, key: AWS_SECRET_ACCESS_KEY}",
        "- name: AWS_SECRET_ACCESS_KEY",
        '--from-literal=auth_token="$(openssl rand -hex 32)"',
        "RAY_AUTH_MODE: token",
    ):
        assert not literal_secrets(fine), fine


def infra_files() -> list[Path]:
    """Every file under infra/ that is committed (infra/.env holds real values and is ignored)."""
    ignored = {INFRA / ".env"}
    return [p for p in sorted(INFRA.rglob("*")) if p.is_file() and p not in ignored]


def test_no_literal_secrets_under_infra():
    files = infra_files()
    assert COMPOSE in files and RAYCLUSTER in files and WORKER in files
    found = {
        str(path.relative_to(REPO)): hits
        for path in files
        if (hits := literal_secrets(path.read_text(errors="replace")))
    }
    assert not found, f"literal secrets under infra/: {found}"


def test_env_file_is_ignored_and_example_has_placeholders():
    assert ".env" in (INFRA / ".gitignore").read_text().split()
    example = dict(
        line.split("=", 1)
        for line in (INFRA / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(REQUIRED) <= set(example)
    assert all(value.startswith("change-me") for value in example.values())


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
