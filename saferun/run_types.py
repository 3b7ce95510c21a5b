"""What a supervised run talks to and what it answers: the ``Orchestrator`` protocol (the in-process
``WorkflowOrchestrator`` or ``saferun.client.RemoteOrchestrator``) and the ``Decision`` an agent gets back.

Split from ``saferun/supervised.py`` so the run and its multi-item checkpoints (``supervised_items.py``)
share them without importing each other; ``saferun.supervised`` re-exports both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from saferun.core.rollback.reconciliation import RollbackReport
from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    CheckpointSnapshot,
    ExecutionState,
    WorkflowConfig,
    WorkflowExecution,
)
from saferun.domain.canonical import canonical_bytes
from saferun.errors import ParametersNotApproved

# audit events only the agent's own progress writes: after one of them, a decision was already acted on
AGENT_PROGRESS = frozenset({"step_registered", "checkpoint_captured"})


class Orchestrator(Protocol):
    """What a supervised run needs from its orchestrator: the in-process ``WorkflowOrchestrator``, or
    ``saferun.client.RemoteOrchestrator`` for a SafeRun server over HTTP."""

    def initialize_workflow(self, config: WorkflowConfig) -> WorkflowExecution: ...
    def start_execution(self, workflow_id: str) -> WorkflowExecution: ...
    def get_workflow(self, workflow_id: str) -> WorkflowExecution: ...
    def settle_workflow(
        self, workflow_id: str, result: dict[str, Any] | None = None
    ) -> WorkflowExecution: ...
    def complete_workflow(self, workflow_id: str) -> WorkflowExecution: ...
    def fail_workflow(self, workflow_id: str, error: str) -> WorkflowExecution: ...
    def register_step(
        self, workflow_id: str, name: str, compensation: str, args: dict[str, Any] | None = None
    ) -> str: ...
    async def pause(
        self,
        workflow_id: str,
        state: ExecutionState,
        summary: str,
        context: dict[str, Any] | None = None,
        **review: Any,
    ) -> tuple[CheckpointSnapshot, ApprovalRequest | None]: ...
    async def pause_items(
        self,
        workflow_id: str,
        state: ExecutionState,
        summary: str,
        items: list[Any],
        context: dict[str, Any] | None = None,
        **review: Any,
    ) -> tuple[CheckpointSnapshot, list[ApprovalRequest]]: ...
    def checkpoint_items(self, request_id: str) -> list[tuple[ApprovalRequest, ApprovalResponse | None]]: ...
    async def wait_for_decision(self, request_id: str, timeout: float | None = None) -> ApprovalResponse: ...
    async def arollback(self, workflow_id: str) -> RollbackReport: ...
    def latest_approved_state(self, workflow_id: str) -> ExecutionState | None: ...
    def list_snapshots(self, workflow_id: str) -> list[CheckpointSnapshot]: ...
    def get_snapshot_state(self, snapshot_id: str) -> ExecutionState: ...
    def pending_approvals(self, workflow_id: str | None = None) -> list[ApprovalRequest]: ...
    def audit_events(self, workflow_id: str) -> list[dict[str, Any]]: ...
    def get_approval_request(self, request_id: str) -> ApprovalRequest: ...
    def get_approval_response(self, request_id: str) -> ApprovalResponse | None: ...


@dataclass(frozen=True)
class Decision:
    """What the reviewer decided, and the parameters the agent should now use."""

    decision: ApprovalDecision
    rationale: str
    approved_by: str
    modifications: dict[str, Any] | None
    parameters: dict[str, Any]
    request_id: str | None
    snapshot: CheckpointSnapshot
    # the digest of what the reviewer was shown when deciding (docs/review-digest.md); None when no
    # person decided (no approval required, a timeout)
    review_digest: str | None = None

    @property
    def approved(self) -> bool:
        return self.decision in (ApprovalDecision.APPROVED, ApprovalDecision.MODIFIED)

    def verify(self, parameters: Mapping[str, Any]) -> None:
        """Refuse inputs the reviewer did not approve: call it with what a step is about to run with.

        Every key given must be an approved parameter with the same value (compared as canonical JSON, so
        ``1`` is not ``1.0`` nor ``True``); keys not given are not checked, so a step may verify only the
        inputs it uses. Raises ``ParametersNotApproved`` naming each differing key; nothing runs.
        """
        if not self.approved:
            raise ParametersNotApproved(sorted(parameters) or ["(decision)"], self.review_digest)
        differs = [
            key
            for key, value in parameters.items()
            if key not in self.parameters
            or canonical_bytes(value, key) != canonical_bytes(self.parameters[key], key)
        ]
        if differs:
            raise ParametersNotApproved(sorted(differs), self.review_digest)
