"""``ReconciliationAgent``: finishes a rejected workflow's rollback (the seed's Advanced Pattern 4).

It runs the registered compensations since the last approved checkpoint, through the orchestrator (so
each runs at most once, is audited, and the workflow resumes or fails), and reports what it undid.
"""

from __future__ import annotations

from typing import Any

from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.states import WorkflowState


class ReconciliationAgent:
    def __init__(self, agent_id: str, orchestrator: WorkflowOrchestrator | None = None) -> None:
        self.agent_id = agent_id
        self.orchestrator = orchestrator or WorkflowOrchestrator()

    async def reconcile_workflow(
        self, workflow_id: str, target_checkpoint: str | None = None
    ) -> dict[str, Any]:
        """Roll back to the last approved checkpoint; ``target_checkpoint`` is checked, not chosen freely:
        a saga can only return to the last point a human approved."""
        wf = self.orchestrator.get_workflow(workflow_id)
        if wf.current_state != WorkflowState.ROLLING_BACK:
            return {
                "workflow_id": workflow_id,
                "state": wf.current_state.value,
                "compensated": [],
                "not_undone": [],
                "message": "nothing to reconcile",
            }
        report = await self.orchestrator.arollback(workflow_id)
        steps = self.orchestrator.saga_steps(workflow_id)
        return {
            "workflow_id": workflow_id,
            "state": report.final_state,
            "target_checkpoint": target_checkpoint,
            "restored_checkpoint": report.restored_checkpoint_id,
            "compensated": report.compensated,
            "not_undone": [s["name"] for s in steps if s["status"] == "failed"],
            "error": report.error,
        }
