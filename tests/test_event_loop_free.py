"""No database call on the server's event loop (issue 12, target 3).

Every statement, every pool checkout and every read on the bare driver cursor is checked: if
the thread running it is running an asyncio event loop, the call blocked that loop (and with it every
other agent's long-poll). The whole API flow runs on one loop here, so the test side adds no thread of
its own: a route that did its database work inline would be caught.

Also: PostgreSQL checkouts ping only a connection idle for a while (no round trip per request), and a
connection the server dropped is replaced, not served as an error forever.
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, text

from saferun import WorkflowOrchestrator
from saferun.api.server import create_app
from saferun.errors import StoreUnavailable
from saferun.storage import bare_reads, database
from saferun.storage.database import Database
from tests.conftest import PG_URL
from tests.test_api import SEED_CREATE, client_for


@contextmanager
def on_loop_calls(db: Database) -> Iterator[list[str]]:
    """Where (stacks) a statement ran or a connection was checked out on a thread running an event loop."""
    found: list[str] = []

    def check(*_args: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # a worker thread: fine
        found.append("".join(traceback.format_stack(limit=14)))

    event.listen(db.engine, "before_cursor_execute", check)
    event.listen(db.engine, "checkout", check)
    bare_reads.observers.append(check)  # the bare cursor's reads bypass the pool and its events
    try:
        yield found
    finally:
        event.remove(db.engine, "before_cursor_execute", check)
        event.remove(db.engine, "checkout", check)
        bare_reads.observers.remove(check)


@pytest.fixture
async def served(db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=True)
    async with app.router.lifespan_context(app), client_for(app) as client:
        yield client, db


async def test_the_agent_and_reviewer_flow_never_touches_the_database_on_the_event_loop(
    served: tuple[httpx.AsyncClient, Database],
) -> None:
    api, db = served
    with on_loop_calls(db) as found:
        wf = (await api.post("/api/workflows", json=SEED_CREATE)).json()["workflow_id"]
        assert (await api.post(f"/api/workflows/{wf}/start")).status_code == 200
        for n in (1, 2):
            cp = await api.post(
                f"/api/workflows/{wf}/checkpoints",
                json={"state": {"checkpoint_id": f"step{n}", "parameters": {"n": n}}, "summary": "go?"},
            )
            assert cp.status_code == 201, cp.text
            req = cp.json()["approval_request_id"]
            # the agent long-polls while the reviewer decides: the wait must not hold the loop either
            waiting = asyncio.create_task(api.get(f"/api/approvals/{req}", params={"wait": 10}))
            await asyncio.sleep(0.05)
            assert (await api.get("/api/approvals/pending")).json()["total"] == 1
            decided = await api.post(
                "/api/approvals/submit",
                json={"request_id": req, "decision": "APPROVED", "approved_by": "human_789"},
            )
            assert decided.status_code == 200, decided.text
            answer = (await waiting).json()
            assert answer["status"] == "decided" and answer["decision"]["decision"] == "APPROVED"
            assert (await api.get(f"/api/approvals/{req}")).json()["status"] == "decided"
        for _ in range(2):  # the second from the warm path, on the bare cursor (SQLite)
            assert (await api.get(f"/api/workflows/{wf}/state")).json()["state"]["parameters"] == {"n": 2}
        for path in (
            "/api/stats",
            "/api/workflows",
            f"/api/workflows/{wf}/audit",
            "/approvals",
            "/workflows",
        ):
            assert (await api.get(path)).status_code == 200, path
        await asyncio.sleep(1.2)  # let the sweeper and the notice dispatcher run a pass on the same loop
    assert not found, found[0]


async def test_the_check_catches_a_call_made_on_the_loop(db: Database) -> None:
    """The detector itself: a read made inline in a coroutine is reported, a bare-cursor read too."""
    with on_loop_calls(db) as found:
        WorkflowOrchestrator(database=db).list_workflows()
    assert found
    found.clear()
    with on_loop_calls(db) as found:
        bare_reads.bare_read(db, lambda cur: cur.execute("select 1").fetchall())
    assert found


@pytest.mark.postgres
def test_postgres_checkouts_do_not_ping_and_a_dropped_connection_is_replaced(
    pg_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = pg_db
    pings: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: pings.append(a[2]))
    orch = WorkflowOrchestrator(database=db)
    for _ in range(5):
        orch.list_workflows()
    assert not any(s.strip().upper() == "SELECT 1" for s in pings)  # warm connections are not pinged

    def kill_pooled() -> None:
        db.engine.dispose()  # the pool then holds exactly the one connection this read opens
        with db.read() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.dispose()

    # a connection idle past the threshold is checked once before use: the server's restart goes unseen
    monkeypatch.setattr(database, "IDLE_PING_SECONDS", 0.0)
    kill_pooled()
    assert orch.list_workflows() == []
    # without that check (busy connections), the request that meets the dead connection is a 503 with
    # nothing written, and the pool is renewed, so the next one works
    monkeypatch.setattr(database, "IDLE_PING_SECONDS", 3600.0)
    kill_pooled()
    with pytest.raises(StoreUnavailable):
        orch.list_workflows()
    assert orch.list_workflows() == []
