"""infra/docker-compose.yml: it validates with Debian's docker-compose, requires its credentials
(never defaulted), and wires the services, their shared settings, ports and bucket."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"

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
