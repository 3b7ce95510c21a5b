"""What Schemathesis found at the full budget (200 examples per operation, fresh draws, PostgreSQL and
SQLite, open and keys mode), each pinned by a deterministic test so it never depends on a lucky draw.
(A 64-character workflow id on PostgreSQL: ``tests/test_max_lengths.py``.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.quorum import QuorumRule
from saferun.storage.database import Database
from tests.helpers import row_counts


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


@pytest.mark.parametrize("same_as", ["poster_id", "executor_id"])
async def test_four_eyes_is_a_422_naming_supervisor_id_and_writes_nothing(
    api: httpx.AsyncClient, db: Database, same_as: str
) -> None:
    """The fuzzer's body had poster, executor and supervisor all "$ref": refused naming ``body``."""
    body = {
        "name": "n",
        "checkpoint_names": ["Review"],
        "escrow_amount": 405,
        "poster_id": "p",
        "executor_id": "e",
    }
    body["supervisor_id"] = body[same_as]
    before = row_counts(db)
    r = await api.post("/api/workflows", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["field"] == "supervisor_id" and "four eyes" in r.text
    assert row_counts(db) == before
    schema = (await api.get("/openapi.json")).json()["components"]["schemas"]["CreateWorkflow"]
    assert "four eyes" in schema["properties"]["supervisor_id"]["description"]


async def test_a_quorum_count_written_as_a_whole_float_is_read_as_an_integer(
    api: httpx.AsyncClient, db: Database
) -> None:
    """JSON Schema's ``integer`` includes ``49.0``; the strict field refused it. ``true``, ``"2"`` and
    ``2.5`` are still 422 naming the field, and write nothing."""

    def body(approvals: object) -> dict[str, object]:
        checkpoint = {"name": "Vote", "quorum": {"approvals": approvals, "of": "ops"}}
        return {
            "name": "n",
            "checkpoints": [checkpoint],
            "escrow_amount": 0,
            "poster_id": "p",
            "executor_id": "e",
        }

    # accepted as 2 (over HTTP the group must also have members: a data reference, like an unknown id)
    assert QuorumRule.model_validate({"approvals": 2.0, "of": "ops", "rejections": 3.0}).approvals == 2
    assert QuorumRule.model_validate({"approvals": 2.0, "of": "ops", "rejections": 3.0}).rejections == 3
    for bad in (True, "2", 2.5):
        before = row_counts(db)
        r = await api.post("/api/workflows", json=body(bad))
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["detail"]["field"] == "checkpoints.0.quorum.approvals"
        assert row_counts(db) == before
