"""``ReconciliationAgent``: finishes a rejected workflow's rollback and cleans up after it (the seed's
Advanced Pattern 4: "handles rollback with compensating transactions, cleans up resources").

``reconcile_workflow`` does two things and reports both, whatever happens:

1. **Undo**: when the workflow is rolling back, the orchestrator's saga runs the compensations of the
   steps since the last approved checkpoint, newest first, each at most once and audited. A failed
   compensation fails the workflow (the saga's rule) and the steps after it are not attempted; a
   compensation this process does not know leaves the workflow rolling back for a process that does.
2. **Clean up**: every registered cleanup hook (cancel scheduled work, remove temporary data) runs,
   each on its own: one failing does not stop the others.

Partial failure is reported, never raised: the report lists what was undone, what was cleaned, and what
could not be (with the error or the reason), and the same summary is put on the workflow's audit chain.
Only bad input raises (an unknown workflow, a ``target_checkpoint`` the rollback cannot return to).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from saferun.agents.reconciliation.cleanup import Cleanup, CleanupRegistry, cleanup_registry
from saferun.core.rollback.compensating import RollbackManager
from saferun.core.rollback.reconciliation import RetryPolicy
from saferun.core.state_machine.models import ExecutionState
from saferun.core.state_machine.orchestrator import WorkflowOrchestrator
from saferun.domain.canonical import check_json
from saferun.domain.states import WorkflowState
from saferun.errors import CompensationError, InvalidInput, InvalidTransition, SafeRunError

log = logging.getLogger(__name__)

NOT_ATTEMPTED = "not attempted: an earlier compensation failed, so the workflow failed"
HELD_ELSEWHERE = "still being compensated by another process"


@dataclass
class ReconciliationReport:
    """What a reconciliation undid and cleaned, and what it could not (each with why)."""

    workflow_id: str
    state: str
    target_checkpoint: str | None = None
    restored_checkpoint: str | None = None
    undone: list[dict[str, Any]] = field(default_factory=list)
    not_undone: list[dict[str, Any]] = field(default_factory=list)
    cleaned: list[dict[str, Any]] = field(default_factory=list)
    not_cleaned: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""

    @property
    def complete(self) -> bool:
        """True when nothing was left undone or uncleaned."""
        return not self.not_undone and not self.not_cleaned

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


class ReconciliationAgent:
    def __init__(
        self,
        agent_id: str = "reconciler",
        orchestrator: WorkflowOrchestrator | None = None,
        *,
        cleanup: CleanupRegistry | None = None,
    ) -> None:
        # ``ReconciliationAgent()`` (the original) and ``ReconciliationAgent("id")`` (the seed README)
        self.agent_id = agent_id
        self._orchestrator = orchestrator
        self.cleanup = cleanup if cleanup is not None else cleanup_registry
        self.rollback_manager = RollbackManager()  # the original's in-process undo registry

    @property
    def orchestrator(self) -> WorkflowOrchestrator:
        # opened on first use: the original's form never touches the store
        if self._orchestrator is None:
            self._orchestrator = WorkflowOrchestrator()
        return self._orchestrator

    async def reconcile_workflow(  # type: ignore[misc]
        self,
        workflow_id: str,
        target_checkpoint: str | ExecutionState | None = None,
        rejection_reason: str | None = None,
        escrow_amount: float | None = None,
        *,
        checkpoint_state: ExecutionState | None = None,
    ) -> Any:
        """Undo the steps since the last approved checkpoint and run the cleanup hooks.

        ``target_checkpoint`` is checked, not chosen: a saga returns to the last checkpoint a human
        approved, so any other target (by id or name) is ``InvalidInput`` and nothing runs.

        The original's form, ``reconcile_workflow(workflow_id, checkpoint_state, rejection_reason,
        escrow_amount)``, runs ``rollback_manager``'s undos for the state's side-effecting calls and
        returns the original's 8-key report dict (see ``seed_reconcile``).
        """
        if isinstance(target_checkpoint, ExecutionState):
            checkpoint_state, target_checkpoint = target_checkpoint, None
        if checkpoint_state is not None:
            return await self.seed_reconcile(
                workflow_id, checkpoint_state, rejection_reason or "", escrow_amount or 0.0
            )
        return await self._reconcile(workflow_id, target_checkpoint)

    async def seed_reconcile(
        self, workflow_id: str, checkpoint_state: ExecutionState, rejection_reason: str, escrow_amount: float
    ) -> dict[str, Any]:
        """The original's reconciliation report (completion estimate, undo outcome, pro-rated payment)."""
        factors = []
        if checkpoint_state.api_calls:
            factors.append(min(len(checkpoint_state.api_calls) / 10, 1.0))
        if checkpoint_state.intermediate_outputs:
            factors.append(min(len(checkpoint_state.intermediate_outputs) / 5, 1.0))
        if checkpoint_state.decision_trace:
            factors.append(min(len(checkpoint_state.decision_trace) / 10, 1.0))
        completion = sum(factors) / len(factors) if factors else 0.0
        actions = [
            str(call.get("call_id", f"call_{i}"))
            for i, call in enumerate(checkpoint_state.api_calls)
            if call.get("has_side_effects")
        ]
        success = await self.rollback_manager.execute_rollback(checkpoint_state, actions)
        return {
            "workflow_id": workflow_id,
            "checkpoint_id": checkpoint_state.checkpoint_id,
            "rejection_reason": rejection_reason,
            "timestamp": datetime.now(UTC).replace(tzinfo=None).isoformat(),
            "partial_completion": completion,
            "rollback_success": success,
            "cleanup_actions": [{"action_id": a, "status": "completed"} for a in actions],
            "recommended_payment": max(0.0, float(escrow_amount) * min(max(completion, 0.0), 1.0)),
        }

    async def _reconcile(self, workflow_id: str, target_checkpoint: str | None) -> ReconciliationReport:
        orch = self.orchestrator
        wf = orch.get_workflow(workflow_id)
        restored = self._last_approved_checkpoint(workflow_id, wf.last_approved_snapshot_id)
        if target_checkpoint is not None:
            cp = wf.config.checkpoint(restored) if restored else None
            if target_checkpoint not in {restored, cp.name if cp else None} - {None}:
                where = f"checkpoint {restored!r}" if restored else "the start (nothing was approved yet)"
                raise InvalidInput(
                    "target_checkpoint",
                    f"a rollback returns to the last approved checkpoint, here {where}, "
                    f"not {target_checkpoint!r}",
                )
        report = ReconciliationReport(
            workflow_id, wf.current_state.value, target_checkpoint, restored_checkpoint=restored
        )
        if wf.current_state == WorkflowState.ROLLING_BACK:
            await self._undo(report)
        else:
            report.message = f"nothing to compensate: the workflow is {wf.current_state.value}"
        await self._clean(report)
        report.state = orch.get_workflow(workflow_id).current_state.value
        self._record(report)
        return report

    async def _undo(self, report: ReconciliationReport) -> None:
        orch = self.orchestrator
        wf_id = report.workflow_id
        try:
            planned = orch.steps_to_undo(wf_id)  # newest first, as the saga runs them
        except InvalidTransition as exc:  # another process finished (or failed) the rollback meanwhile
            report.message = exc.message
            return
        try:
            rollback = await orch.arollback(wf_id)
        except CompensationError as exc:
            report.message = exc.message
            report.not_undone = [_step(s, reason=exc.message) for s in planned]
            return
        after = {s["step_id"]: s for s in orch.saga_steps(wf_id)}
        for step in planned:
            now = after.get(step["step_id"], step)
            if now["status"] == "compensated":
                report.undone.append(_step(now))
            elif now["status"] == "failed":
                report.not_undone.append(_step(now, error=now.get("last_error") or rollback.error))
            else:
                failed_wf = rollback.final_state == WorkflowState.FAILED.value
                report.not_undone.append(_step(now, reason=NOT_ATTEMPTED if failed_wf else HELD_ELSEWHERE))
        if rollback.restored_checkpoint_id is not None:
            report.restored_checkpoint = rollback.restored_checkpoint_id
        report.message = (
            rollback.error
            if rollback.error
            else f"undid {len(report.undone)} step(s); the workflow is {rollback.final_state}"
        )

    async def _clean(self, report: ReconciliationReport) -> None:
        for name, hook in self.cleanup.items():
            ok, result, error = await _run_hook(hook, report.workflow_id, self.orchestrator.retry)
            if ok:
                report.cleaned.append({"name": name, "result": result})
            else:
                report.not_cleaned.append({"name": name, "error": error})

    def _last_approved_checkpoint(self, workflow_id: str, snapshot_id: str | None) -> str | None:
        if snapshot_id is None:
            return None
        snaps = self.orchestrator.list_snapshots(workflow_id)
        return next((s.checkpoint_id for s in snaps if s.snapshot_id == snapshot_id), None)

    def _record(self, report: ReconciliationReport) -> None:
        """The summary on the audit chain; a failure to write it is logged, not raised (the work is done,
        and the report the caller holds says what happened)."""
        try:
            self.orchestrator.record_reconciliation(report.workflow_id, report.to_dict(), actor=self.agent_id)
        except SafeRunError as exc:
            log.warning("could not audit the reconciliation of %s: %s", report.workflow_id, exc.message)


def _step(row: dict[str, Any], *, error: str | None = None, reason: str | None = None) -> dict[str, Any]:
    out = {"step": row["name"], "compensation": row["compensation"], "args": row["args"]}
    if error is not None:
        out["error"] = error
    if reason is not None:
        out["reason"] = reason
    return out


async def _run_hook(hook: Cleanup, workflow_id: str, policy: RetryPolicy) -> tuple[bool, Any, str]:
    """One hook with the orchestrator's retry policy: (True, what it returned, "") or (False, None, error).
    A result that is not plain JSON is kept as its text, so the report and the audit can hold it."""
    last = ""
    for attempt in range(1, policy.attempts + 1):
        try:
            result = hook(workflow_id)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:  # a hook's failure is data for the report
            last = f"{type(exc).__name__}: {exc}"
            log.warning("cleanup attempt %d/%d failed: %s", attempt, policy.attempts, last)
            if attempt < policy.attempts:
                await asyncio.sleep(policy.delay(attempt))
            continue
        try:
            check_json(result, "result")
        except SafeRunError:
            result = repr(result)
        return True, result, ""
    return False, None, last
