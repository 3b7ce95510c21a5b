"""Rows to the seed's models: what callers of the orchestrator (API, CLI, agents) get back."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

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
from saferun.domain import parameter_schema
from saferun.domain.states import WorkflowState
from saferun.storage import workflows as wf_store

_configs: OrderedDict[tuple[str, Any], WorkflowConfig] = OrderedDict()
_configs_lock = threading.Lock()


def config(row: Any) -> WorkflowConfig:
    """A workflow's validated config. Configs never change after creation, so each is validated once per
    process (bounded cache) instead of on every call that returns or inspects a workflow."""
    # keyed with the creation time too, so equal ids in two databases (tests, tenants) never mix
    key = (row["workflow_id"], row["created_at"])
    with _configs_lock:
        cached = _configs.get(key)
        if cached is not None:
            _configs.move_to_end(key)
            return cached
    parsed = WorkflowConfig.model_validate(row["config"])
    with _configs_lock:
        _configs[key] = parsed
        while len(_configs) > 2048:
            _configs.popitem(last=False)
    return parsed


def execution(conn: Connection, row: RowMapping) -> WorkflowExecution:
    if "n_snapshots" not in row:  # a plain row: fetch it again with its counts
        row = wf_store.get_with_counts(conn, row["workflow_id"])
    n_snap, n_req, n_resp = row["n_snapshots"], row["n_requests"], row["n_responses"]
    return WorkflowExecution(
        workflow_id=row["workflow_id"],
        config=config(row),
        current_state=WorkflowState(row["state"]),
        current_checkpoint=row["current_checkpoint"],
        total_checkpoints=len(row["config"]["checkpoints"]),
        supervisor_id=row["supervisor_id"],
        job_id=row["job_id"],
        escrow_id=row["escrow_id"],
        last_approved_snapshot_id=row["last_approved_snapshot_id"],
        result_uri=row["result_uri"],
        error_message=row["error_message"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        snapshots=n_snap,
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
    values = {k: row[k] for k in ApprovalRequest.model_fields if k in row}
    if values["parameter_schema"] is None:  # a row from before schemas were stored: what was enforced
        values["parameter_schema"] = parameter_schema.infer(values["parameters"])
    return ApprovalRequest.model_validate(values)


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
        review_digest=row["review_digest"],
    )
