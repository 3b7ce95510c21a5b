"""Escalation ladders: what happens to a request while nobody decides it (issue 16, item 3).

A checkpoint's ``escalation`` rungs fire at fixed offsets from the request's opening — ``notify`` reminds
the current assignee (a new "waiting" notice, so their own channel gets a fresh decision link),
``reassign`` hands the request to another identity or to ``any`` eligible supervisor (the on-call pool)
— and the ladder ends in the checkpoint's ``on_timeout``, which the expiry sweep applies.

Exactly once, with any number of replicas sweeping: a rung is applied by a conditional UPDATE that moves
``escalation_step`` from *i* to *i+1* only while the request is still pending at rung *i*; the process
whose UPDATE matched applies it, every other one finds nothing to do. Due rungs are found through the
``next_escalation_at`` index, so a sweep costs the same with 10 or 100,000 pending requests. Each rung is an
``escalated`` event on the workflow's audit chain (binding the request's new assignee), shown on the
timeline.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select, update

from saferun.core import notify
from saferun.core.state_machine.models import WorkflowConfig
from saferun.domain.audit import bind
from saferun.storage import approvals, audit
from saferun.storage import notifications as notices
from saferun.storage import workflows as wf_store
from saferun.storage.database import Database, lock_workflow
from saferun.storage.schema import approval_requests

log = logging.getLogger(__name__)

ANY = "any"  # reassign to every eligible supervisor (the request is unassigned)
ACTOR = "saferun:escalation"
BATCH = 500
MAX_RUNGS = 20  # CheckpointConfig.escalation's own limit


def due(conn: Connection, now: datetime, limit: int = BATCH) -> list[str]:
    """Pending requests with a rung due, oldest first (an index range on ``next_escalation_at``)."""
    query = (
        select(approval_requests.c.request_id)
        .where(approval_requests.c.next_escalation_at <= now, approval_requests.c.status == "pending")
        .order_by(approval_requests.c.next_escalation_at, approval_requests.c.request_id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def sweep(db: Database, now: datetime) -> list[str]:
    """Apply every due rung once; returns ``request_id:step`` for each rung this process applied."""
    with db.read() as conn:
        candidates = due(conn, now)
    applied: list[str] = []
    for request_id in candidates:
        # a server that was down catches up rung by rung, each in its own transaction, in order
        for _ in range(MAX_RUNGS):
            with db.transaction() as conn:
                step = apply_due(conn, request_id, now)
            if step is None:
                break
            applied.append(f"{request_id}:{step}")
    return applied


def apply_due(conn: Connection, request_id: str, now: datetime) -> int | None:
    """Apply the request's next rung if it is due and no other process applied it; its index, or None."""
    req = approvals.get(conn, request_id)
    lock_workflow(conn, req["workflow_id"])
    req = approvals.get(conn, request_id)  # as it stands under the lock
    if req["status"] != "pending" or req["next_escalation_at"] is None or req["next_escalation_at"] > now:
        return None
    row = wf_store.get(conn, req["workflow_id"])
    cp = WorkflowConfig.model_validate(row["config"]).checkpoint(req["checkpoint_id"])
    ladder = cp.escalation if cp is not None else []
    index = int(req["escalation_step"])
    if index >= len(ladder):  # the ladder changed shape under us: nothing left to apply
        _advance(conn, req, index, None, req["supervisor_id"])
        return None
    rung = ladder[index]
    following = ladder[index + 1] if index + 1 < len(ladder) else None
    next_at = req["created_at"] + timedelta(seconds=following.after_seconds) if following else None
    assignee = req["supervisor_id"]
    if rung.action == "reassign":
        assignee = None if rung.to == ANY else rung.to
    if not _advance(conn, req, index, next_at, assignee):
        return None  # another process applied this rung first
    # a fresh decision link to the (new) assignee's own channel: one notice per rung
    notices.record(conn, f"{notices.ESCALATED}:{index}", request_id, req["workflow_id"])
    notify.publish(conn, "workflow", req["workflow_id"])  # dashboards update live
    audit.append(
        conn,
        req["workflow_id"],
        "escalated",
        ACTOR,
        {
            "request_id": request_id,
            "step": index,
            "action": rung.action,
            "after_seconds": rung.after_seconds,
            "from": req["supervisor_id"],
            "to": assignee if rung.action == "reassign" else req["supervisor_id"],
            "bind": [bind("approval_requests", "review", {**req, "supervisor_id": assignee})],
        },
    )
    log.info(
        "request %s of workflow %s escalated (rung %d: %s%s)",
        request_id,
        req["workflow_id"],
        index,
        rung.action,
        f" to {assignee or 'any eligible supervisor'}" if rung.action == "reassign" else "",
    )
    return index


def _advance(conn: Connection, req: Any, index: int, next_at: datetime | None, assignee: str | None) -> bool:
    result = conn.execute(
        update(approval_requests)
        .where(
            approval_requests.c.request_id == req["request_id"],
            approval_requests.c.status == "pending",
            approval_requests.c.escalation_step == index,
        )
        .values(escalation_step=index + 1, next_escalation_at=next_at, supervisor_id=assignee)
    )
    return result.rowcount == 1
