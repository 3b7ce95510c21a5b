"""What an approving decision does to its workflow: pay the checkpoint's milestone once, make the saga's
steps permanent, remember the approved state; and the seed's "Store Modified State", a new snapshot whose
parameters carry the reviewer's changes.

Split from ``core.decisions`` (which claims the request and applies these in its transaction); the paths
that pass a checkpoint without a reviewer (``pausing``, a checkpoint that needs no approval) call
``complete_checkpoint`` too.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, RowMapping

from saferun.core import escrow, mirror
from saferun.core.checkpoints.capture import CheckpointCapture, state_parts
from saferun.domain.audit import bind
from saferun.domain.modifications import merge_patch
from saferun.storage import audit, snapshots
from saferun.storage import workflows as wf_store


def complete_checkpoint(
    conn: Connection,
    row: RowMapping,
    checkpoint_id: str,
    snapshot_id: str,
    supervisor_id: str | None,
    actor: str,
    *,
    write: bool = True,
    passed_before: bool | None = None,
) -> dict[str, Any]:
    """A checkpoint passed: pay its milestone once, make earlier steps permanent, remember the state.

    Returns the workflow fields that change; with ``write=False`` the caller folds them into the state
    transition's own UPDATE instead of a second one. ``passed_before``: whether another snapshot of the
    checkpoint passed already, when the caller learned it with a statement it ran anyway (a decision's read
    under the lock, ``approvals``; a passing snapshot's INSERT, ``snapshots.insert_for(probe=True)``).
    """
    if passed_before is None:
        passed_before = snapshots.checkpoint_passed(
            conn, row["workflow_id"], checkpoint_id, exclude=snapshot_id
        )
    first_time = not passed_before
    if first_time:  # a checkpoint passed before was paid in that same transaction: nothing to look up
        escrow.release_milestone(conn, row, checkpoint_id, supervisor_id, actor)
    # the new approved state makes the saga's earlier steps permanent: the database commits them when
    # ``last_approved_snapshot_id`` changes (revision 0024), in this transaction
    values: dict[str, Any] = {"last_approved_snapshot_id": snapshot_id}
    if first_time:
        values["current_checkpoint"] = row["current_checkpoint"] + 1
    if write:  # the chain's new anchor rides on it: the events so far need no UPDATE of their own
        wf_store.update_fields(
            conn, row["workflow_id"], **values, **audit.anchor_fields(conn, row["workflow_id"])
        )
    return values


def store_modified(
    conn: Connection,
    capture: CheckpointCapture,
    row: RowMapping,
    snap: RowMapping,
    modifications: dict[str, Any],
    actor: str,
) -> str:
    """The seed's "Store Modified State": a new snapshot whose parameters carry the reviewer's changes."""
    snapshots.set_status(conn, snap["snapshot_id"], "superseded")
    state = capture.load_state(conn, snap["artifact_uri"])
    merged = state.model_copy(update={"parameters": merge_patch(state.parameters, modifications)})
    stored = capture.store_state(
        conn, state_parts(merged), {"workflow_id": row["workflow_id"], "checkpoint_id": snap["checkpoint_id"]}
    )
    new_snap = snapshots.insert_for(
        conn,
        row["workflow_id"],
        snap["checkpoint_id"],
        snap["label"],
        "modified",
        stored,
        parent_snapshot_id=snap["snapshot_id"],
    )
    snapshot_id = new_snap["snapshot_id"]
    mirror.checkpoint_state(conn, row, snapshot_id, snap["checkpoint_id"], stored.uri)
    audit.append(
        conn,
        row["workflow_id"],
        "state_modified",
        actor,
        {
            "snapshot_id": snapshot_id,
            "parent_snapshot_id": snap["snapshot_id"],
            "artifact_uri": stored.uri,
            "modifications": modifications,
            "bind": [bind("snapshots", "row", new_snap), bind("snapshots", "status", new_snap)],
        },
    )
    return snapshot_id
