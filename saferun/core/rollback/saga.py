"""The saga runner: undoes a rejected workflow's steps and resumes it from its last approved state.

Each step is claimed (conditional UPDATE) in its own short transaction before its compensation runs, and
finished in another after it; the compensation itself runs outside any transaction, because it is a side
effect that may take seconds. A claim older than ``stale_claim_seconds`` is considered abandoned (its
process died) and can be taken over.
"""

from __future__ import annotations

from datetime import timedelta

from saferun.core import escrow, transitions
from saferun.core.rollback.reconciliation import (
    CompensationRegistry,
    RetryPolicy,
    RollbackReport,
    run_compensation,
)
from saferun.domain.states import Event, WorkflowState
from saferun.errors import CompensationError, InvalidTransition
from saferun.storage import audit, saga, snapshots
from saferun.storage.database import Database
from saferun.storage.schema import utcnow
from saferun.storage.workflows import locked


class SagaRunner:
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
        with locked(self.db, workflow_id) as (conn, row):
            if row["state"] != WorkflowState.ROLLING_BACK.value:
                raise InvalidTransition(
                    workflow_id,
                    row["state"],
                    "roll back",
                    "only a rejected workflow that is rolling_back can be rolled back",
                )
            steps = saga.to_compensate(conn, workflow_id)
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
            now = utcnow()
            with locked(self.db, workflow_id) as (conn, row):
                if row["state"] != WorkflowState.ROLLING_BACK.value:
                    report.final_state = row["state"]
                    return report  # someone else finished (or failed) this rollback meanwhile
                if not saga.claim(
                    conn, step["step_id"], self.owner, now, now - timedelta(seconds=stale_claim_seconds)
                ):
                    continue
            fn = self.registry.resolve(step["compensation"])
            assert fn is not None
            ok, error = await run_compensation(fn, step["args"], self.retry)
            with locked(self.db, workflow_id) as (conn, row):
                saga.finish(conn, step["step_id"], "compensated" if ok else "failed", error or None)
                audit.append(
                    conn,
                    workflow_id,
                    "compensation_" + ("succeeded" if ok else "failed"),
                    self.actor,
                    {
                        "step_id": step["step_id"],
                        "name": step["name"],
                        "compensation": step["compensation"],
                        "args": step["args"],
                        "error": error or None,
                    },
                )
                if not ok:
                    message = (
                        f"compensation {step['compensation']!r} of step {step['name']!r} failed: {error}"
                    )
                    escrow.close_failed(conn, row, Event.ROLLBACK_FAILED, message, self.actor)
                    report.failed, report.error = step["name"], message
                    report.final_state = WorkflowState.FAILED.value
                    return report
            report.compensated.append(step["name"])
        with locked(self.db, workflow_id) as (conn, row):
            if row["state"] != WorkflowState.ROLLING_BACK.value:
                report.final_state = row["state"]
                return report
            if saga.to_compensate(conn, workflow_id):
                report.final_state = row["state"]  # a step is still claimed by another live process
                return report
            restored = row["last_approved_snapshot_id"]
            restored_cp = snapshots.get(conn, restored)["checkpoint_id"] if restored else None
            transitions.apply(
                conn,
                row,
                Event.ROLLBACK_SUCCEEDED,
                actor=self.actor,
                reason="compensations done; resuming from the last approved checkpoint",
                audit_payload={"restored_snapshot_id": restored, "compensated": report.compensated},
            )
            report.restored_snapshot_id, report.restored_checkpoint_id = restored, restored_cp
            report.final_state = WorkflowState.EXECUTING.value
        return report
