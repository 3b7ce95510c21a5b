"""The orchestrator's stuck-work operations (``core/rollback/stuck.py`` has the rules and why).

A mixin, like ``WorkflowReads``, so the orchestrator module stays about the workflow's lifecycle; every
surface (API, CLI, dashboard, metric, the sweep's warning) goes through these few methods, so they all
agree on what is stuck and on what each resolution does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from saferun.config import get_settings
from saferun.core.rollback import stuck
from saferun.core.rollback.reconciliation import CompensationRegistry
from saferun.domain.policy import Caller
from saferun.domain.states import WorkflowState
from saferun.errors import CompensationError, InvalidInput, InvalidTransition
from saferun.storage.database import Database
from saferun.storage.schema import utcnow
from saferun.storage.visibility import visible_workflows

if TYPE_CHECKING:
    from saferun.core.rollback.reconciliation import RollbackReport
    from saferun.core.state_machine.models import WorkflowExecution


@dataclass
class Resolution:
    """What an operator's action did: the workflow's state after it, in one sentence, and the steps."""

    workflow_id: str
    action: str
    state: str
    outcome: str
    compensated: list[str] = field(default_factory=list)
    not_undone: list[dict[str, Any]] = field(default_factory=list)


class StuckOperations:
    db: Database
    registry: CompensationRegistry
    rollback_grace: timedelta

    if TYPE_CHECKING:  # provided by WorkflowOrchestrator

        async def arollback(
            self, workflow_id: str, *, stale_claim_seconds: float = ...
        ) -> RollbackReport: ...

        def complete_workflow(self, workflow_id: str, *, actor: str | None = ...) -> WorkflowExecution: ...

    @property
    def stale_claim(self) -> timedelta:
        return timedelta(seconds=get_settings().stale_claim_seconds)

    def stuck_workflows(
        self, now: datetime | None = None, *, visible_to: Caller | None = None
    ) -> list[stuck.StuckWorkflow]:
        """Rolling back or settling past the rollback grace with nobody finishing them, oldest first."""
        where = visible_workflows(visible_to) if visible_to is not None else None
        with self.db.read() as conn:
            return stuck.find(
                conn,
                now=now or utcnow(),
                after=self.rollback_grace,
                stale_claim=self.stale_claim,
                registry=self.registry,
                where=where,
            )

    async def resolve_stuck(self, workflow_id: str, action: str, reason: str, *, actor: str) -> Resolution:
        """An operator's way out: ``retry`` here, ``mark_compensated`` (undone by hand) or ``fail``
        (side effects named as not undone). The reason goes into the audit chain."""
        if action == "retry":
            return await self._retry(workflow_id, actor)
        if action == "mark_compensated":
            steps = stuck.mark_compensated(
                self.db, workflow_id, reason, actor=actor, stale_claim=self.stale_claim
            )
            names = [s["name"] for s in steps]
            return Resolution(
                workflow_id,
                action,
                WorkflowState.EXECUTING.value,
                f"{len(steps)} step(s) recorded as undone by hand; the workflow resumes from its last "
                "approved checkpoint",
                compensated=names,
            )
        if action == "fail":
            steps = stuck.fail_not_undone(
                self.db, workflow_id, reason, actor=actor, stale_claim=self.stale_claim
            )
            left = stuck.describe_steps(steps)
            return Resolution(
                workflow_id,
                action,
                WorkflowState.FAILED.value,
                "failed; unearned escrow refunded; "
                + (f"side effects NOT undone: {left}" if left else "no side effect was left to undo"),
                not_undone=steps,
            )
        raise InvalidInput("action", f"one of {', '.join(stuck.ACTIONS)}")

    async def _retry(self, workflow_id: str, actor: str) -> Resolution:
        from saferun.storage import workflows as wf_store

        with self.db.read() as conn:
            state = wf_store.get(conn, workflow_id)["state"]
        if state == WorkflowState.SETTLING.value:
            wf = self.complete_workflow(workflow_id, actor=actor)
            return Resolution(
                workflow_id, "retry", wf.current_state.value, "completed; unearned escrow refunded"
            )
        if state != WorkflowState.ROLLING_BACK.value:
            raise InvalidTransition(workflow_id, state, "retry", "only a workflow rolling_back or settling")
        try:
            report = await self.arollback(workflow_id, stale_claim_seconds=self.stale_claim.total_seconds())
        except CompensationError as exc:
            missing = ", ".join(exc.fields.get("missing", [])) or exc.message
            raise InvalidTransition(
                workflow_id,
                state,
                "retry",
                f"compensation(s) {missing} are not registered in this process; register them "
                "(SAFERUN_COMPENSATIONS) or mark compensated by hand, or fail",
            ) from exc
        if report.failed:
            outcome = f"rollback failed: {report.error}"
        elif report.final_state == WorkflowState.EXECUTING.value:
            outcome = "rolled back; the workflow resumes from its last approved checkpoint"
        else:
            outcome = f"{report.final_state}: another process holds a step; nothing more done here"
        return Resolution(workflow_id, "retry", report.final_state, outcome, compensated=report.compensated)
