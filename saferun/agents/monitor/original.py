"""The original SafeRun-X402 monitor's API (``MonitorAgent("monitor_1")``), beside the rule-based one.

Code written for the original calls ``monitor_execution(state, checkpoint_config)`` at each checkpoint
and reads its 8-key report, registers sync trigger predicates and an async alert callback, and keeps a
telemetry list in the agent. These are pure reads of the state (no store), so they sit in this mixin;
the durable, rule-based watching (``observe``, ``gate_action``) stays in ``agent.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from saferun.core.state_machine.models import CheckpointConfig, ExecutionState

Trigger = Callable[[ExecutionState], bool]
AlertCallback = Callable[[dict[str, Any]], Awaitable[Any]]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def anomalies_of(state: ExecutionState) -> list[dict[str, Any]]:
    """The original's three anomaly checks: call volume, token use, errors in the trace."""
    found: list[dict[str, Any]] = []
    if len(state.api_calls) > 50:
        found.append(
            {"type": "high_api_volume", "severity": "warning", "details": f"{len(state.api_calls)} API calls"}
        )
    tokens = state.resource_consumption.get("tokens_used", 0)
    if tokens > 10000:
        found.append({"type": "high_token_usage", "severity": "warning", "details": f"{tokens} tokens used"})
    errors = [d for d in state.decision_trace if "error" in d.lower() or "failed" in d.lower()]
    if errors:
        found.append(
            {"type": "error_detected", "severity": "critical", "details": f"{len(errors)} errors in trace"}
        )
    return found


def _metric(expected: int, actual: int) -> dict[str, int]:
    return {"expected": expected, "actual": actual, "variance": actual - expected}


class OriginalMonitorAPI:
    """Mixed into ``MonitorAgent``; expects ``monitor_id``, ``telemetry``, ``checkpoint_triggers`` and
    ``alert_callback`` set by its constructor."""

    monitor_id: str
    telemetry: list[dict[str, Any]]
    checkpoint_triggers: dict[str, Trigger]
    alert_callback: AlertCallback | None

    def register_checkpoint_trigger(self, checkpoint_id: str, condition: Trigger) -> None:
        self.checkpoint_triggers[checkpoint_id] = condition

    def set_alert_callback(self, callback: AlertCallback) -> None:
        self.alert_callback = callback

    async def monitor_execution(
        self, execution_state: ExecutionState, checkpoint_config: CheckpointConfig
    ) -> dict[str, Any]:
        """The original's report: telemetry, anomalies, recommendations and whether to checkpoint now."""
        now = _now()
        entry = {
            "timestamp": now.isoformat(),
            "api_calls": len(execution_state.api_calls),
            "decisions": len(execution_state.decision_trace),
            "outputs": len(execution_state.intermediate_outputs),
            "resources": dict(execution_state.resource_consumption),
            "memory_size": len(str(execution_state.agent_memory)),
        }
        self.telemetry.append(entry)
        should, reason = False, None
        trigger = self.checkpoint_triggers.get(checkpoint_config.checkpoint_id)
        if trigger is not None and trigger(execution_state):
            should, reason = True, "custom_condition"
        anomalies = anomalies_of(execution_state)
        if anomalies:
            should, reason = True, "anomaly_detected"
            if self.alert_callback is not None:
                cp_id = checkpoint_config.checkpoint_id
                await self.alert_callback({"type": "anomaly", "checkpoint_id": cp_id, "anomalies": anomalies})
        if (now - execution_state.timestamp).total_seconds() > checkpoint_config.timeout_seconds:
            should, reason = True, "timeout"
        recommendations = []
        if anomalies:
            recommendations.append("Human review recommended due to detected anomalies")
        if len(execution_state.api_calls) > 30:
            recommendations.append("Consider breaking task into smaller steps")
        if not execution_state.intermediate_outputs:
            recommendations.append("No outputs generated yet, verify progress")
        return {
            "monitor_id": self.monitor_id,
            "checkpoint_id": checkpoint_config.checkpoint_id,
            "timestamp": now.isoformat(),
            "should_checkpoint": should,
            "trigger_reason": reason,
            "telemetry": entry,
            "anomalies": anomalies,
            "recommendations": recommendations,
        }

    def compare_progress(
        self, actual_state: ExecutionState, expected_state: dict[str, Any]
    ) -> dict[str, Any]:
        expected_calls = int(expected_state.get("api_calls", 0))
        expected_outputs = int(expected_state.get("outputs", 0))
        calls, outputs = len(actual_state.api_calls), len(actual_state.intermediate_outputs)
        return {
            "timestamp": _now().isoformat(),
            "metrics": {
                "api_calls": _metric(expected_calls, calls),
                "outputs": _metric(expected_outputs, outputs),
            },
            "on_track": abs(calls - expected_calls) <= 0.2 * expected_calls
            and outputs >= 0.8 * expected_outputs,
        }

    def get_telemetry_summary(self) -> dict[str, Any]:
        if not self.telemetry:
            return {"message": "No telemetry captured"}
        return {
            "monitor_id": self.monitor_id,
            "entries_count": len(self.telemetry),
            "latest": self.telemetry[-1],
            "total_api_calls": sum(e["api_calls"] for e in self.telemetry),
            "total_decisions": sum(e["decisions"] for e in self.telemetry),
        }
