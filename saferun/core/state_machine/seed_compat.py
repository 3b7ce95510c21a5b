"""The original SafeRun-X402 orchestrator's calls, answered by SafeRun's durable orchestrator.

``WorkflowOrchestrator(x402_integration)`` (the original's required argument, no ``database=``) gives a
``SeedOrchestrator``: each of the original's calls wraps the strict one and answers as the original did
(``True``/``False``, ``None`` for unknown ids or refused calls, never an exception for a refusal), and
``get_workflow`` returns a ``SeedWorkflowExecution`` whose ``snapshots``/``approval_requests``/
``approval_responses`` are lists. Everything else (``pending_approvals``, ``get_snapshot_state``, ...)
is the strict orchestrator's, unchanged. State, money and exactly-once stay in the store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import Field

from saferun.core.checkpoints.capture import StateCapture
from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    CheckpointSnapshot,
    ExecutionState,
    WorkflowConfig,
    WorkflowExecution,
)
from saferun.domain.states import WorkflowState, original_checkpoint_index
from saferun.errors import Conflict, SafeRunError

log = logging.getLogger(__name__)


class SeedCheckpointSnapshot(CheckpointSnapshot):
    approval_required: bool = True


class SeedWorkflowExecution(WorkflowExecution):
    """The original's shape: lists of the models, and ``current_checkpoint_index``."""

    snapshots: list[Any] = Field(default_factory=list)  # type: ignore[assignment]
    approval_requests: list[Any] = Field(default_factory=list)  # type: ignore[assignment]
    approval_responses: list[Any] = Field(default_factory=list)  # type: ignore[assignment]
    current_checkpoint_index: int = 0


class _ActiveWorkflows(Mapping[str, SeedWorkflowExecution]):
    """``orchestrator.active_workflows``: every stored workflow, read when iterated."""

    def __init__(self, owner: SeedOrchestrator) -> None:
        self._owner = owner

    def _ids(self) -> list[str]:
        ids: list[str] = []
        offset = 0
        while page := self._owner.strict.list_workflows(limit=500, offset=offset):
            ids.extend(w.workflow_id for w in page)
            offset += len(page)
        return ids

    def __getitem__(self, workflow_id: str) -> SeedWorkflowExecution:
        wf = self._owner.get_workflow(workflow_id)
        if wf is None:
            raise KeyError(workflow_id)
        return wf

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids())

    def __len__(self) -> int:
        return len(self._ids())


def _is_saferun_integration(x402: Any) -> bool:
    return x402 is not None and hasattr(x402, "platform") and hasattr(x402, "mode")


class SeedOrchestrator:
    def __init__(self, x402_integration: Any = None, **kwargs: Any) -> None:
        from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
        from saferun.storage.database import get_database

        self.x402_integration = x402_integration
        self.state_capture = StateCapture()
        ours = x402_integration if _is_saferun_integration(x402_integration) else None
        database = getattr(ours, "database", None) or get_database()
        self.strict = WorkflowOrchestrator(ours, database=database, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.strict, name)

    @property
    def active_workflows(self) -> Mapping[str, SeedWorkflowExecution]:
        return _ActiveWorkflows(self)

    # ------------------------------------------------------------------ the original's calls
    def initialize_workflow(self, config: WorkflowConfig) -> WorkflowExecution:
        try:
            return self.strict.initialize_workflow(config)
        except Conflict:
            # a durable workflow (and its escrow) is never silently replaced: the existing one answers
            log.warning("initialize_workflow: %s exists; returning it", config.workflow_id)
            return self.strict.get_workflow(config.workflow_id)

    def start_execution(self, workflow_id: str) -> bool:
        return self._ok(self.strict.start_execution, workflow_id)

    async def create_checkpoint(
        self, workflow_id: str, execution_state: ExecutionState
    ) -> SeedCheckpointSnapshot | None:
        wf = self._get(workflow_id)
        if wf is None or wf.current_state != WorkflowState.EXECUTING:
            return None
        checkpoints = wf.config.checkpoints
        cfg = checkpoints[min(self._index(workflow_id), len(checkpoints) - 1)]
        bound = execution_state.model_copy(update={"checkpoint_id": cfg.checkpoint_id})
        try:
            snap = await self.strict.create_checkpoint(workflow_id, bound)
        except SafeRunError as exc:
            log.warning("create_checkpoint refused: %s", exc)
            return None
        return SeedCheckpointSnapshot(
            **{**snap.model_dump(), "execution_state": execution_state},
            approval_required=cfg.requires_approval,
        )

    def request_approval(
        self, workflow_id: str, snapshot_id: str, summary: str, context: dict[str, Any]
    ) -> ApprovalRequest | None:
        try:
            for req in self.strict.pending_approvals(workflow_id):
                if req.snapshot_id == snapshot_id:
                    return req
            return self.strict.request_approval(workflow_id, snapshot_id, summary, context)
        except SafeRunError as exc:
            log.warning("request_approval refused: %s", exc)
            return None

    def submit_approval(self, workflow_id: str, response: ApprovalResponse) -> bool:
        """Any ``request_id`` decides the workflow's open request (the original's rule); a second
        decision finds none open and answers ``False``."""
        try:
            pending = self.strict.pending_approvals(workflow_id)
            if not pending:
                return False
            if response.request_id not in {r.request_id for r in pending}:
                response = response.model_copy(update={"request_id": pending[-1].request_id})
            wf = self.strict.submit_approval(workflow_id, response)
            if (
                ApprovalDecision(response.decision) == ApprovalDecision.APPROVED
                and wf.current_state == WorkflowState.EXECUTING
                and self._index(workflow_id) >= wf.total_checkpoints
            ):
                self.strict.settle_workflow(workflow_id, {})  # the original settles after the last one
            return True
        except SafeRunError as exc:
            log.warning("submit_approval refused: %s", exc)
            return False

    def complete_rollback(self, workflow_id: str, success: bool = True) -> bool:
        try:
            if not success:
                self.strict.fail_workflow(workflow_id, "Rollback failed")
                return True
            return self.strict.complete_rollback(workflow_id).succeeded
        except SafeRunError as exc:
            log.warning("complete_rollback refused: %s", exc)
            return False

    def settle_workflow(self, workflow_id: str, final_state: dict[str, Any] | None = None) -> bool:
        wf = self._get(workflow_id)
        if wf is not None and wf.current_state == WorkflowState.SETTLING:
            return True
        return self._ok(self.strict.settle_workflow, workflow_id, final_state or {})

    def complete_workflow(self, workflow_id: str) -> bool:
        return self._ok(self.strict.complete_workflow, workflow_id)

    def fail_workflow(self, workflow_id: str, error: str) -> bool:
        wf = self._get(workflow_id)
        if wf is not None and wf.current_state == WorkflowState.AWAITING_APPROVAL:
            # the original fails a paused workflow too: its open request is closed first
            return self._ok(self.strict.cancel_workflow, workflow_id, error, actor=wf.config.executor_id)
        return self._ok(self.strict.fail_workflow, workflow_id, error)

    def get_workflow(self, workflow_id: str) -> SeedWorkflowExecution | None:
        wf = self._get(workflow_id)
        if wf is None:
            return None
        snaps = []
        for snap in self.strict.list_snapshots(workflow_id):
            state = snap.execution_state or self.strict.get_snapshot_state(snap.snapshot_id)
            cfg = wf.config.checkpoint(snap.checkpoint_id)
            snaps.append(
                SeedCheckpointSnapshot(
                    **{**snap.model_dump(), "execution_state": state},
                    approval_required=cfg.requires_approval if cfg else True,
                )
            )
        history = self.strict.approval_history(workflow_id)
        return SeedWorkflowExecution(
            **{
                **wf.model_dump(exclude={"snapshots", "approval_requests", "approval_responses"}),
                "config": wf.config,
            },
            snapshots=snaps,
            approval_requests=[req for req, _ in history],
            approval_responses=[resp for _, resp in history if resp is not None],
            current_checkpoint_index=self._index(workflow_id),
        )

    # ------------------------------------------------------------------ helpers
    def _index(self, workflow_id: str) -> int:
        """The original's ``current_checkpoint_index`` (see ``original_checkpoint_index``)."""
        return original_checkpoint_index(t["event"] for t in self.strict.history(workflow_id))

    def _get(self, workflow_id: str) -> WorkflowExecution | None:
        try:
            return self.strict.get_workflow(workflow_id)
        except SafeRunError:
            return None

    @staticmethod
    def _ok(call: Any, *args: Any, **kwargs: Any) -> bool:
        try:
            call(*args, **kwargs)
            return True
        except SafeRunError as exc:
            log.warning("%s refused: %s", getattr(call, "__name__", "call"), exc)
            return False
