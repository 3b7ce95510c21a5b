"""The orchestrator's reads: workflows, requests, snapshots, states, ledger and audit, as the seed's models.

Kept apart from the state-changing half (``orchestrator.py``) because none of this takes a lock or writes:
every method is one read transaction (or, on the resume hot path, one driver-level query).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping

from saferun.core import views
from saferun.core.checkpoints.capture import CheckpointCapture, state_from_parts
from saferun.core.state_machine.models import (
    ApprovalRequest,
    ApprovalResponse,
    CheckpointSnapshot,
    ExecutionState,
    WorkflowExecution,
)
from saferun.domain.policy import Caller
from saferun.domain.states import WorkflowState
from saferun.storage import approvals, audit, saga, snapshots
from saferun.storage import ledger as book
from saferun.storage import workflows as wf_store
from saferun.storage.database import Database
from saferun.storage.visibility import visible_ids, visible_workflows


class WorkflowReads:
    db: Database
    capture: CheckpointCapture

    def get_workflow(self, workflow_id: str) -> WorkflowExecution:
        with self.db.read() as conn:
            return self._fresh(conn, workflow_id)

    def list_workflows(
        self,
        state: WorkflowState | str | None = None,
        limit: int = 100,
        offset: int = 0,
        visible_to: Caller | None = None,
    ) -> list[WorkflowExecution]:
        """Newest first; with ``visible_to`` only the workflows that caller may see (the one rule)."""
        value = WorkflowState(state).value if state else None
        where = visible_workflows(visible_to) if visible_to is not None else None
        with self.db.read() as conn:
            return [
                self._execution(conn, r)
                for r in wf_store.list_rows(conn, state=value, limit=limit, offset=offset, where=where)
            ]

    def stats(self, visible_to: Caller | None = None) -> dict[str, Any]:
        """The seed's ``GET /api/stats`` numbers; with ``visible_to``, over the workflows that caller may
        see (the one visibility rule: a count of other people's work is theirs too)."""
        where = visible_workflows(visible_to) if visible_to is not None else None
        ids = visible_ids(visible_to) if visible_to is not None else None
        with self.db.read() as conn:
            states = wf_store.count_by_state(conn, where)
            executors, supervisors = wf_store.active_parties(conn, where)
            return {
                "total_workflows": sum(states.values()),
                "workflow_states": states,
                "total_approvals_processed": approvals.total_responses(conn, ids),
                "pending_approvals": approvals.count_pending(conn, ids),
                "active_executors": executors,
                "active_supervisors": supervisors,
            }

    def get_approval_request(self, request_id: str) -> ApprovalRequest:
        with self.db.read() as conn:
            return self._request(approvals.get(conn, request_id))

    def approval_history(self, workflow_id: str) -> list[tuple[ApprovalRequest, ApprovalResponse | None]]:
        """Every request of a workflow, oldest first, with its decision when it has one."""
        with self.db.read() as conn:
            wf_store.get(conn, workflow_id)
            responses = {
                r["request_id"]: self._response(r)
                for r in approvals.responses_for_workflow(conn, workflow_id)
            }
            return [
                (self._request(r), responses.get(r["request_id"]))
                for r in approvals.for_workflow(conn, workflow_id)
            ]

    def get_approval_response(self, request_id: str) -> ApprovalResponse | None:
        with self.db.read() as conn:
            approvals.get(conn, request_id)
            row = approvals.response_for(conn, request_id)
            return self._response(row) if row else None

    def list_snapshots(self, workflow_id: str) -> list[CheckpointSnapshot]:
        with self.db.read() as conn:
            wf_store.get(conn, workflow_id)
            return [self._snapshot(r) for r in snapshots.list_for(conn, workflow_id)]

    def get_snapshot_state(self, snapshot_id: str) -> ExecutionState:
        with self.db.read() as conn:
            return self._state_of(conn, snapshots.get(conn, snapshot_id))

    def latest_approved_state(self, workflow_id: str) -> ExecutionState | None:
        """The state a resumed or rolled-back agent continues from (None before the first approval)."""
        uri = snapshots.last_approved_uri(self.db.engine, workflow_id)
        if uri is None:
            return None
        cached = self.capture.store.get_cached(uri)
        if cached is not None:
            return state_from_parts(cached)
        with self.db.read() as conn:
            return self.capture.load_state(conn, uri)

    def history(self, workflow_id: str) -> list[dict[str, Any]]:
        return self._read(workflow_id, wf_store.history)  # type: ignore[no-any-return]

    def ledger_entries(self, workflow_id: str) -> list[dict[str, Any]]:
        return self._read(workflow_id, book.entries)  # type: ignore[no-any-return]

    def escrow_position(self, workflow_id: str) -> book.EscrowPosition:
        return self._read(workflow_id, book.escrow_position)  # type: ignore[no-any-return]

    def audit_events(self, workflow_id: str) -> list[dict[str, Any]]:
        return self._read(workflow_id, audit.events)  # type: ignore[no-any-return]

    def audit_anchor(self, workflow_id: str) -> tuple[int, str | None] | None:
        """The chain's length and latest hash as the workflow row anchors them (kept in exports)."""
        return self._read(workflow_id, audit.anchor)  # type: ignore[no-any-return]

    def verify_audit(self, workflow_id: str) -> tuple[int, Any]:
        return self._read(workflow_id, audit.verify)  # type: ignore[no-any-return]

    def saga_steps(self, workflow_id: str) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            wf_store.get(conn, workflow_id)
            return [dict(r) for r in saga.list_for(conn, workflow_id)]

    # ------------------------------------------------------------------ helpers
    def _read(self, workflow_id: str, read: Any) -> Any:
        """Run ``read(conn, workflow_id)`` after checking the workflow exists (unknown ids: NotFound)."""
        with self.db.read() as conn:
            wf_store.get(conn, workflow_id)
            return read(conn, workflow_id)

    def _state_of(self, conn: Connection, snap: RowMapping) -> ExecutionState:
        return self.capture.load_state(conn, snap["artifact_uri"])

    def _fresh(self, conn: Connection, workflow_id: str) -> WorkflowExecution:
        """The workflow as it stands now, with its counts, in one query."""
        return views.execution(conn, wf_store.get_with_counts(conn, workflow_id))

    def _execution(self, conn: Connection, row: RowMapping) -> WorkflowExecution:
        return views.execution(conn, row)

    _snapshot = staticmethod(views.snapshot)
    _request = staticmethod(views.request)
    _response = staticmethod(views.response)
