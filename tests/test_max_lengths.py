"""Every id and name at the longest length the API accepts is stored and read back on SQLite and
PostgreSQL alike.

SQLite does not enforce ``VARCHAR(n)``; PostgreSQL does. A value the schema allows must never reach a
column too narrow for it (or for a value derived from it): on PostgreSQL that was a 500 while SQLite
answered 201. Found by Schemathesis at the full budget on PostgreSQL (keys mode): a 63-character
``workflow_id`` made ``escrow_id`` (``"escrow_" + workflow_id``) 70 characters, one too many for its
``VARCHAR(64)`` column.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database

WF = "w" * 64  # CreateWorkflow.workflow_id: maxLength 64
PARTY = "p" * 199  # poster/executor/supervisor ids: maxLength 200 (one below, so each differs)
CP = "c" * 200  # checkpoint_id: maxLength 200
NAME = "n" * 500  # workflow and checkpoint names: maxLength 500


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def test_the_longest_ids_the_schema_allows_go_through_a_whole_workflow(api: httpx.AsyncClient) -> None:
    body = {
        "name": NAME,
        "checkpoints": [{"name": NAME, "checkpoint_id": CP, "milestone_weight": 1}],
        "escrow_amount": "9223372036854.775807",  # the largest amount (int64 micro-units)
        "poster_id": PARTY + "1",
        "executor_id": PARTY + "2",
        "supervisor_id": PARTY + "3",
        "workflow_id": WF,
        "workflow_type": "t" * 64,
        "platform_id": "f" * 200,
    }
    created = await api.post("/api/workflows", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["workflow_id"] == WF
    assert (await api.post(f"/api/workflows/{WF}/start")).status_code == 200
    checkpoint = await api.post(
        f"/api/workflows/{WF}/checkpoints",
        json={"state": {"checkpoint_id": CP, "parameters": {"n": 1}}, "summary": "s" * 2_000},
    )
    assert checkpoint.status_code == 201, checkpoint.text
    request_id = checkpoint.json()["approval_request_id"]
    decided = await api.post(
        "/api/approvals/submit",
        json={"request_id": request_id, "decision": "APPROVED", "approved_by": PARTY + "3"},
    )
    assert decided.status_code == 200, decided.text
    workflow = await api.get(f"/api/workflows/{WF}")
    assert workflow.status_code == 200, workflow.text
    ledger = await api.get(f"/api/workflows/{WF}/ledger")
    assert ledger.status_code == 200, ledger.text
    assert ledger.json()["escrow"]["released"] == "9223372036854.775807"
    assert (await api.get(f"/api/workflows/{WF}/audit")).json()["verified"] is True
