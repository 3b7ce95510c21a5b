"""Real server processes on one PostgreSQL database behave as one system, over HTTP: two side by side,
and three behind a round-robin proxy running the README's agent example (issue 13, item 4).

PostgreSQL only: without it these skip with the reason, and under CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from saferun.core.identity import IdentityService
from saferun.storage.database import Database
from tests import ui_support
from tests.conftest import drop_pg_schema, make_pg_database, require_postgres
from tests.serving import free_port
from tests.test_readme import README, blocks


@contextlib.contextmanager
def _replicas(n: int, **env_extra: str) -> Iterator[tuple[list[str], Database]]:
    """``n`` real ``saferun serve`` processes on one fresh PostgreSQL schema; yields their URLs and the
    database (for setup the test does directly, e.g. identities)."""
    require_postgres()
    db, schema = make_pg_database()
    url = db.engine.url.render_as_string(hide_password=False)
    procs, urls = [], []
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SAFERUN_AUTH": "open",
        "PYTHONPATH": str(Path.cwd()),
        **env_extra,
    }
    try:
        for _ in range(n):
            port = free_port()
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
        yield urls, db
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
        db.dispose()
        drop_pg_schema(schema)


@pytest.fixture
def replicas() -> Iterator[list[str]]:
    with _replicas(2) as (urls, _db):
        yield urls


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


class RoundRobinProxy:
    """A small HTTP reverse proxy (ASGI, loopback only): each request goes to the next replica in turn,
    whole body in, whole answer out, and is logged as ``(method, path, replica index)``."""

    def __init__(self, upstreams: list[str]) -> None:
        self.upstreams = upstreams
        self.count = 0
        self.log: list[tuple[str, str, int]] = []
        self.client = httpx.AsyncClient(timeout=None)

    def next_replica(self) -> int:
        return self.count % len(self.upstreams)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await self.client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        i = self.next_replica()
        self.count += 1
        self.log.append((scope["method"], scope["path"], i))
        skip = {b"host", b"content-length", b"connection", b"transfer-encoding"}
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.lower() not in skip]
        query = ("?" + scope["query_string"].decode()) if scope["query_string"] else ""
        answer = await self.client.request(
            scope["method"], self.upstreams[i] + scope["path"] + query, headers=headers, content=body
        )
        drop = {"content-length", "transfer-encoding", "connection", "content-encoding"}
        out = [(k.encode(), v.encode()) for k, v in answer.headers.items() if k.lower() not in drop]
        out.append((b"x-replica", str(i).encode()))
        await send({"type": "http.response.start", "status": answer.status_code, "headers": out})
        await send({"type": "http.response.body", "body": answer.content})


def _readme_agent(proxy_url: str) -> str:
    """The README's keys-mode agent (``attach`` through ``RemoteOrchestrator``), pointed at the proxy."""
    (block,) = [b for b in blocks(README.read_text()) if b.lang == "python" and "attach(" in b.text]
    return block.text.replace("http://127.0.0.1:8001", proxy_url)


@pytest.mark.slow
async def test_three_replicas_behind_a_round_robin_proxy_run_the_readme_agent(tmp_path: Path) -> None:
    with _replicas(3, SAFERUN_AUTH="keys") as (urls, db):
        ids = IdentityService(db)
        keys = {
            name: ids.create_identity_with_key(name, roles=[role])[1].api_key
            for name, role in (("poster_ann", "poster"), ("agent_bob", "executor"), ("rita", "supervisor"))
        }
        proxy = RoundRobinProxy(urls)
        agent = tmp_path / "agent.py"
        with ui_support.serve(proxy) as proxy_url:  # type: ignore[arg-type]
            agent.write_text(_readme_agent(proxy_url))
            async with httpx.AsyncClient(base_url=proxy_url, timeout=60) as c:
                deciders = []
                for run in range(3):
                    wf = await _post(
                        c,
                        keys["poster_ann"],
                        "/api/workflows",
                        {
                            "name": f"Weekly report {run}",
                            "checkpoint_names": ["Review plan"],
                            "escrow_amount": "20.00",
                            "poster_id": "poster_ann",
                            "executor_id": "agent_bob",
                            "supervisor_id": "rita",
                        },
                    )
                    env = {**os.environ, "WF": wf["workflow_id"], "AGENT_KEY": keys["agent_bob"]}
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable,
                        str(agent),
                        env=env,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.STDOUT,
                    )
                    rita = {"Authorization": f"Bearer {keys['rita']}"}
                    pending: list[dict[str, Any]] = []
                    while not pending:  # the agent's checkpoint is open (asked of a replica directly)
                        got = httpx.get(f"{urls[0]}/api/approvals/pending", headers=rita, timeout=10)
                        pending = got.json()["pending_approvals"]
                        await asyncio.sleep(0.1)
                    req = pending[0]["request_id"]
                    polls = [i for m, path, i in proxy.log if path == f"/api/approvals/{req}"]
                    while not polls:  # the agent is long-polling its decision on some replica
                        await asyncio.sleep(0.05)
                        polls = [i for m, path, i in proxy.log if path == f"/api/approvals/{req}"]
                    # the decision goes to a replica other than the agent's long-poll, a different one
                    # each run: step the round robin with health checks until the next pick is that one
                    target = next(i for i in range(3) if i != polls[-1] and i not in deciders[-1:])
                    while proxy.next_replica() != target:
                        assert (await c.get("/api/health")).status_code == 200
                    decided = await c.post(
                        "/api/approvals/submit",
                        headers=rita,
                        json={
                            "request_id": req,
                            "decision": "MODIFIED",
                            "modifications": {"pages": 8},
                            "approved_by": "rita",
                            "rationale": "shorter",
                        },
                    )
                    assert decided.status_code == 200, decided.text
                    assert int(decided.headers["x-replica"]) == target
                    deciders.append(target)
                    out, _ = await proc.communicate()
                    assert proc.returncode == 0, out.decode()
                    assert "MODIFIED by rita {'pages': 8}" in out.decode()
                    final = httpx.get(f"{urls[2]}/api/workflows/{wf['workflow_id']}", headers=rita).json()
                    assert final["status"] == "completed"
        assert len(set(deciders)) >= 2  # decisions landed on different replicas
        assert {i for _, _, i in proxy.log} == {0, 1, 2}  # and every replica served the agents


async def _post(c: httpx.AsyncClient, key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    res = await c.post(path, json=body, headers={"Authorization": f"Bearer {key}"})
    assert res.status_code in (200, 201), res.text
    return dict(res.json())
