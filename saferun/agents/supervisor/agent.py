"""``SupervisorAgent``: turns a captured state into a request a human can judge, and a human's answer
into an ``ApprovalResponse`` (the seed's "Requesting Approval" and "Submitting Approval" examples).

It opens requests through the orchestrator (so they are durable and expire) and builds responses; the
decision itself is applied by ``orchestrator.submit_approval``, which is where exactly-once is kept.

Each request carries a recommendation (approve / modify / reject) with a confidence derived from the
monitor's findings on the state, the checkpoint's risk and the agent's own confidence
(``saferun.domain.recommendation``), and one sentence saying why, stored as
``risk["recommendation_reason"]`` so every view that shows the risk (the dashboard, the API) shows it.
"""

from __future__ import annotations

from typing import Any

from saferun.agents.monitor.agent import MonitorAgent
from saferun.agents.supervisor.original import (
    OriginalSupervisorAPI,
    original_context,
    original_summary,
    sections,
)
from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    ExecutionState,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.monitor_rules import MonitorConfig, evaluate
from saferun.domain.recommendation import REASON_KEY, Recommendation, recommend


class SupervisorAgent(OriginalSupervisorAPI):
    def __init__(
        self,
        supervisor_id: str,
        orchestrator: WorkflowOrchestrator | None = None,
        *,
        monitor: MonitorAgent | None = None,
    ) -> None:
        self.supervisor_id = supervisor_id
        # the original's view of this agent's own requests and decisions (supervisor/original.py)
        self.pending_approvals: dict[str, ApprovalRequest] = {}
        self.approval_history: list[ApprovalResponse] = []
        self.response_times_sec: list[float] = []
        self.orchestrator = orchestrator or WorkflowOrchestrator()
        # the rules whose alerts inform the recommendation (default: confidence < 80 %, critical actions,
        # spikes against the state's own history)
        self.monitor = monitor or MonitorAgent(orchestrator=self.orchestrator)

    def recommend(
        self,
        execution_state: ExecutionState,
        alerts: list[dict[str, Any]] | None = None,
        config: MonitorConfig | None = None,
    ) -> Recommendation:
        """The advice for a state: ``alerts`` as given, or those the monitor's rules (``config``, default
        the monitor's own) find in the state."""
        config = config or self.monitor.config
        telemetry = self.monitor.read_telemetry(execution_state, config)
        if alerts is None:
            alerts = evaluate(config, telemetry).to_dicts()
        return recommend(alerts, execution_state.risk_assessment, telemetry.confidence)

    def create_approval_request(
        self,
        workflow_id: str,
        checkpoint_id: str,
        snapshot_id: str,
        execution_state: ExecutionState,
        summary: str | None = None,
        context: dict[str, Any] | None = None,
        alerts: list[dict[str, Any]] | None = None,
        *,
        monitoring_report: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> ApprovalRequest:
        """Open the request for a captured checkpoint, with the monitor's alerts (under the workflow's own
        rules when it has them) and the recommendation they imply.

        A request already open for this snapshot (or ``request_id``) is adopted, not opened twice: the
        original's callers ask the orchestrator and then this agent for the same pause. With a
        ``monitoring_report`` (the original's ``MonitorAgent.monitor_execution``) the original's
        summary and context are used."""
        for open_req in self.orchestrator.pending_approvals(workflow_id):
            if open_req.request_id == request_id or open_req.snapshot_id == snapshot_id:
                self.pending_approvals[open_req.request_id] = open_req
                return open_req
        if monitoring_report is not None:
            summary = summary or original_summary(execution_state, monitoring_report)
            if context is None:
                context = original_context(execution_state, monitoring_report)
        config = self.monitor.config_for(self.orchestrator.get_workflow(workflow_id))
        if alerts is None:
            alerts = evaluate(config, self.monitor.read_telemetry(execution_state, config)).to_dicts()
        advice = self.recommend(execution_state, alerts, config)
        risk = {**execution_state.risk_assessment, REASON_KEY: advice.explanation}
        request = self.orchestrator.request_approval(
            workflow_id=workflow_id,
            snapshot_id=snapshot_id,
            summary=summary or _summary(checkpoint_id, execution_state),
            context=context if context is not None else dict(execution_state.intermediate_outputs),
            recommendation=advice.advice.value,
            confidence=advice.confidence,
            risk=risk,
            alerts=alerts,
        )
        self.pending_approvals[request.request_id] = request
        return request

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
            "why": request.risk.get(REASON_KEY),
            "risk": {k: v for k, v in request.risk.items() if k != REASON_KEY},
            "alerts": [_alert_line(a) for a in request.alerts],
            "expires_at": request.expires_at.isoformat(),
            "options": [d.value for d in ApprovalDecision],
            # the original's keys
            "checkpoint_id": request.checkpoint_id,
            "created_at": request.created_at.isoformat(),
            "sections": sections(request),
        }

    def submit_decision(
        self,
        request_id: str,
        decision: ApprovalDecision | str,
        rationale: str = "",
        approved_by: str | None = None,
        modifications: dict[str, Any] | None = None,
    ) -> ApprovalResponse:
        """The response to pass to ``orchestrator.submit_approval``. A second decision on a request this
        agent already decided raises ``ValueError`` (the original's rule); the orchestrator keeps
        exactly-once for everyone else."""
        response = ApprovalResponse(
            request_id=request_id,
            decision=ApprovalDecision(decision),
            rationale=rationale,
            approved_by=approved_by or self.supervisor_id,
            modifications=modifications,
        )
        self._record_decision(response)
        return response


def _alert_line(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert as a reviewer reads it: how bad, what, and the numbers (kept whole for a UI to show)."""
    return {
        "severity": alert.get("severity") or alert.get("level") or "info",
        "rule": alert.get("rule"),
        "message": alert.get("message") or alert.get("text") or str(alert),
        "observed": alert.get("observed", {}),
        "threshold": alert.get("threshold", {}),
    }


def _summary(checkpoint_id: str, state: ExecutionState) -> str:
    last = state.decision_trace[-1] if state.decision_trace else "no reasoning recorded"
    outputs = ", ".join(f"{k}={v!r}" for k, v in list(state.intermediate_outputs.items())[:3])
    return f"Checkpoint {checkpoint_id}: {last}." + (f" Outputs: {outputs}." if outputs else "")
