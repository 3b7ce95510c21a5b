"""Workflow routes: the seed's create/get/list, and what a remote agent does to its workflow.

Routes are thin: check who may do it (``saferun.domain.policy``), call the engine, shape the answer.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from saferun.api import schemas as s
from saferun.api.deps import CallerDep, OrchestratorDep, enforce, sees, visible
from saferun.api.one_hop import OneHopRoute
from saferun.config import get_settings
from saferun.core.listing import MAX_LIMIT
from saferun.core.rollback.reconciliation import compensation_key
from saferun.core.state_machine.access import WorkflowView
from saferun.core.state_machine.models import (
    CheckpointConfig,
    ExecutionState,
    WorkflowConfig,
    WorkflowExecution,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.policy import Caller, Role, may_act_as_agent, may_create_workflow
from saferun.domain.states import WorkflowState
from saferun.errors import Forbidden, InvalidInput, WorkflowNotFound
from saferun.storage.schema import utcnow

router = APIRouter(prefix="/api/workflows", tags=["workflows"], route_class=OneHopRoute)


def summary(wf: WorkflowExecution) -> dict[str, Any]:
    return {
        "workflow_id": wf.workflow_id,
        "name": wf.config.name,
        "status": wf.current_state.value,
        "current_checkpoint": wf.current_checkpoint,
        "total_checkpoints": wf.total_checkpoints,
        "started_at": wf.started_at,
    }


def detail(wf: WorkflowExecution) -> dict[str, Any]:
    cfg = wf.config
    return {
        **summary(wf),
        "description": cfg.description,
        "snapshots": wf.snapshots,
        "approval_requests": wf.approval_requests,
        "approval_responses": wf.approval_responses,
        "completed_at": wf.completed_at,
        "error_message": wf.error_message,
        "poster_id": cfg.poster_id,
        "executor_id": cfg.executor_id,
        "supervisor_id": wf.supervisor_id,
        "escrow_amount": str(cfg.escrow_amount),
        "config": cfg.model_dump(mode="json"),
        "created_at": wf.created_at,
        "updated_at": wf.updated_at,
        "job_id": wf.job_id,
        "escrow_id": wf.escrow_id,
        "result_uri": wf.result_uri,
        "last_approved_snapshot_id": wf.last_approved_snapshot_id,
    }


def as_agent(orch: WorkflowOrchestrator, caller: Caller, workflow_id: str) -> WorkflowView:
    """The workflow, checked against its chain, if the caller may act as its agent: 404 for a workflow the
    caller may not see (before any role check), 403 naming the rule otherwise. Read with
    ``workflow_view``, the same chain check as ``get_workflow`` without the counts only an answer needs."""
    wf = orch.workflow_view(workflow_id)
    if not sees(caller, wf):
        raise WorkflowNotFound(workflow_id)
    enforce(may_act_as_agent(caller, wf.config.executor_id))
    return wf


@router.post("", status_code=201, response_model=s.WorkflowCreated)
def create_workflow(body: s.CreateWorkflow, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """The seed's create: a workflow in INITIALIZED with its x402 job and escrow set up (the escrow is locked
    at start, or paid first with an x402 payment when ``funding`` is ``x402``). In keys mode the caller must
    be the ``poster_id`` (poster role) or an admin. Give ``checkpoint_names`` (the seed's shorthand) or full
    ``checkpoints``, not both."""
    enforce(may_create_workflow(caller, body.poster_id))
    if body.checkpoints and body.checkpoint_names:
        raise InvalidInput("checkpoints", "give checkpoints or checkpoint_names, not both")
    checkpoints = body.checkpoints or [CheckpointConfig(name=n) for n in (body.checkpoint_names or [])]
    values: dict[str, Any] = {
        "name": body.name,
        "description": body.description,
        "checkpoints": checkpoints,
        "escrow_amount": body.escrow_amount,
        "poster_id": body.poster_id,
        "executor_id": body.executor_id,
        "supervisor_id": body.supervisor_id,
        "metadata": body.metadata,
        "funding": body.funding,
        "workflow_type": body.workflow_type,
        "min_supervisor_reputation": body.min_supervisor_reputation,
        # a platform identity posting through this server puts the workflow on itself
        "platform_id": caller.identity_id
        if caller.authenticated and caller.has(Role.PLATFORM) and not body.platform_id
        else body.platform_id,
    }
    if body.workflow_id:
        values["workflow_id"] = body.workflow_id
    if body.executor_share is not None:
        values["executor_share"] = body.executor_share
    config = WorkflowConfig(**values)
    wf = orch.initialize_workflow(config, actor=caller.identity_id or config.poster_id)
    return {
        "workflow_id": wf.workflow_id,
        "status": wf.current_state.value,
        "x402_setup": {"job_id": wf.job_id, "escrow_id": wf.escrow_id},
        "checkpoints": wf.total_checkpoints,
        "message": "Workflow created; fund its escrow with an x402 payment before it can start"
        if config.funding == "x402" and wf.config.escrow_amount > 0
        else "Workflow created and ready to execute",
    }


@router.get("", response_model=s.WorkflowList)
def list_workflows(
    orch: OrchestratorDep,
    caller: CallerDep,
    status: WorkflowState | None = None,
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=10_000_000, description="the seed's paging; prefer cursor"),
    cursor: str | None = Query(None, max_length=1024, description="next_cursor of the previous page"),
) -> dict[str, Any]:
    """Workflows newest first, one keyset page at a time; ``total`` counts them all (not the page)."""
    page = orch.workflows_page(status, limit=limit, cursor=cursor, offset=offset, visible_to=caller)
    return {
        "workflows": [summary(w) for w in page.items],
        "total": page.total,
        "limit": page.limit,
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }


@router.get("/stuck", response_model=s.StuckList)
def stuck_workflows(orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """Workflows that need an operator: rolling back or settling past the rollback grace with no process
    finishing them (typically: a compensation no running process has registered). Oldest first; each
    names what is left to undo and why. Resolve with ``POST /api/workflows/{id}/resolve``."""
    now = utcnow()
    items = [i.as_dict(now) for i in orch.stuck_workflows(now, visible_to=caller)]
    return {"stuck": items, "total": len(items)}


@router.get("/{workflow_id}", response_model=s.WorkflowDetail)
def get_workflow(workflow_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """One workflow: state, checkpoints passed, its snapshots, approval requests and responses, parties,
    escrow amount, job and escrow ids. A workflow the caller may not see is 404, like an unknown id."""
    return detail(visible(orch, caller, workflow_id))


@router.post("/{workflow_id}/start", response_model=s.WorkflowDetail)
def start(workflow_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """INITIALIZED -> EXECUTING, locking the escrow (the workflow's executor, or an admin). 409 when the
    workflow already started or its x402-funded escrow is not paid yet (``escrow_not_funded``)."""
    as_agent(orch, caller, workflow_id)
    return detail(orch.start_execution(workflow_id, actor=caller.identity_id or None))


@router.post("/{workflow_id}/checkpoints", status_code=201, response_model=s.CheckpointOut)
def checkpoint(
    workflow_id: str, body: s.CheckpointIn, orch: OrchestratorDep, caller: CallerDep
) -> dict[str, Any]:
    """Store the agent's state; unless ``request_approval`` is false, also pause for a human.

    A plain ``def``: FastAPI runs it in a worker thread, so the transaction and its fsync never block the
    event loop (and with it every other agent's long-poll)."""
    wf = as_agent(orch, caller, workflow_id)
    state = ExecutionState.model_validate(body.state)
    req = None
    reqs = None
    name = next(
        (c.name for c in wf.config.checkpoints if c.checkpoint_id == state.checkpoint_id), wf.config.name
    )
    if body.items is not None:
        if not body.request_approval:
            raise InvalidInput(
                "request_approval", "items are approval requests: request_approval must be true"
            )
        snap, reqs = orch.pause_items_sync(
            workflow_id,
            state,
            body.summary or f"Review: {name}",
            body.items,
            body.context,
            decision_needed=body.decision_needed,
            recommendation=body.recommendation,
            confidence=body.confidence,
            risk=body.risk,
            alerts=body.alerts,
            parameter_schema=body.parameter_schema,
        )
        req = reqs[0] if reqs else None
    elif body.request_approval:
        snap, req = orch.pause_sync(
            workflow_id,
            state,
            body.summary or f"Review: {name}",
            body.context,
            decision_needed=body.decision_needed,
            recommendation=body.recommendation,
            confidence=body.confidence,
            risk=body.risk,
            alerts=body.alerts,
            parameter_schema=body.parameter_schema,
        )
    else:
        snap = orch.create_checkpoint_sync(workflow_id, state)
    return {
        **snap.model_dump(mode="json", exclude={"execution_state"}),
        "approval_request_id": req.request_id if req else None,
        "approval_request": req.model_dump(mode="json") if req else None,
        "approval_requests": [r.model_dump(mode="json") for r in reqs] if reqs is not None else None,
    }


@router.get("/{workflow_id}/snapshots")
def list_snapshots(workflow_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """The workflow's checkpoint snapshots, oldest first, each with its artifact URI and status (captured,
    approved, modified, rejected); the stored state itself is at ``/api/artifacts/{sha256}``."""
    visible(orch, caller, workflow_id)
    snaps = orch.list_snapshots(workflow_id)
    return {
        "snapshots": [x.model_dump(mode="json", exclude={"execution_state"}) for x in snaps],
        "total": len(snaps),
    }


@router.get("/{workflow_id}/state")
def latest_state(workflow_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """The last approved state: what a resumed or rolled-back agent continues from (null before any)."""
    visible(orch, caller, workflow_id)
    state = orch.latest_approved_state(workflow_id)
    return {"workflow_id": workflow_id, "state": state.model_dump(mode="json") if state else None}


@router.post("/{workflow_id}/steps", status_code=201, response_model=s.StepOut)
def register_step(
    workflow_id: str, body: s.StepIn, orch: OrchestratorDep, caller: CallerDep
) -> dict[str, Any]:
    """Register a side effect the agent performed and the named compensation that undoes it (``args`` are
    passed to it). A rejection before the next approval undoes it, newest first; an approval makes it
    permanent."""
    as_agent(orch, caller, workflow_id)
    return {"step_id": orch.register_step(workflow_id, body.name, body.compensation, body.args)}


@router.get("/{workflow_id}/steps")
def list_steps(workflow_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """Every side effect the agent registered, in order, with its compensation and status (pending,
    committed, compensating, compensated, failed)."""
    visible(orch, caller, workflow_id)
    steps = orch.saga_steps(workflow_id)
    return {"steps": steps, "total": len(steps)}


@router.get("/{workflow_id}/rollback/steps")
def steps_to_undo(workflow_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """The steps a rollback still has to compensate, newest first (the agent runs them)."""
    as_agent(orch, caller, workflow_id)
    steps = orch.steps_to_undo(workflow_id)
    return {"steps": steps, "total": len(steps)}


@router.post("/{workflow_id}/rollback/steps/{step_id}/claim")
def claim_step(
    workflow_id: str, step_id: str, body: s.ClaimIn, orch: OrchestratorDep, caller: CallerDep
) -> dict[str, Any]:
    """Take one step of a rolling-back workflow for compensation: ``claimed`` is true for exactly one caller
    (a claim older than ``SAFERUN_STALE_CLAIM_SECONDS`` may be re-taken)."""
    as_agent(orch, caller, workflow_id)
    stale = get_settings().stale_claim_seconds
    generation = orch.claim_compensation(workflow_id, step_id, body.owner, stale)
    return {
        "claimed": generation is not None,
        "generation": generation,  # pass it back with the result (finish): the claim's fencing token
        "idempotency_key": compensation_key(workflow_id, step_id),  # the same across takeovers
    }


@router.post("/{workflow_id}/rollback/steps/{step_id}/finish")
def finish_step(
    workflow_id: str, step_id: str, body: s.FinishIn, orch: OrchestratorDep, caller: CallerDep
) -> dict[str, Any]:
    """Report a claimed compensation's outcome; a failure (``ok: false`` with ``error``) fails the workflow
    naming the step and refunds the unearned escrow."""
    as_agent(orch, caller, workflow_id)
    state = orch.finish_compensation(
        workflow_id, step_id, body.ok, body.error, caller.identity_id or None, body.generation
    )
    return {"workflow_status": state}


@router.post("/{workflow_id}/rollback/complete", response_model=s.RollbackOut)
def complete_rollback(
    workflow_id: str, body: s.RollbackDone, orch: OrchestratorDep, caller: CallerDep
) -> dict[str, Any]:
    """Once no step is left to undo: ROLLING_BACK -> EXECUTING, resuming from the last approved snapshot
    (named in the answer)."""
    as_agent(orch, caller, workflow_id)
    report = orch.complete_rollback(workflow_id, body.compensated)
    return {
        "workflow_id": workflow_id,
        "final_state": report.final_state,
        "restored_snapshot_id": report.restored_snapshot_id,
        "restored_checkpoint_id": report.restored_checkpoint_id,
        "compensated": report.compensated,
    }


@router.post("/{workflow_id}/settle", response_model=s.WorkflowDetail)
def settle(workflow_id: str, body: s.SettleIn, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """EXECUTING -> SETTLING with the agent's result stored as an artifact; then ``/complete``."""
    as_agent(orch, caller, workflow_id)
    return detail(orch.settle_workflow(workflow_id, body.result, actor=caller.identity_id or None))


@router.post("/{workflow_id}/complete", response_model=s.WorkflowDetail)
def complete(workflow_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """SETTLING -> COMPLETED: approved milestones stay paid, the unearned rest of the escrow is refunded."""
    as_agent(orch, caller, workflow_id)
    return detail(orch.complete_workflow(workflow_id, actor=caller.identity_id or None))


@router.post("/{workflow_id}/fail", response_model=s.WorkflowDetail)
def fail(workflow_id: str, body: s.FailIn, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """The agent gives up: -> FAILED with ``error`` recorded; approved milestones stay paid, the rest is
    refunded."""
    as_agent(orch, caller, workflow_id)
    return detail(orch.fail_workflow(workflow_id, body.error, actor=caller.identity_id or None))


@router.post("/{workflow_id}/cancel", response_model=s.WorkflowDetail)
def cancel(workflow_id: str, body: s.CancelIn, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """The poster (or an admin) stops the workflow; approved milestones stay paid, the rest is refunded."""
    wf = visible(orch, caller, workflow_id)
    if caller.authenticated and not caller.has(Role.ADMIN) and caller.identity_id != wf.config.poster_id:
        raise Forbidden(
            "poster_cancels",
            "refused by rule poster_cancels: only the workflow's poster or an admin may cancel it",
        )
    actor = caller.identity_id or wf.config.poster_id
    return detail(orch.cancel_workflow(workflow_id, body.reason, actor=actor))


@router.post("/{workflow_id}/resolve", response_model=s.ResolveOut)
async def resolve(
    workflow_id: str, body: s.ResolveIn, orch: OrchestratorDep, caller: CallerDep
) -> dict[str, Any]:
    """Resolve stuck work (the poster's or an admin's call). ``retry`` runs the rollback here (409 when
    this server does not know a compensation); ``mark_compensated`` records each open step as undone by
    hand with ``reason`` and resumes the workflow; ``fail`` ends it FAILED naming every side effect that
    was NOT undone. Unearned escrow is refunded whenever the workflow fails."""
    wf = visible(orch, caller, workflow_id)
    if caller.authenticated and not caller.has(Role.ADMIN) and caller.identity_id != wf.config.poster_id:
        raise Forbidden(
            "poster_resolves",
            "refused by rule poster_resolves: only the workflow's poster or an admin may resolve stuck work",
        )
    actor = caller.identity_id or wf.config.poster_id
    done = await orch.resolve_stuck(workflow_id, body.action, body.reason, actor=actor)
    return {
        "workflow_id": workflow_id,
        "action": done.action,
        "status": done.state,
        "outcome": done.outcome,
        "compensated": done.compensated,
        "not_undone": done.not_undone,
    }


@router.post("/{workflow_id}/rating")
async def rate(
    workflow_id: str, body: s.RatingIn, orch: OrchestratorDep, caller: CallerDep
) -> dict[str, Any]:
    """The poster rates the workflow's supervisor (1-5) once it has ended; it moves their reputation."""
    wf = await run_in_threadpool(visible, orch, caller, workflow_id)
    if caller.authenticated and not caller.has(Role.ADMIN) and caller.identity_id != wf.config.poster_id:
        raise Forbidden(
            "poster_rates",
            "refused by rule poster_rates: only the workflow's poster or an admin may rate its supervisor",
        )
    return await orch.rate_supervisor(
        workflow_id, body.rating, body.review, rated_by=caller.identity_id or wf.config.poster_id
    )


@router.get("/{workflow_id}/audit", response_model=s.AuditOut)
def audit(workflow_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """The workflow's audit chain, verified on the way out: ``verified`` is false and ``broken_at`` names the
    first event whose hash or link does not recompute (the anchor on the workflow row is checked too)."""
    visible(orch, caller, workflow_id)
    events = orch.audit_events(workflow_id)
    _, broken = orch.verify_audit(workflow_id)
    seq, head = orch.audit_anchor(workflow_id) or (0, None)
    return {
        "workflow_id": workflow_id,
        "events": events,
        "verified": broken is None,
        "broken_at": broken.seq if broken else None,
        "reason": broken.reason if broken else None,
        "anchor_seq": seq,
        "anchor_hash": head,
    }


@router.get("/{workflow_id}/ledger")
def ledger(workflow_id: str, orch: OrchestratorDep, caller: CallerDep) -> dict[str, Any]:
    """The workflow's double-entry ledger postings and its escrow position (locked, released, refunded, held),
    as exact decimal strings."""
    from dataclasses import asdict

    from saferun.domain.money import format_micro

    visible(orch, caller, workflow_id)
    entries, escrow = orch.ledger(workflow_id)  # checked against the chain: 409 tampered, never a forgery
    position = {k: format_micro(v) for k, v in asdict(escrow).items()}
    return {"entries": entries, "escrow": position}
