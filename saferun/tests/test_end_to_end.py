"""End-to-end workflows written as the original's callers wrote them (the seed README's Testing list)."""

from __future__ import annotations

import os

from saferun.agents.supervisor.agent import SupervisorAgent
from saferun.api.x402.client import X402Integration
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


def _config(n: int = 3) -> WorkflowConfig:
    return WorkflowConfig(
        name="Research Task",
        description="Research and analyze market data",
        checkpoints=[CheckpointConfig(name=f"Step {i}", description=f"Checkpoint {i}") for i in range(n)],
        escrow_amount=100.0,
        poster_id="user_123",
        executor_id="agent_456",
    )


def _state(cp_id: str, i: int) -> ExecutionState:
    return ExecutionState(
        checkpoint_id=cp_id,
        agent_memory={"step": i},
        api_calls=[{"call_id": f"call_{i}", "has_side_effects": True}],
        intermediate_outputs={f"out_{i}": i},
        decision_trace=[f"decided {i}"],
    )


async def _pause(orch: WorkflowOrchestrator, wid: str, cp_id: str, i: int):  # type: ignore[no-untyped-def]
    state = _state(cp_id, i)
    snapshot = await orch.create_checkpoint(wid, state)
    assert snapshot is not None and snapshot.artifact_uri
    request = orch.request_approval(wid, snapshot.snapshot_id, f"step {i}", {"i": i})
    assert request is not None
    return state, snapshot, request


async def test_complete_workflow_happy_path() -> None:
    x402 = X402Integration()
    orch = WorkflowOrchestrator(x402_integration=x402)
    config = _config()
    execution = orch.initialize_workflow(config)
    assert execution.current_state == WorkflowState.INITIALIZED
    assert orch.start_execution(config.workflow_id) is True
    assert orch.start_execution(config.workflow_id) is False
    supervisor = SupervisorAgent("supervisor_1")
    for i, cp in enumerate(config.checkpoints):
        state, snapshot, _request = await _pause(orch, config.workflow_id, cp.checkpoint_id, i)
        assert snapshot.checkpoint_id == cp.checkpoint_id and snapshot.approval_required is True
        sup_req = supervisor.create_approval_request(
            config.workflow_id, cp.checkpoint_id, snapshot.snapshot_id, state
        )
        response = supervisor.submit_decision(sup_req.request_id, ApprovalDecision.APPROVED, "ok", "sup_1")
        assert orch.submit_approval(config.workflow_id, response) is True
        wf = orch.get_workflow(config.workflow_id)
        assert wf is not None and wf.current_checkpoint_index == i + 1
    wf = orch.get_workflow(config.workflow_id)
    assert wf.current_state == WorkflowState.SETTLING
    assert orch.settle_workflow(config.workflow_id, {"result": "done"}) is True
    assert orch.complete_workflow(config.workflow_id) is True
    wf = orch.get_workflow(config.workflow_id)
    assert wf.current_state == WorkflowState.COMPLETED and wf.completed_at is not None
    assert (len(wf.snapshots), len(wf.approval_requests), len(wf.approval_responses)) == (3, 3, 3)
    assert wf.error_message is None
    assert wf.snapshots[0].execution_state == _state(config.checkpoints[0].checkpoint_id, 0)
    assert config.workflow_id in orch.active_workflows
    await x402.close()


async def test_workflow_with_rejection_and_rollback() -> None:
    orch = WorkflowOrchestrator(x402_integration=X402Integration())
    config = _config(2)
    wid = orch.initialize_workflow(config).workflow_id
    orch.start_execution(wid)
    _, _, req = await _pause(orch, wid, config.checkpoints[0].checkpoint_id, 0)
    ok = ApprovalResponse(request_id=req.request_id, decision=ApprovalDecision.APPROVED, rationale="ok",
                          approved_by="sup")
    assert orch.submit_approval(wid, ok) is True
    _, _, req = await _pause(orch, wid, config.checkpoints[1].checkpoint_id, 1)
    no = ApprovalResponse(request_id="unknown-id", decision=ApprovalDecision.REJECTED, rationale="wrong",
                          approved_by="sup")
    assert orch.submit_approval(wid, no) is True
    assert orch.get_workflow(wid).current_state == WorkflowState.ROLLING_BACK
    assert orch.submit_approval(wid, no) is False  # a second decision changes nothing
    assert orch.complete_rollback(wid, success=True) is True
    wf = orch.get_workflow(wid)
    assert wf.current_state == WorkflowState.EXECUTING
    assert wf.current_checkpoint_index == 0  # back to checkpoint 0, as the original's table says
    assert len(wf.approval_responses) == 2


async def test_workflow_with_modification() -> None:
    orch = WorkflowOrchestrator(x402_integration=X402Integration())
    config = _config(2)
    wid = orch.initialize_workflow(config).workflow_id
    orch.start_execution(wid)
    _, _, req = await _pause(orch, wid, config.checkpoints[0].checkpoint_id, 0)
    mod = ApprovalResponse(request_id=req.request_id, decision=ApprovalDecision.MODIFIED, rationale="tweak",
                           approved_by="sup", modifications={"budget": 50})
    assert orch.submit_approval(wid, mod) is True
    wf = orch.get_workflow(wid)
    assert wf.current_state == WorkflowState.EXECUTING
    assert wf.approval_responses[0].modifications == {"budget": 50}


async def test_checkpoint_artifact_storage() -> None:
    x402 = X402Integration()
    assert x402.mode == ("remote" if os.environ.get("X402_API_URL") else "embedded")
    orch = WorkflowOrchestrator(x402_integration=x402)
    config = _config(1)
    wid = orch.initialize_workflow(config).workflow_id
    orch.start_execution(wid)
    state = _state("anything", 0)
    snapshot = await orch.create_checkpoint(wid, state)
    assert snapshot is not None and snapshot.artifact_uri
    assert snapshot.checkpoint_id == config.checkpoints[0].checkpoint_id
    manager = CheckpointManager()
    exported = CheckpointManager()
    exported.checkpoints["cp"] = state
    text = exported.export_checkpoint("cp") or ""
    uri = await x402.store_checkpoint_artifact("cp", text, {"workflow_id": wid})
    loaded = await manager.load_checkpoint_from_artifact(uri, "cp", x402)
    assert loaded == state
    assert orch.get_workflow("no-such-workflow") is None
    assert orch.start_execution("no-such-workflow") is False
    assert orch.complete_workflow("no-such-workflow") is False
    await x402.close()
