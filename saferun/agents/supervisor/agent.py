"""``SupervisorAgent``: turns a captured state into a request a human can judge, and a human's answer
into an ``ApprovalResponse`` (the seed's "Requesting Approval" and "Submitting Approval" examples).

It opens requests through the orchestrator (so they are durable and expire) and builds responses; the
decision itself is applied by ``orchestrator.submit_approval``, which is where exactly-once is kept.
"""

from __future__ import annotations

from typing import Any

from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    ExecutionState,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator

LOW_CONFIDENCE = 0.8  # the seed's threshold: below it a checkpoint deserves a closer look


class SupervisorAgent:
    def __init__(self, supervisor_id: str, orchestrator: WorkflowOrchestrator | None = None) -> None:
        self.supervisor_id = supervisor_id
        self.orchestrator = orchestrator or WorkflowOrchestrator()

    def create_approval_request(
        self,
        workflow_id: str,
        checkpoint_id: str,
        snapshot_id: str,
        execution_state: ExecutionState,
        summary: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> ApprovalRequest:
        confidence = _confidence(execution_state)
        recommendation = "approve" if confidence is None or confidence >= LOW_CONFIDENCE else "review"
        return self.orchestrator.request_approval(
            workflow_id=workflow_id,
            snapshot_id=snapshot_id,
            summary=summary or _summary(checkpoint_id, execution_state),
            context=context if context is not None else dict(execution_state.intermediate_outputs),
            recommendation=recommendation,
            confidence=confidence,
            risk=execution_state.risk_assessment,
        )

    def format_for_display(self, request: ApprovalRequest) -> dict[str, Any]:
        """What a reviewer reads first (Diagram 3, layer 1), in a plain dict for any UI or terminal."""
        return {
            "request_id": request.request_id,
            "workflow_id": request.workflow_id,
            "checkpoint": request.checkpoint_name,
            "summary": request.summary,
            "decision_needed": request.decision_needed,
            "context": request.context,
            "parameters": request.parameters,
            "recommendation": request.recommendation,
            "confidence": None if request.confidence is None else f"{request.confidence:.0%}",
            "risk": request.risk,
            "alerts": request.alerts,
            "expires_at": request.expires_at.isoformat(),
            "options": [d.value for d in ApprovalDecision],
        }

    def submit_decision(
        self,
        request_id: str,
        decision: ApprovalDecision | str,
        rationale: str = "",
        approved_by: str | None = None,
        modifications: dict[str, Any] | None = None,
    ) -> ApprovalResponse:
        return ApprovalResponse(
            request_id=request_id,
            decision=ApprovalDecision(decision),
            rationale=rationale,
            approved_by=approved_by or self.supervisor_id,
            modifications=modifications,
        )


def _confidence(state: ExecutionState) -> float | None:
    scores = list(state.confidence_scores.values())
    quality = state.intermediate_outputs.get("quality_score")
    if isinstance(quality, int | float) and not isinstance(quality, bool):
        scores.append(float(quality))
    return min(scores) if scores else None


def _summary(checkpoint_id: str, state: ExecutionState) -> str:
    last = state.decision_trace[-1] if state.decision_trace else "no reasoning recorded"
    outputs = ", ".join(f"{k}={v!r}" for k, v in list(state.intermediate_outputs.items())[:3])
    return f"Checkpoint {checkpoint_id}: {last}." + (f" Outputs: {outputs}." if outputs else "")
