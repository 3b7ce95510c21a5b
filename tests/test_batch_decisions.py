"""Batch decisions (issue 14, item 3): several pending requests approved or rejected in one call, each
decided exactly once with a per-item result; unknown, foreign, refused and already-decided items are
reported, never fatal; two batches racing over the same requests decide each request once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.identity import IdentityService
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.test_api import client_for, paused


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)) as c:
        yield c


async def test_a_batch_approves_each_request_once_and_reports_the_rest(api: httpx.AsyncClient) -> None:
    reqs = [(await paused(api))[1] for _ in range(3)]
    first = await api.post(
        "/api/approvals/submit", json={"request_id": reqs[0], "decision": "APPROVED", "approved_by": "sup"}
    )
    assert first.status_code == 200
    out = await api.post(
        "/api/approvals/batch",
        json={"request_ids": [*reqs, "req_unknown"], "decision": "APPROVED", "approved_by": "sup"},
    )
    assert out.status_code == 200, out.text
    body = out.json()
    outcomes = {r["request_id"]: r["outcome"] for r in body["results"]}
    assert outcomes == {
        reqs[0]: "already_decided",
        reqs[1]: "decided",
        reqs[2]: "decided",
        "req_unknown": "not_found",
    }
    assert body["decided"] == 2
    assert {r["workflow_status"] for r in body["results"] if r["outcome"] == "decided"} == {"executing"}
    assert (await api.get("/api/approvals/pending")).json()["total"] == 0


async def test_a_batch_rejection_of_a_whole_workflow_needs_a_rationale(api: httpx.AsyncClient) -> None:
    wf, req = await paused(api)
    bare = await api.post(
        "/api/approvals/batch", json={"workflow_id": wf, "decision": "REJECTED", "approved_by": "sup"}
    )
    assert bare.status_code == 422 and bare.json()["detail"]["field"] == "rationale"
    out = await api.post(
        "/api/approvals/batch",
        json={"workflow_id": wf, "decision": "REJECTED", "approved_by": "sup", "rationale": "wrong vendor"},
    )
    assert [(r["request_id"], r["outcome"]) for r in out.json()["results"]] == [(req, "decided")]
    assert out.json()["results"][0]["workflow_status"] in ("rolling_back", "failed", "executing")
    detail = (await api.get(f"/api/approvals/{req}")).json()
    assert detail["decision"]["decision"] == "REJECTED" and detail["decision"]["rationale"] == "wrong vendor"


@pytest.mark.parametrize(
    "shape",
    [
        {"decision": "APPROVED"},  # neither request_ids nor workflow_id
        {"request_ids": [], "decision": "APPROVED"},  # an empty batch
        {"request_ids": ["REQ", "REQ"], "decision": "APPROVED"},  # the same request twice
        {"request_ids": ["REQ"], "workflow_id": "WF", "decision": "APPROVED"},  # both selections
        {"request_ids": ["REQ"], "decision": "MODIFIED"},  # a batch approves or rejects
    ],
)
async def test_malformed_batches_are_422_and_decide_nothing(api: httpx.AsyncClient, shape: dict) -> None:
    wf, req = await paused(api)
    body: dict = {"approved_by": "sup", **shape}
    if "request_ids" in body:
        body["request_ids"] = [req for _ in body["request_ids"]]
    if "workflow_id" in body:
        body["workflow_id"] = wf
    out = await api.post("/api/approvals/batch", json=body)
    assert out.status_code == 422, out.text
    assert (await api.get(f"/api/approvals/{req}")).json()["status"] == "pending"


async def test_two_batches_racing_decide_every_request_exactly_once(db: Database) -> None:
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    async with client_for(app) as api:
        reqs = [(await paused(api))[1] for _ in range(6)]
        bodies = [
            {"request_ids": reqs[:4], "decision": "APPROVED", "approved_by": "sup_1"},
            {"request_ids": reqs[2:], "decision": "APPROVED", "approved_by": "sup_2"},
        ]
        answers = await asyncio.gather(*(api.post("/api/approvals/batch", json=b) for b in bodies))
        decided = [r["request_id"] for a in answers for r in a.json()["results"] if r["outcome"] == "decided"]
        assert sorted(decided) == sorted(reqs)  # each once: the overlap went to exactly one batch
        others = [r for a in answers for r in a.json()["results"] if r["outcome"] != "decided"]
        assert all(r["outcome"] == "already_decided" for r in others) and len(others) == 2
        for req in reqs:
            assert (await api.get(f"/api/approvals/{req}")).json()["status"] == "decided"


async def test_in_keys_mode_only_the_assigned_supervisors_items_are_decided(db: Database) -> None:
    service = IdentityService(db)
    keys = {}
    for name, roles in (
        ("poster", ["poster"]),
        ("agent", ["executor"]),
        ("sup_a", ["supervisor"]),
        ("sup_b", ["supervisor"]),
    ):
        keys[name] = service.create_identity_with_key(name, name, roles)[1].api_key
    app = create_app(WorkflowOrchestrator(database=db), auth="keys", sweep=False)

    def auth(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {keys[name]}"}

    async with client_for(app) as api:
        reqs = {}
        for sup in ("sup_a", "sup_b"):
            created = await api.post(
                "/api/workflows",
                headers=auth("poster"),
                json={
                    "name": "w",
                    "checkpoint_names": ["c"],
                    "escrow_amount": 10,
                    "poster_id": "poster",
                    "executor_id": "agent",
                    "supervisor_id": sup,
                },
            )
            wf = created.json()["workflow_id"]
            await api.post(f"/api/workflows/{wf}/start", headers=auth("agent"))
            cp = await api.post(
                f"/api/workflows/{wf}/checkpoints",
                headers=auth("agent"),
                json={
                    "state": {"checkpoint_id": created.json().get("checkpoint_ids", ["c"])[0]},
                    "summary": "ok?",
                },
            )
            reqs[sup] = cp.json()["approval_request_id"]
        out = await api.post(
            "/api/approvals/batch",
            headers=auth("sup_a"),
            json={"request_ids": [reqs["sup_a"], reqs["sup_b"]], "decision": "APPROVED"},
        )
        results = {r["request_id"]: r["outcome"] for r in out.json()["results"]}
        # B's request is not sup_a's to see: reported exactly as an unknown id, and left pending
        assert results == {reqs["sup_a"]: "decided", reqs["sup_b"]: "not_found"}
        assert (await api.get(f"/api/approvals/{reqs['sup_b']}", headers=auth("sup_b"))).json()[
            "status"
        ] == "pending"
        poster = await api.post(
            "/api/approvals/batch",
            headers=auth("poster"),
            json={"request_ids": [reqs["sup_b"]], "decision": "APPROVED"},
        )
        [item] = poster.json()["results"]
        assert item["outcome"] == "refused" and item["error"]["rule"] == "four_eyes"
