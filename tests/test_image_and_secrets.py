"""infra/Dockerfile builds one image without secrets; no literal secret anywhere under infra/, and
infra/.env (the real credentials) stays out of git."""

from __future__ import annotations

import re
from pathlib import Path

from .test_compose import REQUIRED

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yml"
RAYCLUSTER = INFRA / "kuberay" / "raycluster.yaml"
WORKER = INFRA / "kubernetes" / "prefect-worker.yaml"
DOCKERFILE = INFRA / "Dockerfile"


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
