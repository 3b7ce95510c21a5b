"""The saga runner: undoes a rejected workflow's steps and resumes it from its last approved state.

Each step is claimed (conditional UPDATE) in its own short transaction before its compensation runs, and
finished in another after it; the compensation itself runs outside any transaction, because it is a side
effect that may take seconds. A claim older than ``stale_claim_seconds`` is considered abandoned (its
process died) and can be taken over; the takeover is a new claim generation, and a result is recorded
only from the runner holding the step's current generation (``finish_step``), so a step has exactly one
outcome. Each compensation gets the step's stable idempotency key (``compensation_key``), so the outside
system can drop a repeat of an undo whose first run landed before its process died.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from saferun.core import escrow, transitions
from saferun.core.rollback.reconciliation import (
    CompensationRegistry,
    RetryPolicy,
    RollbackReport,
    compensation_key,
    run_compensation,
)
from saferun.domain.audit import bind
from saferun.domain.states import Event, WorkflowState
from saferun.errors import ClaimLost, CompensationError, InvalidTransition
from saferun.storage import audit, saga, snapshots
from saferun.storage.database import Database
from saferun.storage.schema import utcnow
from saferun.storage.workflows import locked


def steps_to_undo(db: Database, workflow_id: str) -> list[dict[str, Any]]:
    """The steps a rollback still has to compensate, newest first, each with its ``idempotency_key``;
    the workflow must be rolling back."""
    with locked(db, workflow_id) as (conn, row):
        if row["state"] != WorkflowState.ROLLING_BACK.value:
            raise InvalidTransition(
                workflow_id,
                row["state"],
                "roll back",
                "only a rejected workflow that is rolling_back can be rolled back",
            )
        return [
            {**s, "idempotency_key": compensation_key(workflow_id, s["step_id"])}
            for s in saga.to_compensate(conn, workflow_id)
        ]


def claim_step(
    db: Database, workflow_id: str, step_id: str, owner: str, stale_claim_seconds: float
) -> int | None:
    """Take one step for compensation: its claim generation, or None when someone else holds it (or
    finished it) or the rollback is over. A step that is not this workflow's is ``NotFound``, like an
    unknown one (issue 9, finding 4)."""
    now = utcnow()
    with locked(db, workflow_id) as (conn, row):
        saga.get(conn, step_id, workflow_id)
        if row["state"] != WorkflowState.ROLLING_BACK.value:
            return None
        stale_before = now - timedelta(seconds=stale_claim_seconds)
        return saga.claim(conn, workflow_id, step_id, owner, now, stale_before)


def finish_step(
    db: Database,
    workflow_id: str,
    step_id: str,
    ok: bool,
    error: str,
    actor: str,
    generation: int | None = None,
) -> str:
    """Record a compensation's outcome; a failure fails the workflow naming the step. Returns the state.

    With ``generation`` (the claim's, from ``claim_step``) the result of a runner whose claim was taken
    over since is refused with ``ClaimLost`` and writes nothing. Without it (a client that predates
    claim generations) any result for a step being compensated is taken, as before."""
    with locked(db, workflow_id) as (conn, row):
        step = saga.get(conn, step_id, workflow_id)  # another workflow's step: NotFound, nothing told
        if generation is not None and step["attempts"] != generation:
            raise ClaimLost(workflow_id, step_id, generation, int(step["attempts"]))
        if step["status"] != "compensating":
            raise InvalidTransition(
                workflow_id,
                row["state"],
                "finish compensation",
                f"step {step_id} is {step['status']}, not claimed for compensation",
            )
        status = "compensated" if ok else "failed"
        saga.finish(conn, step_id, status, error or None, generation)
        result = {"step_id": step_id, "status": status, "last_error": error or None}
        audit.append(
            conn,
            workflow_id,
            "compensation_" + ("succeeded" if ok else "failed"),
            actor,
            {
                "step_id": step_id,
                "name": step["name"],
                "compensation": step["compensation"],
                "args": step["args"],
                "error": error or None,
                "generation": int(step["attempts"]),
                "idempotency_key": compensation_key(workflow_id, step_id),
                "bind": [bind("saga_steps", "result", result)],
            },
        )
        if ok:
            return str(row["state"])
        message = f"compensation {step['compensation']!r} of step {step['name']!r} failed: {error}"
        escrow.close_failed(conn, row, Event.ROLLBACK_FAILED, message, actor)
        return WorkflowState.FAILED.value


def complete_rollback(db: Database, workflow_id: str, actor: str, report: RollbackReport) -> RollbackReport:
    """Resume from the last approved checkpoint once nothing is left to undo (ROLLING_BACK -> EXECUTING)."""
    with locked(db, workflow_id) as (conn, row):
        report.final_state = row["state"]
        if row["state"] != WorkflowState.ROLLING_BACK.value or saga.to_compensate(conn, workflow_id):
            return report  # finished or failed elsewhere, or a step is still held by another live process
        restored = row["last_approved_snapshot_id"]
        restored_cp = snapshots.get(conn, restored)["checkpoint_id"] if restored else None
        transitions.apply(
            conn,
            row,
            Event.ROLLBACK_SUCCEEDED,
            actor=actor,
            reason="compensations done; resuming from the last approved checkpoint",
            audit_payload={"restored_snapshot_id": restored, "compensated": report.compensated},
        )
        report.restored_snapshot_id, report.restored_checkpoint_id = restored, restored_cp
        report.final_state = WorkflowState.EXECUTING.value
        return report


class SagaRunner:
    """Runs the compensations this process knows, through the step operations above (which a remote agent
    drives over HTTP instead)."""

    def __init__(
        self, db: Database, registry: CompensationRegistry, retry: RetryPolicy, *, owner: str, actor: str
    ) -> None:
        self.db, self.registry, self.retry, self.owner, self.actor = db, registry, retry, owner, actor

    async def run(self, workflow_id: str, *, stale_claim_seconds: float = 300.0) -> RollbackReport:
        """Undo the steps since the last approved checkpoint and resume from it (ROLLING_BACK -> ...).

        Raises CompensationError, changing nothing, when a compensation name does not resolve in this
        process; another process that knows it (or the sweep there) can finish the rollback.
        """
        report = RollbackReport(workflow_id)
        steps = steps_to_undo(self.db, workflow_id)
        missing = sorted(
            {s["compensation"] for s in steps if self.registry.resolve(s["compensation"]) is None}
        )
        if missing:
            raise CompensationError(
                f"compensation(s) {', '.join(missing)} are not registered in this process",
                workflow_id=workflow_id,
                missing=missing,
            )
        for step in steps:
            generation = claim_step(self.db, workflow_id, step["step_id"], self.owner, stale_claim_seconds)
            if generation is None:
                # Another runner holds this step (or just finished it) and goes on down the list itself:
                # stepping past it would undo older steps before newer ones. Its owner, or a takeover
                # once its claim is stale, finishes the rollback.
                break
            fn = self.registry.resolve(step["compensation"])
            assert fn is not None
            ok, error = await run_compensation(fn, step["args"], self.retry, step["idempotency_key"])
            try:
                state = finish_step(
                    self.db, workflow_id, step["step_id"], ok, error, self.actor, generation
                )
            except ClaimLost:
                break  # this runner was too slow and was taken over: the new holder records the step
            if not ok:
                report.failed = step["name"]
                report.error = (
                    f"compensation {step['compensation']!r} of step {step['name']!r} failed: {error}"
                )
                report.final_state = state
                return report
            report.compensated.append(step["name"])
        return complete_rollback(self.db, workflow_id, self.actor, report)
