"""Small builders shared by the engine tests."""

from __future__ import annotations

from typing import Any

from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalResponse,
    CheckpointConfig,
    ExecutionState,
    WorkflowConfig,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator


def make_config(n: int = 2, escrow: Any = "100.00", **kwargs: Any) -> WorkflowConfig:
    checkpoints = kwargs.pop("checkpoints", None) or [
        CheckpointConfig(name=f"Review {i + 1}", checkpoint_id=f"cp{i + 1}") for i in range(n)
    ]
    return WorkflowConfig(
        name="Test workflow",
        checkpoints=checkpoints,
        escrow_amount=escrow,
        poster_id="poster",
        executor_id="agent",
        supervisor_id=kwargs.pop("supervisor_id", "reviewer"),
        **kwargs,
    )


def started(orch: WorkflowOrchestrator, config: WorkflowConfig | None = None) -> str:
    config = config or make_config()
    orch.initialize_workflow(config)
    orch.start_execution(config.workflow_id)
    return config.workflow_id


async def pause(
    orch: WorkflowOrchestrator,
    wf: str,
    checkpoint_id: str = "cp1",
    parameters: dict[str, Any] | None = None,
    **state: Any,
) -> str:
    """Capture a state and open its approval request; returns the request id."""
    snap = await orch.create_checkpoint(
        wf, ExecutionState(checkpoint_id=checkpoint_id, parameters=parameters or {}, **state)
    )
    return orch.request_approval(wf, snap.snapshot_id, f"review {checkpoint_id}", {"k": 1}).request_id


def decide(
    orch: WorkflowOrchestrator,
    request_id: str,
    decision: str,
    by: str = "reviewer",
    modifications: dict[str, Any] | None = None,
    rationale: str = "because",
) -> Any:
    return orch.submit_approval(
        None,
        ApprovalResponse(
            request_id=request_id,
            decision=ApprovalDecision(decision),
            rationale=rationale,
            approved_by=by,
            modifications=modifications,
        ),
    )
