"""Rows to the seed's models: what callers of the orchestrator (API, CLI, agents) get back."""

from __future__ import annotations

from sqlalchemy import Connection, RowMapping

from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    CheckpointSnapshot,
    ExecutionState,
    WorkflowConfig,
    WorkflowExecution,
)
from saferun.domain.states import WorkflowState
from saferun.storage import approvals, snapshots


def execution(conn: Connection, row: RowMapping) -> WorkflowExecution:
    n_req, n_resp = approvals.counts(conn, row["workflow_id"])
    return WorkflowExecution(
        workflow_id=row["workflow_id"],
        config=WorkflowConfig.model_validate(row["config"]),
        current_state=WorkflowState(row["state"]),
        current_checkpoint=row["current_checkpoint"],
        total_checkpoints=len(row["config"]["checkpoints"]),
        job_id=row["job_id"],
        escrow_id=row["escrow_id"],
        last_approved_snapshot_id=row["last_approved_snapshot_id"],
        result_uri=row["result_uri"],
        error_message=row["error_message"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        snapshots=snapshots.count(conn, row["workflow_id"]),
        approval_requests=n_req,
        approval_responses=n_resp,
    )


def snapshot(row: RowMapping, state: ExecutionState | None = None) -> CheckpointSnapshot:
    return CheckpointSnapshot(
        snapshot_id=row["snapshot_id"],
        workflow_id=row["workflow_id"],
        checkpoint_id=row["checkpoint_id"],
        label=row["label"],
        sequence=row["sequence"],
        status=row["status"],
        timestamp=row["created_at"],
        execution_state=state,
        artifact_uri=row["artifact_uri"],
        raw_size_bytes=row["raw_size_bytes"],
        compressed_size_bytes=row["compressed_size_bytes"],
        new_bytes=row["new_bytes"],
        parent_snapshot_id=row["parent_snapshot_id"],
    )


def request(row: RowMapping) -> ApprovalRequest:
    return ApprovalRequest.model_validate({k: row[k] for k in ApprovalRequest.model_fields})


def response(row: RowMapping) -> ApprovalResponse:
    return ApprovalResponse(
        request_id=row["request_id"],
        decision=ApprovalDecision(row["decision"]),
        rationale=row["rationale"],
        approved_by=row["approved_by"],
        modifications=row["modifications"],
        response_id=row["response_id"],
        automatic=row["automatic"],
        created_at=row["created_at"],
    )
