"""Unit tests of the orchestrator's state rules, called as the original's callers call them."""

from __future__ import annotations

from saferun.core.checkpoints.capture import CheckpointManager
from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalResponse,
    CheckpointConfig,
    ExecutionState,
    WorkflowConfig,
    WorkflowState,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator


def _config() -> WorkflowConfig:
    return WorkflowConfig(
        name="Test",
        description="Test workflow",
        checkpoints=[CheckpointConfig(name="cp1", description="first")],
        escrow_amount=100,
        poster_id="poster",
        executor_id="executor",
    )


def test_models_defaults() -> None:
    cp = CheckpointConfig(name="Review", description="d")
    assert cp.requires_approval is True and cp.timeout_seconds == 300 and cp.can_rollback is True
    state = ExecutionState(checkpoint_id="x")
    assert state.api_calls == [] and state.agent_memory == {} and state.timestamp is not None
    assert _config().supervisor_id is None
    assert WorkflowState.EXECUTING == "executing"


def test_initialize_and_start() -> None:
    orch = WorkflowOrchestrator(x402_integration=None)
    config = _config()
    wf = orch.initialize_workflow(config)
    assert wf.current_state == WorkflowState.INITIALIZED
    assert orch.start_execution(config.workflow_id) is True
    assert orch.get_workflow(config.workflow_id).current_state == WorkflowState.EXECUTING
    assert orch.start_execution(config.workflow_id) is False


async def test_create_checkpoint_and_approval_to_settling() -> None:
    orch = WorkflowOrchestrator(None)
    config = _config()
    wid = orch.initialize_workflow(config).workflow_id
    state = ExecutionState(checkpoint_id="free-label", agent_memory={"k": "v"})
    assert await orch.create_checkpoint(wid, state) is None  # not executing yet
    orch.start_execution(wid)
    snap = await orch.create_checkpoint(wid, state)
    assert snap is not None and snap.checkpoint_id == config.checkpoints[0].checkpoint_id
    assert snap.execution_state == state
    assert orch.request_approval(wid, "no-such-snapshot", "s", {}) is None
    req = orch.request_approval(wid, snap.snapshot_id, "Approve?", {"a": 1})
    assert req is not None and orch.get_workflow(wid).current_state == WorkflowState.AWAITING_APPROVAL
    response = ApprovalResponse(request_id=req.request_id, decision=ApprovalDecision.APPROVED,
                                rationale="ok", approved_by="sup")
    assert orch.submit_approval(wid, response) is True
    wf = orch.get_workflow(wid)
    assert wf.current_state == WorkflowState.SETTLING and wf.current_checkpoint_index == 1
    assert orch.submit_approval(wid, response) is False
    assert orch.settle_workflow(wid, {"done": True}) is True
    assert orch.complete_workflow(wid) is True


def test_fail_workflow_and_unknown_ids() -> None:
    orch = WorkflowOrchestrator(x402_integration=None)
    config = _config()
    wid = orch.initialize_workflow(config).workflow_id
    orch.start_execution(wid)
    assert orch.fail_workflow(wid, "boom") is True
    wf = orch.get_workflow(wid)
    assert wf.current_state == WorkflowState.FAILED and wf.error_message == "boom"
    assert wf.completed_at is not None
    for call in (orch.start_execution, orch.complete_workflow):
        assert call("missing") is False
    assert orch.get_workflow("missing") is None


def test_checkpoint_manager_export_import() -> None:
    manager = CheckpointManager()
    manager.create_checkpoint("cp1", {"task": "t"})
    exported = manager.export_checkpoint("cp1")
    assert exported and manager.import_checkpoint("cp2", exported) is True
    assert manager.get_checkpoint("cp2") == manager.get_checkpoint("cp1")
    assert manager.import_checkpoint("cp3", "{broken") is False and manager.get_checkpoint("cp3") is None
