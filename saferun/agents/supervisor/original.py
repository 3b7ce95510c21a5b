"""The original SafeRun-X402 supervisor's bookkeeping and display, mixed into ``SupervisorAgent``.

The original kept its requests in ``pending_approvals`` (request id -> request), its responses in
``approval_history`` and the seconds each decision took in ``response_times_sec``, and showed a request
as ordered ``sections``. The requests themselves are the orchestrator's (durable); these are the
agent's own view of what it opened and decided, as the original's callers read it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from saferun.core.state_machine.models import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResponse,
    ExecutionState,
)

_OPTIONS = [
    {"value": "APPROVED", "label": "Approve", "color": "green"},
    {"value": "MODIFIED", "label": "Modify", "color": "yellow"},
    {"value": "REJECTED", "label": "Reject", "color": "red"},
]


def original_summary(state: ExecutionState, report: dict[str, Any] | None) -> str:
    parts = [f"Agent completed {len(state.api_calls)} actions with {len(state.decision_trace)} decisions"]
    if state.intermediate_outputs:
        parts.append("Generated outputs: " + ", ".join(state.intermediate_outputs))
    if report and report.get("anomalies"):
        parts.append(f"⚠️ {len(report['anomalies'])} anomalies detected")
    rc = state.resource_consumption
    if rc:
        parts.append(f"Resources: {rc.get('api_calls', 0)} API calls, {rc.get('tokens_used', 0)} tokens")
    return " | ".join(parts)


def original_context(state: ExecutionState, report: dict[str, Any] | None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "execution_summary": {
            "api_calls_count": len(state.api_calls),
            "decisions_count": len(state.decision_trace),
            "outputs_count": len(state.intermediate_outputs),
            "timestamp": state.timestamp.isoformat(),
        },
        "recent_decisions": state.decision_trace[-5:],
        "intermediate_outputs": state.intermediate_outputs,
        "resource_consumption": state.resource_consumption,
        "recent_api_calls": [
            {
                "description": c.get("description", "Unknown"),
                "has_side_effects": c.get("has_side_effects", False),
                "timestamp": c.get("timestamp", "Unknown"),
            }
            for c in state.api_calls[-5:]
        ],
    }
    if report is not None:
        context["monitoring"] = {
            "anomalies": report.get("anomalies", []),
            "recommendations": report.get("recommendations", []),
            "on_track": report.get("on_track", True),
        }
    return context


def sections(request: ApprovalRequest) -> list[dict[str, Any]]:
    """The original's ordered display sections; context keys that are missing leave theirs out."""
    ctx = request.context or {}
    monitoring = ctx.get("monitoring") or {}
    out: list[dict[str, Any]] = [{"title": "Summary", "content": request.summary, "type": "text"}]
    if ctx.get("recent_api_calls"):
        out.append({"title": "Recent Actions", "content": ctx["recent_api_calls"], "type": "list"})
    if ctx.get("intermediate_outputs"):
        out.append({"title": "Outputs Generated", "content": ctx["intermediate_outputs"], "type": "json"})
    anomalies = monitoring.get("anomalies") or [
        {"type": a.get("rule", "alert"), "details": a.get("message", "")} for a in request.alerts
    ]
    if anomalies:
        out.append({"title": "⚠️ Alerts", "content": anomalies, "type": "alerts", "severity": "warning"})
    if monitoring.get("recommendations"):
        out.append({"title": "Recommendations", "content": monitoring["recommendations"], "type": "list"})
    out.append({"title": "Decision Required", "content": {"options": _OPTIONS}, "type": "decision"})
    return out


class OriginalSupervisorAPI:
    supervisor_id: str
    pending_approvals: dict[str, ApprovalRequest]
    approval_history: list[ApprovalResponse]
    response_times_sec: list[float]

    def _record_decision(self, response: ApprovalResponse) -> None:
        """Bookkeeping for a decision this agent makes; ValueError when it already decided the request."""
        if any(r.request_id == response.request_id for r in self.approval_history):
            raise ValueError(f"Request {response.request_id} not found")
        request = self.pending_approvals.pop(response.request_id, None)
        if request is not None:
            now = datetime.now(UTC)
            created = request.created_at
            created = created if created.tzinfo else created.replace(tzinfo=UTC)
            self.response_times_sec.append(max((now - created).total_seconds(), 0.0))
        self.approval_history.append(response)

    def get_pending_approvals(self) -> list[ApprovalRequest]:
        return list(self.pending_approvals.values())

    def get_approval_history(self) -> list[ApprovalResponse]:
        return self.approval_history

    def get_approval_stats(self) -> dict[str, Any]:
        total = len(self.approval_history)
        if not total:
            message = "No approvals processed yet"
            return {"supervisor_id": self.supervisor_id, "total_approvals": 0, "message": message}
        counts = {d.name.lower(): 0 for d in ApprovalDecision}
        for response in self.approval_history:
            counts[ApprovalDecision(response.decision).name.lower()] += 1
        times = self.response_times_sec
        return {
            "supervisor_id": self.supervisor_id,
            "total_approvals": total,
            "pending": len(self.pending_approvals),
            "decision_breakdown": {
                "approved": counts["approved"],
                "rejected": counts["rejected"],
                "modified": counts["modified"],
            },
            "approval_rate": counts["approved"] / total,
            "average_response_time": sum(times) / len(times) if times else 0.0,
        }
