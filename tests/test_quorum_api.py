"""M-of-N quorum over HTTP on SQLite and PostgreSQL: the submit endpoint records a vote and answers the
votes so far; refusals name their rule and record nothing; impossible quorums are a 422 naming the field."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.helpers import quorum_group

QUORUM = {"approvals": 2, "of": "risk", "distinct_teams": True}


def body(quorum: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "Payout",
        "checkpoints": [{"name": "Pay", "checkpoint_id": "pay", "quorum": quorum}, {"name": "Close"}],
        "escrow_amount": "10.00",
        "poster_id": "poster",
        "executor_id": "agent",
    }


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    quorum_group(db, "risk", {"alice": "north", "bob": "south", "carol": "north"})
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def paused(api: httpx.AsyncClient) -> tuple[str, str]:
    created = await api.post("/api/workflows", json=body(QUORUM))
    assert created.status_code == 201, created.text
    wf = created.json()["workflow_id"]
    assert (await api.post(f"/api/workflows/{wf}/start")).status_code == 200
    cp = await api.post(
        f"/api/workflows/{wf}/checkpoints",
        json={"state": {"checkpoint_id": "pay", "parameters": {"amount": 5}}, "summary": "Pay 5?"},
    )
    assert cp.status_code == 201, cp.text
    return wf, cp.json()["approval_request_id"]


def vote(req: str, who: str, decision: str = "APPROVED", **extra: Any) -> dict[str, Any]:
    return {"request_id": req, "decision": decision, "approved_by": who, **extra}


async def test_votes_over_http(api: httpx.AsyncClient) -> None:
    wf, req = await paused(api)
    queue = (await api.get("/api/approvals/pending")).json()["pending_approvals"]
    assert queue[0]["quorum"] == {**QUORUM, "rejections": 1}
    assert queue[0]["tally"]["approvals"] == 0

    first = await api.post("/api/approvals/submit", json=vote(req, "alice", rationale="ok"))
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["workflow_status"] == "awaiting_approval"
    assert answer["message"].startswith("Vote APPROVED recorded: 1 of 2 approvals")
    assert answer["quorum"]["approvals"] == 1 and answer["quorum"]["needed"] == 2
    assert answer["quorum"]["may_still_vote"] == ["bob"]  # carol's team (north) approved already
    assert [v["voter"] for v in answer["quorum"]["votes"]] == ["alice"]

    refusals = [
        (vote(req, "alice"), 409, "quorum_one_vote"),
        (vote(req, "carol"), 403, "quorum_distinct_teams"),
        (vote(req, "mallory"), 403, "quorum_group"),
        (vote(req, "poster"), 403, "four_eyes"),  # the API's own rule names it first
        (vote(req, "bob", "MODIFIED", modifications={"amount": 4}), 422, "quorum_votes_only"),
    ]
    for payload, status, rule in refusals:
        r = await api.post("/api/approvals/submit", json=payload)
        assert r.status_code == status and rule in r.text, (payload, r.status_code, r.text)
    detail = (await api.get(f"/api/approvals/{req}")).json()
    assert detail["status"] == "pending" and len(detail["request"]["votes"]) == 1
    assert (await api.get(f"/api/workflows/{wf}")).json()["status"] == "awaiting_approval"

    last = await api.post("/api/approvals/submit", json=vote(req, "bob"))
    assert last.status_code == 200, last.text
    assert last.json()["workflow_status"] == "executing"
    assert last.json()["quorum"]["outcome"] == "APPROVED"
    decided = (await api.get(f"/api/approvals/{req}")).json()
    assert decided["decision"]["approved_by"] == "bob" and decided["request"]["tally"]["approvals"] == 2
    audit = (await api.get(f"/api/workflows/{wf}/audit")).json()
    assert audit["verified"] is True
    assert [e["actor"] for e in audit["events"] if e["kind"] == "vote"] == ["alice", "bob"]


@pytest.mark.parametrize(
    ("quorum", "field"),
    [
        ({"approvals": 4, "of": "risk"}, "checkpoints.0.quorum.of"),  # a group of 3
        ({"approvals": 1, "of": "nobody"}, "checkpoints.0.quorum.of"),  # unknown group
        ({"approvals": 3, "of": "risk", "distinct_teams": True}, "checkpoints.0.quorum.of"),  # 2 teams
        ({"approvals": 2, "of": "risk", "approvers": ["x"]}, "approvers"),  # unknown field
        ({"approvals": 0, "of": "risk"}, "approvals"),
    ],
)
async def test_impossible_quorums_are_refused_and_nothing_is_created(
    api: httpx.AsyncClient, quorum: dict[str, Any], field: str
) -> None:
    r = await api.post("/api/workflows", json=body(quorum))
    assert r.status_code == 422 and field in r.text, r.text
    assert (await api.get("/api/workflows")).json()["total"] == 0


async def test_the_sdk_votes_and_reads_the_votes(db: Database, api: httpx.AsyncClient) -> None:
    from saferun.client import AsyncSafeRunClient
    from saferun.errors import Forbidden

    _wf, req = await paused(api)
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    transport = httpx.ASGITransport(app=app)
    async with AsyncSafeRunClient("http://127.0.0.1", transport=transport) as client:
        first = await client.submit_decision(req, "APPROVED", approved_by="bob")
        assert first["quorum"]["approvals"] == 1 and first["quorum"]["may_still_vote"] == ["alice", "carol"]
        with pytest.raises(Forbidden) as refused:
            await client.submit_decision(req, "APPROVED", approved_by="mallory")
        assert refused.value.rule == "quorum_group"
        shown = await client.get_approval(req)
        assert [v["voter"] for v in shown["request"]["votes"]] == ["bob"]
        rejected = await client.submit_decision(req, "REJECTED", approved_by="carol", rationale="no")
        assert rejected["quorum"]["outcome"] == "REJECTED" and rejected["workflow_status"] == "rolling_back"


async def test_a_batch_vote_says_voted_until_the_quorum_is_reached(api: httpx.AsyncClient) -> None:
    """A batch approval of a quorum request records one vote: ``voted`` (still pending, not counted in
    ``decided``) until the vote that reaches the quorum, which is ``decided``."""
    _, req = await paused(api)
    first = await api.post(
        "/api/approvals/batch", json={"request_ids": [req], "decision": "APPROVED", "approved_by": "alice"}
    )
    assert first.status_code == 200, first.text
    assert first.json()["decided"] == 0
    [item] = first.json()["results"]
    assert item["outcome"] == "voted" and item["workflow_status"] == "awaiting_approval"
    assert (await api.get(f"/api/approvals/{req}")).json()["status"] == "pending"

    second = await api.post(
        "/api/approvals/batch", json={"request_ids": [req], "decision": "APPROVED", "approved_by": "bob"}
    )
    assert second.json()["decided"] == 1
    assert second.json()["results"][0]["outcome"] == "decided"
    assert second.json()["results"][0]["workflow_status"] == "executing"
