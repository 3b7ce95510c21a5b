"""Several pending requests at one checkpoint over the API and from the agent SDK (issue 14 item 3).

The REST checkpoint call takes ``items``; ``GET /api/approvals/{id}/items`` lists a checkpoint's items;
batch decisions name the checkpoint and item of each result; ``SupervisedRun.checkpoint_many`` asks
several things at once, in process and through ``RemoteOrchestrator`` against a real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from saferun import ApprovalRejected, supervised
from saferun.api.server import create_app
from saferun.client import RemoteOrchestrator, SafeRunClient
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database
from tests.helpers import decide, make_config
from tests.ui_support import serve

CREATE = {
    "name": "Parallel tool calls",
    "checkpoint_names": ["Send emails"],
    "escrow_amount": "30.00",
    "poster_id": "poster",
    "executor_id": "agent",
}
ITEMS = [
    {"key": "call_1", "summary": "Email Alice", "parameters": {"to": "alice", "n": 1}},
    {"key": "call_2", "summary": "Email Bob", "parameters": {"to": "bob", "n": 2}},
    {"key": "call_3", "summary": "Email Carol", "parameters": {"to": "carol", "n": 3}},
]


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c:
        yield c


async def started(api: httpx.AsyncClient) -> str:
    wf = (await api.post("/api/workflows", json=CREATE)).json()["workflow_id"]
    assert (await api.post(f"/api/workflows/{wf}/start")).status_code == 200
    return str(wf)


async def paused_items(api: httpx.AsyncClient) -> tuple[str, list[str]]:
    wf = await started(api)
    out = await api.post(
        f"/api/workflows/{wf}/checkpoints",
        json={"state": {"checkpoint_id": "x"}, "summary": "three emails", "items": ITEMS},
    )
    assert out.status_code == 201, out.text
    body = out.json()
    assert [r["item_key"] for r in body["approval_requests"]] == ["call_1", "call_2", "call_3"]
    assert body["approval_request_id"] == body["approval_requests"][0]["request_id"]
    return wf, [r["request_id"] for r in body["approval_requests"]]


async def test_a_checkpoint_with_items_is_decided_by_one_batch(api: httpx.AsyncClient) -> None:
    wf, reqs = await paused_items(api)
    listed = (await api.get(f"/api/approvals/{reqs[1]}/items")).json()
    assert listed["checkpoint_name"] == "Send emails" and listed["group_id"]
    assert [(i["request"]["item_key"], i["status"]) for i in listed["items"]] == [
        ("call_1", "pending"),
        ("call_2", "pending"),
        ("call_3", "pending"),
    ]
    out = await api.post(
        "/api/approvals/batch", json={"workflow_id": wf, "decision": "APPROVED", "approved_by": "sup"}
    )
    results = out.json()["results"]
    assert [(r["item_key"], r["checkpoint_name"], r["outcome"]) for r in results] == [
        ("call_1", "Send emails", "decided"),
        ("call_2", "Send emails", "decided"),
        ("call_3", "Send emails", "decided"),
    ]
    # the first two leave the workflow waiting for their siblings; the last one resumes it, paid once
    assert [r["workflow_status"] for r in results] == ["awaiting_approval", "awaiting_approval", "executing"]
    ledger = (await api.get(f"/api/workflows/{wf}/ledger")).json()
    assert ledger["escrow"]["released"] == "30.00"
    state = (await api.get(f"/api/workflows/{wf}/state")).json()
    assert state["state"]["parameters"] == {i["key"]: i["parameters"] for i in ITEMS}


async def test_a_batch_rejection_closes_the_other_items_and_a_closed_item_is_409(
    api: httpx.AsyncClient,
) -> None:
    wf, reqs = await paused_items(api)
    out = await api.post(
        "/api/approvals/batch",
        json={"request_ids": reqs, "decision": "REJECTED", "approved_by": "sup", "rationale": "spam"},
    )
    assert [(r["item_key"], r["outcome"]) for r in out.json()["results"]] == [
        ("call_1", "decided"),
        ("call_2", "closed"),
        ("call_3", "closed"),
    ]
    late = await api.post(
        "/api/approvals/submit", json={"request_id": reqs[2], "decision": "APPROVED", "approved_by": "sup"}
    )
    assert late.status_code == 409
    assert "closed" in late.text and "sibling item was rejected" in late.text
    detail = (await api.get(f"/api/approvals/{reqs[2]}")).json()
    assert detail["status"] == "closed" and detail["decision"] is None
    assert (await api.get(f"/api/workflows/{wf}")).json()["status"] in ("rolling_back", "executing")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "items"),
        ({"items": [{"key": "a"}, {"key": "a"}]}, "items.1.key"),
        ({"items": [{"key": " "}]}, "items.0.key"),
        (
            {
                "items": [{"key": "a", "parameters": {"n": 1}}],
                "state": {"checkpoint_id": "x", "parameters": {"n": 1}},
            },
            "state.parameters",
        ),
        ({"items": [{"key": "a"}], "request_approval": False}, "request_approval"),
        (
            {"items": [{"key": "a", "parameter_schema": {"type": "object", "required": "n"}}]},
            "items.0.parameter_schema.required",
        ),
    ],
)
async def test_bad_items_are_422_naming_the_field_and_write_nothing(
    api: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    wf = await started(api)
    out = await api.post(
        f"/api/workflows/{wf}/checkpoints", json={"state": {"checkpoint_id": "x"}, "summary": "s", **body}
    )
    assert out.status_code == 422, out.text
    assert out.json()["detail"]["field"] == field
    assert (await api.get(f"/api/workflows/{wf}/snapshots")).json()["snapshots"] == []
    assert (await api.get("/api/approvals/pending")).json()["total"] == 0


async def test_checkpoint_many_in_process_returns_each_items_decision(db: Database) -> None:
    orch = WorkflowOrchestrator(database=db)
    config = make_config(n=1)

    async def reviewer() -> None:
        while len(pending := orch.pending_approvals(config.workflow_id)) < 2:
            await asyncio.sleep(0.005)
        by_key = {r.item_key: r.request_id for r in pending}
        decide(orch, by_key["refund_a"], "MODIFIED", modifications={"amount": "5.00"})
        decide(orch, by_key["refund_b"], "APPROVED")

    async with supervised(config, orch) as run:
        asked, _ = await asyncio.gather(
            run.checkpoint_many(
                "Review 1",
                items=[
                    {"key": "refund_a", "summary": "Refund A", "parameters": {"amount": "50.00"}},
                    {"key": "refund_b", "summary": "Refund B", "parameters": {"amount": "7.00"}},
                ],
            ),
            reviewer(),
        )
    assert asked["refund_a"].decision == "MODIFIED" and asked["refund_a"].parameters == {"amount": "5.00"}
    assert asked["refund_b"].decision == "APPROVED" and asked["refund_b"].parameters == {"amount": "7.00"}
    asked["refund_a"].verify({"amount": "5.00"})
    assert orch.get_workflow(config.workflow_id).current_state.value == "completed"


def review_items(url: str, workflow_id: str, plan: dict[str, tuple[str, dict[str, Any] | None]]) -> None:
    """A reviewer in another thread: waits for the items, then decides each by key."""
    with SafeRunClient(url) as client:
        while len(pending := client.pending(workflow_id)["pending_approvals"]) < len(plan):
            time.sleep(0.005)
        by_key = {item["item_key"]: item for item in pending}
        for key, (decision, mods) in plan.items():  # in the plan's order (the queue sorts by expiry)
            item = by_key[key]
            client.submit_decision(
                item["request_id"], decision, approved_by="reviewer", rationale="checked", modifications=mods
            )


async def test_checkpoint_many_through_a_remote_server(db: Database) -> None:
    config = make_config(n=1)
    items = [
        {"key": "tool_1", "summary": "Book hotel", "parameters": {"nights": 3}},
        {"key": "tool_2", "summary": "Book flight", "parameters": {"seat": "aisle"}},
    ]
    with serve(create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)) as url:
        async with RemoteOrchestrator(url) as orch:
            async with supervised(config, orch) as run:
                asked, _ = await asyncio.gather(
                    run.checkpoint_many("Review 1", items=items),
                    asyncio.to_thread(
                        review_items,
                        url,
                        config.workflow_id,
                        {"tool_1": ("MODIFIED", {"nights": 2}), "tool_2": ("APPROVED", None)},
                    ),
                )
            assert asked["tool_1"].parameters == {"nights": 2}
            assert asked["tool_2"].parameters == {"seat": "aisle"}
            assert orch.get_workflow(config.workflow_id).current_state.value == "completed"


async def test_checkpoint_many_raises_naming_the_rejected_item_remotely(db: Database) -> None:
    config = make_config(n=1)
    items = [{"key": "k1", "parameters": {"x": 1}}, {"key": "k2", "parameters": {"x": 2}}]
    with serve(create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)) as url:
        async with RemoteOrchestrator(url) as orch:
            with pytest.raises(ApprovalRejected) as info:
                async with supervised(config, orch) as run:
                    await asyncio.gather(
                        run.checkpoint_many("Review 1", items=items),
                        asyncio.to_thread(
                            review_items,
                            url,
                            config.workflow_id,
                            {"k1": ("APPROVED", None), "k2": ("REJECTED", None)},
                        ),
                    )
            assert info.value.item_key == "k2" and info.value.rationale == "checked"
