"""Two real server processes on one PostgreSQL database behave as one system, over HTTP.

PostgreSQL only: without it these skip with the reason, and under CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import drop_pg_schema, make_pg_database, require_postgres


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def replicas() -> Iterator[list[str]]:
    require_postgres()
    db, schema = make_pg_database()
    url = db.engine.url.render_as_string(hide_password=False)
    db.dispose()
    procs, urls = [], []
    env = {**os.environ, "DATABASE_URL": url, "SAFERUN_AUTH": "open", "PYTHONPATH": str(Path.cwd())}
    try:
        for _ in range(2):
            port = _free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "saferun.cli.main", "serve", "--port", str(port), "--no-demo"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for u in urls:
            for _ in range(300):
                try:
                    if httpx.get(f"{u}/api/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            else:
                raise RuntimeError(f"replica {u} did not start")
        yield urls
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        drop_pg_schema(schema)


async def _paused(c: httpx.AsyncClient) -> str:
    wf = (
        await c.post(
            "/api/workflows",
            json={
                "name": "replicas",
                "checkpoint_names": ["Review"],
                "escrow_amount": "10",
                "poster_id": "p",
                "executor_id": "a",
            },
        )
    ).json()["workflow_id"]
    await c.post(f"/api/workflows/{wf}/start")
    cp = await c.post(f"/api/workflows/{wf}/checkpoints", json={"state": {"checkpoint_id": "r"}})
    return str(cp.json()["approval_request_id"])


async def test_a_decision_on_one_replica_wakes_a_long_poll_on_the_other(replicas: list[str]) -> None:
    a, b = replicas
    async with (
        httpx.AsyncClient(base_url=a, timeout=60) as ca,
        httpx.AsyncClient(base_url=b, timeout=60) as cb,
    ):
        req = await _paused(ca)
        poll = asyncio.create_task(ca.get(f"/api/approvals/{req}", params={"wait": 30}))
        await asyncio.sleep(0.3)
        assert not poll.done()  # really waiting
        decided = await cb.post(
            "/api/approvals/submit", json={"request_id": req, "decision": "APPROVED", "approved_by": "human"}
        )
        assert decided.status_code == 200
        got = (await asyncio.wait_for(poll, 20)).json()
        assert got["decision"]["decision"] == "APPROVED" and got["status"] == "decided"


async def test_concurrent_decisions_on_two_replicas_yield_one_success(replicas: list[str]) -> None:
    async with (
        httpx.AsyncClient(base_url=replicas[0], timeout=60) as c0,
        httpx.AsyncClient(base_url=replicas[1], timeout=60) as c1,
    ):
        for _ in range(3):
            req = await _paused(c0)
            body = {"request_id": req, "decision": "APPROVED", "approved_by": "human"}
            results = await asyncio.gather(
                *(c.post("/api/approvals/submit", json=body) for c in (c0, c1, c0, c1))
            )
            codes = sorted(r.status_code for r in results)
            assert codes == [200, 409, 409, 409], [r.text for r in results]
