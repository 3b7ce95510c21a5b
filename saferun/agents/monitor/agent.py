"""``MonitorAgent``: watches a workflow's live telemetry and brings in a human when the rules say so.

The rules themselves are pure (``saferun.domain.monitor_rules``: budget, API-call and error-rate spikes
against the workflow's own baseline, stuck or far ahead of schedule, confidence below 80 %, critical or
irreversible actions). This agent reads an ``ExecutionState`` as telemetry and acts on the verdict
through the orchestrator, so what it does is durable and audited like any checkpoint:

- the workflow is executing and a rule asks for a checkpoint: ``pause`` it with the alerts (and the
  recommendation they imply), so the agent stops until a human decides;
- the workflow already awaits approval: the alerts are added to the pending request, so the reviewer
  sees what happened while they were reading;
- otherwise the alerts are returned for the caller to show at its next checkpoint.

Rules are per workflow: a workflow whose ``config.metadata["monitor"]`` holds rules (same shape as the
YAML) is watched with those; any other with the agent's own ``config``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from saferun.agents.monitor.original import AlertCallback, OriginalMonitorAPI, Trigger
from saferun.agents.monitor.telemetry import telemetry_from_state
from saferun.core.state_machine.models import (
    ApprovalRequest,
    CheckpointSnapshot,
    ExecutionState,
    WorkflowExecution,
)
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.monitor_rules import (
    Alert,
    Evaluation,
    MonitorConfig,
    Telemetry,
    Verdict,
    critical_action_alert,
    evaluate,
)
from saferun.domain.recommendation import REASON_KEY, recommend
from saferun.domain.states import WorkflowState

Clock = Callable[[], datetime]


def load_config(path: str | Path) -> MonitorConfig:
    """One workflow's rules from a YAML file (parsing and errors as ``MonitorConfig.from_yaml``)."""
    return MonitorConfig.from_yaml(Path(path).read_text(encoding="utf-8"))


@dataclass
class Observation:
    """What one look at a workflow found and what the monitor did about it."""

    workflow_id: str
    evaluation: Evaluation
    action: Literal["checkpoint", "alerts_added", "none"]
    request: ApprovalRequest | None = None
    snapshot: CheckpointSnapshot | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return self.evaluation.verdict


class MonitorAgent(OriginalMonitorAPI):
    def __init__(
        self,
        config: MonitorConfig | str | None = None,
        *,
        agent_id: str = "monitor",
        orchestrator: WorkflowOrchestrator | None = None,
        clock: Clock | None = None,
        monitor_id: str | None = None,
    ) -> None:
        """``clock`` anchors the API-call intervals and the elapsed time of states that record none;
        without one, a state's intervals end at its newest call (so a stored snapshot reads the same
        whenever it is checked) and elapsed time falls back to the system clock.

        ``MonitorAgent("monitor_1")`` / ``MonitorAgent(monitor_id=...)`` is the original's form: the
        same agent, named, with default rules and the original's methods (``original.py``)."""
        if isinstance(config, str):
            monitor_id, config = config, None
        self.config = config or MonitorConfig()
        self.agent_id = monitor_id or agent_id
        self.monitor_id = self.agent_id
        self.telemetry: list[dict[str, Any]] = []  # the original's per-agent telemetry log
        self.checkpoint_triggers: dict[str, Trigger] = {}
        self.alert_callback: AlertCallback | None = None
        self._orchestrator = orchestrator
        self.clock = clock

    @classmethod
    def from_yaml_file(cls, path: str | Path, **kwargs: Any) -> MonitorAgent:
        return cls(load_config(path), **kwargs)

    @property
    def orchestrator(self) -> WorkflowOrchestrator:
        if self._orchestrator is None:
            self._orchestrator = WorkflowOrchestrator()
        return self._orchestrator

    # ------------------------------------------------------------------ pure reads of a state
    def config_for(self, workflow: WorkflowExecution | None) -> MonitorConfig:
        """The workflow's own rules (``metadata["monitor"]``: a mapping, or YAML text) when it has them,
        else this agent's."""
        rules = workflow.config.metadata.get("monitor") if workflow is not None else None
        return MonitorConfig.from_metadata(rules) or self.config

    def read_telemetry(
        self,
        state: ExecutionState,
        config: MonitorConfig | None = None,
        *,
        started_at: datetime | None = None,
    ) -> Telemetry:
        now = self.clock() if self.clock else None
        elapsed = None
        if started_at is not None:
            elapsed = max(((now or datetime.now(UTC)) - started_at).total_seconds(), 0.0)
        return telemetry_from_state(state, config or self.config, now=now, elapsed_seconds=elapsed)

    def evaluate(
        self,
        state: ExecutionState,
        config: MonitorConfig | None = None,
        *,
        started_at: datetime | None = None,
    ) -> Evaluation:
        config = config or self.config
        return evaluate(config, self.read_telemetry(state, config, started_at=started_at))

    def check(self, state: ExecutionState) -> list[dict[str, Any]]:
        """The alerts this state raises under this agent's rules, as JSON dicts."""
        return self.evaluate(state).to_dicts()

    def needs_checkpoint(self, state: ExecutionState) -> bool:
        return self.evaluate(state).verdict == Verdict.CHECKPOINT

    def gate(self, action: str, tags: Iterable[str]) -> Alert | None:
        """The alert when ``action`` is tagged critical or irreversible (it must be approved before it runs),
        or None when it may run unsupervised."""
        return critical_action_alert(self.config.critical_actions, action, tags)

    # ------------------------------------------------------------------ acting through the orchestrator
    async def observe(
        self, workflow_id: str, state: ExecutionState, *, summary: str | None = None
    ) -> Observation:
        """Evaluate the workflow's current state and checkpoint it, or add to its pending request."""
        orch = self.orchestrator
        wf = orch.get_workflow(workflow_id)
        config = self.config_for(wf)
        telemetry = self.read_telemetry(state, config, started_at=wf.started_at)
        return await self._act(wf, state, config, telemetry, summary)

    async def gate_action(
        self,
        workflow_id: str,
        state: ExecutionState,
        action: str,
        tags: Iterable[str],
        *,
        summary: str | None = None,
    ) -> Observation:
        """Call before running ``action``: when it is tagged critical or irreversible the workflow pauses
        for approval (with the other alerts the state raises); the caller waits for the decision
        (``orchestrator.wait_for_decision(observation.request.request_id)``) before running it."""
        tags = list(tags)
        risk = {**state.risk_assessment, "next_action": action, "action_tags": tags}
        return await self.observe(
            workflow_id, state.model_copy(update={"risk_assessment": risk}), summary=summary
        )

    async def _act(
        self,
        wf: WorkflowExecution,
        state: ExecutionState,
        config: MonitorConfig,
        telemetry: Telemetry,
        summary: str | None,
    ) -> Observation:
        orch = self.orchestrator
        evaluation = evaluate(config, telemetry)
        alerts = evaluation.to_dicts()
        seen = Observation(wf.workflow_id, evaluation, "none", alerts=alerts)
        if not alerts:
            return seen
        if wf.current_state == WorkflowState.AWAITING_APPROVAL:
            pending = orch.pending_approvals(wf.workflow_id)
            if pending:
                seen.request = orch.add_alerts(pending[0].request_id, alerts, actor=self.agent_id)
                seen.action = "alerts_added"
            return seen
        if wf.current_state != WorkflowState.EXECUTING or evaluation.verdict != Verdict.CHECKPOINT:
            return seen
        if config.checkpoint_id is not None:
            state = state.model_copy(update={"checkpoint_id": config.checkpoint_id})
        advice = recommend(alerts, state.risk_assessment, telemetry.confidence)
        risk = {**state.risk_assessment, REASON_KEY: advice.explanation}
        snapshot, request = await orch.pause(
            wf.workflow_id,
            state,
            summary or _summary(evaluation),
            dict(state.intermediate_outputs),
            alerts=alerts,
            recommendation=advice.advice.value,
            confidence=advice.confidence,
            risk=risk,
        )
        seen.snapshot, seen.request = snapshot, request
        seen.action = "checkpoint" if request is not None else "none"
        return seen


def _summary(evaluation: Evaluation) -> str:
    rules = ", ".join(dict.fromkeys(a.rule for a in evaluation.alerts))
    first = evaluation.alerts[0].message
    more = len(evaluation.alerts) - 1
    return f"The monitor paused this workflow ({rules}): {first}" + (f" (+{more} more)" if more else "")
