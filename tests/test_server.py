"""The seed's read endpoints, over real HTTP through the ASGI app, in the seed's shapes."""

from __future__ import annotations

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.helpers import pause, started


@pytest.fixture
async def client(db: Database):  # type: ignore[no-untyped-def]
    orch = WorkflowOrchestrator(database=db)
    app = create_app(orch)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
        c.orch = orch  # type: ignore[attr-defined]
        yield c


async def test_health(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/health")).json() == {
        "status": "healthy",
        "service": "SafeRun X402",
        "version": "0.1.0",
    }


async def test_workflow_pending_and_stats_shapes(client: httpx.AsyncClient) -> None:
    orch: WorkflowOrchestrator = client.orch  # type: ignore[attr-defined]
    wf = started(orch)
    req = await pause(orch, wf)
    body = (await client.get(f"/api/workflows/{wf}")).json()
    assert body["status"] == "awaiting_approval" and body["total_checkpoints"] == 2
    assert {
        "workflow_id",
        "name",
        "description",
        "current_checkpoint",
        "snapshots",
        "approval_requests",
        "approval_responses",
        "started_at",
        "completed_at",
        "error_message",
    } <= set(body)
    listing = (await client.get("/api/workflows")).json()
    assert listing["total"] == 1 and listing["workflows"][0]["workflow_id"] == wf
    pending = (await client.get("/api/approvals/pending")).json()
    assert pending["total"] == 1 and pending["pending_approvals"][0]["request_id"] == req
    stats = (await client.get("/api/stats")).json()
    assert stats["workflow_states"] == {"awaiting_approval": 1} and stats["pending_approvals"] == 1


async def test_unknown_workflow_is_a_404_naming_it(client: httpx.AsyncClient) -> None:
    res = await client.get("/api/workflows/wf_missing")
    assert res.status_code == 404 and res.json()["detail"]["workflow_id"] == "wf_missing"


def test_saferun_serve_answers_over_real_http(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "saferun.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = None
        for _ in range(100):
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).json()
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert body == {"status": "healthy", "service": "SafeRun X402", "version": "0.1.0"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_refuses_open_mode_on_a_public_address() -> None:
    from typer.testing import CliRunner

    from saferun.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--auth", "open"])
    assert result.exit_code == 1 and "refusing to listen on 0.0.0.0 in open mode" in result.output
