"""Deciding an approval request, exactly once, and what each decision does.

Both a human decision and an expiry go through ``decide``: claim the pending request (one winner across
all processes), record the response, then move the workflow:

- APPROVED / MODIFIED: milestone paid (once per checkpoint), saga steps since the last approval become
  permanent, the snapshot (or, for MODIFIED, a new snapshot with the merged parameters) becomes the last
  approved one, AWAITING_APPROVAL -> EXECUTING;
- REJECTED on a checkpoint that can roll back: -> ROLLING_BACK; the compensations run afterwards
  (``Orchestrator.rollback``), outside this transaction, because they are side effects;
- REJECTED on one that cannot: -> FAILED; nothing more is paid and the escrow's rest is refunded.

What passing a checkpoint writes (milestone, saga, a modified state's new snapshot) is in
``core.decision_effects``; what the other items of a multi-request checkpoint add, in
``core.decision_groups``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from saferun.core import escrow, mirror, notify, parties, quorum, review, transitions
from saferun.core.checkpoints.capture import CheckpointCapture
from saferun.core.decision_effects import complete_checkpoint, store_modified
from saferun.core.decision_groups import Group, close_siblings
from saferun.core.parties import IdentityChecks
from saferun.core.state_machine.models import ApprovalDecision
from saferun.domain.audit import bind, decision_digest
from saferun.domain.ids import new_id
from saferun.domain.modifications import validate_modifications
from saferun.domain.policy import Role
from saferun.domain.states import Event, WorkflowState
from saferun.errors import DecisionConflict, InvalidInput
from saferun.storage import approvals, audit, snapshots
from saferun.storage import workflows as wf_store
from saferun.storage.schema import utcnow

TIMEOUT_ACTOR = "saferun:timeout"


@dataclass(frozen=True)
class Outcome:
    request_id: str
    workflow_id: str
    decision: ApprovalDecision
    workflow_state: WorkflowState
    response_id: str
    snapshot_id: str
    approved_snapshot_id: str | None
    # a quorum request (saferun/core/quorum.py): the votes after this one; while it stays pending,
    # ``decision`` is the vote just cast and ``response_id`` is empty (no decision row exists yet)
    tally: quorum.Tally | None = None


# what a decision makes of the snapshot it decided (a MODIFIED one is superseded by a new snapshot)
_SNAPSHOT_STATUS = {
    ApprovalDecision.APPROVED: "approved",
    ApprovalDecision.MODIFIED: "superseded",
    ApprovalDecision.REJECTED: "rejected",
}

NO_RATIONALE = "(no rationale given: rejected through a call that did not ask for one)"


def _require_supervisor(identity: Any, approved_by: str, checks: IdentityChecks) -> None:
    parties.require_identity(identity, approved_by, Role.SUPERVISOR, checks, "decide an approval")


def decide(
    conn: Connection,
    capture: CheckpointCapture,
    *,
    workflow_id: str | None,
    request_id: str,
    decision: ApprovalDecision,
    rationale: str,
    approved_by: str,
    modifications: dict[str, Any] | None,
    response_id: str | None = None,
    automatic: bool = False,
    on_timeout_fail: bool = False,
    now: datetime | None = None,
    claim_status: str | None = None,
    approver_checks: IdentityChecks | None = None,
    reviewed: review.ReviewCheck | None = None,
    authorize: Callable[[Mapping[str, Any], Mapping[str, Any]], None] | None = None,
) -> Outcome:
    """Decide ``request_id`` inside the caller's transaction (see the module docstring).

    ``approver_checks``: check ``approved_by`` holds the supervisor role under that mode, with the identity
    read by the same statement as the request (a human decision; expiry and cancellation pass None).
    ``reviewed`` (human decisions): the review digest the decider saw, if they sent one, checked under the
    workflow lock (saferun/core/review.py) and recorded with the decision.
    ``authorize(request_row, workflow_row)``: the caller's access check, on the rows as this transaction
    reads them under the workflow's lock, before anything is written; it raises to refuse.
    """
    now = now or utcnow()
    if decision == ApprovalDecision.REJECTED and not (rationale or "").strip():
        # REST, the dashboard and the CLI refuse a rejection without a reason; a library call that gives
        # none (the seed's call shapes allow it) is recorded as such, never as a silent empty string
        rationale = NO_RATIONALE
    row: Any = None
    identity: Any = None
    if approver_checks is None:
        req = approvals.get(conn, request_id)
    else:  # the request, the decider's identity and the workflow under its lock: one statement
        req, identity, row = approvals.get_for_decision(conn, request_id, approved_by)
        if authorize is None:  # with an access check, the identity is checked after it (below)
            _require_supervisor(identity, approved_by, approver_checks)
    if workflow_id is not None and req["workflow_id"] != workflow_id:
        raise InvalidInput(
            "workflow_id",
            f"request {request_id!r} belongs to workflow {req['workflow_id']!r}, not {workflow_id!r}",
        )
    wf_id = req["workflow_id"]
    if row is None:  # the workflow's lock; the audit chain continues from its anchor
        row = wf_store.get_locked(conn, wf_id)
    reviewing = reviewed is not None and reviewed.seen is not None  # without one: no extra statement
    if reviewing or conn.dialect.name == "postgresql":
        # under the lock: an alert may have just been added. PostgreSQL serializes one workflow's writers
        # only from the lock above, so the request may have changed since it was read: bind it as it is
        # now, or a later checked read would see a row that no longer matches its binding and call it
        # tampered (SQLite's BEGIN IMMEDIATE already serialized every writer before the first read).
        req, passed_before = approvals.get_under_lock(conn, request_id)
        row = {**row, "x_passed_before": passed_before}
    if authorize is not None:
        # the caller's access check on these rows, before the identity check: a caller who may not see
        # the request learns nothing about it (404), whoever they name as the decider
        authorize(req, row)
        if approver_checks is not None:
            _require_supervisor(identity, approved_by, approver_checks)
    digest = None
    if reviewing:
        assert reviewed is not None
        digest = review.check(conn, req, reviewed) if req["status"] == "pending" else None
    tally = None
    if req["quorum"] is not None and not automatic:  # a vote (saferun/core/quorum.py), before the claim
        tally, _ = quorum.cast(
            conn,
            req,
            row,
            voter=approved_by,
            vote=decision.value,
            rationale=rationale,
            now=now,
            mode=approver_checks or IdentityChecks.REGISTERED,
        )
        if tally.outcome is None:  # recorded; the request stays pending, nothing is paid
            notify.publish(conn, "workflow", wf_id)
            state = WorkflowState(row["state"])
            return Outcome(request_id, wf_id, decision, state, "", req["snapshot_id"], None, tally)
        decision = ApprovalDecision(tally.outcome)
    if decision == ApprovalDecision.MODIFIED:
        validate_modifications(req["parameters"], modifications or {}, req["parameter_schema"])
    if not approvals.claim(
        conn,
        request_id,
        claim_status or ("expired" if automatic else "decided"),
        now,
        require_unexpired=not automatic,
    ):
        current = approvals.get(conn, request_id)
        status = "expired" if current["status"] == "pending" else current["status"]
        if status == "closed":
            raise DecisionConflict(
                request_id,
                status,
                f"item {current['item_key']!r} of checkpoint {current['checkpoint_name']!r} was closed "
                "because a sibling item was rejected; it cannot be decided",
            )
        raise DecisionConflict(request_id, status)
    # an item of a multi-request checkpoint: its siblings decide what this decision does to the workflow
    group = Group.read(conn, req, decision, modifications) if req["group_id"] is not None else None
    notify.publish(conn, "decision", request_id)  # wakes waiters once this transaction commits
    # and open pages of its workflow, even when the decision moves no state (an item whose siblings still
    # wait): the event stream turns it into a hint (api/system.events); a transition's own notice is the
    # same one, sent once
    notify.publish(conn, "workflow", wf_id)
    # the outbox notice ("decided", "expired", ...) is written by the database with the claim, so it
    # commits with the decision and none is lost to a crash (revision 0024, saferun/notifications)

    new_status = claim_status or ("expired" if automatic else "decided")
    response_id = response_id or new_id("resp")
    response = {
        "response_id": response_id,
        "request_id": request_id,
        "decision": decision.value,
        "rationale": rationale,
        "approved_by": approved_by,
        "modifications": modifications,
        "automatic": automatic,
        "review_digest": digest,
    }
    approvals.insert_response(conn, workflow_id=wf_id, **response)
    # what the decided snapshot becomes: nothing yet while siblings of this item still wait
    snap_status = _SNAPSHOT_STATUS[decision] if group is None else group.snapshot_status
    audit.append(
        conn,
        wf_id,
        "decision",
        approved_by,
        {
            "request_id": request_id,
            "decision": decision.value,
            "rationale": rationale,
            "modifications": modifications,
            "automatic": automatic,
            # binds the stored decision row to the chain (saferun audit verify recomputes it)
            "response_sha256": decision_digest(response),
            # what the decider was shown (saferun/domain/review_digest); checked when they sent it
            **({"review_digest": digest} if digest is not None else {}),
            # decided by a quorum's last vote: the tally it reached (each vote is its own bound event)
            **({"quorum": tally.as_dict()} if tally is not None else {}),
            # and what the decision changes: the request's outcome, the decided snapshot's status
            "bind": [
                bind("approval_requests", "review", {**req, "status": new_status}),
                *(
                    [bind("snapshots", "status", {"snapshot_id": req["snapshot_id"], "status": snap_status})]
                    if snap_status is not None
                    else []
                ),
            ],
            **({"group_id": req["group_id"], "item_key": req["item_key"]} if group is not None else {}),
        },
    )
    # only a modification needs the snapshot row itself (its artifact and label)
    snap: Any = (
        snapshots.get(conn, req["snapshot_id"])
        if snap_status == "superseded"
        else {"snapshot_id": req["snapshot_id"]}
    )
    # the approval sub-job is completed (reason: the decision) by the database with the decision's row
    if req["supervisor_id"] is None and not automatic:
        mirror.approval_subjob(
            conn, row, request_id, req["checkpoint_id"], approved_by, {"request_id": request_id}
        )
    if req["supervisor_id"] is not None or not automatic:  # the platform has this request's sub-job
        mirror.approval_decided(conn, row, request_id, decision.value, automatic)

    if decision == ApprovalDecision.REJECTED:
        if group is not None:
            close_siblings(
                conn,
                row,
                req,
                group,
                approved_by,
                "cancelled" if new_status == "cancelled" else "closed",
                now,
            )
        return _reject(conn, row, req, snap, response_id, rationale, approved_by, on_timeout_fail)
    if group is not None and not group.last:
        # recorded and audited above; the workflow waits for the other items, nothing is paid yet
        return Outcome(
            request_id,
            wf_id,
            decision,
            WorkflowState(row["state"]),
            response_id,
            snap["snapshot_id"],
            row["last_approved_snapshot_id"],
        )
    approved_id = snap["snapshot_id"]
    passed_before = None
    if snap_status == "superseded":
        # a group's items each merge into their own entry of the state's parameters ({item key: ...})
        patch = (modifications or {}) if group is None else group.patch
        approved_id = store_modified(conn, capture, row, snap, patch, approved_by)
    else:
        # the snapshot is approved by the database when it becomes the approved state (revision 0024);
        # whether its checkpoint was paid before came with the lock's read on SQLite, else it is asked
        passed_before = row.get("x_passed_before")
    passed = complete_checkpoint(
        conn,
        row,
        req["checkpoint_id"],
        approved_id,
        req["supervisor_id"] or approved_by,
        approved_by,
        write=False,
        passed_before=passed_before,
    )
    event = Event.MODIFIED if snap_status == "superseded" else Event.APPROVED
    state = transitions.apply(
        conn,
        row,
        event,
        actor=approved_by,
        reason=rationale,
        audit_payload={"request_id": request_id},
        **passed,
    )
    return Outcome(request_id, wf_id, decision, state, response_id, snap["snapshot_id"], approved_id, tally)


def _reject(
    conn: Connection,
    row: RowMapping,
    req: RowMapping,
    snap: RowMapping,
    response_id: str,
    rationale: str,
    actor: str,
    force_fail: bool,
) -> Outcome:
    snapshots.set_status(conn, snap["snapshot_id"], "rejected")
    cp = next((c for c in row["config"]["checkpoints"] if c["checkpoint_id"] == req["checkpoint_id"]), {})
    can_rollback = bool(cp.get("can_rollback", True)) and not force_fail
    if can_rollback:
        state = transitions.apply(
            conn,
            row,
            Event.REJECTED_ROLLBACK,
            actor=actor,
            reason=rationale,
            audit_payload={"request_id": req["request_id"]},
            rollback_claimed_by=None,
            rollback_claimed_at=None,
        )
    else:
        message = f"checkpoint {req['checkpoint_name']!r} rejected and cannot roll back: {rationale}"
        escrow.close_failed(conn, row, Event.REJECTED_NO_ROLLBACK, message, actor)
        state = WorkflowState.FAILED
    return Outcome(
        req["request_id"],
        row["workflow_id"],
        ApprovalDecision.REJECTED,
        state,
        response_id,
        snap["snapshot_id"],
        row["last_approved_snapshot_id"],
    )


def expire(conn: Connection, capture: CheckpointCapture, request_id: str, now: datetime) -> Outcome | None:
    """Apply a due request's ``on_timeout`` policy; None when another process got there first."""
    req = approvals.get(conn, request_id)
    if req["status"] != "pending" or req["expires_at"] > now:
        return None
    policy = req["on_timeout"]
    decision = ApprovalDecision.APPROVED if policy == "approve" else ApprovalDecision.REJECTED
    rationale = f"no decision within the checkpoint's timeout; on_timeout={policy}"
    try:
        return decide(
            conn,
            capture,
            workflow_id=None,
            request_id=request_id,
            decision=decision,
            rationale=rationale,
            approved_by=TIMEOUT_ACTOR,
            modifications=None,
            automatic=True,
            on_timeout_fail=policy == "fail",
            now=now,
        )
    except DecisionConflict:
        return None


CANCEL_ACTOR = "saferun:cancel"


def cancel_pending(conn: Connection, capture: CheckpointCapture, request_id: str, rationale: str) -> Outcome:
    """Close a pending request because the workflow is being cancelled: a rejection without rollback."""
    return decide(
        conn,
        capture,
        workflow_id=None,
        request_id=request_id,
        decision=ApprovalDecision.REJECTED,
        rationale=rationale,
        approved_by=CANCEL_ACTOR,
        modifications=None,
        automatic=True,
        on_timeout_fail=True,
        claim_status="cancelled",
    )
