"""What each dashboard page shows, read from the engine: one function per page, returning its context.

These only read (``WorkflowOrchestrator`` reads, each its own read transaction); deciding is in
``routes``. The review page holds everything the seed's Diagram 3 puts in front of a reviewer: Layer 1
(summary, the decision needed, relevant artifacts, recommendation and confidence) and Layer 2 (inputs,
intermediate outputs, planned next steps, confidence scores, risk), plus from Layer 3 the recent actions
and API calls, the decision trace and the resource use, and what changed since the last approved state.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from urllib.parse import urlencode

from saferun.api.deps import visible
from saferun.core.state_machine.models import ApprovalRequest, ExecutionState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.assessment import assess
from saferun.domain.money import format_micro, to_micro
from saferun.domain.policy import Caller, Refusal, assignee, may_decide
from saferun.domain.recommendation import REASON_KEY
from saferun.domain.stakes import Stakes, stakes
from saferun.domain.states import WorkflowState
from saferun.errors import ApprovalRequestNotFound, NotFound
from saferun.ui import charts, review, timeline
from saferun.ui.outcome import Outcome, outcome
from saferun.ui.viewer import Viewer

RECENT_CALLS = 8
WORKFLOWS_PAGE = 50  # workflows per page of /workflows
COST_WORDS = ("cost", "usd", "price", "spend", "fee")
USAGE_KEYS = ("resources_consumed", "resource_consumption", "usage")
TOKEN_FIELDS = ("tokens_used", "tokens", "input_tokens", "output_tokens", "total_tokens", "cost_usd")


def _alert(alert: dict[str, Any]) -> dict[str, str]:
    level = str(alert.get("level") or alert.get("severity") or "info")
    text = alert.get("message") or alert.get("text") or alert.get("title")
    extra = {k: v for k, v in alert.items() if k not in ("level", "severity", "message", "text", "title")}
    if text is None:
        text, extra = review.short(alert), {}
    return {"level": level.lower(), "message": str(text), "extra": review.short(extra) if extra else ""}


def _risk(risk: dict[str, Any]) -> dict[str, Any]:
    """The risk panel: its level, the SupervisorAgent's one-sentence reason (shown beside the
    recommendation, not buried in the details), and the rest."""
    level = risk.get("level") or risk.get("rating") or risk.get("severity")
    shown = ("level", "rating", "severity", REASON_KEY)
    rest = {k: v for k, v in risk.items() if k not in shown}
    why = risk.get(REASON_KEY)
    return {
        "level": str(level).lower() if level is not None else None,
        "why": str(why) if why else None,
        "items": rest,
    }


def _resources(state: ExecutionState) -> tuple[list[dict[str, Any]], str | None]:
    """The resource use to show and where it was found (None: the state's own ``resource_consumption``).

    An agent that never filled ``resource_consumption`` may still have recorded tokens: an executor's
    result in its outputs (``resources_consumed``) or token counts on its calls. Showing "No resource use
    recorded" beside them contradicted the page (issue 14), so those are read, and their source named.
    """
    if state.resource_consumption:
        return _rows(state.resource_consumption), None
    for name, value in state.intermediate_outputs.items():
        if isinstance(value, dict):
            for key in USAGE_KEYS:
                found = _numbers(value.get(key))
                if found:
                    return _rows(found), f"from the agent's output {name}.{key}"
    totals: dict[str, float] = {}
    counted = 0
    for call in state.api_calls:
        numbers = _numbers({k: call.get(k) for k in TOKEN_FIELDS}) if isinstance(call, dict) else {}
        counted += bool(numbers)
        for k, v in numbers.items():
            totals[k] = totals.get(k, 0) + v
    if totals:
        return _rows(totals), f"summed over {counted} recorded call{'s' if counted != 1 else ''}"
    return [], None


def _numbers(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _rows(consumption: dict[str, float]) -> list[dict[str, Any]]:
    return [
        {"name": name, "value": value, "cost": any(w in name.lower() for w in COST_WORDS)}
        for name, value in consumption.items()
    ]


def decide_refusal(viewer: Viewer, req: ApprovalRequest, orch: WorkflowOrchestrator) -> Refusal | None:
    """What ``may_decide`` would say to this viewer (in open mode: to the remembered 'acting as' name)."""
    caller = viewer.caller
    if caller is None:
        return None
    approved_by = caller.identity_id if caller.authenticated else viewer.acting_as
    if not approved_by:
        return None
    return refusal_for(orch, req, caller, approved_by)


def refusal_for(
    orch: WorkflowOrchestrator,
    req: ApprovalRequest,
    caller: Caller,
    approved_by: str,
    *,
    predict: bool = True,
) -> Refusal | None:
    """``may_decide`` for this request; on a quorum request the group decides, and (``predict``, for the
    page's warning) someone not among those who may still vote is told so before trying. A vote sent is
    judged by the engine, which names the exact quorum rule."""
    wf = orch.get_workflow(req.workflow_id)
    cfg = wf.config
    quorum = req.quorum is not None  # the group decides (docs/quorum.md), not the assigned supervisor
    assigned = assignee(req.supervisor_id, wf.supervisor_id, req.escalation_step > 0)
    refusal = may_decide(
        caller,
        poster_id=cfg.poster_id,
        executor_id=cfg.executor_id,
        supervisor_id=None if quorum else assigned,
        approved_by=approved_by,
    )
    may_vote = req.may_still_vote or []
    if predict and refusal is None and quorum and req.status == "pending" and approved_by not in may_vote:
        voted = any(v["voter"] == approved_by for v in req.votes)
        return Refusal(
            "quorum_one_vote" if voted else "quorum_group",
            f"{approved_by!r} has already voted on this request"
            if voted
            else f"{approved_by!r} is not among those who may still vote: "
            f"{', '.join(req.may_still_vote or []) or 'nobody'}",
        )
    return refusal


def flash(orch: WorkflowOrchestrator, caller: Caller, request_id: str | None) -> dict[str, Any] | None:
    """The outcome of a decision just made, shown once on the queue after the redirect."""
    if not request_id:
        return None
    try:
        req = orch.get_approval_request(request_id)
        resp = orch.get_approval_response(request_id)
        wf = visible(orch, caller, req.workflow_id)
    except NotFound:
        return None
    if resp is None:
        return None
    return {"req": req, "resp": resp, "workflow": wf, "outcome": result(req, resp, wf, orch)}


def result(
    req: ApprovalRequest, resp: Any, wf: Any, orch: WorkflowOrchestrator | None = None
) -> Outcome | None:
    """What the decision did, given the workflow's state now (None while the request is pending); for an
    item of a checkpoint that asked several things, whether its siblings still wait (read with ``orch``)."""
    if resp is None:
        return None
    waiting = 0
    if req.group_id is not None and orch is not None:
        waiting = sum(1 for r, _ in orch.checkpoint_items(req.request_id) if r.status == "pending")
    return outcome(
        resp.decision.value,
        str(getattr(wf.current_state, "value", wf.current_state)),
        automatic=resp.automatic,
        on_timeout=req.on_timeout,
        siblings_pending=waiting,
    )


def request_status(orch: WorkflowOrchestrator, caller: Caller, request_id: str) -> dict[str, Any]:
    """The review page's live status fragment: the request, its decision, its workflow now."""
    req = orch.get_approval_request(request_id)
    wf = visible(orch, caller, req.workflow_id, ApprovalRequestNotFound(request_id))
    response = orch.get_approval_response(request_id) if req.status != "pending" else None
    return {"req": req, "response": response, "workflow": wf, "result": result(req, response, wf, orch)}


def approval(orch: WorkflowOrchestrator, caller: Caller, request_id: str) -> dict[str, Any]:
    req = orch.get_approval_request(request_id)
    wf = visible(orch, caller, req.workflow_id, ApprovalRequestNotFound(request_id))
    return review_context(orch, req, wf)


def review_context(orch: WorkflowOrchestrator, req: ApprovalRequest, wf: Any) -> dict[str, Any]:
    """Everything the review page shows about one request; the decision-link page shows the same
    context and stakes (its token already proved who may read it)."""
    snaps = {s.snapshot_id: s for s in orch.list_snapshots(req.workflow_id)}
    snap = snaps.get(req.snapshot_id)
    state = orch.get_snapshot_state(req.snapshot_id)
    parent_id = snap.parent_snapshot_id if snap else None
    before: ExecutionState | None = orch.get_snapshot_state(parent_id) if parent_id else None
    calls = state.api_calls
    recent = calls[-RECENT_CALLS:]
    resources, resources_source = _resources(state)
    response = orch.get_approval_response(req.request_id) if req.status != "pending" else None
    steps = orch.saga_steps(req.workflow_id)
    artifact_sha = snap.artifact_uri.rsplit("sha256:", 1)[-1] if snap else None
    return {
        "req": req,
        "workflow": wf,
        "snapshot": snap,
        "artifact_sha": artifact_sha,
        "parent": snaps.get(parent_id) if parent_id else None,
        "state": state,
        "alerts": [_alert(a) for a in req.alerts],
        "risk": _risk(req.risk),
        "state_risk": _risk(state.risk_assessment),
        "recent_calls": list(reversed(recent)),
        "older_calls": len(calls) - len(recent),
        "call_columns": review.table_columns(recent),
        "resources": resources,
        "resources_source": resources_source,
        "assessment": assess(
            recommendation=req.recommendation,
            confidence=req.confidence,
            risk=req.risk,
            alerts=req.alerts,
            state_risk=state.risk_assessment,
            confidence_scores=state.confidence_scores,
        ),
        "diff": review.state_diff(before, state),
        "first_checkpoint": before is None,
        "response": response,
        "result": result(req, response, wf, orch),
        # the other things asked at this checkpoint (parallel tool calls), each with its decision
        "items": orch.checkpoint_items(req.request_id) if req.group_id is not None else [],
        "memory": state.agent_memory,
        "stakes": _stakes(orch, wf, req) if req.status == "pending" else None,
        # side effects since the last approval: what a rejection would undo (compensate)
        "open_steps": [st for st in steps if st["status"] not in ("committed", "compensated")],
        "committed_steps": sum(1 for st in steps if st["status"] == "committed"),
    }


def _stakes(orch: WorkflowOrchestrator, wf: Any, req: ApprovalRequest) -> Stakes | None:
    """What approve pays and reject refunds for this request, by the engine's own money rules."""
    cps = wf.config.checkpoints
    index = next((i for i, cp in enumerate(cps) if cp.checkpoint_id == req.checkpoint_id), None)
    if index is None:
        return None
    return stakes(
        escrow_total=to_micro(wf.config.escrow_amount),
        weights=[cp.milestone_weight for cp in cps],
        index=index,
        held=orch.escrow_position(wf.workflow_id).held,
        already_paid=False,  # a pending request's checkpoint is paid only when it is approved
        executor_share=wf.config.executor_share,
        has_supervisor=bool(wf.supervisor_id or wf.config.supervisor_id),
        can_rollback=cps[index].can_rollback,
    )


def workflows(
    orch: WorkflowOrchestrator,
    caller: Caller,
    status: str | None,
    *,
    cursor: str | None = None,
    limit: int = WORKFLOWS_PAGE,
) -> dict[str, Any]:
    """One keyset page of workflows, newest first (the API's ``GET /api/workflows`` listing and cursor),
    with the true total and the links to the next and first pages: never every workflow at once."""
    state = WorkflowState(status) if status else None
    page = orch.workflows_page(state, limit=limit, cursor=cursor, visible_to=caller)
    rows = page.items
    waiting = orch.waiting_requests([w.workflow_id for w in rows])  # this page's, not the whole queue
    given = (("status", status or ""), ("limit", "" if limit == WORKFLOWS_PAGE else str(limit)))
    kept = {k: v for k, v in given if v}
    live = {**kept, "cursor": cursor} if cursor else kept
    return {
        "workflows": rows,
        "waiting": waiting,
        "total": page.total,
        "has_more": page.has_more,
        "next_url": f"/workflows?{urlencode({**kept, 'cursor': page.next_cursor})}"
        if page.has_more
        else None,
        "first_url": "/workflows" + (f"?{urlencode(kept)}" if kept else "") if cursor else None,
        # the live region refreshes this same page (same state, same cursor)
        "live_url": "/ui/fragments/workflows" + (f"?{urlencode(live)}" if live else ""),
        "status_filter": status or "",
        "states": [s.value for s in WorkflowState],
    }


def workflow(orch: WorkflowOrchestrator, caller: Caller, workflow_id: str) -> dict[str, Any]:
    wf = visible(orch, caller, workflow_id)
    history = orch.history(workflow_id)
    escalations = [e for e in orch.audit_events(workflow_id) if e["kind"] == "escalated"]
    approvals = orch.approval_history(workflow_id)
    ledger, position = orch.ledger(workflow_id)
    locked = position.locked or 1
    return {
        "workflow": wf,
        "timeline": timeline.build(history, approvals, ledger, escalations),
        "pending": [req for req, resp in approvals if req.status == "pending"],
        "snapshots": orch.list_snapshots(workflow_id),
        "escrow": {k: format_micro(v) for k, v in asdict(position).items()},
        "escrow_share": {
            "released": 100 * position.released / locked,
            "refunded": 100 * position.refunded / locked,
            "held": 100 * position.held / locked,
        },
        "checkpoints": wf.config.checkpoints,
        "charts": charts.figures(orch.chart_data(workflow_id=workflow_id), per_workflow=True),
        # "Fork from here" (issue 16): the poster or an admin, on approved states with work after them
        "may_fork": may_resolve(caller, wf.config.poster_id),
        "fork_points": [cp.checkpoint_id for cp in wf.config.checkpoints[:-1]],
    }


def stats(orch: WorkflowOrchestrator, caller: Caller) -> dict[str, Any]:
    numbers = orch.stats(visible_to=caller)
    states = numbers["workflow_states"]
    total = max(sum(states.values()), 1)
    return {
        "stats": numbers,
        "state_rows": [
            {"state": s.value, "count": states.get(s.value, 0), "share": 100 * states.get(s.value, 0) / total}
            for s in WorkflowState
        ],
        "charts": charts.figures(orch.chart_data(visible_to=caller)),
    }


def attention(orch: WorkflowOrchestrator, caller: Caller) -> list[dict[str, Any]]:
    """The "needs attention" list: stuck work this viewer may see (``core/rollback/stuck.py``)."""
    from saferun.storage.schema import utcnow

    now = utcnow()
    return [i.as_dict(now) for i in orch.stuck_workflows(now, visible_to=caller)]


def may_resolve(caller: Caller, poster_id: str) -> bool:
    """Who may resolve stuck work: the workflow's poster or an admin (anyone in open mode), as the API."""
    from saferun.domain.policy import Role

    return not caller.authenticated or caller.has(Role.ADMIN) or caller.identity_id == poster_id


def stuck_panel(orch: WorkflowOrchestrator, caller: Caller, workflow_id: str) -> dict[str, Any] | None:
    """This workflow's stuck item with whether the viewer may resolve it, or None when it is not stuck."""
    item = next((i for i in attention(orch, caller) if i["workflow_id"] == workflow_id), None)
    if item is None:
        return None
    return {**item, "may_resolve": may_resolve(caller, item["poster_id"])}
