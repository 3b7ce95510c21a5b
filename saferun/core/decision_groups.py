"""The items of one checkpoint's request group (several requests at one checkpoint), as a decision on one
of them sees them: whether it settles the checkpoint, the modifications of every modified item, what the
shared snapshot becomes, and closing the siblings when an item is rejected.

Split from ``core.decisions``: the claim and the decision's order of checks stay there; this module is
what a group adds to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping

from saferun.core import notify
from saferun.core.state_machine.models import ApprovalDecision
from saferun.domain.audit import bind
from saferun.storage import approvals, audit, jobs


@dataclass(frozen=True)
class Group:
    """What the rest of a multi-request checkpoint says about deciding one of its items (read once, after
    the claim and under the workflow's lock, so two reviewers deciding the last two items are serialized:
    the second one sees the first's decision and completes the checkpoint exactly once)."""

    items: list[RowMapping]
    last: bool  # no sibling still pending: this decision settles the checkpoint
    patch: dict[str, Any]  # {item key: modifications} of every modified item, this one included
    snapshot_status: str | None  # what the shared snapshot becomes now (None: nothing yet)

    @classmethod
    def read(
        cls,
        conn: Connection,
        req: RowMapping,
        decision: ApprovalDecision,
        modifications: dict[str, Any] | None,
    ) -> Group:
        items = approvals.group_items(conn, req["group_id"])
        others = [r for r in items if r["request_id"] != req["request_id"]]
        last = not any(r["status"] == "pending" for r in others)
        patch = {
            r["item_key"]: r["x_modifications"] or {}
            for r in others
            if r["x_decision"] == ApprovalDecision.MODIFIED.value
        }
        if decision == ApprovalDecision.MODIFIED:
            patch[req["item_key"]] = modifications or {}
        if decision == ApprovalDecision.REJECTED:
            status: str | None = "rejected"
        elif not last:
            status = None
        else:
            status = "superseded" if patch else "approved"
        return cls(items, last, patch, status)


def close_siblings(
    conn: Connection,
    row: RowMapping,
    req: RowMapping,
    group: Group,
    actor: str,
    status: str,
    now: datetime,
) -> None:
    """A rejected item rejects its checkpoint: its siblings still pending are closed (``closed``, or
    ``cancelled`` with a cancelled workflow), audited, and never decidable afterwards (a 409 says so).
    Their waiters are woken: an agent waiting on one of them learns of the rejection (``waiting.py``)."""
    pending = [r for r in group.items if r["status"] == "pending" and r["request_id"] != req["request_id"]]
    if not pending:
        return
    approvals.close_group(conn, req["group_id"], status, now)
    for sib in pending:
        notify.publish(conn, "decision", sib["request_id"])  # the notice: written with the status
        if sib["job_id"]:
            jobs.set_status(
                conn, sib["job_id"], "cancelled", f"{status}: item {req['item_key']!r} was rejected"
            )
    audit.append(
        conn,
        row["workflow_id"],
        "items_closed",
        actor,
        {
            "group_id": req["group_id"],
            "rejected_request_id": req["request_id"],
            "rejected_item_key": req["item_key"],
            "status": status,
            "closed": [{"request_id": r["request_id"], "item_key": r["item_key"]} for r in pending],
            "bind": [bind("approval_requests", "review", {**r, "status": status}) for r in pending],
        },
    )
