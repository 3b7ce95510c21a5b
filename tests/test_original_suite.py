"""The seed-named suite (``saferun/tests``) with ``X402_API_URL``/``X402_API_KEY`` pointing at a real
SafeRun server's ``/x402`` API. (On the embedded platform it runs directly: ``saferun/tests`` is in
``testpaths``, so it is not run a second time here.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


async def test_the_original_x402_client_talks_to_a_saferun_server(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The original's ``X402Client`` (its own wire paths) against ``/x402/original`` of a real server:
    jobs, artifacts, identity, marketplace, and money: lock -> release and split for an approved checkpoint
    -> refund after the end, each checked on the server's ledger; forbidden releases refused, nothing
    moved. On SQLite and PostgreSQL."""
    import httpx

    from saferun.api.x402.client import X402Client
    from saferun.platform import scope
    from saferun.platform.embedded import EmbeddedPlatform

    service = IdentityService(db)
    _, key = service.create_identity_with_key("plat", "Platform", ["platform"])
    service.create_identity_with_key("poster_1", "Poster", ["poster"])
    service.create_identity_with_key("exec_1", "Executor", ["executor"])
    service.create_identity_with_key("sup_1", "Supervisor", ["supervisor"])
    with db.transaction() as conn:  # poster_1 lets the platform lock escrow from its funding account
        scope.grant(conn, "poster_1", "plat", "poster_1")
    await EmbeddedPlatform(db).register_supervisor("sup_1", ["data_processing"], "2.50")
    with serving(db, auth="keys") as url:
        monkeypatch.setenv("X402_API_URL", f"{url}/x402/original")
        client = X402Client(api_key=key.api_key)
        try:
            job = await client.create_job("data_processing", {"rows": 3}, 25.0, "exec_1")
            assert job["job_id"] and (await client.get_job(job["job_id"]))["job_id"] == job["job_id"]
            assert await client.update_job_status(job["job_id"], "running", {"reason": "started"}) is True
            assert (await client.get_job(job["job_id"]))["status"] == "running"
            sub = await client.create_approval_subjob(job["job_id"], "cp1", "sup_1", {"summary": "ok?"})
            assert sub["job_id"] != job["job_id"]
            art = await client.create_artifact("checkpoint_state", '{"a": 1}', {"checkpoint_id": "cp1"})
            got = await client.get_artifact(art["uri"])
            assert got["content"] == '{"a": 1}'
            assert await client.verify_identity("exec_1", "executor") is True
            assert await client.verify_identity("exec_1", "supervisor") is False
            assert (await client.get_user_profile("sup_1"))["user_id"] == "sup_1"
            found = await client.find_supervisors("data_processing", min_reputation=0.0)
            assert [s["supervisor_id"] for s in found] == ["sup_1"]
            await _money_through_the_original_client(client, db)
        finally:
            await client.close()

        wrong = httpx.post(f"{url}/x402/original/jobs", json={"type": "t", "data": {}, "escrow": {}},
                           headers={"Authorization": f"Bearer {key.api_key}"})
        assert wrong.status_code == 422 and "escrow" in wrong.text
        stranger = httpx.get(f"{url}/x402/original/jobs/{job['job_id']}")
        assert stranger.status_code == 401


def _ledger(db: Database) -> dict[str, int]:
    from saferun.storage.schema import ledger_legs

    with db.read() as conn:
        rows = conn.execute(
            select(ledger_legs.c.account, func.sum(ledger_legs.c.amount_micro)).group_by(
                ledger_legs.c.account
            )
        ).all()
    return {account: int(total) for account, total in rows if int(total) != 0}


async def _money_through_the_original_client(client: Any, db: Database) -> None:
    """The original client's escrow calls, by the platform API's rules (docs/security.md): the job states
    its poster and checkpoints; a sub-job completed with reason ``approved`` is the decision."""
    import httpx

    terms = {"workflow_id": "wf_orig", "poster_id": "poster_1", "checkpoints": ["cp1", "cp2"]}
    job = await client.create_job("data_processing", terms, 25.0, "exec_1")
    sub = await client.create_approval_subjob(job["job_id"], "cp1", "sup_1", {"summary": "step 1?"})
    escrow = await client.lock_escrow("wf_orig", 25.0, "poster_1", "exec_1")
    escrow_id = escrow["escrow_id"]
    assert escrow["amount"] == "25.00" and _ledger(db) == {"funding:poster_1": -25_000_000,
                                                          "escrow:wf_orig": 25_000_000}

    async def refused(recipient: str, amount: float, rule: str) -> None:
        before = _ledger(db)
        with pytest.raises(httpx.HTTPStatusError) as caught:
            await client.release_escrow(escrow_id, amount, recipient, "checkpoint_approved")
        assert caught.value.response.status_code == 403
        assert caught.value.response.json()["detail"]["rule"] == rule
        assert _ledger(db) == before  # nothing moved

    await refused("exec_1", 11.25, "payout_earned")  # cp1 is still pending
    await refused("plat", 1.0, "payout_recipient")  # the platform paying itself
    assert await client.update_job_status(sub["job_id"], "completed", {"reason": "approved"}) is True
    # cp1 is one of two milestones: 12.50, split 90/10
    assert await client.release_escrow(escrow_id, 11.25, "exec_1", "checkpoint_approved") is True
    splits = [{"recipient_id": "sup_1", "amount": 1.25, "reason": "supervision"}]
    assert await client.split_payment(escrow_id, splits) is True
    await refused("exec_1", 0.01, "payout_earned")  # cp1 is paid; cp2 was never approved
    await refused("poster_1", 12.5, "settlement_only")  # not ended yet
    assert await client.update_job_status(job["job_id"], "failed", {"reason": "stopped after cp1"}) is True
    assert await client.release_escrow(escrow_id, 12.5, "poster_1", "refund") is True
    assert _ledger(db) == {
        "funding:poster_1": -25_000_000,
        "wallet:exec_1": 11_250_000,
        "wallet:sup_1": 1_250_000,
        "wallet:poster_1": 12_500_000,
    }
