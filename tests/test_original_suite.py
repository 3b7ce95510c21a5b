"""The seed-named suite (``saferun/tests``) with ``X402_API_URL``/``X402_API_KEY`` pointing at a real
SafeRun server's ``/x402`` API. (On the embedded platform it runs directly: ``saferun/tests`` is in
``testpaths``, so it is not run a second time here.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from saferun.core.identity import IdentityService
from saferun.storage.database import Database
from saferun.storage.schema import artifacts
from tests.test_client import serving

ROOT = Path(__file__).resolve().parent.parent


def _run_suite(extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("X402_", "PYTEST_"))}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "saferun/tests"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def remote_platform(sqlite_db: Database) -> Iterator[tuple[str, str]]:
    _, key = IdentityService(sqlite_db).create_identity_with_key("seed_suite", "Seed suite", ["platform"])
    with serving(sqlite_db, auth="keys") as url:
        yield f"{url}/x402", key.api_key


def test_seed_suite_against_a_remote_saferun_platform(
    remote_platform: tuple[str, str], sqlite_db: Database
) -> None:
    url, key = remote_platform
    result = _run_suite({"X402_API_URL": url, "X402_API_KEY": key})
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout
    # the suite's checkpoint artifacts went over HTTP to the server's store
    with sqlite_db.read() as conn:
        stored = conn.execute(
            select(func.count()).select_from(artifacts).where(artifacts.c.artifact_type == "checkpoint_state")
        ).scalar_one()
    assert stored >= 1


@pytest.mark.postgres
def test_seed_suite_on_postgresql() -> None:
    """The seed-named suite on the embedded platform over PostgreSQL (its own run uses SQLite)."""
    from tests.conftest import drop_pg_schema, make_pg_database, require_postgres

    require_postgres()
    database, schema = make_pg_database()
    try:
        url = database.engine.url.render_as_string(hide_password=False)
        database.dispose()
        result = _run_suite({"DATABASE_URL": url, "SAFERUN_TEST_KEEP_DATABASE": "1"})
        assert result.returncode == 0, result.stdout + result.stderr
        assert " passed" in result.stdout and "failed" not in result.stdout
        check = Database(url)
        try:
            with check.read() as conn:
                stored = conn.execute(select(func.count()).select_from(artifacts)).scalar_one()
            assert stored >= 1  # the suite's checkpoints were written to this PostgreSQL schema
        finally:
            check.dispose()
    finally:
        drop_pg_schema(schema)
