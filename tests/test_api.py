"""The REST API over HTTP (ASGI transport): the seed's endpoints as documented, the remote-agent endpoints,
authentication and authorization, and the error contract (4xx naming the problem, never a 500)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from saferun.api.server import create_app
from saferun.core.identity import IdentityService
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.storage.database import Database


def client_for(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")  # type: ignore[arg-type]


@pytest.fixture
async def api(db: Database) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)) as c:
        yield c


SEED_CREATE = {
    "name": "My Workflow",
    "description": "Description here",
    "checkpoint_names": ["Review Step 1", "Review Step 2"],
    "escrow_amount": 100.0,
    "poster_id": "user_123",
    "executor_id": "agent_456",
}


async def paused(api: httpx.AsyncClient, parameters: dict | None = None) -> tuple[str, str]:
    wf = (await api.post("/api/workflows", json=SEED_CREATE)).json()["workflow_id"]
    assert (await api.post(f"/api/workflows/{wf}/start")).status_code == 200
    cp = await api.post(
        f"/api/workflows/{wf}/checkpoints",
        json={
            "state": {
                "checkpoint_id": "step1",
                "intermediate_outputs": {"records_found": 100},
                "parameters": parameters or {"threshold": 100},
            },
            "summary": "Agent completed data collection. Found 100 records. Ready to proceed?",
            "context": {"records_found": 100, "quality_score": 0.95},
        },
    )
    assert cp.status_code == 201, cp.text
    return wf, cp.json()["approval_request_id"]


async def test_the_seed_rest_flow_as_documented(api: httpx.AsyncClient) -> None:
    created = await api.post("/api/workflows", json=SEED_CREATE)
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "initialized" and body["checkpoints"] == 2
    assert body["message"] == "Workflow created and ready to execute"
    assert body["x402_setup"]["job_id"] and body["x402_setup"]["escrow_id"]
    wf = body["workflow_id"]

    got = (await api.get(f"/api/workflows/{wf}")).json()
    for key in (
        "workflow_id",
        "name",
        "description",
        "status",
        "current_checkpoint",
        "total_checkpoints",
        "snapshots",
        "approval_requests",
        "approval_responses",
        "started_at",
        "completed_at",
        "error_message",
    ):
        assert key in got
    assert got["status"] == "initialized"
    listing = (await api.get("/api/workflows")).json()
    assert listing["total"] == 1 and listing["workflows"][0]["workflow_id"] == wf

    await api.post(f"/api/workflows/{wf}/start")
    cp = await api.post(
        f"/api/workflows/{wf}/checkpoints",
        json={
            "state": {"checkpoint_id": "s1", "parameters": {"threshold": 100}},
            "summary": "Ready to proceed?",
            "context": {"records_found": 100, "quality_score": 0.95},
        },
    )
    req = cp.json()["approval_request_id"]
    pending = (await api.get("/api/approvals/pending")).json()
    assert pending["total"] == 1
    item = pending["pending_approvals"][0]
    assert (item["request_id"], item["workflow_id"], item["checkpoint_name"]) == (req, wf, "Review Step 1")
    assert item["context"] == {"records_found": 100, "quality_score": 0.95}

    decided = await api.post(
        "/api/approvals/submit",
        json={
            "request_id": req,
            "decision": "MODIFIED",
            "rationale": "Adjust threshold from 100 to 150",
            "approved_by": "human_789",
            "modifications": {"threshold": 150},
        },
    )
    assert decided.status_code == 200, decided.text
    assert decided.json() == {
        "success": True,
        "decision": "MODIFIED",
        "workflow_status": "executing",
        "message": "Approval MODIFIED - workflow now executing",
    }
    state = (await api.get(f"/api/workflows/{wf}/state")).json()["state"]
    assert state["parameters"] == {"threshold": 150}

    stats = (await api.get("/api/stats")).json()
    assert stats["total_workflows"] == 1 and stats["total_approvals_processed"] == 1
    assert (await api.get("/api/health")).json()["status"] == "healthy"


async def test_rejection_and_approval_words(api: httpx.AsyncClient) -> None:
    _wf, req = await paused(api)
    rejected = await api.post(
        "/api/approvals/submit",
        json={
            "request_id": req,
            "decision": "REJECTED",
            "rationale": "Data quality too low, need to re-fetch",
            "approved_by": "human_789",
            "modifications": None,
        },
    )
    assert rejected.json()["workflow_status"] == "rolling_back"
    again = await api.post(
        "/api/approvals/submit", json={"request_id": req, "decision": "APPROVED", "approved_by": "human_789"}
    )
    assert again.status_code == 409 and again.json()["detail"]["error"] == "DecisionConflict"


async def test_long_poll_returns_the_decision(api: httpx.AsyncClient) -> None:
    import asyncio

    _wf, req = await paused(api)

    async def decide_soon() -> None:
        await asyncio.sleep(0.05)
        await api.post(
            "/api/approvals/submit",
            json={"request_id": req, "decision": "APPROVED", "approved_by": "human_789"},
        )

    task = asyncio.create_task(decide_soon())
    polled = await api.get(f"/api/approvals/{req}", params={"wait": 30})
    await task
    body = polled.json()
    assert body["status"] == "decided" and body["decision"]["decision"] == "APPROVED"
    no_wait = (await api.get(f"/api/approvals/{req}")).json()
    assert no_wait["decision"]["approved_by"] == "human_789"


async def test_remote_agent_lifecycle_with_steps_rollback_and_settlement(api: httpx.AsyncClient) -> None:
    wf, req = await paused(api)
    step = await api.post(
        f"/api/workflows/{wf}/steps",
        json={"name": "order", "compensation": "cancel_order", "args": {"id": 7}},
    )
    assert step.status_code == 409  # steps are registered while executing, not while paused
    await api.post(
        "/api/approvals/submit", json={"request_id": req, "decision": "APPROVED", "approved_by": "human_789"}
    )
    step = await api.post(
        f"/api/workflows/{wf}/steps",
        json={"name": "order", "compensation": "cancel_order", "args": {"id": 7}},
    )
    step_id = step.json()["step_id"]
    cp = await api.post(f"/api/workflows/{wf}/checkpoints", json={"state": {"checkpoint_id": "s2"}})
    req2 = cp.json()["approval_request_id"]
    await api.post(
        "/api/approvals/submit",
        json={"request_id": req2, "decision": "REJECTED", "approved_by": "human_789", "rationale": "no"},
    )
    todo = (await api.get(f"/api/workflows/{wf}/rollback/steps")).json()
    assert [s["step_id"] for s in todo["steps"]] == [step_id]
    claim = await api.post(f"/api/workflows/{wf}/rollback/steps/{step_id}/claim", json={"owner": "agent-1"})
    key = f"saferun:{wf}:{step_id}"
    assert todo["steps"][0]["idempotency_key"] == key
    assert claim.json() == {"claimed": True, "generation": 1, "idempotency_key": key}
    second = await api.post(f"/api/workflows/{wf}/rollback/steps/{step_id}/claim", json={"owner": "agent-2"})
    assert second.json() == {"claimed": False, "generation": None, "idempotency_key": key}
    # a result under another claim generation than the step's is refused and writes nothing
    fenced = await api.post(
        f"/api/workflows/{wf}/rollback/steps/{step_id}/finish", json={"ok": True, "generation": 2}
    )
    assert fenced.status_code == 409 and fenced.json()["detail"]["error"] == "ClaimLost"
    assert (await api.get(f"/api/workflows/{wf}/steps")).json()["steps"][0]["status"] == "compensating"
    done = await api.post(
        f"/api/workflows/{wf}/rollback/steps/{step_id}/finish", json={"ok": True, "generation": 1}
    )
    assert done.json()["workflow_status"] == "rolling_back"
    resumed = (
        await api.post(f"/api/workflows/{wf}/rollback/complete", json={"compensated": ["order"]})
    ).json()
    assert resumed["final_state"] == "executing" and resumed["restored_checkpoint_id"]
    assert (await api.post(f"/api/workflows/{wf}/settle", json={"result": {"ok": True}})).status_code == 200
    completed = (await api.post(f"/api/workflows/{wf}/complete")).json()
    assert completed["status"] == "completed"
    audit = (await api.get(f"/api/workflows/{wf}/audit")).json()
    assert audit["verified"] and any(e["kind"] == "compensation_succeeded" for e in audit["events"])
    # the export carries the chain's anchor: its length and the last event's hash
    assert audit["anchor_seq"] == audit["events"][-1]["seq"] == len(audit["events"])
    assert audit["anchor_hash"] == audit["events"][-1]["hash"]
    snaps = (await api.get(f"/api/workflows/{wf}/snapshots")).json()
    assert snaps["total"] == 2
    sha = snaps["snapshots"][0]["artifact_uri"].rsplit(":", 1)[1]
    art = await api.get(f"/api/artifacts/{sha}")
    assert art.status_code == 200 and art.json()["intermediate_outputs"] == {"records_found": 100}
    # agent bytes (here the JSON branch) are never sniffed into HTML nor rendered inline on our origin
    assert art.headers["x-content-type-options"] == "nosniff"
    assert art.headers["content-disposition"] == f'attachment; filename="{sha}"'
    ledger = (await api.get(f"/api/workflows/{wf}/ledger")).json()
    assert ledger["escrow"] == {"locked": "100.00", "released": "50.00", "refunded": "50.00", "held": "0.00"}


async def test_cancel_closes_the_pending_request_and_refunds(api: httpx.AsyncClient) -> None:
    wf, req = await paused(api)
    cancelled = (await api.post(f"/api/workflows/{wf}/cancel", json={"reason": "not needed"})).json()
    assert cancelled["status"] == "failed" and "not needed" in cancelled["error_message"]
    detail = (await api.get(f"/api/approvals/{req}")).json()
    assert detail["status"] == "cancelled"
    late = await api.post(
        "/api/approvals/submit", json={"request_id": req, "decision": "APPROVED", "approved_by": "human_789"}
    )
    assert late.status_code == 409


@pytest.mark.parametrize(
    "body, field",
    [
        ({**SEED_CREATE, "escrow_amount": -5}, "escrow_amount"),
        ({**SEED_CREATE, "escrow_amount": "ten"}, "escrow_amount"),
        ({**SEED_CREATE, "checkpoint_names": []}, "checkpoints"),
        ({k: v for k, v in SEED_CREATE.items() if k != "poster_id"}, "poster_id"),
        ({**SEED_CREATE, "surprise": 1}, "surprise"),
    ],
)
async def test_bad_workflows_are_422_naming_the_field_and_write_nothing(
    api: httpx.AsyncClient, body: dict, field: str
) -> None:
    res = await api.post("/api/workflows", json=body)
    assert res.status_code == 422, res.text
    assert field in res.json()["detail"]["field"]
    assert (await api.get("/api/workflows")).json()["total"] == 0


async def test_unknown_ids_malformed_json_and_wrong_states(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/workflows/wf_nope")).status_code == 404
    assert (await api.get("/api/approvals/req_nope")).status_code == 404
    assert (await api.post("/api/workflows/wf_nope/start")).status_code == 404
    assert (await api.get("/api/artifacts/" + "0" * 64)).status_code == 404
    assert (await api.get("/api/artifacts/xyz")).status_code == 422
    bad = await api.post("/api/workflows", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422
    wf, req = await paused(api)
    assert (await api.post(f"/api/workflows/{wf}/settle", json={})).status_code == 409
    mod = await api.post(
        "/api/approvals/submit",
        json={
            "request_id": req,
            "decision": "MODIFIED",
            "approved_by": "human_789",
            "modifications": {"threshhold": 1},
        },
    )
    assert mod.status_code == 422 and mod.json()["detail"]["field"] == "modifications.threshhold"


async def test_oversized_bodies_are_refused(db: Database) -> None:
    app = create_app(WorkflowOrchestrator(database=db), auth="open", max_body_bytes=1000, sweep=False)
    async with client_for(app) as c:
        res = await c.post("/api/workflows", json={**SEED_CREATE, "description": "x" * 5000})
        assert res.status_code == 413 and res.json()["detail"]["error"] == "PayloadTooLarge"


async def test_four_eyes_holds_in_open_mode(api: httpx.AsyncClient) -> None:
    _wf, req = await paused(api)
    for who in ("user_123", "agent_456"):
        res = await api.post(
            "/api/approvals/submit", json={"request_id": req, "decision": "APPROVED", "approved_by": who}
        )
        assert res.status_code == 403 and res.json()["detail"]["rule"] == "four_eyes"


async def test_keys_mode_requires_a_key_and_enforces_roles(db: Database) -> None:
    ids = IdentityService(db)
    _, poster_key = ids.create_identity_with_key("user_123", roles=["poster"])
    _, agent_key = ids.create_identity_with_key("agent_456", roles=["executor"])
    _, sup_key = ids.create_identity_with_key("human_789", roles=["supervisor"])
    _, other_key = ids.create_identity_with_key("human_000", roles=["supervisor"])
    app = create_app(WorkflowOrchestrator(database=db), auth="keys", sweep=False)

    def h(key: object) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.api_key}"}  # type: ignore[attr-defined]

    async with client_for(app) as c:
        assert (await c.get("/api/workflows")).status_code == 401
        assert (
            await c.get("/api/workflows", headers={"Authorization": "Bearer sr_key_bad"})
        ).status_code == 401
        assert (await c.get("/api/health")).status_code == 200
        denied = await c.post("/api/workflows", json=SEED_CREATE, headers=h(agent_key))
        assert denied.status_code == 403
        wf = (
            await c.post(
                "/api/workflows", json={**SEED_CREATE, "supervisor_id": "human_789"}, headers=h(poster_key)
            )
        ).json()["workflow_id"]
        assert (await c.post(f"/api/workflows/{wf}/start", headers=h(poster_key))).status_code == 403
        await c.post(f"/api/workflows/{wf}/start", headers=h(agent_key))
        req = (
            await c.post(
                f"/api/workflows/{wf}/checkpoints",
                json={"state": {"checkpoint_id": "a"}},
                headers=h(agent_key),
            )
        ).json()["approval_request_id"]
        submit = {"request_id": req, "decision": "APPROVED"}
        res = await c.post("/api/approvals/submit", json=submit, headers=h(poster_key))
        assert res.status_code == 403 and res.json()["detail"]["rule"] == "four_eyes"
        # another supervisor may not even see a workflow with its own assigned supervisor (one visibility
        # rule): the request is "not found", exactly as an unknown id, and nothing is decided
        res = await c.post("/api/approvals/submit", json=submit, headers=h(other_key))
        assert res.status_code == 404 and req in res.text and wf not in res.text
        res = await c.post(
            "/api/approvals/submit", json={**submit, "approved_by": "someone"}, headers=h(sup_key)
        )
        assert res.status_code == 403 and res.json()["detail"]["rule"] == "approved_by_is_caller"
        res = await c.post("/api/approvals/submit", json=submit, headers=h(sup_key))
        assert res.status_code == 200 and res.json()["workflow_status"] == "executing"
        detail = (await c.get(f"/api/approvals/{req}", headers=h(sup_key))).json()
        assert detail["decision"]["approved_by"] == "human_789"


async def test_open_mode_refuses_requests_arriving_on_a_public_address(db: Database) -> None:
    app = create_app(WorkflowOrchestrator(database=db), auth="open", sweep=False)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://203.0.113.7") as c:
        # the ASGI scope's server is the base URL's host: not loopback
        assert (await c.get("/api/workflows")).status_code == 401


async def test_metrics_expose_the_seed_names(api: httpx.AsyncClient) -> None:
    _wf, req = await paused(api)
    await api.post(
        "/api/approvals/submit", json={"request_id": req, "decision": "APPROVED", "approved_by": "human_789"}
    )
    text = (await api.get("/metrics")).text
    assert "saferun_checkpoints_total 1.0" in text
    assert "saferun_approval_latency_seconds_count 1.0" in text
    assert 'saferun_decisions_total{automatic="false",decision="APPROVED"} 1.0' in text
    assert 'saferun_workflows{state="executing"} 1.0' in text


def test_the_openapi_schema_documents_the_agent_endpoints(db: Database) -> None:
    schema = create_app(WorkflowOrchestrator(database=db), sweep=False).openapi()
    paths = schema["paths"]
    for path in (
        "/api/workflows",
        "/api/workflows/{workflow_id}/start",
        "/api/workflows/{workflow_id}/checkpoints",
        "/api/approvals/{request_id}",
        "/api/workflows/{workflow_id}/steps",
        "/api/workflows/{workflow_id}/settle",
        "/api/workflows/{workflow_id}/complete",
        "/api/workflows/{workflow_id}/fail",
        "/api/workflows/{workflow_id}/cancel",
        "/api/workflows/{workflow_id}/snapshots",
        "/api/artifacts/{sha256}",
        "/api/workflows/{workflow_id}/audit",
        "/api/events",
        "/api/approvals/pending",
        "/api/approvals/submit",
        "/api/stats",
        "/api/health",
    ):
        assert path in paths, path


async def test_checkpoint_answers_carry_the_snapshot_and_the_request(api: httpx.AsyncClient) -> None:
    wf, req = await paused(api)
    pending = (await api.get("/api/approvals/pending")).json()["pending_approvals"][0]
    assert pending["snapshot_id"] and pending["on_timeout"] == "reject" and pending["status"] == "pending"
    snap = (await api.get(f"/api/snapshots/{pending['snapshot_id']}")).json()
    assert snap["workflow_id"] == wf and snap["execution_state"]["parameters"] == {"threshold": 100}
    await api.post(
        "/api/approvals/submit", json={"request_id": req, "decision": "APPROVED", "approved_by": "human_789"}
    )
    out = (await api.post(f"/api/workflows/{wf}/checkpoints", json={"state": {"checkpoint_id": "x"}})).json()
    assert out["sequence"] == 2 and out["parent_snapshot_id"] == snap["snapshot_id"]
    assert out["approval_request"]["request_id"] == out["approval_request_id"]
    assert (await api.get("/api/snapshots/snap_nope")).status_code == 404


async def test_the_originals_lower_case_decision_words_are_accepted(api: httpx.AsyncClient) -> None:
    """The original project's clients send ``"approved"``, the seed README ``"APPROVED"``: both decide."""
    _wf, req = await paused(api)
    decided = await api.post(
        "/api/approvals/submit",
        json={"request_id": req, "decision": "approved", "rationale": "ok", "approved_by": "human_789"},
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["decision"] == "APPROVED"
    wrong = await api.post(
        "/api/approvals/submit",
        json={"request_id": req, "decision": "approve-ish", "approved_by": "human_789"},
    )
    assert wrong.status_code == 422 and "decision" in wrong.text


async def test_a_long_poll_reads_a_light_gate_before_it_waits_and_one_checked_view_after(
    db: Database,
) -> None:
    """The read before the wait is ``request_gate`` (status, expiry, the parties for the access check),
    not a chain-checked view that the view after the notice would replace: one checked read per long-poll
    that waits (issue 12, target 3)."""
    import asyncio

    from saferun.core import notify
    from saferun.core.state_machine.models import ApprovalResponse

    orch = WorkflowOrchestrator(database=db)
    calls: list[str] = []
    for name in ("request_view", "request_gate"):
        real = getattr(orch, name)

        def spy(*args: object, _real: object = real, _name: str = name, **kwargs: object) -> object:
            calls.append(_name)
            return _real(*args, **kwargs)  # type: ignore[operator]

        setattr(orch, name, spy)
    async with client_for(create_app(orch, auth="open", sweep=False)) as api:
        wf, req = await paused(api)
        # PostgreSQL's listener wakes every waiter once when it connects (a resync): connect it first
        assert await notify.notifier_for(db).astart()
        calls.clear()

        async def decide_soon() -> None:  # through another orchestrator: only the long-poll's reads count
            await asyncio.sleep(0.05)
            response = ApprovalResponse(request_id=req, decision="APPROVED", approved_by="human_789")
            await asyncio.to_thread(WorkflowOrchestrator(database=db).submit_approval, wf, response)

        task = asyncio.create_task(decide_soon())
        polled = (await api.get(f"/api/approvals/{req}", params={"wait": 30})).json()
        await task
    assert polled["decision"]["decision"] == "APPROVED"
    assert calls == ["request_gate", "request_view"], calls
