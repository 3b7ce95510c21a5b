"""Approval routes: the seed's pending list and submit, and a long-poll read for remote agents."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from saferun.api import schemas as s
from saferun.api.deps import CallerDep, OrchestratorDep, enforce, visible
from saferun.api.workflows import as_agent
from saferun.core.state_machine.models import ApprovalDecision, ApprovalRequest, ApprovalResponse
from saferun.domain.policy import may_decide
from saferun.errors import ApprovalRequestNotFound, InvalidInput

router = APIRouter(prefix="/api/approvals", tags=["approvals"])
MAX_WAIT_SECONDS = 60.0


def pending_item(r: ApprovalRequest) -> dict[str, Any]:
    return r.model_dump(exclude={"decided_at"})


@router.get("/pending", response_model=s.PendingList)
def pending(orch: OrchestratorDep, caller: CallerDep, workflow_id: str | None = None) -> dict[str, Any]:
    reqs = orch.pending_approvals(workflow_id, visible_to=caller)
    return {"pending_approvals": [pending_item(r) for r in reqs], "total": len(reqs)}


@router.post("/submit", response_model=s.DecisionResult)
def submit(body: s.SubmitDecision, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """Decide a request exactly once: 409 if already decided or expired, 403 naming the rule that refused."""
    approved_by = body.approved_by or caller.identity_id
    if not approved_by:
        raise InvalidInput("approved_by", "say who decides (or authenticate with an API key)")
    if body.decision == ApprovalDecision.REJECTED and not body.rationale.strip():
        # as in the dashboard and the CLI: the agent's operator and the audit need to know why
        raise InvalidInput("rationale", "a rejection needs a rationale: say why, for the agent and the audit")
    request = orch.get_approval_request(body.request_id)
    wf = visible(orch, caller, request.workflow_id, ApprovalRequestNotFound(body.request_id))
    enforce(
        may_decide(
            caller,
            poster_id=wf.config.poster_id,
            executor_id=wf.config.executor_id,
            supervisor_id=wf.supervisor_id,  # the assigned one, whether named or given by the marketplace
            approved_by=approved_by,
        )
    )
    response = ApprovalResponse(
        request_id=body.request_id,
        decision=body.decision,
        rationale=body.rationale,
        approved_by=approved_by,
        modifications=body.modifications,
    )
    after = orch.submit_approval(request.workflow_id, response)
    status = after.current_state.value
    return {
        "success": True,
        "decision": body.decision,
        "workflow_status": status,
        "message": f"Approval {body.decision.value} - workflow now {status}",
    }


@router.get("/{request_id}", response_model=s.ApprovalDetail)
async def get_request(
    request_id: str,
    orch: OrchestratorDep,
    caller: CallerDep,
    wait: float = Query(
        0, ge=0, le=MAX_WAIT_SECONDS, description="long-poll: seconds to wait for the decision"
    ),
) -> dict[str, Any]:
    """The request and, once it exists, its decision. With ``wait`` the call returns as soon as the
    decision is made (in any process or replica) or when ``wait`` seconds have passed."""
    request = orch.get_approval_request(request_id)
    visible(orch, caller, request.workflow_id, ApprovalRequestNotFound(request_id))
    response = orch.get_approval_response(request_id)
    if response is None and wait > 0:
        try:
            response = await orch.wait_for_decision(request_id, timeout=wait)
        except TimeoutError:
            response = None
        request = orch.get_approval_request(request_id)
    return {
        "request": request.model_dump(mode="json"),
        "status": request.status,
        "decision": response.model_dump(mode="json") if response else None,
    }


@router.post("/{request_id}/alerts", response_model=s.ApprovalDetail)
def add_alerts(request_id: str, body: s.AlertsIn, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """Add a monitor's alerts to a pending request, so its reviewer sees them while reading it.

    The workflow's agent (or an admin) may: a monitor watches the agent it runs beside and speaks with its
    key. Alerts already on the request are not added twice; a decided or expired request is 409.
    """
    request = orch.get_approval_request(request_id)
    visible(orch, caller, request.workflow_id, ApprovalRequestNotFound(request_id))
    as_agent(orch, caller, request.workflow_id)
    updated = orch.add_alerts(request_id, body.alerts, actor=caller.identity_id or None)
    return {"request": updated.model_dump(mode="json"), "status": updated.status, "decision": None}
