"""Approval routes: the seed's pending list and submit, and a long-poll read for remote agents."""

from __future__ import annotations

import functools
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Query
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from saferun.api import schemas as s
from saferun.api.deps import CallerDep, OrchestratorDep, enforce, sees, visible
from saferun.api.one_hop import OneHopRoute
from saferun.api.workflows import as_agent
from saferun.core.decisions import Outcome
from saferun.core.listing import MAX_LIMIT, MAX_SECONDS
from saferun.core.state_machine.access import RequestGate, RequestView
from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    WorkflowExecution,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.policy import Caller, assignee, may_decide
from saferun.errors import (
    ApprovalRequestNotFound,
    DecisionConflict,
    Forbidden,
    InvalidInput,
    NotFound,
)
from saferun.storage.queue import QueueFilter

router = APIRouter(prefix="/api/approvals", tags=["approvals"], route_class=OneHopRoute)
MAX_WAIT_SECONDS = 60.0


def pending_item(r: ApprovalRequest) -> dict[str, Any]:
    return r.model_dump(exclude={"decided_at", "review_digest"})  # digest: on a single read


class RiskFilter(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"
    none = "none"


@router.get("/pending", response_model=s.PendingList)
def pending(
    orch: OrchestratorDep,
    caller: CallerDep,
    workflow_id: str | None = Query(None, min_length=1, max_length=64),
    limit: int = Query(100, ge=1, le=MAX_LIMIT, description="requests per page"),
    cursor: str | None = Query(
        None, max_length=1024, description="next_cursor of the previous page (same filters)"
    ),
    mine: bool = Query(False, description="only requests assigned to the calling supervisor"),
    assigned_to: str | None = Query(None, min_length=1, max_length=200, description="their supervisor"),
    risk: RiskFilter | None = None,  # a risk level; "none": no level recorded
    expiring_within: int | None = Query(None, ge=0, le=MAX_SECONDS, description="seconds"),
    older_than: int | None = Query(None, ge=0, le=MAX_SECONDS, description="opened at least this many s ago"),
    newer_than: int | None = Query(None, ge=0, le=MAX_SECONDS, description="opened at most this many s ago"),
) -> dict[str, Any]:
    """The pending queue, soonest expiry first, one keyset page at a time.

    The seed's unpaged call (no ``limit``/``cursor``) gets the first page of 100: ``has_more`` and
    ``next_cursor`` say whether and how to read on, and ``total`` counts the whole filtered queue.
    A cursor is bound to the filters and caller it was issued for; any other is 422 naming ``cursor``.
    """
    flt = QueueFilter(
        workflow_id=workflow_id,
        assigned_to=_assignee(caller, mine, assigned_to),
        risk=risk.value if risk else None,
        expiring_within=expiring_within,
        older_than=older_than,
        newer_than=newer_than,
    )
    page = orch.pending_page(flt, limit=limit, cursor=cursor, visible_to=caller)
    return {
        "pending_approvals": [
            {**pending_item(i.request), "workflow_name": i.workflow_name} for i in page.items
        ],
        "total": page.total,
        "limit": page.limit,
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }


def _assignee(caller: Caller, mine: bool, assigned_to: str | None) -> str | None:
    if not mine:
        return assigned_to
    if not caller.identity_id:
        raise InvalidInput("mine", "'mine' needs an authenticated caller; name one with assigned_to")
    if assigned_to is not None and assigned_to != caller.identity_id:
        raise InvalidInput("assigned_to", "contradicts mine=true: give one or the other")
    return caller.identity_id


@router.post("/submit", response_model=s.DecisionResult, response_model_exclude_none=True)
def submit(body: s.SubmitDecision, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """Decide a request exactly once: 409 if already decided or expired, 403 naming the rule that refused,
    409 ``stale_review`` (naming the ``changed`` fields) when ``review_digest`` is no longer the request's."""
    approved_by = _decider(caller, body.approved_by)
    _require_rationale(body.decision, body.rationale)
    after, before = _decide_one(
        orch,
        caller,
        body.request_id,
        body.decision,
        body.rationale,
        approved_by,
        body.modifications,
        body.review_digest,
    )
    status = after.workflow_state.value
    answer: dict[str, Any] = {
        "success": True,
        "decision": body.decision,
        "workflow_status": status,
        "message": f"Approval {body.decision.value} - workflow now {status}",
    }
    request = orch.get_approval_request(body.request_id) if before.quorum is not None else before
    if request.quorum is not None and request.tally is not None:  # a vote (docs/quorum.md)
        tally = request.tally
        answer["quorum"] = {
            "rule": request.quorum,
            **tally,
            "votes": request.votes,
            "may_still_vote": request.may_still_vote or [],
        }
        if request.status == "pending":
            answer["message"] = (
                f"Vote {body.decision.value} recorded: {tally['approvals']} of {tally['needed']} "
                f"approvals, {tally['rejections']} of {tally['rejections_to_reject']} rejections - "
                f"workflow still {status}"
            )
    return answer


@router.post("/batch", response_model=s.BatchResult)
def batch(body: s.BatchDecision, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """Approve or reject several requests in one call (given by id, or every pending one of a workflow).

    Each request is decided exactly once, in its own transaction, by the same rules as ``/submit``; the
    answer has one result per request. An item that is unknown, not the caller's to see, refused by the
    decision policy or already decided is reported (``not_found``, ``refused``, ``already_decided``) and
    the others go on: one stale id does not block a reviewer's batch.
    """
    approved_by = _decider(caller, body.approved_by)
    _require_rationale(body.decision, body.rationale)
    if body.workflow_id is not None:
        visible(orch, caller, body.workflow_id)
        ids = [r.request_id for r in orch.pending_approvals(body.workflow_id, visible_to=caller)]
    else:
        ids = list(body.request_ids or [])
    results = decide_each(orch, caller, ids, body.decision, body.rationale, approved_by)
    decided = sum(1 for r in results if r["outcome"] == "decided")
    return {"decision": body.decision, "decided": decided, "results": results}


def decide_each(
    orch: WorkflowOrchestrator,
    caller: Caller,
    request_ids: list[str],
    decision: ApprovalDecision,
    rationale: str,
    approved_by: str,
) -> list[dict[str, Any]]:
    """One verdict for several requests, each in its own transaction, with one result per request.

    Shared by ``POST /api/approvals/batch`` and the dashboard's queue, so a batch from either decides by
    the same rules as a single decision and reports the same outcomes.
    """
    results = []
    for request_id in request_ids:
        item: dict[str, Any] = {"request_id": request_id}
        try:
            request = _visible_request(orch, caller, request_id)
            item.update(
                checkpoint_id=request.checkpoint_id,
                checkpoint_name=request.checkpoint_name,
                item_key=request.item_key,
            )
            after, _ = _decide_one(orch, caller, request_id, decision, rationale, approved_by, None)
        except NotFound:  # unknown, or not the caller's to see: the same answer, nothing revealed
            item.update(outcome="not_found", error=ApprovalRequestNotFound(request_id).to_dict())
        except DecisionConflict as exc:
            outcome = "closed" if exc.status == "closed" else "already_decided"
            item.update(outcome=outcome, error=exc.to_dict())
        except Forbidden as exc:
            item.update(outcome="refused", error=exc.to_dict())
        except InvalidInput as exc:
            item.update(outcome="invalid", error=exc.to_dict())
        else:
            # a vote on an M-of-N request decides it only when it reaches the quorum (docs/quorum.md)
            voted = request.quorum is not None and orch.get_approval_request(request_id).status == "pending"
            outcome = "voted" if voted else "decided"
            item.update(
                outcome=outcome, workflow_id=after.workflow_id, workflow_status=after.workflow_state.value
            )
        results.append(item)
    return results


def _decider(caller: Caller, approved_by: str | None) -> str:
    decider = approved_by or caller.identity_id
    if not decider:
        raise InvalidInput("approved_by", "say who decides (or authenticate with an API key)")
    return decider


def _require_rationale(decision: ApprovalDecision, rationale: str) -> None:
    if decision == ApprovalDecision.REJECTED and not rationale.strip():
        # as in the dashboard and the CLI: the agent's operator and the audit need to know why
        raise InvalidInput("rationale", "a rejection needs a rationale: say why, for the agent and the audit")


def _decide_one(
    orch: WorkflowOrchestrator,
    caller: Caller,
    request_id: str,
    decision: ApprovalDecision,
    rationale: str,
    approved_by: str,
    modifications: dict[str, Any] | None,
    review_digest: str | None = None,
) -> tuple[Outcome, ApprovalRequest]:
    """One decision by the rules every decision path shares: visible, allowed by policy, exactly once;
    with ``review_digest``, only on the request as the reviewer saw it (409 ``stale_review`` otherwise).
    Returns what the decision did (the workflow's new state) and the request as read before it.

    The checks run inside the decision's own transaction, on the request and its workflow as it reads
    them under the workflow's lock, checked against the audit chain (``submit_approval(authorize=...)``):
    one transaction instead of a checked read and then the decision, and nothing can change between the
    check and the claim (an escalation handing the request to someone else, say)."""
    seen: list[RequestView] = []
    fields: dict[str, Any] = {
        "request_id": request_id,
        "decision": decision,
        "rationale": rationale,
        "approved_by": approved_by,
        "modifications": modifications,
        "review_digest": review_digest,
    }
    try:
        response, invalid = ApprovalResponse(**fields), None
    except ValidationError as exc:  # e.g. MODIFIED without modifications: refused once access is settled
        response, invalid = ApprovalResponse.model_construct(**fields), exc

    def authorize(view: RequestView) -> None:
        _must_see(caller, view, request_id)  # 404 first: a request the caller may not see reveals nothing
        _may_decide(caller, view.request, view, approved_by)
        if invalid is not None:
            raise invalid
        seen.append(view)

    after = orch.decide_request(response, authorize=authorize)
    return after, seen[-1].request


def _must_see(caller: Caller, view: RequestView | RequestGate, request_id: str) -> None:
    """A request of a workflow the caller may not see is 404, exactly as an unknown id."""
    if not sees(caller, view):
        raise ApprovalRequestNotFound(request_id)


def _visible_request(orch: WorkflowOrchestrator, caller: Caller, request_id: str) -> ApprovalRequest:
    request = orch.get_approval_request(request_id)
    visible(orch, caller, request.workflow_id, ApprovalRequestNotFound(request_id))
    return request


def _may_decide(
    caller: Caller,
    request: ApprovalRequest,
    wf: WorkflowExecution | RequestView,
    approved_by: str,
) -> None:
    """403 naming the rule, unless ``caller`` may decide ``request`` as ``approved_by``."""
    enforce(
        may_decide(
            caller,
            poster_id=wf.config.poster_id,
            executor_id=wf.config.executor_id,
            # the assigned one (named or given by the marketplace), or whom an escalation handed it to;
            # a quorum request is the group's to decide (its rules are checked as the vote is cast)
            supervisor_id=None
            if request.quorum is not None
            else assignee(request.supervisor_id, wf.supervisor_id, request.escalation_step > 0),
            approved_by=approved_by,
        )
    )


def _request_and_decision(
    orch: WorkflowOrchestrator, caller: Caller, request_id: str
) -> tuple[ApprovalRequest, ApprovalResponse | None]:
    request = orch.get_approval_request(request_id)
    visible(orch, caller, request.workflow_id, ApprovalRequestNotFound(request_id))
    return request, orch.get_approval_response(request_id)


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
    decision is made (in any process or replica) or when ``wait`` seconds have passed.

    Every read runs in a worker thread and reads the request, its workflow and its decision together
    (one chain check); the wait itself holds no thread (it sleeps on the notifier)."""
    check = functools.partial(_must_see, caller, request_id=request_id)
    if wait > 0:
        view = await orch.wait_for_view(request_id, timeout=wait, check=check)
    else:
        view = await run_in_threadpool(orch.request_view, request_id)
        check(view)
    request, response = view.request, view.response
    return {
        "request": request.model_dump(mode="json"),
        "status": request.status,
        "decision": response.model_dump(mode="json") if response else None,
    }


@router.get("/{request_id}/items", response_model=s.CheckpointItemsOut)
def checkpoint_items(request_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """Every item asked at this request's checkpoint pause (parallel tool calls, a LangGraph step's
    interrupts), in the order asked, with each item's status and decision; a single-request checkpoint
    lists just this request. An agent that restarted finds its pending items here."""
    request, _ = _request_and_decision(orch, caller, request_id)
    items = orch.checkpoint_items(request_id)
    return {
        "group_id": request.group_id,
        "checkpoint_id": request.checkpoint_id,
        "checkpoint_name": request.checkpoint_name,
        "items": [
            {
                "request": r.model_dump(mode="json"),
                "status": r.status,
                "decision": d.model_dump(mode="json") if d else None,
            }
            for r, d in items
        ],
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
