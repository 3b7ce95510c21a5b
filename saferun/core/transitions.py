"""Applying a state-machine event inside a transaction: legal edge, audit event, row update (and, from
the event, the database writes the history row).

This is the only code that changes ``workflows.state``. It asks the pure table (``next_state``) first,
so an illegal event raises ``InvalidTransition`` before anything is written.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping

from saferun.core import notify
from saferun.domain.states import Event, WorkflowState, next_state
from saferun.storage import audit
from saferun.storage import workflows as wf_store


def apply(
    conn: Connection,
    row: RowMapping,
    event: Event,
    *,
    actor: str,
    reason: str | None = None,
    audit_payload: dict[str, Any] | None = None,
    **fields: Any,
) -> WorkflowState:
    """Move the workflow along ``event`` (the edge checked by the state machine) and record it."""
    current = WorkflowState(row["state"])
    target = next_state(current, event, row["workflow_id"])
    # the event is hashed first so the state's UPDATE also carries the chain's new anchor (one statement);
    # the database writes the ``transitions`` row (the history the event stream reads) from this event
    audit.append(
        conn,
        row["workflow_id"],
        "transition",
        actor,
        {
            "from": current.value,
            "to": target.value,
            "event": event.value,
            "reason": reason,
            **(audit_payload or {}),
        },
    )
    wf_store.set_state(
        conn,
        row["workflow_id"],
        current.value,
        target.value,
        **fields,
        **audit.anchor_fields(conn, row["workflow_id"]),
    )
    notify.publish(conn, "workflow", row["workflow_id"])  # delivered only if the transaction commits
    return target
