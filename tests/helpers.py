"""Small builders shared by the engine tests."""

from __future__ import annotations

from contextlib import suppress
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


def quorum_group(
    db: Any, group: str, members: dict[str, str | None], roles: tuple[str, ...] = ("supervisor",)
) -> None:
    """Register ``members`` (identity id -> team, None for none) as supervisors in ``group``; a second
    call for an existing identity adds the group. Also registers ``mallory``, a supervisor in no group."""
    from saferun.core.identity import IdentityService
    from saferun.errors import Conflict

    ids = IdentityService(db)
    for who in [*members, "mallory"]:
        with suppress(Conflict):  # registered by an earlier call
            ids.create_identity(who, who.title(), list(roles))
    for who, team in members.items():
        current = ids.get_identity(who).groups
        ids.set_membership(who, groups=[*current, group], team=team, set_team=True)


def row_counts(db: Any) -> dict[str, int]:
    """Rows per table: compared before and after a refused call, which must write nothing."""
    from sqlalchemy import func, select

    from saferun.storage.schema import metadata

    with db.read() as conn:
        count = select(func.count())
        return {t.name: conn.execute(count.select_from(t)).scalar_one() for t in metadata.sorted_tables}
