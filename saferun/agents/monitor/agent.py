"""``MonitorAgent``: reads an execution state and says what a reviewer should be warned about.

This build checks the seed's two simplest triggers, on numbers the state already carries: confidence
below the threshold (the seed's 80 %) and spend past a share of the budget. Each alert names its rule
and the numbers behind it, so the reviewer can judge the alert as well as the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saferun.core.state_machine.models import ExecutionState


@dataclass
class MonitorAgent:
    agent_id: str = "monitor"
    min_confidence: float = 0.8
    budget_usd: float | None = None
    budget_alert_share: float = 0.8

    def check(self, state: ExecutionState) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        for name, score in state.confidence_scores.items():
            if score < self.min_confidence:
                alerts.append(
                    {
                        "rule": "low_confidence",
                        "severity": "warning",
                        "metric": name,
                        "value": score,
                        "threshold": self.min_confidence,
                        "message": f"{name} confidence {score:.0%} is below {self.min_confidence:.0%}",
                    }
                )
        spent = float(state.resource_consumption.get("estimated_cost_usd", 0.0))
        if self.budget_usd and spent >= self.budget_usd * self.budget_alert_share:
            alerts.append(
                {
                    "rule": "budget",
                    "severity": "warning",
                    "value": spent,
                    "threshold": self.budget_usd * self.budget_alert_share,
                    "message": f"spent ${spent:.2f} of a ${self.budget_usd:.2f} budget",
                }
            )
        return alerts

    def needs_checkpoint(self, state: ExecutionState) -> bool:
        return bool(self.check(state))
