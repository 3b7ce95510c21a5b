"""Stuck work: rejected workflows whose rollback nobody finishes, settled ones nobody completes.

Why this exists: a rollback's compensations are *named* functions that resolve only in processes that
registered them (the agent's own, or any started with ``SAFERUN_COMPENSATIONS``). When no running process
knows a name, every sweep leaves the workflow ``rolling_back`` and, without this module, nobody would
notice. Here an operator *sees* it (``find``: the CLI's ``saferun workflows stuck``, the dashboard's
"needs attention" list, the ``saferun_stuck_workflows`` metric, one WARNING per item per period) and
*resolves* it with a consequence they chose and the audit chain records:

- ``retry``: run the rollback (or finish the settling) in this process, which must know the names;
- ``mark_compensated``: the operator undid the side effects by hand; each open step is recorded as
  compensated with their reason, and the workflow resumes from its last approved checkpoint, as after
  any rollback;
- ``fail``: give up; the workflow fails and its error *names each side effect that was not undone*, so
  nobody mistakes it for a clean failure. Unearned escrow is refunded, as on every way into FAILED.

A workflow counts as stuck once it has been ``rolling_back`` or ``settling`` longer than the rollback
grace (after the grace, any process that knew its compensations would have finished it within a sweep),
unless a step is claimed by a process whose claim is still fresh: that rollback is in progress.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, select

from saferun.core import escrow, transitions
from saferun.core.rollback.reconciliation import CompensationRegistry
from saferun.domain.audit import bind
from saferun.domain.states import Event, WorkflowState
from saferun.errors import InvalidInput, InvalidTransition
from saferun.storage import audit, saga, snapshots
from saferun.storage.database import Database
from saferun.storage.schema import utcnow, workflows
from saferun.storage.workflows import locked

log = logging.getLogger(__name__)

STUCK_STATES = (WorkflowState.ROLLING_BACK.value, WorkflowState.SETTLING.value)
ACTIONS = ("retry", "mark_compensated", "fail")
MAX_REASON = 2000


@dataclass(frozen=True)
class StuckWorkflow:
    """One item of the "needs attention" list, with what is left to undo and why nobody did."""

    workflow_id: str
    name: str
    state: str
    since: datetime
    poster_id: str
    executor_id: str
    reason: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def age_seconds(self, now: datetime) -> float:
        return max(0.0, (now - self.since).total_seconds())

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "name": self.name,
            "state": self.state,
            "since": self.since.isoformat(),
            "age_seconds": round(self.age_seconds(now), 3),
            "poster_id": self.poster_id,
            "executor_id": self.executor_id,
            "reason": self.reason,
            "steps": self.steps,
            "missing_compensations": self.missing,
        }


def find(
    conn: Connection,
    *,
    now: datetime,
    after: timedelta,
    stale_claim: timedelta,
    registry: CompensationRegistry,
    where: ColumnElement[bool] | None = None,
    limit: int = 500,
) -> list[StuckWorkflow]:
    """Stuck workflows (of those ``where`` keeps), oldest first; ``missing`` is judged by ``registry``."""
    clause = and_(workflows.c.state.in_(STUCK_STATES), workflows.c.updated_at <= now - after)
    if where is not None:
        clause = and_(clause, where)
    rows = conn.execute(
        select(
            workflows.c.workflow_id,
            workflows.c.name,
            workflows.c.state,
            workflows.c.updated_at,
            workflows.c.poster_id,
            workflows.c.executor_id,
        )
        .where(clause)
        .order_by(workflows.c.updated_at, workflows.c.workflow_id)
        .limit(limit)
    ).mappings()
    out = []
    for row in list(rows):
        if row["state"] == WorkflowState.SETTLING.value:
            reason = "settled but never completed (its agent stopped between settle and complete)"
            out.append(_item(row, reason))
            continue
        steps = [_step(s) for s in saga.to_compensate(conn, row["workflow_id"])]
        fresh = [s for s in steps if s["status"] == "compensating" and s["claimed_at"] > now - stale_claim]
        if fresh:
            continue  # a live process is compensating right now: in progress, not stuck
        missing = sorted({s["compensation"] for s in steps if registry.resolve(s["compensation"]) is None})
        out.append(_item(row, _rollback_reason(steps, missing), steps, missing))
    return out


def _item(
    row: Any, reason: str, steps: list[dict[str, Any]] | None = None, missing: list[str] | None = None
) -> StuckWorkflow:
    return StuckWorkflow(
        workflow_id=row["workflow_id"],
        name=row["name"],
        state=row["state"],
        since=row["updated_at"],
        poster_id=row["poster_id"],
        executor_id=row["executor_id"],
        reason=reason,
        steps=steps or [],
        missing=missing or [],
    )


def _step(s: Any) -> dict[str, Any]:
    return {
        "step_id": s["step_id"],
        "name": s["name"],
        "compensation": s["compensation"],
        "args": s["args"],
        "status": s["status"],
        "claimed_by": s["claimed_by"],
        "claimed_at": s["claimed_at"],
    }


def _rollback_reason(steps: list[dict[str, Any]], missing: list[str]) -> str:
    if missing:
        return (
            f"rollback not finished: compensation(s) {', '.join(missing)} are not registered in this "
            "process (start a process with SAFERUN_COMPENSATIONS naming their module, or resolve by hand)"
        )
    abandoned = [s for s in steps if s["status"] == "compensating"]
    if abandoned:
        s = abandoned[0]
        return f"step {s['name']!r} was claimed by {s['claimed_by']} and never finished (claim is stale)"
    return "rollback not finished; its compensations are registered here, so retry can finish it"


def describe_steps(steps: list[dict[str, Any]]) -> str:
    """``step 'place order' (cancel_order {"order_id": "o-1"})``, ...: what a person would have to undo."""
    return "; ".join(
        f"step {s['name']!r} ({s['compensation']} {json.dumps(s['args'], sort_keys=True, default=str)})"
        for s in steps
    )


def _check_reason(reason: str) -> str:
    text = (reason or "").strip()
    if not text:
        raise InvalidInput("reason", "say why (it goes into the audit chain)")
    if len(text) > MAX_REASON:
        raise InvalidInput("reason", f"at most {MAX_REASON} characters")
    return text


def _open_steps(
    conn: Connection, workflow_id: str, state: str, action: str, now: datetime, stale: timedelta
) -> list[dict[str, Any]]:
    steps = [_step(s) for s in saga.to_compensate(conn, workflow_id)]
    busy = [s for s in steps if s["status"] == "compensating" and s["claimed_at"] > now - stale]
    if busy:
        s = busy[0]
        raise InvalidTransition(
            workflow_id,
            state,
            action,
            f"step {s['name']!r} is being compensated by {s['claimed_by']} since "
            f"{s['claimed_at'].isoformat()}; wait for it (or for its claim to go stale)",
        )
    return steps


def mark_compensated(
    db: Database, workflow_id: str, reason: str, *, actor: str, stale_claim: timedelta
) -> list[dict[str, Any]]:
    """The operator undid the open side effects by hand: record each, then resume from the last approved
    checkpoint (ROLLING_BACK -> EXECUTING). Returns the steps marked."""
    why = _check_reason(reason)
    now = utcnow()
    with locked(db, workflow_id) as (conn, row):
        if row["state"] != WorkflowState.ROLLING_BACK.value:
            raise InvalidTransition(
                workflow_id,
                row["state"],
                "mark compensated",
                "only a workflow rolling_back has steps to undo",
            )
        steps = _open_steps(conn, workflow_id, row["state"], "mark compensated", now, stale_claim)
        note = f"compensated by hand ({actor}): {why}"
        for s in steps:
            written = saga.finish_by_hand(conn, s["step_id"], "compensated", note)
            # the result is bound only where it was written (a step already finished is left as it was)
            bound = {"bind": [_result(s["step_id"], "compensated", note)]} if written else {}
            audit.append(
                conn,
                workflow_id,
                "compensation_marked_by_hand",
                actor,
                {k: s[k] for k in ("step_id", "name", "compensation", "args")} | {"reason": why} | bound,
            )
        restored = row["last_approved_snapshot_id"]
        transitions.apply(
            conn,
            row,
            Event.ROLLBACK_SUCCEEDED,
            actor=actor,
            reason=f"side effects undone by hand: {why}; resuming from the last approved checkpoint",
            audit_payload={
                "restored_snapshot_id": restored,
                "restored_checkpoint_id": snapshots.get(conn, restored)["checkpoint_id"]
                if restored
                else None,
                "compensated_by_hand": [s["name"] for s in steps],
                "reason": why,
            },
        )
    return steps


def fail_not_undone(
    db: Database, workflow_id: str, reason: str, *, actor: str, stale_claim: timedelta
) -> list[dict[str, Any]]:
    """Give up on a stuck workflow: FAILED, with every side effect that was not undone named in its error
    and on the audit chain. Unearned escrow is refunded. Returns the steps left not undone."""
    why = _check_reason(reason)
    now = utcnow()
    with locked(db, workflow_id) as (conn, row):
        state = row["state"]
        if state not in STUCK_STATES:
            raise InvalidTransition(
                workflow_id, state, "fail", "only a workflow rolling_back or settling can be failed this way"
            )
        steps: list[dict[str, Any]] = []
        if state == WorkflowState.ROLLING_BACK.value:
            steps = _open_steps(conn, workflow_id, state, "fail", now, stale_claim)
            lost = f"not undone: workflow failed by {actor}"
            written = [s for s in steps if saga.finish_by_hand(conn, s["step_id"], "failed", lost)]
            not_undone = describe_steps(steps) or "none"
            message = f"failed by {actor}: {why}; side effects NOT undone: {not_undone}"
            audit.append(
                conn,
                workflow_id,
                "rollback_abandoned",
                actor,
                {
                    "reason": why,
                    "not_undone": [
                        {k: s[k] for k in ("step_id", "name", "compensation", "args")} for s in steps
                    ],
                    "bind": [_result(s["step_id"], "failed", lost) for s in written],
                },
            )
            event = Event.ROLLBACK_FAILED
        else:
            message = f"failed by {actor}: {why} (the settled result stays stored; unearned escrow refunded)"
            event = Event.SETTLEMENT_FAILED
        escrow.close_failed(conn, row, event, message, actor)
    return steps


class StuckWarner:
    """Logs one WARNING per stuck workflow per ``interval``, not one per sweep (every second)."""

    def __init__(self, interval: timedelta) -> None:
        self.interval = interval
        self._last: dict[str, datetime] = {}

    def report(self, items: list[StuckWorkflow], now: datetime) -> list[str]:
        """Warn about the items not warned about within the interval; returns their ids."""
        current = {i.workflow_id for i in items}
        for gone in set(self._last) - current:
            del self._last[gone]  # resolved: a later relapse warns at once
        warned = []
        for item in items:
            last = self._last.get(item.workflow_id)
            if last is not None and now - last < self.interval:
                continue
            self._last[item.workflow_id] = now
            warned.append(item.workflow_id)
            log.warning(
                "workflow %s stuck %s for %ds: %s; resolve with `saferun workflows resolve %s retry|"
                "mark-compensated|fail --reason ...` or the dashboard",
                item.workflow_id,
                item.state,
                int(item.age_seconds(now)),
                item.reason,
                item.workflow_id,
                extra={"workflow_id": item.workflow_id, "event": "stuck", "stuck_state": item.state},
            )
        return warned


def _result(step_id: str, status: str, error: str) -> list[Any]:
    """The saga step's result view as recorded by hand, bound like a compensation's own result."""
    return bind("saga_steps", "result", {"step_id": step_id, "status": status, "last_error": error})
